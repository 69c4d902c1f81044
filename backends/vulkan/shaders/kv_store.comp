#version 450
/* gqa_attn, part 1: write every token's k, v at (seq[t], head, pos[t]) of the
 * caches [S, Hkv, C, hd]. One work-group per token (y) and 64 (kv head, dim
 * pair)s (x), all tokens at once: a prompt's store is one short pass, not a
 * walk over its tokens. Where two tokens of a step name the same slot and
 * position the later one wins: a token's work-group first looks for a later
 * one with its (slot, position) and then writes nothing.
 * CDT 1: f16 cache, 0: f32.
 * p[7] Hkv, p[8] hd, p[9] C, p[10] seq base word in step (pos at 4). */
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint CDT = 1;
layout(std430, binding = 1) readonly buffer K { float k[]; };
layout(std430, binding = 2) readonly buffer V { float v[]; };
layout(std430, binding = 3) writeonly buffer KC { uint kc[]; };
layout(std430, binding = 4) writeonly buffer VC { uint vc[]; };
shared uint later;
void main()
{
    uint t = gl_WorkGroupID.y, l = gl_LocalInvocationID.x;
    uint Hkv = pc.p[7], hd = pc.p[8], C = pc.p[9], h2 = hd / 2u;
    uint pos = step.w[4u + t], s = step.w[pc.p[10] + t];
    if (l == 0u) later = 0u;
    barrier();
    for (uint u = t + 1u + l; u < ROWS; u += 64u)
        if (step.w[4u + u] == pos && step.w[pc.p[10] + u] == s) atomicOr(later, 1u);
    barrier();
    uint j = gl_GlobalInvocationID.x;
    if (later != 0u || j >= Hkv * h2) return;
    uint h = j / h2, d = (j % h2) * 2u;
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
