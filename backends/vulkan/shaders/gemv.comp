#version 450
/* matmul for few tokens (T <= 8, in blocks of 4): y[t, n] = sum_k x[t, k] w[n, k] + b[n].
 * The scalar fallback of gemv_vec.comp, for a weight whose rows or offsets are
 * not whole 16-byte chunks (odd K, unaligned pieces).
 * One workgroup (64 invocations) per 8 output rows n; invocations split K, each keeps 8x4
 * partial sums, reduced across the workgroup (subgroupAdd when available).
 * p[7] K, p[8] N of this piece, p[9] row stride of y, p[10] first column of
 * the piece in y (and b), p[11] has bias. */
#include "common.glsl"
#define WG 64u
#define R 8u
layout(local_size_x = 64) in;
#ifdef USE_SUBGROUP
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#endif
layout(constant_id = 0) const uint WDT = 0;
layout(constant_id = 1) const uint BDT = 0;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { uint w[]; };
layout(std430, binding = 2) readonly buffer Bi { uint bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
#ifdef USE_SUBGROUP
shared float red[R * 4u][WG / 4u]; /* per subgroup (subgroups of >= 4 invocations) */
#else
shared float red[R * 4u][WG];
#endif

void main()
{
    uint l = gl_LocalInvocationID.x, K = pc.p[7], N = pc.p[8], n0 = flat_group() * R;
    for (uint tb = 0u; tb < ROWS; tb += 4u) {
    uint T = min(4u, ROWS - tb), xo = OFF(0) + tb * K, yo = OFF(3) + tb * pc.p[9];
    float acc[R][4];
    for (uint r = 0u; r < R; r++)
        for (uint t = 0u; t < 4u; t++) acc[r][t] = 0.0;
    for (uint k = l; k < K; k += WG) {
        float xv[4];
        for (uint t = 0u; t < 4u; t++) xv[t] = t < T ? x[xo + t * K + k] : 0.0;
        for (uint r = 0u; r < R; r++) {
            uint n = min(n0 + r, N - 1u);
            float wv = LOADT(WDT, w, OFF(1) + n * K + k);
            for (uint t = 0u; t < 4u; t++) acc[r][t] += wv * xv[t];
        }
    }
#ifdef USE_SUBGROUP
    for (uint r = 0u; r < R; r++)
        for (uint t = 0u; t < 4u; t++) {
            float s = subgroupAdd(acc[r][t]);
            if (subgroupElect()) red[r * 4u + t][gl_SubgroupID] = s;
        }
    barrier();
    if (l < R * 4u) {
        float s = 0.0;
        for (uint i = 0u; i < gl_NumSubgroups; i++) s += red[l][i];
        red[l][0] = s;
    }
#else
    for (uint r = 0u; r < R; r++)
        for (uint t = 0u; t < 4u; t++) red[r * 4u + t][l] = acc[r][t];
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1) {
        if (l < s)
            for (uint j = 0u; j < R * 4u; j++) red[j][l] += red[j][l + s];
        barrier();
    }
#endif
    if (l < R * 4u) {
        uint r = l / 4u, t = l % 4u, n = n0 + r;
        if (t < T && n < N) {
            float v = red[l][0];
            if (pc.p[11] != 0u) v += LOADT(BDT, bias, OFF(2) + pc.p[10] + n);
            y[yo + t * pc.p[9] + pc.p[10] + n] = v;
        }
    }
    barrier(); /* red is reused by the next block of tokens */
    }
}
