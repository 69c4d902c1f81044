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
 * With AWQ_TC defined (awq_gemv_tc_<NT>, awq_gemv_tc_norm_<NT>: a program of their
 * own, built where the device has the tensor cores, -DLOOM_MMA on NVIDIA with a
 * register cap, -DLOOM_MMA_EMU in tests; ocl_program.c) the sums run on mma.sync
 * instead (see below); the host takes those where a launch has a compute unit's
 * worth of 16-column tiles, since their work-groups are a fixed 16 or 32 columns
 * wide, and launches no more work-groups than stay resident, each walking tiles.
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

/* Weight m (returned) and column *n of column c (0 .. WX - 1) of work-group wg:
 * mode 0 the weights' columns side by side, 1 gate (c < WX/2) and up at the
 * same n, 2 RoPE pairs: WX/2 columns from each half of one head. */
INL int awq_col(int mode, int c, int wg, int WX, int N0, int N1, int hd, int *n)
{
    const int H = WX / 2;
    if (mode == 1) {
        int m = c >= H;
        *n = wg * H + c - m * H;
        return m;
    }
    if (mode == 2) {
        int b0n = N0 / WX, b1n = N1 / WX, bph = hd / WX;
        int m = wg < b0n ? 0 : wg < b0n + b1n ? 1 : 2;
        int wl = wg - (m == 0 ? 0 : m == 1 ? b0n : b0n + b1n), up = c >= H;
        *n = (wl / bph) * hd + (wl % bph) * H + c - up * H + up * (hd / 2);
        return m;
    }
    int nc = wg * WX + c, m = nc < N0 ? 0 : nc < N0 + N1 ? 1 : 2;
    *n = nc - (m == 0 ? 0 : m == 1 ? N0 : N0 + N1);
    return m;
}
#define AWQ_SEL(m, a, b, c) ((m) == 0 ? (a) : (m) == 1 ? (b) : (c))
/* The tensors (awq.cl awq_args): x, then per weight m its output, weight and bias,
 * then the epilogue's: the norm's weight and output, the residual, RoPE's table, the
 * KV caches, the step's positions and slots, the f16 rows between GEMVs: each from the
 * work-group's table of their buffers, ptab (see the kernel). */
#define AWQ_X       ((global const float *)ptab[0])
#define AWQ_Y(m)    ((global float *)AWQ_SEL(m, ptab[1], ptab[2], ptab[3]))
#define AWQ_W(m)    ((global const uint *)AWQ_SEL(m, ptab[4], ptab[5], ptab[6]))
#define AWQ_B(m)    ((global const uchar *)AWQ_SEL(m, ptab[7], ptab[8], ptab[9]))
#define AWQ_NW      ((global const uchar *)ptab[10])
#define AWQ_NY      ((global float *)ptab[11])
#define AWQ_R       ((global const float *)ptab[12])
#define AWQ_CS      ((global const float *)ptab[13])
#define AWQ_KC      ptab[14]
#define AWQ_VC      ptab[15]
#define AWQ_PS      ((global const int *)ptab[16])
#define AWQ_XH      ((global ushort *)ptab[17])
#define AWQ_NBUF    18
typedef global uchar *awq_gptr;
#define AWQ_BIAS(m, n) ld_bias(AWQ_B(m), AWQ_SEL(m, bo0, bo1, bo2), AWQ_SEL(m, bdt0, bdt1, bdt2), n)

/* The tensor-core variants (AWQ_TC): halves per row of x staged (CG groups of 128; the
 * 64-byte pad puts rows g and g + 1, read by one quarter-warp, in different banks) ... */
#define AWQ_TC_LDX(CG) ((CG) * 128 + 32)
/* ... local floats: the rows' sums (8 x 32), then each warp's 16 x 8 block of sums */
#define AWQ_TC_RED (GEMV_MAXT * 32 + 4 * GV_WG)
#ifdef LOOM_MMA_EMU
#define AWQ_TC_SCR (emu + warp * TC_EMU) /* tc_mma's scratch for this warp */
#else
#define AWQ_TC_SCR ((local float *)0)
#endif
#endif

#ifdef AWQ_NORM
#define XSP local
#define AWQ_NAME awq_gemv_norm
#define AWQ_TC_NAME awq_gemv_tc_norm
#else
#define XSP global
#define AWQ_NAME awq_gemv
#define AWQ_TC_NAME awq_gemv_tc
#endif
#ifdef AWQ_TC
#undef AWQ_NAME
#define AWQ_NAME AWQ_TC_NAME
#endif

