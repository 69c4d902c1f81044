#version 450
/* matmul / matmul_awq for many tokens: a shared-memory tiled GEMM, 32 tokens
 * x 64 outputs per workgroup, K in steps of 16; each of the 16x16
 * invocations owns 2 tokens x 4 outputs (strided, so shared reads do not
 * conflict). Dense (w[N,K], WDT f32/f16/bf16): bindings 0 x, 1 w, 2 bias,
 * 3 y. AWQ (-DAWQ): the tile of w is dequantised into shared memory from
 * the backend's layout (vk_impl.h; q read as words): 0 x, 1 q, 2 bias, 3 y,
 * 4 meta.
 * p[7] K, p[8] N of this piece, p[9] row stride of y, p[10] first column of
 * the piece in y (and b), p[11] has bias. Grid: (ceil(N/64), ceil(T/32)). */
#include "common.glsl"
#define BM 32u
#define BN 64u
#define BK 16u
layout(local_size_x = 16, local_size_y = 16) in;
layout(constant_id = 0) const uint WDT = 0;
layout(constant_id = 1) const uint BDT = 0;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { uint w[]; };
layout(std430, binding = 2) readonly buffer Bi { uint bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
#ifdef AWQ
layout(std430, binding = 4) readonly buffer MT { uint meta[]; };
#endif
shared float xs[BK][BM];
shared float ws[BK][BN + 1u];

void main()
{
    uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y, tid = ty * 16u + tx;
    uint K = pc.p[7], N = pc.p[8], T = ROWS, n0 = gl_WorkGroupID.x * BN, m0 = gl_WorkGroupID.y * BM;
    float acc[2][4];
    for (uint i = 0u; i < 2u; i++)
        for (uint j = 0u; j < 4u; j++) acc[i][j] = 0.0;
    for (uint k0 = 0u; k0 < K; k0 += BK) {
        for (uint r = 0u; r < 2u; r++) {
            uint idx = tid + r * 256u, m = idx / BK, k = idx % BK;
            xs[k][m] = (m0 + m < T && k0 + k < K) ? x[OFF(0) + (m0 + m) * K + k0 + k] : 0.0;
        }
#ifdef AWQ
        if (tid < 128u) { /* 64 columns x 16 k: per column two words of 8 k (half of its uvec4) */
            uint cl = tid >> 1, h = tid & 1u, n = n0 + cl, k = k0 + h * 8u;
            if (n < N) {
                uint wd = w[OFF(1) + ((k >> 5) * N + n) * 4u + ((k >> 3) & 3u)], m = meta[OFF(4) + (k >> 7) * N + n];
                float s = unpackHalf2x16(m & 0xffffu).x, z = float(m >> 16);
                for (uint i = 0u; i < 8u; i++) ws[h * 8u + i][cl] = (float((wd >> (4u * i)) & 15u) - z) * s;
            } else {
                for (uint i = 0u; i < 8u; i++) ws[h * 8u + i][cl] = 0.0;
            }
        }
#else
        for (uint r = 0u; r < 4u; r++) {
            uint idx = tid + r * 256u, n = idx / BK, k = idx % BK;
            ws[k][n] = (n0 + n < N && k0 + k < K) ? LOADT(WDT, w, OFF(1) + (n0 + n) * K + k0 + k) : 0.0;
        }
#endif
        barrier();
        for (uint k = 0u; k < BK; k++) {
            float a0 = xs[k][ty], a1 = xs[k][ty + 16u];
            for (uint j = 0u; j < 4u; j++) {
                float b = ws[k][tx + 16u * j];
                acc[0][j] += a0 * b;
                acc[1][j] += a1 * b;
            }
        }
        barrier();
    }
    for (uint i = 0u; i < 2u; i++) {
        uint m = m0 + ty + 16u * i;
        if (m >= T) continue;
        for (uint j = 0u; j < 4u; j++) {
            uint n = n0 + tx + 16u * j;
            if (n >= N) continue;
            float v = acc[i][j];
            if (pc.p[11] != 0u) v += LOADT(BDT, bias, OFF(2) + pc.p[10] + n);
            y[OFF(3) + m * pc.p[9] + pc.p[10] + n] = v;
        }
    }
}
