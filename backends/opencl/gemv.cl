/* gemv.cl — matmul for 1..8 rows (decode) with a dense weight w [N, K],
 * instantiated by the host per storage dtype (inside typed.cl's prologue:
 * SFX, CE = elements per 16 bytes, CVT4) and per NT = 1, 2, 4, 8:
 * matmul_gemv_<dt>_<NT>, run for T <= NT (rows T..NT-1 recompute row T-1
 * and are not stored). The host uses it when K % CE == 0 and w and x sit at
 * 16-byte aligned offsets (else matmul_gemv_any_<dt>, typed.cl).
 *
 * A team of 32 work-items per output column n (a row of w): work-item l
 * reads the 16-byte chunks l, l + 32, ... of the row, four per round before
 * any arithmetic (64 bytes in flight per work-item, each warp load 512
 * contiguous bytes), converts them in registers (f16 by bit operations:
 * common.cl) and keeps NT partial sums; the team's sums meet in local memory
 * in a fixed tree order. GV_WG / 32 columns per work-group,
 * global (ceil(N / (GV_WG / 32)) * GV_WG). */
#define GV_R (GV_WG / 32)

kernel __attribute__((reqd_work_group_size(GV_WG, 1, 1)))
void CAT(KN(matmul_gemv), NT)(global float *y, ulong yo, global const float *x, ulong xo, global const ET *w,
                              ulong wo, global const uchar *bias, ulong bo, int bdt, int T, int K, int N)
{
    local float red[NT * GV_WG];
    const int lid = get_local_id(0), lane = lid % 32, r = lid / 32, n = get_group_id(0) * GV_R + r;
    global const uint4 *wr = (global const uint4 *)(w + wo + (size_t)min(n, N - 1) * K);
    global const float4 *xr[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) xr[t] = (global const float4 *)(x + xo + (size_t)min(t, T - 1) * K);
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    const int C = K / CE;
    for (int c0 = lane; c0 < C; c0 += 4 * 32) {
        uint4 u[4];
#pragma unroll
        for (int j = 0; j < 4; j++) u[j] = c0 + 32 * j < C ? wr[c0 + 32 * j] : (uint4)(0u);
#pragma unroll
        for (int j = 0; j < 4; j++) {
            int c = c0 + 32 * j;
            if (c >= C) break;
#if CE == 4
            float4 f = as_float4(u[j]);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                float4 a = xr[t][c];
                acc[t] = fma(a.x, f.x, fma(a.y, f.y, fma(a.z, f.z, fma(a.w, f.w, acc[t]))));
            }
#else
            float4 f = CVT4(u[j].x, u[j].y), g = CVT4(u[j].z, u[j].w);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                float4 a = xr[t][2 * c], b = xr[t][2 * c + 1];
                float s = fma(a.x, f.x, fma(a.y, f.y, fma(a.z, f.z, a.w * f.w)));
                acc[t] += fma(b.x, g.x, fma(b.y, g.y, fma(b.z, g.z, fma(b.w, g.w, s))));
            }
#endif
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) red[(t * GV_R + r) * 32 + lane] = acc[t];
    for (int o = 16; o > 0; o >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lane < o)
#pragma unroll
            for (int t = 0; t < NT; t++) red[(t * GV_R + r) * 32 + lane] += red[(t * GV_R + r) * 32 + lane + o];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (n < N && lane < T) y[yo + (size_t)lane * N + n] = red[(lane * GV_R + r) * 32] + ld_bias(bias, bo, bdt, n);
}
