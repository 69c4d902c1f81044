/* typed.cl — kernels templated on the storage dtype of a weight, table or
 * KV cache. The host instantiates this file once per dtype, after defining
 *   SFX      name suffix (f32, f16, bf16): kernels are embed_f16, ...
 *   ET       the element type in memory (float, half, ushort)
 *   LD(p,i)  element i as float;  LD4(p,i) elements i..i+3 as float4
 *   ST(p,i,v) store v at element i (caches only; absent for bf16)
 * and undefining them afterwards. */
#define KN(name) CAT(name, SFX)

/* embed: y[t][d] = table[ids[t]][d]. global (D.., T). An id outside the
 * vocabulary leaves NaN and reports LOOM_KERR_EMBED_ID. */
kernel void KN(embed)(global float *y, ulong yo, global const ET *tab, ulong to, global const int *ids, ulong io,
                      int D, int V, global int *err)
{
    int d = get_global_id(0), t = get_global_id(1);
    if (d >= D) return;
    int id = ids[io + t];
    if (id < 0 || id >= V) {
        y[yo + (size_t)t * D + d] = NAN;
        if (d == 0) report(err, LOOM_KERR_EMBED_ID, t, id, V);
        return;
    }
    y[yo + (size_t)t * D + d] = LD(tab, to + (size_t)id * D + d);
}

