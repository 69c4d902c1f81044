/* typed.cl — kernels templated on the storage dtype of a weight, table or
 * KV cache. The host instantiates this file once per dtype, after defining
 *   SFX      name suffix (f32, f16, bf16): kernels are embed_f16, ...
 *   ET       the element type in memory (float, half, ushort)
 *   LD(p,i)  element i as float;  LD4(p,i) elements i..i+3 as float4
 *   ST(p,i,v) store v at element i (caches only; absent for bf16)
 *   CE       elements per 16 bytes (4 or 8); CVT4(a, b) the four 16-bit
 *            elements of words a, b as float4 (f16, bf16 only)
 * and undefining them afterwards; gemv.cl follows it once per row count. */
#define KN(name) CAT(name, SFX)
/* the 16-byte word u of a cache as CE / 4 float4s, d[i] (and d[i + 1]) */
#if CE == 8
#define WIDEN16(d, i, u) ((d)[i] = CVT4((u).x, (u).y), (d)[(i) + 1] = CVT4((u).z, (u).w))
#else
#define WIDEN16(d, i, u) ((d)[i] = as_float4(u))
#endif

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

/* rmsnorm: y = x / sqrt(mean(x²) + eps) * w. One work-group of RED_W per row.
 * With sum set, the residual add before it runs here too: x = a + b is
 * written to sum [T, D] and normalised (one launch instead of two). */
kernel __attribute__((reqd_work_group_size(RED_W, 1, 1)))
void KN(rmsnorm)(global float *y, ulong yo, global const float *x, ulong xo, global const ET *w, ulong wo, int D,
                 float eps, global const float *b, ulong bo, global float *sum, ulong so, int add)
{
    local float red[RED_W];
    int lid = get_local_id(0), t = get_group_id(0);
    global const float *xr = x + xo + (size_t)t * D;
    float s = 0.0f;
    if (add) {
        global const float *br = b + bo + (size_t)t * D;
        global float *sr = sum + so + (size_t)t * D;
        for (int d = lid; d < D; d += RED_W) {
            float v = xr[d] + br[d];
            sr[d] = v;
            s = fma(v, v, s);
        }
        xr = sr; /* read back below by the work-item that wrote it */
    } else {
        for (int d = lid; d < D; d += RED_W) s = fma(xr[d], xr[d], s);
    }
    red[lid] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k = RED_W / 2; k > 0; k >>= 1) {
        if (lid < k) red[lid] += red[lid + k];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float inv = 1.0f / sqrt(red[0] / (float)D + eps);
    for (int d = lid; d < D; d += RED_W) y[yo + (size_t)t * D + d] = xr[d] * inv * LD(w, wo + d);
}

/* matmul GEMV (1..GEMV_MAXT rows) for any K and element-aligned offsets (the
 * fast one, gemv.cl, needs 16-byte alignment): y[t][n] = Σ_k x[t][k] w[n][k] + b[n].
 * One work-group of GEMV_W per GEMV_R consecutive output columns: the
 * work-items stride over K four at a time, each weight element is read once
 * for all rows, then a tree reduction in local memory.
 * global (ceil(N / GEMV_R) * GEMV_W). */
