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

/* Every AWQ matmul kernel (awq_gemm, mma_awq_gemm, awq_gemv: AWQ_PARAMS) takes its
 * tensors' buffers as AWQ_MEMS distinct buffers m0 .. m7, then one struct by value:
 * each tensor's buffer (an index) and offset, the sizes and the switches. NVIDIA's
 * OpenCL spends some 0.5 us of host time per buffer argument and 0.1 us per other
 * argument in every launch (bench/opencl/launch-cost.c), so the 18 buffers and 41
 * scalars the decode GEMV once took one by one kept the host behind the device in
 * a decode step. The host's awq_args (ocl_exec.c) mirrors this one field for field.
 * The kernels take up to three weights that read x: y, w, bias, their offsets, bias
 * dtype and N per weight m; the rest is the decode GEMV's epilogue (awq_gemv.cl). */
#define AWQ_MEMS 8
typedef struct awq_args {
    ulong xo, yo[3], wo[3], bo[3], nwo, nyo, ro, cso, kco, vco;
    int T, K, bdt[3], N[3], mode, nwdt, ny_on, r_on, hd, rope_mask, kvdt, km, vm, seq_off, C, Sl, xcg, xhm;
    float eps;
    uchar mx, my[3], mw[3], mb[3], mnw, mny, mr, mcs, mkc, mvc, mps, mxh; /* which buffer each tensor is in */
    uchar pad[2];
} awq_args;
typedef char awq_args_is_as_the_host_has_it[sizeof(awq_args) == 240 ? 1 : -1];

#define AWQ_PARAMS                                                                                                  \
    global uchar *m0, global uchar *m1, global uchar *m2, global uchar *m3, global uchar *m4, global uchar *m5,       \
        global uchar *m6, global uchar *m7, const awq_args a
#define AWQ_MEM(i)                                                                                                  \
    ((i) == 0 ? m0 : (i) == 1 ? m1 : (i) == 2 ? m2 : (i) == 3 ? m3 : (i) == 4 ? m4 : (i) == 5 ? m5 : (i) == 6 ? m6 : m7)
/* awq_gemm's and mma_awq_gemm's arguments under the names they use: x, xo, T, K, then
 * per weight m ym, yom, wm, wom, bm, bom, bdtm, Nm (awq_gemv.cl names them its own way) */
#define AWQ_UNPACK_SIZES                                                                                            \
    const ulong xo = a.xo, yo0 = a.yo[0], yo1 = a.yo[1], yo2 = a.yo[2], wo0 = a.wo[0], wo1 = a.wo[1],              \
                wo2 = a.wo[2], bo0 = a.bo[0], bo1 = a.bo[1], bo2 = a.bo[2];                                         \
    const int T = a.T, K = a.K, bdt0 = a.bdt[0], bdt1 = a.bdt[1], bdt2 = a.bdt[2], N0 = a.N[0], N1 = a.N[1],        \
              N2 = a.N[2]
#define AWQ_UNPACK_MAT                                                                                              \
    AWQ_UNPACK_SIZES;                                                                                               \
    global const float *x = (global const float *)AWQ_MEM(a.mx);                                                    \
    global float *y0 = (global float *)AWQ_MEM(a.my[0]), *y1 = (global float *)AWQ_MEM(a.my[1]),                    \
                 *y2 = (global float *)AWQ_MEM(a.my[2]);                                                            \
    global const uint *w0 = (global const uint *)AWQ_MEM(a.mw[0]), *w1 = (global const uint *)AWQ_MEM(a.mw[1]),     \
                      *w2 = (global const uint *)AWQ_MEM(a.mw[2]);                                                  \
    global const uchar *b0 = AWQ_MEM(a.mb[0]), *b1 = AWQ_MEM(a.mb[1]), *b2 = AWQ_MEM(a.mb[2])
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
void awq_gemm(AWQ_PARAMS)
{
    local float4 As4[GT_K * GT_LDA / 4], Bs4[GT_K * GT_LDB / 4];
    AWQ_UNPACK_MAT;
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