/* rmsnorm: y = x / sqrt(mean(x²) + eps) * w. One work-group of RED_W per row. */
kernel __attribute__((reqd_work_group_size(RED_W, 1, 1)))
void KN(rmsnorm)(global float *y, ulong yo, global const float *x, ulong xo, global const ET *w, ulong wo, int D,
                 float eps)
{
    local float red[RED_W];
    int lid = get_local_id(0), t = get_group_id(0);
    global const float *xr = x + xo + (size_t)t * D;
    float s = 0.0f;
    for (int d = lid; d < D; d += RED_W) s = fma(xr[d], xr[d], s);
    red[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = RED_W / 2; k > 0; k >>= 1) {
        if (lid < k) red[lid] += red[lid + k];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float inv = 1.0f / sqrt(red[0] / (float)D + eps);
    for (int d = lid; d < D; d += RED_W) y[yo + (size_t)t * D + d] = xr[d] * inv * LD(w, wo + d);
}

/* matmul GEMV (1..GEMV_MAXT rows): y[t][n] = Σ_k x[t][k] w[n][k] + b[n].
 * One work-group of GEMV_W per GEMV_R consecutive output columns: the
 * work-items stride over K four at a time, each weight element is read once
 * for all rows, then a tree reduction in local memory.
 * global (ceil(N / GEMV_R) * GEMV_W). */
kernel __attribute__((reqd_work_group_size(GEMV_W, 1, 1)))
void KN(matmul_gemv)(global float *y, ulong yo, global const float *x, ulong xo, global const ET *w, ulong wo,
                     global const uchar *bias, ulong bo, int bdt, int T, int K, int N)
{
    local float red[GEMV_MAXT * GEMV_R][GEMV_W];
    int lid = get_local_id(0), n0 = get_group_id(0) * GEMV_R;
    x += xo;
    float acc[GEMV_R][GEMV_MAXT];
    for (int r = 0; r < GEMV_R; r++)
        for (int t = 0; t < GEMV_MAXT; t++) acc[r][t] = 0.0f;
    int k = lid * 4;
    for (; k + 4 <= K; k += GEMV_W * 4) {
        float4 xv[GEMV_MAXT];
        for (int t = 0; t < GEMV_MAXT; t++)
            if (t < T) xv[t] = vload4(0, x + (size_t)t * K + k);
        for (int r = 0; r < GEMV_R; r++) {
            int n = min(n0 + r, N - 1); /* a ragged last group recomputes column N-1 */
            float4 wv = LD4(w, wo + (size_t)n * K + k);
            for (int t = 0; t < GEMV_MAXT; t++)
                if (t < T) acc[r][t] += dot(xv[t], wv);
        }
    }
    for (; k < K; k++) /* the ragged end of K: at most 3 elements, one work-item */
        for (int r = 0; r < GEMV_R; r++) {
            float wv = LD(w, wo + (size_t)min(n0 + r, N - 1) * K + k);
            for (int t = 0; t < GEMV_MAXT; t++)
                if (t < T) acc[r][t] = fma(x[(size_t)t * K + k], wv, acc[r][t]);
        }
    int rows = GEMV_R * T; /* reduce only the live (column, row) pairs: slot r * T + t */
    for (int r = 0; r < GEMV_R; r++)
        for (int t = 0; t < GEMV_MAXT; t++)
            if (t < T) red[r * T + t][lid] = acc[r][t];
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = GEMV_W / 2; s > 0; s >>= 1) {
        if (lid < s)
            for (int j = 0; j < rows; j++) red[j][lid] += red[j][lid + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int j = lid; j < rows; j += GEMV_W) {
        int r = j / T, t = j % T, n = n0 + r;
        if (n < N) y[yo + (size_t)t * N + n] = red[j][0] + ld_bias(bias, bo, bdt, n);
    }
}

/* matmul tiled (prefill): (GEMM_TS x GEMM_TS) output tiles in work-groups of
 * (GEMM_TS/4)², GEMM_TK-deep steps through local memory; w [N, K] is loaded
 * with consecutive work-items on consecutive k (coalesced) and stored
 * transposed. global (N.., T..) rounded to GEMM_TS/4 per GEMM_TS. */
kernel __attribute__((reqd_work_group_size(GEMM_TS / 4, GEMM_TS / 4, 1)))
void KN(matmul_gemm)(global float *y, ulong yo, global const float *x, ulong xo, global const ET *w, ulong wo,
                     global const uchar *bias, ulong bo, int bdt, int T, int K, int N)
{
    local float As[GEMM_TK * GEMM_LD], Bs[GEMM_TK * GEMM_LD];
    const int NT = (GEMM_TS / 4) * (GEMM_TS / 4), S = GEMM_TS / 4;
    int lx = get_local_id(0), ly = get_local_id(1), lid = ly * S + lx;
    int n0 = get_group_id(0) * GEMM_TS, t0 = get_group_id(1) * GEMM_TS;
    x += xo;
    w += wo;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < K; k0 += GEMM_TK) {
        gemm_load_x(As, x, T, K, t0, k0, lid);
        for (int e = lid; e < GEMM_TS * GEMM_TK; e += NT) {
            int c = e / GEMM_TK, kk = e % GEMM_TK, n = n0 + c, k = k0 + kk;
            Bs[kk * GEMM_LD + c] = (n < N && k < K) ? LD(w, (size_t)n * K + k) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        gemm_tile_step(As, Bs, acc, lx, ly);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (int i = 0; i < 4; i++) {
        int t = t0 + ly + S * i;
        if (t >= T) continue;
        for (int j = 0; j < 4; j++) {
            int n = n0 + lx + S * j;
            if (n < N) y[yo + (size_t)t * N + n] = acc[i][j] + ld_bias(bias, bo, bdt, n);
        }
    }
}

#ifdef ST
/* gqa_attn, part 1: k, v of every token go to (seq[t], head, pos[t]) of the
 * caches [S, Hkv, C, hd], in token order (a later token wins a clash).
 * ps: the step's positions, then (at seq_off) its slots. global (hd.., Hkv). */
kernel void KN(kv_store)(global const float *k, ulong ko, global const float *v, ulong vo, global ET *kc, ulong kco,
                         global ET *vc, ulong vco, global const int *ps, int seq_off, int T, int Hkv, int C, int hd,
                         int S)
{
    int d = get_global_id(0), h = get_global_id(1);
    if (d >= hd) return;
    for (int t = 0; t < T; t++) {
        int p = ps[t], s = ps[seq_off + t];
        if (p < 0 || p >= C || s < 0 || s >= S) continue; /* the host validated the step */
        size_t dst = (((size_t)s * Hkv + h) * C + p) * hd + d, src = ((size_t)t * Hkv + h) * hd + d;
        ST(kc, kco + dst, k[ko + src]);
        ST(vc, vco + dst, v[vo + src]);
    }
}

/* gqa_attn, part 2: one work-group of ATT_W per (query head, token). The
 * cache positions 0..pos[t] of slot seq[t] go by in chunks of ATT_W: each
 * work-item scores one position (q·k · scale), the chunk's max and sum are
 * reduced in local memory, and the running output (ATT_DPT head dims per
 * work-item) is rescaled: the online softmax. global (ATT_W * Hq, T). */
kernel __attribute__((reqd_work_group_size(ATT_W, 1, 1)))
void KN(attn)(global float *y, ulong yo, global const float *q, ulong qo, global const ET *kc, ulong kco,
              global const ET *vc, ulong vco, global const int *ps, int seq_off, int Hq, int Hkv, int C, int hd,
              float scale)
{
    local float qs[ATT_W * ATT_DPT], pr[ATT_W], red[ATT_W];
    int lid = get_local_id(0), h = get_group_id(0), t = get_group_id(1);
    int L = ps[t] + 1, s = ps[seq_off + t], hk = h / (Hq / Hkv);
    for (int d = lid; d < hd; d += ATT_W) qs[d] = q[qo + ((size_t)t * Hq + h) * hd + d];
    barrier(CLK_LOCAL_MEM_FENCE);
    size_t base = ((size_t)s * Hkv + hk) * C * hd;
    global const ET *kb = kc + kco + base, *vb = vc + vco + base;
    float m = -INFINITY, l = 0.0f, acc[ATT_DPT];
    for (int i = 0; i < ATT_DPT; i++) acc[i] = 0.0f;
    for (int c0 = 0; c0 < L; c0 += ATT_W) {
        int j = c0 + lid;
        float sc = -INFINITY;
        if (j < L) {
            global const ET *kr = kb + (size_t)j * hd;
            float4 a4 = (float4)(0.0f);
            int d = 0;
            for (; d + 4 <= hd; d += 4) a4 = fma(vload4(0, qs + d), LD4(kr, d), a4);
            float a = (a4.x + a4.y) + (a4.z + a4.w);
            for (; d < hd; d++) a = fma(qs[d], LD(kr, d), a);
            sc = a * scale;
        }
        red[lid] = sc;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = ATT_W / 2; k > 0; k >>= 1) {
            if (lid < k) red[lid] = fmax(red[lid], red[lid + k]);
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        float mn = fmax(m, red[0]); /* finite: position c0 is always valid */
        float p = j < L ? exp(sc - mn) : 0.0f;
        barrier(CLK_LOCAL_MEM_FENCE);
        pr[lid] = p;
        red[lid] = p;
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = ATT_W / 2; k > 0; k >>= 1) {
            if (lid < k) red[lid] += red[lid + k];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        float alpha = exp(m - mn); /* 0 on the first chunk */
        l = l * alpha + red[0];
        int n = min(ATT_W, L - c0);
        for (int i = 0; i < ATT_DPT; i++) {
            int d = lid + ATT_W * i;
            if (d < hd) {
                float a = acc[i] * alpha;
                global const ET *vr = vb + (size_t)c0 * hd + d;
                for (int jj = 0; jj < n; jj++) a = fma(pr[jj], LD(vr, (size_t)jj * hd), a);
                acc[i] = a;
            }
        }
        m = mn;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float inv = 1.0f / l;
    for (int i = 0; i < ATT_DPT; i++) {
        int d = lid + ATT_W * i;
        if (d < hd) y[yo + ((size_t)t * Hq + h) * hd + d] = acc[i] * inv;
    }
}
#endif

#undef KN