kernel void CAT(AWQ_NAME, NT)(AWQ_PARAMS, local float4 *xs)
{
#ifdef AWQ_TC
    local float red[AWQ_TC_RED];
#ifdef LOOM_MMA_EMU
    local float emu[GV_WG / 32 * TC_EMU];
#endif
#ifdef AWQ_NORM
    local float ssr[NT * GV_WG + GEMV_MAXT * 32], inv[GEMV_MAXT];
#endif
#else
    local float red[NT * GV_WG];
#endif
    AWQ_UNPACK_SIZES;
    /* the epilogue's (awq.cl awq_args): the norm's weight and output, the residual, RoPE's
     * table, the KV caches and the step's positions and slots, the f16 rows between GEMVs */
    const ulong nwo = a.nwo, nyo = a.nyo, ro = a.ro, cso = a.cso, kco = a.kco, vco = a.vco;
    const int mode = a.mode, nwdt = a.nwdt, ny_on = a.ny_on, r_on = a.r_on, hd = a.hd, rope_mask = a.rope_mask,
              kvdt = a.kvdt, km = a.km, vm = a.vm, seq_off = a.seq_off, C = a.C, Sl = a.Sl, xcg = a.xcg, xhm = a.xhm;
    const float eps = a.eps;
    const int lx = get_local_id(0), s = get_local_id(1), WX = get_local_size(0), S = get_local_size(1);
    const int G = K / 128, H = WX / 2;
    /* Each tensor's buffer, selected from the arguments once into local memory and loaded
     * where it is used: selected there, the compiler hoists the selects out of the tile
     * loop and holds their pointers in registers across it (14 more, past the cap that
     * ocl_program.c sets). Loads from local memory do not move across the loop's barriers. */
    local awq_gptr ptab[AWQ_NBUF];
    if (lx == 0 && s == 0) {
        ptab[0] = AWQ_MEM(a.mx);
        for (int m = 0; m < 3; m++)
            ptab[1 + m] = AWQ_MEM(a.my[m]), ptab[4 + m] = AWQ_MEM(a.mw[m]), ptab[7 + m] = AWQ_MEM(a.mb[m]);
        ptab[10] = AWQ_MEM(a.mnw), ptab[11] = AWQ_MEM(a.mny), ptab[12] = AWQ_MEM(a.mr), ptab[13] = AWQ_MEM(a.mcs);
        ptab[14] = AWQ_MEM(a.mkc), ptab[15] = AWQ_MEM(a.mvc), ptab[16] = AWQ_MEM(a.mps), ptab[17] = AWQ_MEM(a.mxh);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
#ifdef AWQ_TC
    /* The work-groups walk the launch's tiles (WX columns each) in steps of their number: the
     * host launches no more than stay resident together (ocl_exec.c tc_groups), so x, staged
     * once where it takes one chunk, serves all of a work-group's tiles rather than being
     * staged again by each wave of work-groups. */
    const int tiles = mode == 1 ? (N0 + H - 1) / H : (N0 + N1 + N2 + WX - 1) / WX, wstep = get_num_groups(0);
    /* Tensor cores (WX = 16 or 32, the host's geometry): warp w multiplies the 16 columns of tile
     * w % TB as the A operand (16 x 16 per mma) with x as B (8 tokens: rows >= T repeat row
     * T - 1, their sums unused), over the groups sl, sl + SL, ... (sl = w / TB). Lane 4g + q
     * loads the 16-byte words of columns g and g + 8 at k = 32 (4 gi + q) .. + 31 (its four
     * k-slots of 8 mma steps: nibbles i and i + 4 of a word are one f16 pair, by the
     * exponent trick of cu_awq_frag in the CUDA backend), and reads x staged in local memory
     * as f16 in the matching order. Groups go by in chunks of xcg (a multiple of SL), the x
     * of a chunk staged at its start. */
    const int tid = s * WX + lx, warp = tid / 32, lane = tid % 32, g = lane >> 2, q = lane & 3;
    const int W = WX * S; /* work-items */
    const int TB = WX / 16, SL = W / 32 / TB, tb = warp % TB, sl = warp / TB, CG = xcg;
    /* Tile wt's columns for this lane (tb * 16 + g and + 8) and the first group's loads. They are
     * issued for the next tile before this one's epilogue, so that its barriers and stores
     * overlap them rather than the loads starting behind them. */
    int NA, NB;
    bool okA, okB;
    global const uint4 *qA, *qB;
    global const uint *mtA, *mtB;
    uint4 ua, ub;
    uint ma, mb;
    /* group gi's words and meta of both columns (zeros past K or N: they add nothing) */
#define AWQ_TC_LOAD(gi, ua, ub, ma, mb)                                                 \
        {                                                                                   \
            ua = (uint4)(0u), ub = ua, ma = 0u, mb = 0u;                                    \
            if ((gi) < G) {                                                                 \
                if (okA) ua = qA[(size_t)(4 * (gi)) * NA], ma = mtA[(size_t)(gi) * NA];     \
                if (okB) ub = qB[(size_t)(4 * (gi)) * NB], mb = mtB[(size_t)(gi) * NB];     \
            }                                                                               \
        }
#define AWQ_TC_TILE(wt)                                                                                     \
    {                                                                                                       \
        int nA, nB, mA = awq_col(mode, tb * 16 + g, wt, WX, N0, N1, hd, &nA),                               \
                    mB = awq_col(mode, tb * 16 + g + 8, wt, WX, N0, N1, hd, &nB);                           \
        NA = AWQ_SEL(mA, N0, N1, N2), NB = AWQ_SEL(mB, N0, N1, N2), okA = nA < NA, okB = nB < NB;           \
        global const uint *wA = AWQ_W(mA) + AWQ_SEL(mA, wo0, wo1, wo2), *wB = AWQ_W(mB) + AWQ_SEL(mB, wo0, wo1, wo2); \
        qA = (global const uint4 *)wA + (okA ? nA + (size_t)q * NA : 0);                                    \
        qB = (global const uint4 *)wB + (okB ? nB + (size_t)q * NB : 0);                                    \
        mtA = AWQ_META(wA, 0, K, NA) + (okA ? nA : 0), mtB = AWQ_META(wB, 0, K, NB) + (okB ? nB : 0);       \
        AWQ_TC_LOAD(sl, ua, ub, ma, mb)                                                                     \
    }
    if (get_group_id(0) < tiles) AWQ_TC_TILE(get_group_id(0)) /* in flight while x is staged */
    for (int wg = get_group_id(0); wg < tiles; wg += wstep) {
#define AWQ_NEXT continue
#else
    {
        const int wg = get_group_id(0);
#define AWQ_NEXT return
#endif
        /* which weight m and column n of it this work-item's column lx is */
        int n, m = awq_col(mode, lx, wg, WX, N0, N1, hd, &n);
        const int N = AWQ_SEL(m, N0, N1, N2);
#ifdef AWQ_TC
#if defined(AWQ_TRACE) && defined(LOOM_MMA)
        /* phase clocks of every 37th work-group (LOOM_OPENCL_BUILD_OPTIONS=-DAWQ_TRACE, NVIDIA;
         * bench/opencl/awq-trace.py sums them up): staging x, the groups, the sums and epilogue */
        ulong tr[4], gt0;
#define AWQ_STAMP(i) do { if (tid == 0) { ulong c_; asm volatile("mov.u64 %0, %%clock64;" : "=l"(c_)); tr[i] = c_; } } while (0)
        if (tid == 0) asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(gt0));
        AWQ_STAMP(0);
#else
#define AWQ_STAMP(i) do {} while (0)
#endif
        int gi = sl; /* (the tile's first group: loaded before the epilogue of the tile before) */
#else
        global const uint *w = AWQ_W(m) + AWQ_SEL(m, wo0, wo1, wo2);
        global const uint4 *q = (global const uint4 *)w + n;
        global const uint *meta = AWQ_META(w, 0, K, N) + n;
        int g = s * G / S, g1 = (s + 1) * G / S;
        const bool live = n < N && g < g1;
        size_t N4 = (size_t)N;
        uint4 c0 = (uint4)(0u), c1 = c0, c2 = c0, c3 = c0;
        uint cm = 0u;
        if (live) { /* the first group's loads, in flight during the norm below */
            c0 = q[(size_t)(4 * g) * N4], c1 = q[(size_t)(4 * g + 1) * N4], c2 = q[(size_t)(4 * g + 2) * N4];
            c3 = q[(size_t)(4 * g + 3) * N4], cm = meta[(size_t)g * N4];
        }
#endif
#if defined(AWQ_NORM) && !defined(AWQ_TC) /* (the tensor cores' variant sums x² while it stages x) */
        float inv[NT]; /* 1 / rms of each row */
        {
            const int f = s * WX + lx, W = WX * S;
            float ss[NT];
#pragma unroll
            for (int t = 0; t < NT; t++) {
                ss[t] = 0.0f;
                if (t < T)
                    for (int k = f; k < K; k += W) {
                        float v = AWQ_X[xo + (size_t)t * K + k];
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
#pragma unroll
            for (int t = 0; t < NT; t++) inv[t] = 1.0f / sqrt(red[t * W] / (float)K + eps);
            /* the normalised rows, f32, in local memory */
            local float *xf = (local float *)xs;
            for (int t = 0; t < T; t++)
                for (int k = f; k < K; k += W) {
                    float v = AWQ_X[xo + (size_t)t * K + k] * inv[t] * ld_bias(AWQ_NW, nwo, nwdt, k);
                    xf[t * K + k] = v;
                    if (ny_on && wg == 0) AWQ_NY[nyo + (size_t)t * K + k] = v;
                }
            barrier(CLK_LOCAL_MEM_FENCE);
        }
#endif
#ifdef AWQ_TC
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        /* x is staged for every tile where it takes several chunks, else for the first only */
        const bool stage = CG < G || wg == get_group_id(0);
#ifdef AWQ_NORM
        /* With the rmsnorm on load x * w is staged, Σx² summed on the way (this work-item's share
         * in ss, kept in ssr for the tiles that do not stage), the rows' 1 / rms applied to the
         * sums at the end (Σ W (x inv w) = inv Σ W (x w)). */
        float ss[NT];
#pragma unroll
        for (int t = 0; t < NT; t++) ss[t] = 0.0f;
#endif
        local ushort *xh = (local ushort *)xs;
        const int LDX = AWQ_TC_LDX(CG), xrow = min(g, T - 1) * LDX + 8 * q;
        for (int gc0 = 0; gc0 < G; gc0 += CG) {
            const int gcn = min(CG, G - gc0);
            barrier(CLK_LOCAL_MEM_FENCE); /* the last chunk (or tile's sums) read by every warp */
            if (stage) {
                /* stage x's rows for groups gc0 .. gc0 + gcn - 1: word wd of a row is group wd / 16,
                 * k = 128 group + 32 qq + 8 j (slot wd % 16 = 4 j + qq), its halves in the order
                 * k + 0, 4, 1, 5, 2, 6, 3, 7 (the pairs of the weight's nibbles i, i + 4) */
                const int nw = gcn * 16;
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    if (t >= T) break;
                    local uint4 *xd = (local uint4 *)xh + t * LDX / 8;
#ifndef AWQ_NORM
                    if (xhm & 2) { /* the rows as the GEMV before left them: f16, in this order */
                        /* four words' loads in flight per work-item: copied one at a time, each
                         * waited a global round trip (down's 37 KB: 6.5k cycles, now 2.6k) */
                        global const uint4 *src = (global const uint4 *)(AWQ_XH + (size_t)t * K) + gc0 * 16;
                        int wd = tid;
                        for (; wd + 3 * W < nw; wd += 4 * W) {
                            const uint4 a0 = src[wd], a1 = src[wd + W], a2 = src[wd + 2 * W], a3 = src[wd + 3 * W];
                            xd[wd] = a0, xd[wd + W] = a1, xd[wd + 2 * W] = a2, xd[wd + 3 * W] = a3;
                        }
                        for (; wd < nw; wd += W) xd[wd] = src[wd];
                        continue;
                    }
#endif
                    for (int wd = tid; wd < nw; wd += W) {
                        const int j = wd % 16 / 4, qq = wd % 4, k = (gc0 + wd / 16) * 128 + 32 * qq + 8 * j;
                        global const float *xp = AWQ_X + xo + (size_t)t * K + k;
                        float4 lo = vload4(0, xp), hi = vload4(1, xp);
#ifdef AWQ_NORM
                        ss[t] += dot(lo, lo) + dot(hi, hi);
                        const float8 wn = ld8_dt(AWQ_NW, nwo, nwdt, k);
                        lo *= wn.lo, hi *= wn.hi;
#endif
                        vstore_half8_rte((float8)(lo.x, hi.x, lo.y, hi.y, lo.z, hi.z, lo.w, hi.w), wd, (local half *)xd);
                    }
                }
                barrier(CLK_LOCAL_MEM_FENCE);
            }
            if (gc0 == 0) AWQ_STAMP(1);
            for (int i = 0; i < (gcn + SL - 1) / SL; i++, gi += SL) { /* (a full chunk: CG / SL) */
                uint4 na, nb;
                uint nma, nmb;
                AWQ_TC_LOAD(gi + SL, na, nb, nma, nmb) /* the next group's, in flight meanwhile */
                const uint zqA = (ma >> 16) & 0xffu, zqB = (mb >> 16) & 0xffu; /* the zero points */
                const uint zaA = (0x6400u + zqA) * 0x10001u, zbA = (0xD400u + 16u * zqA) * 0x10001u;
                const uint zaB = (0x6400u + zqB) * 0x10001u, zbB = (0xD400u + 16u * zqB) * 0x10001u;
                /* a group past K reads a live group's x (finite) and adds 0 */
                local const uint4 *xv = (local const uint4 *)(xh + xrow + min(gi - gc0, gcn - 1) * 128);
                const uint wa[4] = {ua.x, ua.y, ua.z, ua.w}, wb[4] = {ub.x, ub.y, ub.z, ub.w};
                float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const uint4 xb = xv[4 * j]; /* halves k + 0, 4 | 1, 5 | 2, 6 | 3, 7 of word j */
                    const uint sa = wa[j] >> 8, sb = wb[j] >> 8;
                    /* (1024 + q) - (1024 + z); (1024 + 16 q) / 16 - (64 + z): q - z exactly */
                    tc_mma(d, tc_hsub2(tc_nib(wa[j], 0x000F000Fu), zaA), tc_hsub2(tc_nib(wb[j], 0x000F000Fu), zaB),
                           tc_hfma2(tc_nib(wa[j], 0x00F000F0u), 0x2C002C00u, zbA),
                           tc_hfma2(tc_nib(wb[j], 0x00F000F0u), 0x2C002C00u, zbB), xb.x, xb.y, AWQ_TC_SCR, lane);
                    tc_mma(d, tc_hsub2(tc_nib(sa, 0x000F000Fu), zaA), tc_hsub2(tc_nib(sb, 0x000F000Fu), zaB),
                           tc_hfma2(tc_nib(sa, 0x00F000F0u), 0x2C002C00u, zbA),
                           tc_hfma2(tc_nib(sb, 0x00F000F0u), 0x2C002C00u, zbB), xb.z, xb.w, AWQ_TC_SCR, lane);
                }
                const float scA = f16_lo(ma), scB = f16_lo(mb);
                acc[0] = fma(scA, d[0], acc[0]), acc[1] = fma(scA, d[1], acc[1]);
                acc[2] = fma(scB, d[2], acc[2]), acc[3] = fma(scB, d[3], acc[3]);
                ua = na, ub = nb, ma = nma, mb = nmb;
            }
        }
        AWQ_STAMP(2);
        if (wg + wstep < tiles) AWQ_TC_TILE(wg + wstep)
        /* each warp's 16 x 8 sums (tokens 2q, 2q + 1 of columns g, g + 8), then per column
         * and row the sum over the tile's slices in slice order, plus the bias */
        local float *part = red + GEMV_MAXT * 32;
        part[(warp * 8 + 2 * q) * 16 + g] = acc[0], part[(warp * 8 + 2 * q + 1) * 16 + g] = acc[1];
        part[(warp * 8 + 2 * q) * 16 + g + 8] = acc[2], part[(warp * 8 + 2 * q + 1) * 16 + g + 8] = acc[3];
#ifdef AWQ_NORM
        /* Σx² of each row, whole after a work-group's first tile (that staged all of x): the
         * shares, 32 partial sums of every 32nd, then 1 / rms into inv, which the later tiles
         * reuse rather than sum again (two more barriers a tile) */
        const bool first = wg == get_group_id(0);
        if (first) {
#pragma unroll
            for (int t = 0; t < NT; t++) ssr[t * W + tid] = ss[t];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (first) {
            if (tid < T * 32) {
                float v = 0.0f;
                for (int i = tid % 32; i < W; i += 32) v += ssr[tid / 32 * W + i];
                ssr[NT * W + tid] = v;
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            if (tid < T) {
                float v = 0.0f;
                for (int i = 0; i < 32; i++) v += ssr[NT * W + tid * 32 + i];
                inv[tid] = 1.0f / sqrt(v / (float)K + eps);
            }
            barrier(CLK_LOCAL_MEM_FENCE);
            if (ny_on && wg == 0) /* the norm's output, where the graph reads it too */
                for (int t = 0; t < T; t++)
                    for (int k = tid; k < K; k += W)
                        AWQ_NY[nyo + (size_t)t * K + k] = AWQ_X[xo + (size_t)t * K + k] * inv[t] * ld_bias(AWQ_NW, nwo, nwdt, k);
        }
#define AWQ_TC_INV(t) inv[t]
#else
        barrier(CLK_LOCAL_MEM_FENCE);
#define AWQ_TC_INV(t) 1.0f
#endif
        if (tid < T * WX) {
            int t = tid / WX, c = tid % WX, cn, cm = awq_col(mode, c, wg, WX, N0, N1, hd, &cn);
            float v = 0.0f;
            for (int j = 0; j < SL; j++) v += part[((j * TB + c / 16) * 8 + t) * 16 + c % 16];
            red[t * WX + c] = v * AWQ_TC_INV(t) + (cn < AWQ_SEL(cm, N0, N1, N2) ? AWQ_BIAS(cm, cn) : 0.0f);
        }
#undef AWQ_TC_INV
        barrier(CLK_LOCAL_MEM_FENCE);
        AWQ_STAMP(3);
#if defined(AWQ_TRACE) && defined(LOOM_MMA)
        if (tid == 0 && wg % 37 == 0) {
            ulong gt1;
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(gt1));
            printf("awqtr K %d N %d wg %d gt0 %lu gt1 %lu stage %lu loop %lu red %lu\n", K, N0 + N1 + N2, wg, gt0, gt1,
                   tr[1] - tr[0], tr[2] - tr[1], tr[3] - tr[2]);
        }
#endif
#undef AWQ_STAMP
#else
        XSP const float4 *xr[NT];
#pragma unroll
        for (int t = 0; t < NT; t++)
#ifdef AWQ_NORM
            xr[t] = xs + min(t, T - 1) * (K / 4);
#else
            xr[t] = (global const float4 *)(AWQ_X + xo + (size_t)min(t, T - 1) * K);
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
        float bv = n >= N ? 0.0f : AWQ_BIAS(m, n);
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
#endif
        /* the epilogue: slice 0, rows in order; the partner lane's column in red */
        if (s != 0 || n >= N || (mode == 1 && m == 1)) AWQ_NEXT;
        global float *y = AWQ_Y(m) + AWQ_SEL(m, yo0, yo1, yo2);
        const bool rot = mode == 2 && ((rope_mask >> m) & 1), lo = lx < H;
        const int h2 = hd / 2, i = rot ? (lo ? n % hd : n % hd - h2) : 0;
        global uchar *cache = kvdt && m == km ? AWQ_KC : kvdt && m == vm ? AWQ_VC : 0;
        const ulong cacheo = m == km ? kco : vco;
        for (int t = 0; t < T; t++) {
            float v = red[t * WX + lx], o = red[t * WX + (lx ^ H)];
            if (mode == 1) {
                v = v / (1.0f + exp(-v)) * o;
            } else if (rot) {
                float c = AWQ_CS[cso + ((size_t)t * h2 + i) * 2], sn = AWQ_CS[cso + ((size_t)t * h2 + i) * 2 + 1];
                v = lo ? v * c - o * sn : v * c + o * sn;
            } else if (r_on) {
                v = AWQ_R[ro + (size_t)t * N + n] + v;
            }
            y[(size_t)t * N + n] = v;
            if (xhm & 1) /* also as the tensor-core GEMV after stages it: f16, word 16 g + 4 j + qq */
                vstore_half_rte(v, (size_t)t * N + n / 128 * 128 + (n % 32 / 8 * 4 + n % 128 / 32) * 8 +
                                       n % 4 * 2 + n % 8 / 4, (global half *)AWQ_XH);
            if (cache) {
                int p = AWQ_PS[t], sl = AWQ_PS[seq_off + t], Hkv = N / hd;
                if (p < 0 || p >= C || sl < 0 || sl >= Sl) continue; /* the host validated the step */
                size_t dst = (((size_t)sl * Hkv + n / hd) * C + p) * hd + n % hd;
                if (kvdt == 2) vstore_half_rte(v, cacheo + dst, (global half *)cache);
                else ((global float *)cache)[cacheo + dst] = v;
            }
        }
    }
}
#undef AWQ_NEXT
#undef AWQ_TC_LOAD
#undef AWQ_TC_TILE
#undef XSP
#undef AWQ_NAME
#undef AWQ_TC_NAME
