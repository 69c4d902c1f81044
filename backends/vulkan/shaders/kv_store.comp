#version 450
/* gqa_attn, part 1: write every token's k, v at (seq[t], head, pos[t]) of the
 * caches [S, Hkv, C, hd]. One invocation per (kv head, dim pair) walks the
 * tokens in order, so a later token wins a clash. CDT 1: f16 cache, 0: f32.
 * p[7] Hkv, p[8] hd, p[9] C, p[10] seq base word in step (pos at 4). */
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint CDT = 1;
layout(std430, binding = 1) readonly buffer K { float k[]; };
layout(std430, binding = 2) readonly buffer V { float v[]; };
layout(std430, binding = 3) writeonly buffer KC { uint kc[]; };
layout(std430, binding = 4) writeonly buffer VC { uint vc[]; };
void main()
{
    uint j = gl_GlobalInvocationID.x, Hkv = pc.p[7], hd = pc.p[8], C = pc.p[9], h2 = hd / 2u;
    if (j >= Hkv * h2) return;
    uint h = j / h2, d = (j % h2) * 2u;
    for (uint t = 0u; t < ROWS; t++) {
        uint pos = step.w[4u + t], s = step.w[pc.p[10] + t];
        uint src = t * Hkv * hd + h * hd + d;
        uint dst = ((s * Hkv + h) * C + pos) * hd + d; /* element index, even */
        vec2 kk = vec2(k[OFF(1) + src], k[OFF(1) + src + 1u]);
        vec2 vv = vec2(v[OFF(2) + src], v[OFF(2) + src + 1u]);
        if (CDT == 1u) {
            kc[(OFF(3) + dst) >> 1] = packHalf2x16(kk);
            vc[(OFF(4) + dst) >> 1] = packHalf2x16(vv);
        } else {
            kc[OFF(3) + dst] = floatBitsToUint(kk.x), kc[OFF(3) + dst + 1u] = floatBitsToUint(kk.y);
            vc[OFF(4) + dst] = floatBitsToUint(vv.x), vc[OFF(4) + dst + 1u] = floatBitsToUint(vv.y);
        }
    }
}
