/* awq.cl — matmul_awq: y[T,N] = x[T,K] · W + b, W an AWQ int4 weight in the
 * layout weight_prepare repacks it to (ocl.c), at element (uint) offset wo:
 *   q    uint4 [K/32][N]   the 16 bytes at (kb, n) hold column n for
 *                          k = 32kb..32kb+31: word j, bits 4i..4i+3, k = 32kb + 8j + i
 *   meta uint  [K/128][N]  bits 0..15 the f16 scale s of (group, n), 16..23 its zero z
 * w[k][n] = (q - z) * s. A column's 128 weights of one group are four
 * consecutive uint4 rows, and consecutive columns are consecutive 16-byte
 * words: a warp of 32 columns reads 512 contiguous bytes per load.
 * The GEMV (1..8 rows) is awq_gemv.cl, instantiated per row count. */
#define AWQ_META(w, wo, K, N) ((w) + (wo) + (size_t)(K) * (N) / 8) /* meta follows K/32 * N uint4 */

/* The prefill kernels (awq_gemm, mma_awq_gemm) take one x and up to three
 * weights that read it, with the same arguments, each weight in whole column
 * tiles of TW: AWQ_PICK_WEIGHT makes column tile `tile` of the launch weight
 * m's tile at column n0, and declares that weight's y, w, bias, offsets, bias
 * dtype and N. */
#define AWQ_GEMM_PARAMS                                                                                             \
    global const float *x, ulong xo, int T, int K,                                                                   \
    global float *y0, ulong yo0, global const uint *w0, ulong wo0, global const uchar *b0, ulong bo0, int bdt0, int N0, \
    global float *y1, ulong yo1, global const uint *w1, ulong wo1, global const uchar *b1, ulong bo1, int bdt1, int N1, \
    global float *y2, ulong yo2, global const uint *w2, ulong wo2, global const uchar *b2, ulong bo2, int bdt2, int N2
#define AWQ_PICK_WEIGHT(tile, TW)                                                                                  \
    int c0_ = (N0 + (TW) - 1) / (TW), c1_ = (N1 + (TW) - 1) / (TW), m = (tile) < c0_ ? 0 : (tile) < c0_ + c1_ ? 1 : 2; \
    int n0 = ((tile) - (m == 0 ? 0 : m == 1 ? c0_ : c0_ + c1_)) * (TW);                                           \
    global float *y = m == 0 ? y0 : m == 1 ? y1 : y2;                                                              \
    global const uint *w = m == 0 ? w0 : m == 1 ? w1 : w2;                                                         \
    global const uchar *bias = m == 0 ? b0 : m == 1 ? b1 : b2;                                                     \
    ulong yo = m == 0 ? yo0 : m == 1 ? yo1 : yo2, wo = m == 0 ? wo0 : m == 1 ? wo1 : wo2,                         \
          bo = m == 0 ? bo0 : m == 1 ? bo1 : bo2;                                                                  \
    int bdt = m == 0 ? bdt0 : m == 1 ? bdt1 : bdt2, N = m == 0 ? N0 : m == 1 ? N1 : N2

/* Tiled, for prefill (see the GT_* helpers in common.cl). Each GT_K step is
 * one uint4 row kb of q: work-item tid dequantises GT_AWQ_W words (8 k each)
 * of column n0 + tid % GT_N into Bs, (q - z) * s exactly as the reference
 * does (a small integer times an f16 value is exact in f32). Like awq_gemv
 * it takes up to three weights that read the same x, each in whole column
 * tiles. global (Σ ceil(N_m / GT_N) * GT_NTH, ceil(T / GT_T)), work-groups
 * of GT_NTH. */
#define GT_AWQ_W (4 * GT_N / GT_NTH) /* words per work-item: 4 for both tile configurations */

INL void gt_fetch_awq(uint *r, uint *m, global const uint *w, ulong wo, int K, int N, int n0, int k0, int tid)
{
    int n = n0 + tid % GT_N, h = tid / GT_N;
    if (n >= N) {
#pragma unroll
        for (int i = 0; i < GT_AWQ_W; i++) r[i] = 0u;
        *m = 0u;
        return;
    }
    global const uint *q = w + wo + ((size_t)(k0 / 32) * N + n) * 4 + h * GT_AWQ_W;
#pragma unroll
    for (int i = 0; i < GT_AWQ_W; i++) r[i] = q[i];
    *m = AWQ_META(w, wo, K, N)[(size_t)(k0 / 128) * N + n];
}

INL void gt_store_awq(local float *Bs, const uint *r, uint m, int tid)
{
    int c = tid % GT_N, h = tid / GT_N;
    float s = f16_lo(m), z = (float)(m >> 16);
#pragma unroll
    for (int i = 0; i < GT_AWQ_W; i++)
#pragma unroll
        for (int b = 0; b < 8; b++)
            Bs[(8 * (h * GT_AWQ_W + i) + b) * GT_LDB + c] = ((float)((r[i] >> (4 * b)) & 15u) - z) * s;
}

kernel __attribute__((reqd_work_group_size(GT_NTH, 1, 1)))
void awq_gemm(AWQ_GEMM_PARAMS)
{
    local float4 As4[GT_K * GT_LDA / 4], Bs4[GT_K * GT_LDB / 4];
    int tid = get_local_id(0), tx = tid % GT_TX, ty = tid / GT_TX;
    /* up to three weights side by side, as in awq_gemv: column tile -> weight m, tile there */
    int tile = get_group_id(0), t0 = get_group_id(1) * GT_T;
    AWQ_PICK_WEIGHT(tile, GT_N);
    x += xo;
    float acc[GT_TM][8], rx[GT_XPER];
    uint rw[GT_AWQ_W], rm;
#pragma unroll
    for (int i = 0; i < GT_TM; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j] = 0.0f;
    gt_fetch_x(rx, x, T, K, t0, 0, tid);
    gt_fetch_awq(rw, &rm, w, wo, K, N, n0, 0, tid);
    for (int k0 = 0; k0 < K; k0 += GT_K) {
        barrier(CLK_LOCAL_MEM_FENCE); /* the previous step is done with the tiles */
        gt_store_x((local float *)As4, rx, tid);
        gt_store_awq((local float *)Bs4, rw, rm, tid);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (k0 + GT_K < K) {
            gt_fetch_x(rx, x, T, K, t0, k0 + GT_K, tid);
            gt_fetch_awq(rw, &rm, w, wo, K, N, n0, k0 + GT_K, tid);
        }
        gt_step(As4, Bs4, acc, tx, ty);
    }
    gt_store_y(y, yo, acc, bias, bo, bdt, T, N, t0, n0, tx, ty);
}