kernel __attribute__((reqd_work_group_size(GEMV_W, 1, 1)))
void KN(matmul_gemv_any)(global float *y, ulong yo, global const float *x, ulong xo, global const ET *w, ulong wo,
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

/* matmul tiled (prefill), see the GT_* helpers in common.cl: w [N, K] is
 * fetched with consecutive work-items on consecutive k (coalesced) and stored
 * transposed, Bs [k][column]. global (ceil(N / GT_N) * GT_NTH, ceil(T / GT_T)). */
#define GT_WPER (GT_N * GT_K / GT_NTH) /* weight elements fetched per work-item per step */

INL void KN(gt_fetch_w)(float *r, global const ET *w, ulong wo, int K, int N, int n0, int k0, int tid)
{
    int n = n0 + tid / GT_K, k = k0 + tid % GT_K;
    global const ET *p = w + wo + (size_t)n * K + k;
#pragma unroll
    for (int i = 0; i < GT_WPER; i++) r[i] = (n + GT_RSTEP * i < N && k < K) ? LD(p, (size_t)GT_RSTEP * i * K) : 0.0f;
}

INL void KN(gt_store_w)(local float *Bs, const float *r, int tid)
{
    local float *p = Bs + (tid % GT_K) * GT_LDB + tid / GT_K;
#pragma unroll
    for (int i = 0; i < GT_WPER; i++) p[GT_RSTEP * i] = r[i];
}

kernel __attribute__((reqd_work_group_size(GT_NTH, 1, 1)))
void KN(matmul_gemm)(global float *y, ulong yo, global const float *x, ulong xo, global const ET *w, ulong wo,
                     global const uchar *bias, ulong bo, int bdt, int T, int K, int N)
{
    local float4 As4[GT_K * GT_LDA / 4], Bs4[GT_K * GT_LDB / 4];
    int tid = get_local_id(0), tx = tid % GT_TX, ty = tid / GT_TX;
    int n0 = get_group_id(0) * GT_N, t0 = get_group_id(1) * GT_T;
    x += xo;
    float acc[GT_TM][8], rx[GT_XPER], rw[GT_WPER];
#pragma unroll
    for (int i = 0; i < GT_TM; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j] = 0.0f;
    gt_fetch_x(rx, x, T, K, t0, 0, tid);
    KN(gt_fetch_w)(rw, w, wo, K, N, n0, 0, tid);
    for (int k0 = 0; k0 < K; k0 += GT_K) {
        barrier(CLK_LOCAL_MEM_FENCE); /* the previous step is done with the tiles */
        gt_store_x((local float *)As4, rx, tid);
        KN(gt_store_w)((local float *)Bs4, rw, tid);
        barrier(CLK_LOCAL_MEM_FENCE);
        if (k0 + GT_K < K) { /* the next step's loads, in flight during this step's FMAs */
            gt_fetch_x(rx, x, T, K, t0, k0 + GT_K, tid);
            KN(gt_fetch_w)(rw, w, wo, K, N, n0, k0 + GT_K, tid);
        }
        gt_step(As4, Bs4, acc, tx, ty);
    }
    gt_store_y(y, yo, acc, bias, bo, bdt, T, N, t0, n0, tx, ty);
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

/* gqa_attn, part 2, the portable fallback (decode runs attn_dec below, prefill
 * attn_tile, where the device and head_dim allow): one work-group of ATT_W per
 * (query head, token, partition). Partition p takes cache positions p * PL .. p * PL + PL - 1
 * (PL a multiple of ATT_W) of 0..pos[t] of slot seq[t]; they go by in chunks
 * of ATT_W: each work-item scores one position (q·k · scale), the chunk's
 * max and sum are reduced in local memory, and the running output (ATT_DPT
 * head dims per work-item) is rescaled: the online softmax. With one
 * partition the result goes to y; with P > 1 (decode: a few heads and tokens
 * would leave most of a GPU idle) each partition writes its unnormalised
 * output, max and sum to part [T][Hq][P][hd + 2] and attn_merge (common.cl)
 * joins them. global (ATT_W * Hq, T, P). */
kernel __attribute__((reqd_work_group_size(ATT_W, 1, 1)))
void KN(attn)(global float *y, ulong yo, global const float *q, ulong qo, global const ET *kc, ulong kco,
              global const ET *vc, ulong vco, global const int *ps, int seq_off, int Hq, int Hkv, int C, int hd,
              float scale, int PL, global float *part)
{
    local float qs[ATT_W * ATT_DPT], pr[ATT_W], red[ATT_W];
    int lid = get_local_id(0), h = get_group_id(0), t = get_group_id(1), pi = get_group_id(2), P = get_num_groups(2);
    int L = ps[t] + 1, s = ps[seq_off + t], hk = h / (Hq / Hkv);
    int c_beg = pi * PL, c_end = min(L, c_beg + PL);
    global float *po = part + (((size_t)t * Hq + h) * P + pi) * (hd + 2);
    if (c_beg >= c_end) { /* nothing of this token here (the whole work-group) */
        if (lid == 0) po[hd] = -INFINITY, po[hd + 1] = 0.0f;
        return;
    }
    for (int d = lid; d < hd; d += ATT_W) qs[d] = q[qo + ((size_t)t * Hq + h) * hd + d];
    barrier(CLK_LOCAL_MEM_FENCE);
    size_t base = ((size_t)s * Hkv + hk) * C * hd;
    global const ET *kb = kc + kco + base, *vb = vc + vco + base;
    float m = -INFINITY, l = 0.0f, acc[ATT_DPT];
    for (int i = 0; i < ATT_DPT; i++) acc[i] = 0.0f;
    for (int c0 = c_beg; c0 < c_end; c0 += ATT_W) {
        int j = c0 + lid;
        float sc = -INFINITY;
        if (j < c_end) {
            global const ET *kr = kb + (size_t)j * hd;
            float4 a4 = (float4)(0.0f), b4 = (float4)(0.0f);
            int d = 0;
            for (; d + 8 <= hd; d += 8) { /* two loads in flight per step */
                float4 k0 = LD4(kr, d), k1 = LD4(kr, d + 4);
                a4 = fma(vload4(0, qs + d), k0, a4);
                b4 = fma(vload4(0, qs + d + 4), k1, b4);
            }
            for (; d + 4 <= hd; d += 4) a4 = fma(vload4(0, qs + d), LD4(kr, d), a4);
            a4 += b4;
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
        float p = j < c_end ? exp(sc - mn) : 0.0f;
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
        int n = min(ATT_W, c_end - c0);
        for (int i = 0; i < ATT_DPT; i++) {
            int d = lid + ATT_W * i;
            if (d < hd) {
                float a = acc[i] * alpha;
                global const ET *vr = vb + (size_t)c0 * hd + d;
                int jj = 0;
                for (; jj + 4 <= n; jj += 4) { /* four loads in flight per step */
                    float v0 = LD(vr, (size_t)jj * hd), v1 = LD(vr, (size_t)(jj + 1) * hd),
                          v2 = LD(vr, (size_t)(jj + 2) * hd), v3 = LD(vr, (size_t)(jj + 3) * hd);
                    a = fma(pr[jj], v0, a);
                    a = fma(pr[jj + 1], v1, a);
                    a = fma(pr[jj + 2], v2, a);
                    a = fma(pr[jj + 3], v3, a);
                }
                for (; jj < n; jj++) a = fma(pr[jj], LD(vr, (size_t)jj * hd), a);
                acc[i] = a;
            }
        }
        m = mn;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (P == 1) {
        float inv = 1.0f / l;
        for (int i = 0; i < ATT_DPT; i++) {
            int d = lid + ATT_W * i;
            if (d < hd) y[yo + ((size_t)t * Hq + h) * hd + d] = acc[i] * inv;
        }
        return;
    }
    for (int i = 0; i < ATT_DPT; i++) {
        int d = lid + ATT_W * i;
        if (d < hd) po[d] = acc[i];
    }
    if (lid == 0) po[hd] = m, po[hd + 1] = l;
}

#ifdef ATT_DW
/* gqa_attn, part 2 for decode (<= GEMV_MAXT rows), latency first: one read
 * of each K and V position serves every query head of its KV head (the GQA
 * group) and every row of the slot that the work-group takes.
 * global (ATT_DW * Hkv * HB, T, P), HB = ceil(G / ATT_NQ) blocks of heads of
 * the group (G = Hq / Hkv; heads g0 .. g0 + ng - 1 of it).
 *   Rows: a work-group takes row t = group 1 and, when its block of heads
 *   leaves room (HB == 1: R = ATT_NQ / ng rows), the next R - 1 rows of the
 *   same slot (in index order); the work-group of a row that is not the
 *   first of such a run leaves at once. Its ng * rows query vectors (qv =
 *   row * ng + head) stay in local memory; the run's positions are 0 .. L-1,
 *   L - 1 the largest of its rows' positions, each row masked beyond its own.
 *   Partition pi takes positions pi * PL .. pi * PL + PL - 1 (PL <= ATT_PLMAX,
 *   a multiple of ATT_DP) of those.
 *   Scores, in rounds of ATT_DP positions: 4 work-items per position each
 *   load hd / 4 dims of its K row as 16-byte chunks l, l + 4, ... (every 4
 *   work-items read 64 contiguous bytes), the next round's chunks in flight
 *   while this round's are used, and keep a partial dot product per query
 *   vector; the 4 partials of a (qv, position) are summed from local memory
 *   by one work-item into the scores [qv][position] (one barrier per round).
 *   Softmax over the partition, not online: per qv ATT_SUB work-items find
 *   the max, turn the scores into e^(s - max) in place and sum them.
 *   P·V, in the same rounds: the round's V (loaded, 16-byte chunks of
 *   consecutive work-items contiguous, the first round during the scores)
 *   goes to local memory as f32 and each work-item accumulates ATT_PVN
 *   (qv, 4 dims) pairs over the round's positions.
 * With P == 1 the output goes to y; else the unnormalised output, max and
 * sum to part [T][Hq][P][hd + 2], as attn above (a partition past the run's
 * positions, or wholly past a row's, writes max -inf, sum 0), which the last
 * work-group of the run to finish joins into y where join is set (cnt: one
 * counter per work-group column, zero between launches), else attn_merge.
 * kc, vc are read as uint4 (the host checks the 16-byte alignment). */
#define DKC (ATT_HD / (4 * CE)) /* 16-byte chunks per work-item per round (at head_dim ATT_HD) */

/* the K chunks of position c (lane l of its 4 work-items), zero past c_end */
INL void KN(dat_fetch_k)(uint4 *r, global const uint4 *b, int c, int c_end, int nch, int l)
{
#pragma unroll
    for (int i = 0; i < DKC; i++) r[i] = c < c_end && l + 4 * i < nch ? b[(size_t)c * nch + l + 4 * i] : (uint4)(0u);
}

/* the V chunks lid + ATT_DW * i of the round's positions from c0, zero past c_end */
INL void KN(dat_fetch_v)(uint4 *r, global const uint4 *b, int c0, int c_end, int nch)
{
#pragma unroll
    for (int i = 0; i < DKC; i++) {
        int f = get_local_id(0) + ATT_DW * i, j = f / nch;
        r[i] = i < nch / 4 && c0 + j < c_end ? b[(size_t)c0 * nch + f] : (uint4)(0u);
    }
}

/* the r-th row of slot s from row t0 on (rows in index order; sp: the step's
 * positions [T], then slots [T]) */
INL int KN(dat_row)(local const int *sp, int T, int t0, int s, int r)
{
    int t = t0;
    for (int i = 0; t < T; t++)
        if (sp[T + t] == s && i++ == r) break;
    return t;
}

/* query vector v of the run (row v / ng of slot s from t0, head h0 + v % ng) as a [T][Hq] index */
INL size_t KN(dat_qhead)(local const int *sp, int T, int t0, int s, int v, int ng, int Hq, int h0)
{
    return (size_t)KN(dat_row)(sp, T, t0, s, v / ng) * Hq + h0 + v % ng;
}

#ifdef ATT_TRACE /* phase clocks of one work-group (LOOM_OPENCL_BUILD_OPTIONS=-DATT_TRACE, NVIDIA) */
#define ATT_STAMP(i) do { if (lid == 0) { ulong c_; asm volatile("mov.u64 %0, %%clock64;" : "=l"(c_)); tr[i + 1] = c_; } } while (0)
#else
#define ATT_STAMP(i) do {} while (0)
#endif
kernel __attribute__((reqd_work_group_size(ATT_DW, 1, 1)))
void KN(attn_dec)(global float *y, ulong yo, global const float *q, ulong qo, global const ET *kc, ulong kco,
                  global const ET *vc, ulong vco, global const int *ps, int seq_off, int T, int Hq, int Hkv, int C,
                  int hd, float scale, int PL, global float *part, global int *cnt, int join)
{
    local float4 qs4[ATT_NQ * ATT_HD / 4], un4[ATT_UN4];
    local float sc[ATT_NQ * ATT_SCL], smax[ATT_DW], ssum[ATT_DW];
    local int qlim[ATT_NQ], sp[2 * GEMV_MAXT];
    local float *red = (local float *)un4; /* K partials [2][ATT_NQ][ATT_DP][4], or V [ATT_DP][hd] */
#ifdef ATT_TRACE
    ulong tr[9];
    if (get_local_id(0) == 0) { ulong c_; asm volatile("mov.u64 %0, %%clock64;" : "=l"(c_)); tr[0] = c_; }
#endif
    int lid = get_local_id(0), G = Hq / Hkv, HB = (G + ATT_NQ - 1) / ATT_NQ, ng = (G + HB - 1) / HB;
    int hk = get_group_id(0) / HB, g0 = get_group_id(0) % HB * ng, t0 = get_group_id(1), pi = get_group_id(2);
    int P = get_num_groups(2);
    /* The step's positions and slots in one round trip (a chain of loads here was a
     * fifth of the kernel at short contexts); all below reads them from sp. */
    if (lid < 2 * T) sp[lid] = ps[lid < T ? lid : seq_off + lid - T];
    barrier(CLK_LOCAL_MEM_FENCE);
    ATT_STAMP(0);
    int s = sp[T + t0];
    ng = min(ng, G - g0);
    int R = HB == 1 ? ATT_NQ / ng : 1, k = 0; /* rows per work-group; k: rows of slot s before t0 */
    for (int t = 0; t < t0; t++) k += sp[T + t] == s;
    /* A work-group with nothing to do (row t0 served by an earlier work-group,
     * or a partition past its rows' positions) still runs to the end: PoCL 3.1
     * was seen to run the code after a barrier for every work-item once some
     * had returned before it, so there is no early return. */
    int nr = 0, L = 0;
    for (int t = t0; t < T && nr < R && k % R == 0; t++) /* else row t0 is served by an earlier work-group */
        if (sp[T + t] == s) L = max(L, sp[t] + 1), nr++;
    int nq = nr * ng, nch = hd / CE, n4 = hd / 4;
    int c_beg = pi * PL, c_end = min(L, c_beg + PL), n = c_end - c_beg;
    size_t base = ((size_t)s * Hkv + hk) * C * hd;
    global const uint4 *kb = (global const uint4 *)(kc + kco + base), *vb = (global const uint4 *)(vc + vco + base);
    int jj = lid / 4, l = lid % 4; /* scores: position c0 + jj, chunks l + 4 i */
    uint4 kr[DKC], vr[DKC];
    if (n > 0) { /* the first round's K and V are in flight from here on ... */
        KN(dat_fetch_k)(kr, kb, c_beg + jj, c_end, nch, l);
        KN(dat_fetch_v)(vr, vb, c_beg, c_end, nch);
    }
    /* ... and q with them: query vector v = (row v / ng of the run, head g0 + v % ng) */
    float4 qr[ATT_QN];
#pragma unroll
    for (int i = 0; i < ATT_QN; i++) {
        int e = lid + ATT_DW * i, v = e / n4, d4 = e - v * n4;
        if (v < nq)
            qr[i] = vload4(d4, q + qo + KN(dat_qhead)(sp, T, t0, s, v, ng, Hq, hk * G + g0) * hd);
    }
    if (lid < nq) qlim[lid] = sp[KN(dat_row)(sp, T, t0, s, lid / ng)]; /* the last position it sees */
#pragma unroll
    for (int i = 0; i < ATT_QN; i++) {
        int e = lid + ATT_DW * i, v = e / n4, d4 = e - v * n4;
        if (v < nq) qs4[v * (ATT_HD / 4) + d4] = qr[i];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    ATT_STAMP(1);
    int rounds = (n + ATT_DP - 1) / ATT_DP;
    for (int rd = 0; rd < rounds; rd++) { /* scores */
        int c0 = c_beg + rd * ATT_DP;
        float4 kf[DKC * CE / 4];
#pragma unroll
        for (int i = 0; i < DKC; i++) WIDEN16(kf, i * (CE / 4), kr[i]);
        if (rd + 1 < rounds) KN(dat_fetch_k)(kr, kb, c0 + ATT_DP + jj, c_end, nch, l);
        local float *rb = red + (rd & 1) * (ATT_NQ * ATT_DP * 4);
#pragma unroll
        for (int v = 0; v < ATT_NQ; v++) { /* unrolled: the vectors' loads and FMAs overlap */
            if (v >= nq) continue;
            local const float4 *qv = qs4 + v * (ATT_HD / 4);
            float4 a = (float4)(0.0f);
#pragma unroll
            for (int i = 0; i < DKC; i++) {
                if (l + 4 * i >= nch) continue;
#if CE == 8
                a = fma(qv[2 * (l + 4 * i)], kf[2 * i], a);
                a = fma(qv[2 * (l + 4 * i) + 1], kf[2 * i + 1], a);
#else
                a = fma(qv[l + 4 * i], kf[i], a);
#endif
            }
            rb[(v * ATT_DP + jj) * 4 + l] = (a.x + a.y) + (a.z + a.w);
        }
        barrier(CLK_LOCAL_MEM_FENCE); /* (the next round writes the other half of red) */
        for (int e = lid; e < nq * ATT_DP; e += ATT_DW) {
            int v = e / ATT_DP, j = e - v * ATT_DP;
            float4 a = vload4(e, rb);
            sc[v * ATT_SCL + c0 - c_beg + j] = c0 + j <= qlim[v] ? ((a.x + a.y) + (a.z + a.w)) * scale : -INFINITY;
        }
    }
    ATT_STAMP(2);
    barrier(CLK_LOCAL_MEM_FENCE); /* the scores are complete */
    int sv = lid / ATT_SUB, sb = lid % ATT_SUB; /* softmax: query vector sv, positions sb + ATT_SUB i */
    float mx = -INFINITY;
    if (sv < nq)
        for (int j = sb; j < n; j += ATT_SUB) mx = fmax(mx, sc[sv * ATT_SCL + j]);
    smax[lid] = mx;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int i = 0; i < ATT_SUB; i++) mx = fmax(mx, smax[sv * ATT_SUB + i]);
    float sum = 0.0f;
    if (sv < nq)
        for (int j = sb; j < n; j += ATT_SUB) {
            float p = mx > -INFINITY ? exp(sc[sv * ATT_SCL + j] - mx) : 0.0f; /* -inf: nothing of this row here */
            sc[sv * ATT_SCL + j] = p;
            sum += p;
        }
    ssum[lid] = sum;
    float4 o[ATT_PVN], o2[ATT_PVN];
#pragma unroll
    for (int i = 0; i < ATT_PVN; i++) o[i] = o2[i] = (float4)(0.0f);
    local float4 *vs4 = un4;
    ATT_STAMP(3);
    for (int rd = 0; rd < rounds; rd++) { /* P·V */
        int c0 = c_beg + rd * ATT_DP, m = min(ATT_DP, c_end - c0);
        barrier(CLK_LOCAL_MEM_FENCE); /* the probabilities are complete; the last round is done with vs4 */
#pragma unroll
        for (int i = 0; i < DKC; i++) {
            int f = lid + ATT_DW * i;
            if (i >= nch / 4) break;
            WIDEN16(vs4, f * (CE / 4), vr[i]);
        }
        if (rd + 1 < rounds) KN(dat_fetch_v)(vr, vb, c0 + ATT_DP, c_end, nch);
        barrier(CLK_LOCAL_MEM_FENCE);
        /* the work-item's pairs side by side in one loop over the positions (a pair past
         * the query vectors reads vector 0 and is not stored) */
        int j = 0;
        for (; j + 2 <= m; j += 2) {
#pragma unroll
            for (int i = 0; i < ATT_PVN; i++) {
                int e = lid + ATT_DW * i, v = e / n4, d4 = e - v * n4;
                local const float *pr = sc + (v < nq ? v : 0) * ATT_SCL + c0 - c_beg + j;
                o[i] = fma(pr[0], vs4[j * n4 + d4], o[i]);
                o2[i] = fma(pr[1], vs4[(j + 1) * n4 + d4], o2[i]);
            }
        }
        if (j < m) {
#pragma unroll
            for (int i = 0; i < ATT_PVN; i++) {
                int e = lid + ATT_DW * i, v = e / n4, d4 = e - v * n4;
                o[i] = fma(sc[(v < nq ? v : 0) * ATT_SCL + c0 - c_beg + j], vs4[j * n4 + d4], o[i]);
            }
        }
    }
    ATT_STAMP(4);
#pragma unroll
    for (int i = 0; i < ATT_PVN; i++) {
        int e = lid + ATT_DW * i, v = e / n4, d4 = e - v * n4;
        if (v >= nq) break;
        size_t row = KN(dat_qhead)(sp, T, t0, s, v, ng, Hq, hk * G + g0);
        float M = -INFINITY, lsum = 0.0f; /* n <= 0 (P > 1): nothing of these rows here, max -inf, sum 0 */
        for (int j = 0; j < ATT_SUB && n > 0; j++) M = fmax(M, smax[v * ATT_SUB + j]), lsum += ssum[v * ATT_SUB + j];
        float4 a = o[i] + o2[i];
        if (P == 1) {
            vstore4(a / lsum, d4, y + yo + row * hd);
        } else {
            global float *po = part + (row * P + pi) * (hd + 2);
            vstore4(a, d4, po);
            if (d4 == 0) po[hd] = M, po[hd + 1] = lsum;
        }
    }
    ATT_STAMP(5);
    /* With P > 1 and join, the last of the P work-groups of these rows to finish joins the
     * partitions (as attn_merge does, which runs instead where P is large): a device-wide fence
     * (device_fence) before counting and after, the partials read past the L1 cache (volatile:
     * other work-groups wrote them).
     * The barriers run in every work-group (no return before them: see PoCL above). */
    local int last;
    device_fence();
    barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
    global int *ct = cnt + (size_t)t0 * get_num_groups(0) + get_group_id(0);
    if (lid == 0) last = P > 1 && join && nq > 0 && atomic_inc(ct) == P - 1;
    barrier(CLK_LOCAL_MEM_FENCE);
    ATT_STAMP(6);
#ifdef ATT_TRACE
    if (lid == 0 && get_group_id(0) == 1 && t0 == 0 && pi == 0)
        printf("attn_dec P %d n %d: sp %lu qkv %lu scores %lu softmax %lu pv %lu out %lu count %lu\n", P, n, tr[1] - tr[0],
               tr[2] - tr[1], tr[3] - tr[2], tr[4] - tr[3], tr[5] - tr[4], tr[6] - tr[5], tr[7] - tr[6]);
#endif
    if (!last) return;
    if (lid == 0) *ct = 0; /* ready for the next launch */
    device_fence();
    /* The work-item's pairs (query vector, float4 of dims) side by side, partitions in
     * batches of ATT_JB with their loads issued together, joined online in partition order:
     * M the largest max so far, the sums so far rescaled by e^(M_old - M). A pair past the
     * query vectors reads vector 0, unstored. (H100: the join of 5 partitions takes 8-10k
     * cycles, the same as one partition at a time: the loads are not what it waits on.) */
    volatile global const float *pj[ATT_PVN]; /* the pair's row of partials */
    int dj[ATT_PVN];                          /* its first dim */
    float M[ATT_PVN], den[ATT_PVN];
    float4 acc[ATT_PVN];
#pragma unroll
    for (int i = 0; i < ATT_PVN; i++) {
        int e = lid + ATT_DW * i, v = e / n4;
        dj[i] = 4 * (e - v * n4), v = v < nq ? v : 0;
        pj[i] = part + KN(dat_qhead)(sp, T, t0, s, v, ng, Hq, hk * G + g0) * P * (hd + 2);
        M[i] = -INFINITY, den[i] = 0.0f, acc[i] = (float4)(0.0f);
    }
    for (int j0 = 0; j0 < P; j0 += ATT_JB) {
        float mj[ATT_PVN][ATT_JB], lj[ATT_PVN][ATT_JB];
        float4 oj[ATT_PVN][ATT_JB];
#pragma unroll
        for (int i = 0; i < ATT_PVN; i++)
#pragma unroll
            for (int u = 0; u < ATT_JB; u++) {
                volatile global const float *q = pj[i] + (size_t)min(j0 + u, P - 1) * (hd + 2);
                oj[i][u] = (float4)(q[dj[i]], q[dj[i] + 1], q[dj[i] + 2], q[dj[i] + 3]), mj[i][u] = q[hd],
                lj[i][u] = q[hd + 1];
            }
#pragma unroll
        for (int i = 0; i < ATT_PVN; i++) {
            float Mn = M[i];
#pragma unroll
            for (int u = 0; u < ATT_JB; u++)
                if (j0 + u < P) Mn = fmax(Mn, mj[i][u]);
            float r = Mn == -INFINITY ? 1.0f : exp(M[i] - Mn); /* (M -inf, Mn finite: 0) */
            acc[i] *= r, den[i] *= r, M[i] = Mn;
#pragma unroll
            for (int u = 0; u < ATT_JB; u++) {
                float w = j0 + u < P && mj[i][u] > -INFINITY ? exp(mj[i][u] - Mn) : 0.0f;
                acc[i] = fma((float4)(w), oj[i][u], acc[i]);
                den[i] = fma(w, lj[i][u], den[i]);
            }
        }
    }
#pragma unroll
    for (int i = 0; i < ATT_PVN; i++) {
        int e = lid + ATT_DW * i, v = e / n4, d4 = e - v * n4;
        if (v >= nq) break;
        size_t row = KN(dat_qhead)(sp, T, t0, s, v, ng, Hq, hk * G + g0);
        vstore4(acc[i] / den[i], d4, y + yo + row * hd);
    }
#ifdef ATT_TRACE
    ATT_STAMP(7);
    if (lid == 0 && get_group_id(0) == 1 && t0 == 0)
        printf("attn_dec join (last: partition %d): merge %lu\n", pi, tr[8] - tr[7]);
#endif
}
#undef DKC
#endif

#if defined(ATT_SW) && defined(ST) && CE == 8
/* gqa_attn, part 2 for a one-row step whose row sees at most ATT_SP positions
 * (f16 caches, head_dim 32, 64 or 128): one work-group of ATT_SW work-items per
 * query head and share of its dims (below). Short contexts are where decode attention
 * is latency, not bytes: attn_dec's rounds, partitions and join were a chain of
 * dependent steps (7B, 128-256 positions: the layer 14.7 us slower than none).
 * Here the row's position and slot come as arguments, every K and V row is
 * loaded at once into registers, and what follows is the work-group's own:
 *   scores: 4 work-items per position (chunks l, l + 4, ... of its K row, 64
 *   contiguous bytes per 4 work-items), positions c = lid / 4 + ATT_SW / 4 * r;
 *   their partial dots summed from local memory by work-item c;
 *   softmax: max and sum in two levels of 16 (no subgroups in OpenCL 1.2);
 *   P·V: V chunk f = lid + ATT_SW * i is (position f / vch, chunk f % vch), so
 *   a work-item keeps one chunk's 8 dims over its positions, and the ATT_SW /
 *   vch work-items of a chunk are summed from local memory by dim.
 * vs work-groups per head (global ATT_SW * Hq * vs) each take 1 / vs of the
 * dims of V and of the output (vch = hd / 8 / vs chunks of a row), every one
 * of them all of K: the loads a work-group waits for are what bounds it, so
 * twice the work-groups with 3/4 of the bytes each finish sooner (H100, 7B).
 * The GQA group's heads read the same K/V rows (L2 hits after the first);
 * nothing of the split kernels' partials, counters or join. */
#define A1_KPASS (4 * ATT_SP / ATT_SW)      /* K: positions ATT_SW / 4 at a time */
#define A1_DKC (ATT_HD / 32)                /* K: 16-byte chunks per work-item per position */
#define A1_VN (ATT_SP * ATT_HD / 8 / ATT_SW) /* V: chunks per work-item at head_dim ATT_HD */
#define A1_LV (ATT_SP / 16)                 /* softmax: partial maxima and sums */
#ifdef ATT_TRACE
#define A1_STAMP(i) do { if (lid == 0) { ulong c_; asm volatile("mov.u64 %0, %%clock64;" : "=l"(c_)); tr[i] = c_; } } while (0)
#else
#define A1_STAMP(i) do {} while (0)
#endif
kernel __attribute__((reqd_work_group_size(ATT_SW, 1, 1)))
void KN(attn_dec1)(global float *y, ulong yo, global const float *q, ulong qo, global const ET *kc, ulong kco,
                   global const ET *vc, ulong vco, int pos, int s, int Hq, int Hkv, int C, int hd, float scale, int vs)
{
    local float part[ATT_SW * 8 > ATT_SP * 4 ? ATT_SW * 8 : ATT_SP * 4]; /* K partial dots [position][4],
                                                                          then P·V partials [ATT_SW / vch][hd / vs] */
    local float sc[ATT_SP], red[2 * A1_LV];
    /* vs work-groups per head, each the dims [vp hd / vs, (vp + 1) hd / vs) of its output: vch V chunks a position */
    int lid = get_local_id(0), h = get_group_id(0) / vs, vp = get_group_id(0) % vs, L = pos + 1, nch = hd / 8,
        vch = nch / vs, l = lid % 4;
#ifdef ATT_TRACE
    ulong tr[6];
#endif
    A1_STAMP(0);
    size_t base = ((size_t)s * Hkv + h / (Hq / Hkv)) * C * hd;
    global const uint4 *kb = (global const uint4 *)(kc + kco + base), *vb = (global const uint4 *)(vc + vco + base);
    global const float *qh = q + qo + (size_t)h * hd;
    float4 qv[2 * A1_DKC];
#pragma unroll
    for (int i = 0; i < A1_DKC; i++)
        if (l + 4 * i < nch) qv[2 * i] = vload4(2 * (l + 4 * i), qh), qv[2 * i + 1] = vload4(2 * (l + 4 * i) + 1, qh);
    uint4 kr[A1_KPASS][A1_DKC], vr[A1_VN];
#pragma unroll
    for (int r = 0; r < A1_KPASS; r++) {
        int c = lid / 4 + ATT_SW / 4 * r;
#pragma unroll
        for (int i = 0; i < A1_DKC; i++) kr[r][i] = c < L && l + 4 * i < nch ? kb[c * nch + l + 4 * i] : (uint4)(0u);
    }
#pragma unroll
    for (int i = 0; i < A1_VN; i++) {
        int f = lid + ATT_SW * i;
        vr[i] = f < L * vch ? vb[f / vch * nch + vp * vch + f % vch] : (uint4)(0u);
    }
#pragma unroll
    for (int r = 0; r < A1_KPASS; r++) {
        float4 a = (float4)(0.0f), kf[2];
#pragma unroll
        for (int i = 0; i < A1_DKC; i++) {
            if (l + 4 * i >= nch) continue;
            WIDEN16(kf, 0, kr[r][i]);
            a = fma(qv[2 * i], kf[0], a);
            a = fma(qv[2 * i + 1], kf[1], a);
        }
        part[(lid / 4 + ATT_SW / 4 * r) * 4 + l] = (a.x + a.y) + (a.z + a.w);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    A1_STAMP(1);
    float sv = -INFINITY;
    if (lid < ATT_SP) {
        float4 d = vload4(lid, part);
        sv = lid < L ? ((d.x + d.y) + (d.z + d.w)) * scale : -INFINITY;
        sc[lid] = sv;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid < A1_LV) {
        float m = -INFINITY;
        for (int j = 0; j < 16; j++) m = fmax(m, sc[16 * lid + j]);
        red[lid] = m;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    float M = -INFINITY;
    for (int j = 0; j < A1_LV; j++) M = fmax(M, red[j]);
    if (lid < ATT_SP) sc[lid] = lid < L ? exp(sv - M) : 0.0f; /* (position 0 is always in: M is finite) */
    barrier(CLK_LOCAL_MEM_FENCE);
    A1_STAMP(2);
    if (lid < A1_LV) {
        float z = 0.0f;
        for (int j = 0; j < 16; j++) z += sc[16 * lid + j];
        red[A1_LV + lid] = z;
    }
    float4 o0 = (float4)(0.0f), o1 = (float4)(0.0f), vf[2];
#pragma unroll
    for (int i = 0; i < A1_VN; i++) {
        if (i * ATT_SW >= ATT_SP * vch) break; /* (ATT_SP positions) */
        float p = sc[(lid + ATT_SW * i) / vch]; /* zero past L, as the chunk */
        WIDEN16(vf, 0, vr[i]);
        o0 = fma((float4)(p), vf[0], o0);
        o1 = fma((float4)(p), vf[1], o1);
    }
    vstore4(o0, 2 * lid, part); /* = [lid / vch][8 (lid % vch) ..], hd / vs = 8 vch */
    vstore4(o1, 2 * lid + 1, part);
    barrier(CLK_LOCAL_MEM_FENCE);
    A1_STAMP(3);
    if (lid < 8 * vch) {
        float a = 0.0f, z = 0.0f;
        for (int j = 0; j < ATT_SW / vch; j++) a += part[j * 8 * vch + lid];
        for (int j = 0; j < A1_LV; j++) z += red[A1_LV + j];
        y[yo + (size_t)h * hd + vp * 8 * vch + lid] = a / z;
    }
#ifdef ATT_TRACE
    A1_STAMP(4);
    if (lid == 0 && h == 1)
        printf("attn_dec1 L %d: loads+scores %lu softmax %lu pv %lu out %lu\n", L, tr[1] - tr[0], tr[2] - tr[1],
               tr[3] - tr[2], tr[4] - tr[3]);
#endif
}
#undef A1_KPASS
#undef A1_DKC
#undef A1_VN
#undef A1_LV
#undef A1_STAMP
#endif

#ifdef ATT_TW
/* r[i]: float4 e = lid + ATT_TW * i of the n positions from c0 (a tile is
 * contiguous in the cache), zero beyond; fj[i] = e / (hd / 4), its position.
 * att_stage (common.cl) stores it. */
INL void KN(att_fetch)(float4 *r, global const ET *b, int c0, int n, int hd, const int *fj)
{
    b += (size_t)c0 * hd + 4 * get_local_id(0);
#pragma unroll
    for (int i = 0; i < ATT_LD4; i++) r[i] = fj[i] < n ? LD4(b, 4 * ATT_TW * i) : (float4)(0.0f);
}

/* gqa_attn, part 2 for prefill (more than GEMV_MAXT rows): the tokens in
 * blocks of ATT_BQ, one work-group of ATT_TW per (query head, block);
 * global (ATT_TW * Hq, ceil(T / ATT_BQ)), the last block (in a prompt, the
 * longest rows) first. The block's q rows stay in local memory; the cache
 * positions of a slot go by in tiles of ATT_BK, each staged once in local
 * memory as f32 and shared by the block's rows:
 *   K tile -> scores S = q·k · scale, [key][row] in local memory (a work-item
 *   takes 2 rows x ATT_QC keys, four float4 accumulators per score), masked
 *   to -inf beyond the row's position or outside its slot;
 *   the online softmax: one work-item per row keeps the row's max m and sum
 *   l in registers, turns the tile's scores into e^(s - m') and leaves the
 *   rescale e^(m - m') of the row for the others;
 *   V tile -> o = o · rescale + P·V (a work-item takes 4 rows x ATT_PV4
 *   float4 of head dims, interleaved).
 * Each tile's global loads go to registers a phase ahead (V during the
 * scores, the next K during P·V). Rows of a block may belong to several
 * slots (a batch of sequences): the block runs once per slot among its rows,
 * the other slots' rows masked, and each pass covers the positions up to the
 * largest of its rows (tiles beyond every row's position are skipped). */
kernel __attribute__((reqd_work_group_size(ATT_TW, 1, 1)))
void KN(attn_tile)(global float *y, ulong yo, global const float *q, ulong qo, global const ET *kc, ulong kco,
                   global const ET *vc, ulong vco, global const int *ps, int seq_off, int T, int Hq, int Hkv, int C,
                   int hd, float scale)
{
    local float4 qs4[ATT_BQ * (ATT_HD + 4) / 4], kv4[ATT_BK * (ATT_HD + 4) / 4], sp4[ATT_BK * ATT_SL / 4];
    local float alpha[ATT_BQ], lsum[ATT_BQ];
    local int rpos[ATT_BQ], rseq[ATT_BQ];
    local float *sp = (local float *)sp4;
    int lid = get_local_id(0), h = get_group_id(0), hk = h / (Hq / Hkv);
    int t0 = (get_num_groups(1) - 1 - get_group_id(1)) * ATT_BQ;
    int n4 = hd / 4, ld4 = n4 + 1; /* rows of qs4, kv4: float4 rows 4 banks apart */
    if (lid < ATT_BQ) {            /* the rows' positions and slots; -1: no row (past T) */
        int t = t0 + lid, p = t < T ? ps[t] : -1, s = t < T ? ps[seq_off + t] : -1;
        bool ok = p >= 0 && p < C && s >= 0; /* the host validated the step */
        rpos[lid] = ok ? p : -1;
        rseq[lid] = ok ? s : -1;
    }
    for (int e = lid; e < ATT_BQ * n4; e += ATT_TW) {
        int r = e / n4, d4 = e - r * n4, t = t0 + r;
        qs4[r * ld4 + d4] = t < T ? vload4(d4, q + qo + ((size_t)t * Hq + h) * hd) : (float4)(0.0f);
    }
    barrier(CLK_LOCAL_MEM_FENCE);

    int rp = lid / ATT_KG, kg = lid % ATT_KG; /* scores: rows rp, rp + ATT_RH; keys kg + ATT_KG * i */
    int rq = lid / ATT_DL, dl = lid % ATT_DL; /* P·V: rows 4 rq .. 4 rq + 3; float4 dl + ATT_DL * i */
    float m = -INFINITY, l = 0.0f;            /* row lid's softmax state (lid < ATT_BQ) */
    float4 o[4][ATT_PV4], rk[ATT_LD4];
    int fj[ATT_LD4]; /* the tile position of each float4 this work-item fetches */
    for (int i = 0; i < ATT_LD4; i++) fj[i] = (lid + ATT_TW * i) / n4;
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < ATT_PV4; i++) o[r][i] = (float4)(0.0f);
    for (int sprev = -1;;) { /* the block's slots in increasing order */
        int sc = INT_MAX, L = 0;
        for (int r = 0; r < ATT_BQ; r++)
            if (rseq[r] > sprev) sc = min(sc, rseq[r]);
        if (sc == INT_MAX) break;
        for (int r = 0; r < ATT_BQ; r++)
            if (rseq[r] == sc) L = max(L, rpos[r] + 1);
        int lim0 = rseq[rp] == sc ? rpos[rp] : -1, lim1 = rseq[rp + ATT_RH] == sc ? rpos[rp + ATT_RH] : -1;
        size_t base = ((size_t)sc * Hkv + hk) * C * hd;
        global const ET *kb = kc + kco + base, *vb = vc + vco + base;
        KN(att_fetch)(rk, kb, 0, min(L, ATT_BK), hd, fj);
        for (int c0 = 0; c0 < L; c0 += ATT_BK) {
            int n = min(ATT_BK, L - c0);
            barrier(CLK_LOCAL_MEM_FENCE); /* the last P·V is done with kv4 */
            att_stage(kv4, rk, fj);
            barrier(CLK_LOCAL_MEM_FENCE);
            KN(att_fetch)(rk, vb, c0, n, hd, fj);
            float4 a0[ATT_QC], a1[ATT_QC];
#pragma unroll
            for (int i = 0; i < ATT_QC; i++) a0[i] = a1[i] = (float4)(0.0f);
            for (int d4 = 0; d4 < n4; d4++) {
                float4 q0 = qs4[rp * ld4 + d4], q1 = qs4[(rp + ATT_RH) * ld4 + d4];
#pragma unroll
                for (int i = 0; i < ATT_QC; i++) {
                    float4 k4 = kv4[(kg + ATT_KG * i) * ld4 + d4];
                    a0[i] = fma(q0, k4, a0[i]);
                    a1[i] = fma(q1, k4, a1[i]);
                }
            }
#pragma unroll
            for (int i = 0; i < ATT_QC; i++) {
                int j = kg + ATT_KG * i, c = c0 + j;
                float s0 = (a0[i].x + a0[i].y) + (a0[i].z + a0[i].w), s1 = (a1[i].x + a1[i].y) + (a1[i].z + a1[i].w);
                sp[j * ATT_SL + rp] = c <= lim0 ? s0 * scale : -INFINITY;
                sp[j * ATT_SL + rp + ATT_RH] = c <= lim1 ? s1 * scale : -INFINITY;
            }
            barrier(CLK_LOCAL_MEM_FENCE); /* the scores are complete, kv4 free */
            att_stage(kv4, rk, fj);
            if (lid < ATT_BQ) { /* the online softmax of row lid */
                float mt = -INFINITY;
                for (int j = 0; j < n; j++) mt = fmax(mt, sp[j * ATT_SL + lid]);
                float mn = fmax(m, mt), a = 1.0f, sum = 0.0f;
                if (mn > -INFINITY) { /* else no position of this row yet: nothing changes */
                    a = exp(m - mn);  /* 0 on the row's first positions */
                    for (int j = 0; j < n; j++) {
                        float p = exp(sp[j * ATT_SL + lid] - mn);
                        sp[j * ATT_SL + lid] = p;
                        sum += p;
                    }
                } else {
                    for (int j = 0; j < n; j++) sp[j * ATT_SL + lid] = 0.0f;
                }
                l = l * a + sum;
                m = mn;
                alpha[lid] = a;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            if (c0 + ATT_BK < L) KN(att_fetch)(rk, kb, c0 + ATT_BK, min(ATT_BK, L - c0 - ATT_BK), hd, fj);
            float4 al = vload4(rq, alpha);
#pragma unroll
            for (int i = 0; i < ATT_PV4; i++) {
                o[0][i] *= al.x;
                o[1][i] *= al.y;
                o[2][i] *= al.z;
                o[3][i] *= al.w;
            }
            for (int j = 0; j < n; j++) {
                float4 p = sp4[j * (ATT_SL / 4) + rq];
#pragma unroll
                for (int i = 0; i < ATT_PV4; i++) {
                    int d4 = dl + ATT_DL * i;
                    if (d4 < n4) {
                        float4 v4 = kv4[j * ld4 + d4];
                        o[0][i] = fma(p.x, v4, o[0][i]);
                        o[1][i] = fma(p.y, v4, o[1][i]);
                        o[2][i] = fma(p.z, v4, o[2][i]);
                        o[3][i] = fma(p.w, v4, o[3][i]);
                    }
                }
            }
        }
        sprev = sc;
    }
    if (lid < ATT_BQ) lsum[lid] = l;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int r = 0; r < 4; r++) {
        int t = t0 + 4 * rq + r;
        float inv = 1.0f / lsum[4 * rq + r]; /* a row the host should have refused: l = 0, NaN */
        for (int i = 0; i < ATT_PV4; i++) {
            int d4 = dl + ATT_DL * i;
            if (t < T && d4 < n4) vstore4(o[r][i] * inv, d4, y + yo + ((size_t)t * Hq + h) * hd);
        }
    }
}
#endif
#endif
