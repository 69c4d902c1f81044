/* awq_gemv.cl — matmul_awq for 1..8 rows (decode), instantiated by the host
 * once per NT = 1, 2, 4, 8 (awq_gemv_<NT>; it runs the smallest NT >= T, and
 * rows T..NT-1 recompute row T-1 without being stored), and once more per NT
 * with AWQ_NORM defined (awq_gemv_norm_<NT>: the rmsnorm before it runs on
 * load, see below). Weights: awq.cl.
 *
 * One work-item per output column n, consecutive columns along dimension 0
 * of the work-group (a warp's uint4 loads are 512 contiguous bytes), the
 * K/128 groups split over dimension 1 into S contiguous runs ("slices"; the
 * host picks S so that N * S work-items fill the device). Per group a
 * work-item loads its 4 x 16 bytes and meta word, and the next group's
 * before computing this one, so about 128 bytes per work-item are in flight.
 * x rows are float4 loads at the same address across the warp (16-byte
 * aligned: the host checks the offset).
 *
 * Dequantisation in registers, one integer op per nibble (an AND-OR: one
 * LOP3 on NVIDIA) and one shift per word: with M = 0x4B000000 (2^23),
 * as_float(M | (u & (15 << 4i))) = 2^23 + q * 16^i exactly for i <= 4 (the
 * nibble stays inside the 23-bit mantissa), and subtracting 2^23 + z * 16^i
 * (one FADD) leaves (q - z) * 16^i exactly. Nibbles 5..7 are nibbles 0..2 of
 * u >> 20. So sums are kept per power of 16 (a0..a4) and joined once per
 * group: Σ_i a_i / 16^i, times the group's scale. With the FMA and the x
 * loads that is about 3.4 instructions per weight for one row: at 3 TB/s
 * (6e12 int4 weights/s) some 20e12 of an H100's ~30e12 instructions/s.
 *
 * Slices meet in local memory, summed in slice order (deterministic), then
 * the bias.
 *
 * Up to three weights that read the same x (q, k, v; gate, up) run as one
 * launch, their columns side by side (N0 + N1 + N2; unused ones have N = 0):
 * one launch instead of three, and the small k, v matrices ride along with
 * q instead of running nearly empty. global (ceil((N0 + N1 + N2) / WX) * WX,
 * S), work-groups (WX, S), WX * S <= GV_WG. */
#ifndef AWQ_M
#define AWQ_M 0x4B000000u
/* One packed word u (k = 128 g + 8 j .. +7 of this column): 8 nibbles to
 * (q - z) * 16^i, FMAs into the per-power sums of every row. Written out per
 * word (no array of words) so that nothing depends on the compiler unrolling. */
#define AWQ_WORD(u, j)                                                                                    \
    {                                                                                                     \
        uint h_ = (u) >> 20;                                                                              \
        float v0 = as_float(((u) & 0xfu) | AWQ_M) - z0, v1 = as_float(((u) & 0xf0u) | AWQ_M) - z1,        \
              v2 = as_float(((u) & 0xf00u) | AWQ_M) - z2, v3 = as_float(((u) & 0xf000u) | AWQ_M) - z3,    \
              v4 = as_float(((u) & 0xf0000u) | AWQ_M) - z4, v5 = as_float((h_ & 0xfu) | AWQ_M) - z0,      \
              v6 = as_float((h_ & 0xf0u) | AWQ_M) - z1, v7 = as_float((h_ & 0xf00u) | AWQ_M) - z2;        \
        _Pragma("unroll") for (int t = 0; t < NT; t++) {                                                  \
            float4 xa = xr[t][xb + 2 * (j)], xc = xr[t][xb + 2 * (j) + 1];                                \
            a0[t] = fma(xa.x, v0, a0[t]);                                                                 \
            a1[t] = fma(xa.y, v1, a1[t]);                                                                 \
            a2[t] = fma(xa.z, v2, a2[t]);                                                                 \
            a3[t] = fma(xa.w, v3, a3[t]);                                                                 \
            a4[t] = fma(xc.x, v4, a4[t]);                                                                 \
            a0[t] = fma(xc.y, v5, a0[t]);                                                                 \
            a1[t] = fma(xc.z, v6, a1[t]);                                                                 \
            a2[t] = fma(xc.w, v7, a2[t]);                                                                 \
        }                                                                                                 \
    }
#endif

#ifdef AWQ_NORM
#define XSP local
#define AWQ_NAME awq_gemv_norm
#else
#define XSP global
#define AWQ_NAME awq_gemv
#endif

