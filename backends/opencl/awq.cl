/* awq.cl — matmul_awq: y[T,N] = x[T,K] · W + b, W the AWQ int4 blob as the
 * checkpoint stores it (no repacking needed):
 *   qweight uint [K][N/8]  nibble i of word (k, c) is column 8c + order[i]
 *   qzeros  uint [K/128][N/8], packed the same way
 *   scales  half [K/128][N]
 * Weights are dequantised in registers: per group g of 128 rows,
 *   y[t][n] += s[g][n] * (Σ_k x[t][k] q[k][n] - z[g][n] Σ_k x[t][k]),
 * exact in f32 apart from the sums. */
#define AWQ_COL(i) ((i) < 4 ? 2 * (i) : 2 * ((i) - 4) + 1) /* loom_awq_order */

/* GEMV, 1..GEMV_MAXT rows. Work-group (AWQ_X words, AWQ_KS K-slices): each
 * work-item reads one packed word per row k of the groups of its slice (each
 * int4 weight is read once), keeps 8 columns x T rows of sums in registers;
 * the slices are then summed in local memory, one column per work-item.
 * global (ceil(N/8 / AWQ_X) * AWQ_X, AWQ_KS). */
kernel __attribute__((reqd_work_group_size(AWQ_X, AWQ_KS, 1)))
void awq_gemv(global float *y, ulong yo, global const float *x, ulong xo, global const uint *w, ulong wo,
              global const uchar *bias, ulong bo, int bdt, int T, int K, int N)
{
    local float red[AWQ_KS][AWQ_X * 8];
    int lx = get_local_id(0), ks = get_local_id(1), c = get_global_id(0), W8 = N / 8, G = K / 128;
    bool live = c < W8;
    global const uint *qw = w + wo, *qz = qw + (size_t)K * W8;
    global const half *sc = (global const half *)(qz + (size_t)G * W8);
    x += xo;
    float out[GEMV_MAXT][8];
    for (int t = 0; t < GEMV_MAXT; t++)
        for (int i = 0; i < 8; i++) out[t][i] = 0.0f;
    for (int g = ks; live && g < G; g += AWQ_KS) {
        float acc[GEMV_MAXT][8], xs[GEMV_MAXT];
        for (int t = 0; t < GEMV_MAXT; t++) {
            xs[t] = 0.0f;
            for (int i = 0; i < 8; i++) acc[t][i] = 0.0f;
        }
        for (int kk = 0; kk < 128; kk++) {
            int k = g * 128 + kk;
            uint q = qw[(size_t)k * W8 + c];
            float qf[8];
            for (int i = 0; i < 8; i++) qf[i] = (float)((q >> (4 * i)) & 15u);
            for (int t = 0; t < GEMV_MAXT; t++) {
                if (t < T) {
                    float xv = x[(size_t)t * K + k];
                    xs[t] += xv;
                    for (int i = 0; i < 8; i++) acc[t][i] = fma(xv, qf[i], acc[t][i]);
                }
            }
        }
        uint z = qz[(size_t)g * W8 + c];
        for (int i = 0; i < 8; i++) {
            float s = vload_half((size_t)g * N + 8 * c + AWQ_COL(i), sc), zf = (float)((z >> (4 * i)) & 15u);
            for (int t = 0; t < GEMV_MAXT; t++) out[t][i] = fma(s, acc[t][i] - zf * xs[t], out[t][i]);
        }
    }
    int lid = ks * AWQ_X + lx, n0 = get_group_id(0) * AWQ_X * 8;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < 8; i++) red[ks][lx * 8 + AWQ_COL(i)] = out[t][i];
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int col = lid; col < AWQ_X * 8; col += AWQ_X * AWQ_KS) {
            int n = n0 + col;
            if (n < N) {
                float s = 0.0f;
                for (int j = 0; j < AWQ_KS; j++) s += red[j][col];
                y[yo + (size_t)t * N + n] = s + ld_bias(bias, bo, bdt, n);
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
}

/* Tiled, for prefill: (GEMM_TS x GEMM_TS) output tiles; each K step of
 * GEMM_TK rows (inside one group) dequantises GEMM_TK x GEMM_TS weights into
 * local memory, one packed word per work-item. global (N/GEMM_TS.., T/GEMM_TS..)
 * in work-groups of (GEMM_TS/4, GEMM_TS/4). */
kernel __attribute__((reqd_work_group_size(GEMM_TS / 4, GEMM_TS / 4, 1)))
void awq_gemm(global float *y, ulong yo, global const float *x, ulong xo, global const uint *w, ulong wo,
              global const uchar *bias, ulong bo, int bdt, int T, int K, int N)
{
    local float As[GEMM_TK * GEMM_LD], Bs[GEMM_TK * GEMM_LD];
    int lx = get_local_id(0), ly = get_local_id(1), lid = ly * (GEMM_TS / 4) + lx;
    int n0 = get_group_id(0) * GEMM_TS, t0 = get_group_id(1) * GEMM_TS, W8 = N / 8, G = K / 128;
    global const uint *qw = w + wo, *qz = qw + (size_t)K * W8;
    global const half *sc = (global const half *)(qz + (size_t)G * W8);
    x += xo;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    /* this work-item's word of each B tile: row kk, word cw (8 columns) */
    const int WPR = GEMM_TS / 8;
    int kk = lid / WPR, cw = lid % WPR, c = n0 / 8 + cw;
    for (int k0 = 0; k0 < K; k0 += GEMM_TK) {
        gemm_load_x(As, x, T, K, t0, k0, lid);
        int g = k0 / 128;
        if (c < W8) {
            uint q = qw[(size_t)(k0 + kk) * W8 + c], z = qz[(size_t)g * W8 + c];
            for (int i = 0; i < 8; i++) {
                int col = 8 * cw + AWQ_COL(i);
                float s = vload_half((size_t)g * N + n0 + col, sc);
                Bs[kk * GEMM_LD + col] = ((float)((q >> (4 * i)) & 15u) - (float)((z >> (4 * i)) & 15u)) * s;
            }
        } else {
            for (int i = 0; i < 8; i++) Bs[kk * GEMM_LD + 8 * cw + i] = 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        gemm_tile_step(As, Bs, acc, lx, ly);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    const int S = GEMM_TS / 4;
    for (int i = 0; i < 4; i++) {
        int t = t0 + ly + S * i;
        if (t >= T) continue;
        for (int j = 0; j < 4; j++) {
            int n = n0 + lx + S * j;
            if (n < N) y[yo + (size_t)t * N + n] = acc[i][j] + ld_bias(bias, bo, bdt, n);
        }
    }
}
