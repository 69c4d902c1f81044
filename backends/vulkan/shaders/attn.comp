#version 450
/* gqa_attn, part 2, the general one: what attn_dec.comp (decode) and
 * attn_tile.comp (prefill) do not take (vk_prog.c attn_plan: head_dim above
 * 128 or not a multiple of 8, a cache not on 16 bytes, too little shared
 * memory). Slow: K and V are read once per (query head, token).
 * One workgroup per (query head, token); online softmax
 * over positions 0..pos[t] of slot seq[t] in blocks of 64: each invocation
 * scores one position of the block, then owns head dims l, l+64, ... for
 * the weighted sum of v. CDT 1: f16 cache, 0: f32.
 * p[7] Hq, p[8] Hkv, p[9] hd (even, <= 256), p[10] C, p[11] scale, p[12] seq base word. */
#include "common.glsl"
#define BLK 64u
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint CDT = 1;
layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 3) readonly buffer KC { uint kc[]; };
layout(std430, binding = 4) readonly buffer VC { uint vc[]; };
layout(std430, binding = 5) writeonly buffer Y { float y[]; };
shared float qs[256];
shared float sc[BLK];

float kv_at(uint which, uint e) /* element e of the k (0) or v (1) cache */
{
    if (CDT == 1u) {
        uint wd = which == 0u ? kc[(OFF(3) + e) >> 1] : vc[(OFF(4) + e) >> 1];
        return unpackHalf2x16(wd >> ((e & 1u) * 16u)).x;
    }
    return uintBitsToFloat(which == 0u ? kc[OFF(3) + e] : vc[OFF(4) + e]);
}

void main()
{
    uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y, l = gl_LocalInvocationID.x;
    uint Hq = pc.p[7], Hkv = pc.p[8], hd = pc.p[9], C = pc.p[10];
    float scale = PF(11);
    uint pos = step.w[4u + t], s = step.w[pc.p[12] + t], hk = h / (Hq / Hkv), L = pos + 1u;
    for (uint d = l; d < hd; d += BLK) qs[d] = q[OFF(0) + t * Hq * hd + h * hd + d] * scale;
    barrier();
    uint base = (s * Hkv + hk) * C * hd; /* element of (s, hk, 0, 0) */
    float m = -1.0 / 0.0, lsum = 0.0, acc[4] = float[4](0.0, 0.0, 0.0, 0.0);
    for (uint p0 = 0u; p0 < L; p0 += BLK) {
        uint nb = min(BLK, L - p0), p = p0 + l;
        float sv = -1.0 / 0.0;
        if (l < nb) {
            uint e = base + p * hd;
            float dot = 0.0;
            if (CDT == 1u) {
                for (uint d = 0u; d < hd; d += 2u) {
                    vec2 kk = unpackHalf2x16(kc[(OFF(3) + e + d) >> 1]);
                    dot += qs[d] * kk.x + qs[d + 1u] * kk.y;
                }
            } else {
                for (uint d = 0u; d < hd; d++) dot += qs[d] * uintBitsToFloat(kc[OFF(3) + e + d]);
            }
            sv = dot;
        }
        sc[l] = sv;
        barrier();
        float bm = m;
        for (uint j = 0u; j < nb; j++) bm = max(bm, sc[j]);
        float alpha = m == -1.0 / 0.0 ? 0.0 : exp(m - bm);
        barrier();
        sc[l] = l < nb ? exp(sv - bm) : 0.0;
        barrier();
        lsum *= alpha;
        for (uint r = 0u; r < 4u; r++) acc[r] *= alpha;
        for (uint j = 0u; j < nb; j++) {
            float pj = sc[j];
            lsum += pj;
            uint e = base + (p0 + j) * hd;
            for (uint r = 0u; r < 4u; r++) {
                uint d = l + r * BLK;
                if (d < hd) acc[r] += pj * kv_at(1u, e + d);
            }
        }
        m = bm;
        barrier();
    }
    for (uint r = 0u; r < 4u; r++) {
        uint d = l + r * BLK;
        if (d < hd) y[OFF(5) + t * Hq * hd + h * hd + d] = acc[r] / lsum;
    }
}