kernel void CAT(AWQ_NAME, NT)(global const float *x, ulong xo, int T, int K,
                               global float *y0, ulong yo0, global const uint *w0, ulong wo0, global const uchar *b0,
                               ulong bo0, int bdt0, int N0,
                               global float *y1, ulong yo1, global const uint *w1, ulong wo1, global const uchar *b1,
                               ulong bo1, int bdt1, int N1,
                               global float *y2, ulong yo2, global const uint *w2, ulong wo2, global const uchar *b2,
                               ulong bo2, int bdt2, int N2,
                               int mode,
                               global const uchar *nw, ulong nwo, int nwdt, float eps, global float *ny, ulong nyo,
                               int ny_on, local float4 *xs,
                               global const float *r, ulong ro, int r_on,
                               global const float *cs, ulong cso, int hd, int rope_mask,
                               global uchar *kc, ulong kco, global uchar *vc, ulong vco, int kvdt, int km, int vm,
                               global const int *ps, int seq_off, int C, int Sl)
{
    local float red[NT * GV_WG];
    const int lx = get_local_id(0), s = get_local_id(1), WX = get_local_size(0), S = get_local_size(1);
    const int G = K / 128, H = WX / 2, wg = get_group_id(0);
    /* which weight m and column n of it this work-item computes */
    int m, n;
    if (mode == 1) {
        m = lx >= H;
        n = wg * H + lx - m * H;
    } else if (mode == 2) {
        int b0n = N0 / WX, b1n = N1 / WX, bph = hd / WX;
        m = wg < b0n ? 0 : wg < b0n + b1n ? 1 : 2;
        int wl = wg - (m == 0 ? 0 : m == 1 ? b0n : b0n + b1n), up = lx >= H;
        n = (wl / bph) * hd + (wl % bph) * H + lx - up * H + up * (hd / 2);
    } else {
        const int nc = wg * WX + lx;
        m = nc < N0 ? 0 : nc < N0 + N1 ? 1 : 2;
        n = nc - (m == 0 ? 0 : m == 1 ? N0 : N0 + N1);
    }
    const int N = m == 0 ? N0 : m == 1 ? N1 : N2;
    global const uint *w = m == 0 ? w0 + wo0 : m == 1 ? w1 + wo1 : w2 + wo2;
    global const uint4 *q = (global const uint4 *)w + n;
    global const uint *meta = AWQ_META(w, 0, K, N) + n;
    XSP const float4 *xr[NT];
    int g = s * G / S, g1 = (s + 1) * G / S;
    const bool live = n < N && g < g1;
    size_t N4 = (size_t)N;
    uint4 c0 = (uint4)(0u), c1 = c0, c2 = c0, c3 = c0;
    uint cm = 0u;
    if (live) { /* the first group's loads, in flight during the norm below */
        c0 = q[(size_t)(4 * g) * N4], c1 = q[(size_t)(4 * g + 1) * N4], c2 = q[(size_t)(4 * g + 2) * N4];
        c3 = q[(size_t)(4 * g + 3) * N4], cm = meta[(size_t)g * N4];
    }
#ifdef AWQ_NORM
    {
        const int f = s * WX + lx, W = WX * S;
        float ss[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) {
            ss[t] = 0.0f;
            if (t < T)
                for (int k = f; k < K; k += W) {
                    float v = x[xo + (size_t)t * K + k];
                    ss[t] = fma(v, v, ss[t]);
                }
            red[t * W + f] = ss[t];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (int k = W / 2; k > 0; k >>= 1) {
            if (f < k)
#pragma unroll
                for (int t = 0; t < NT; t++) red[t * W + f] += red[t * W + f + k];
            barrier(CLK_LOCAL_MEM_FENCE);
        }
        local float *xf = (local float *)xs;
        for (int t = 0; t < T; t++) {
            float inv = 1.0f / sqrt(red[t * W] / (float)K + eps);
            for (int k = f; k < K; k += W) {
                float v = x[xo + (size_t)t * K + k] * inv * ld_bias(nw, nwo, nwdt, k);
                xf[t * K + k] = v;
                if (ny_on && wg == 0) ny[nyo + (size_t)t * K + k] = v;
            }
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#pragma unroll
    for (int t = 0; t < NT; t++) xr[t] = xs + min(t, T - 1) * (K / 4);
#else
#pragma unroll
    for (int t = 0; t < NT; t++) xr[t] = (global const float4 *)(x + xo + (size_t)min(t, T - 1) * K);
#endif
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    if (live) {
        for (; g < g1; g++) {
            uint4 p0 = c0, p1 = c1, p2 = c2, p3 = c3;
            uint pm = cm;
            if (g + 1 < g1) { /* the next group's loads, in flight while this one computes */
                size_t r = (size_t)(4 * g + 4) * N4;
                p0 = q[r], p1 = q[r + N4], p2 = q[r + 2 * N4], p3 = q[r + 3 * N4];
                pm = meta[(size_t)(g + 1) * N4];
            }
            float zf = (float)(cm >> 16);
            float z0 = 8388608.0f + zf, z1 = fma(zf, 16.0f, 8388608.0f), z2 = fma(zf, 256.0f, 8388608.0f),
                  z3 = fma(zf, 4096.0f, 8388608.0f), z4 = fma(zf, 65536.0f, 8388608.0f);
            float a0[NT], a1[NT], a2[NT], a3[NT], a4[NT];
#pragma unroll
            for (int t = 0; t < NT; t++) a0[t] = a1[t] = a2[t] = a3[t] = a4[t] = 0.0f;
            const int xb = 32 * g; /* float4 index of k = 128 g; word j covers k = 128 g + 8 j .. +7 */
            AWQ_WORD(c0.x, 0) AWQ_WORD(c0.y, 1) AWQ_WORD(c0.z, 2) AWQ_WORD(c0.w, 3)
            AWQ_WORD(c1.x, 4) AWQ_WORD(c1.y, 5) AWQ_WORD(c1.z, 6) AWQ_WORD(c1.w, 7)
            AWQ_WORD(c2.x, 8) AWQ_WORD(c2.y, 9) AWQ_WORD(c2.z, 10) AWQ_WORD(c2.w, 11)
            AWQ_WORD(c3.x, 12) AWQ_WORD(c3.y, 13) AWQ_WORD(c3.z, 14) AWQ_WORD(c3.w, 15)
            float sc = f16_lo(cm);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                float d = fma(a4[t], 0x1p-16f, a3[t] * 0x1p-12f);
                d = fma(a2[t], 0x1p-8f, d);
                d = fma(a1[t], 0x1p-4f, d);
                acc[t] = fma(sc, d + a0[t], acc[t]);
            }
            c0 = p0, c1 = p1, c2 = p2, c3 = p3, cm = pm;
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) red[(t * S + s) * WX + lx] = acc[t];
    barrier(CLK_LOCAL_MEM_FENCE);
    /* rows over the slices: the sums, plus the bias */
    float bv = n >= N ? 0.0f : m == 0 ? ld_bias(b0, bo0, bdt0, n) : m == 1 ? ld_bias(b1, bo1, bdt1, n)
                                                                         : ld_bias(b2, bo2, bdt2, n);
    float pv[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        pv[t] = 0.0f;
        if (t < T && t % S == s) {
            float v = 0.0f;
            for (int j = 0; j < S; j++) v += red[(t * S + j) * WX + lx];
            pv[t] = v + bv;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
#pragma unroll
    for (int t = 0; t < NT; t++)
        if (t < T && t % S == s) red[t * WX + lx] = pv[t];
    barrier(CLK_LOCAL_MEM_FENCE);
    /* the epilogue: slice 0, rows in order; the partner lane's column in red */
    if (s != 0 || n >= N || (mode == 1 && m == 1)) return;
    global float *y = m == 0 ? y0 + yo0 : m == 1 ? y1 + yo1 : y2 + yo2;
    const bool rot = mode == 2 && ((rope_mask >> m) & 1), lo = lx < H;
    const int h2 = hd / 2, i = rot ? (lo ? n % hd : n % hd - h2) : 0;
    global uchar *cache = kvdt && m == km ? kc : kvdt && m == vm ? vc : 0;
    const ulong cacheo = m == km ? kco : vco;
    for (int t = 0; t < T; t++) {
        float v = red[t * WX + lx], o = red[t * WX + (lx ^ H)];
        if (mode == 1) {
            v = v / (1.0f + exp(-v)) * o;
        } else if (rot) {
            float c = cs[cso + ((size_t)t * h2 + i) * 2], sn = cs[cso + ((size_t)t * h2 + i) * 2 + 1];
            v = lo ? v * c - o * sn : v * c + o * sn;
        } else if (r_on) {
            v = r[ro + (size_t)t * N + n] + v;
        }
        y[(size_t)t * N + n] = v;
        if (cache) {
            int p = ps[t], sl = ps[seq_off + t], Hkv = N / hd;
            if (p < 0 || p >= C || sl < 0 || sl >= Sl) continue; /* the host validated the step */
            size_t dst = (((size_t)sl * Hkv + n / hd) * C + p) * hd + n % hd;
            if (kvdt == 2) vstore_half_rte(v, cacheo + dst, (global half *)cache);
            else ((global float *)cache)[cacheo + dst] = v;
        }
    }
}
#undef XSP
#undef AWQ_NAME
