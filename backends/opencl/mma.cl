/* mma.cl — the tensor-core prefill GEMMs for NVIDIA's OpenCL, built only with
 * -DLOOM_MMA (ocl_program.c adds it on an NVIDIA platform; a build that fails
 * is retried without it) or -DLOOM_MMA_EMU (the same kernels with the MMA and
 * the f16 conversions in plain OpenCL C, the MMA emulated through local
 * memory, to test the tiling on any device).
 *
 * y[T,N] = x[T,K] · W + b in output tiles of ROWS x 128 columns, K in steps
 * of 32, 256 work-items: 8 warps as 2 (rows) x 4 (columns), each multiplying
 * its ROWS/2 x 32 of the tile as ROWS/32 x 4 mma.sync.m16n8k16 tiles with f32
 * accumulators. ROWS is 64 (mma_gemm_f16_t64, mma_awq_gemm_t64: the host's
 * default; ~100-112 registers, two work-groups per SM on an H100) or 128
 * (mma_gemm_f16, mma_awq_gemm: ~162-176 registers, one). x is rounded to f16;
 * the weight is f16 as stored, or AWQ as (q - z) * s rounded once to f16.
 * Work-group dimension 0 walks the row tiles (the work-groups that share a
 * weight tile run together), dimension 1 the column tiles; the host's
 * mma_geometry (ocl_exec.c) gives the launch.
 *
 * Pipeline: two local-memory stages, each the x tile (ROWS rows) then the
 * weight tile (128 columns), 64 bytes a row: 24 KiB (ROWS 64) or 32 KiB in
 * all. Each K step issues the next step's global loads into registers (x:
 * ROWS / 32 float4; f16: 2 uint4; AWQ: one uint2 of q and the meta word),
 * runs the MMAs on the current stage, then converts the registers into the
 * other stage: one barrier per step, the loads in flight during the MMAs.
 *
 * Local layout: a row (a token of x, a column of W) is 32 k as 16 words of
 * f16 pairs, unpadded; word 4j + s holds k = 8j + s (lo) and 8j + s + 4 (hi),
 * the order in which AWQ nibbles fall out of a q word (nibble i of word j is
 * k = 8j + i: (u >> 4s) & 0x000F000F gives the pair s). The MMA sums over k,
 * so any order of k that x and W share gives the same products. Fragments
 * (PTX ISA, m16n8k16 .f16, lane = 4 g + q): A reg r holds row g + 8 (r & 1),
 * logical k pair q + 4 (r >> 1); B reg r holds logical k pair q + 4r of column
 * g; C element i is row g + 8 (i >> 1), column 2q + (i & 1). Lane q reads
 * words 4q..4q+3 of a row as one uint4: for the MMA over the first 16 k
 * (c = 0) and the second (c = 1), logical pair q + 4r is word 4q + 2c + r,
 * for A and B alike. One uint4 per row and lane makes a quarter-warp read two
 * whole rows (32 banks): no conflicts without padding.
 *
 * AWQ dequantisation on f16 pairs: (nibbles | 0x64006400) as f16 is 1024 + q
 * exactly, minus (1024 + z) gives q - z exactly, times the scale rounds once
 * to f16: the same value as (q - z) * s in f32 rounded to f16 (the f32 product
 * of a 4-bit integer and an f16 is exact). Two weights per shift, LOP3,
 * sub.f16x2 and mul.f16x2 (inline PTX); the emulated build computes the f32
 * product and rounds it with vstore_half_rte.
 *
 * Needs K % 32 == 0, x and the weight 16-byte aligned (the host checks). */
#if defined(LOOM_MMA) || defined(LOOM_MMA_EMU)
#define MM_T 128  /* output tile: tokens (the _t64 kernels: 64) ... */
#define MM_N 128  /* ... x columns (ocl_exec.c's MMA_T, MMA_N, MMA_WG are these) */
#define MM_K 32   /* k per step */
#define MM_WG 256 /* work-items: 8 warps */
#define MM_MT 4   /* a warp's m16 tiles, at most (64 rows) ... */
#define MM_NT 4   /* ... and n8 tiles (32 columns) */
#define MM_ROW 4  /* uint4 per local row (32 halves) */
#define MM_EMU_FLOATS (8 * TC_EMU)
/* each kernel's local scratch for the emulated mma (none with the real one) */
#ifdef LOOM_MMA_EMU
#define MM_EMU_SCRATCH local float emu[MM_EMU_FLOATS]
#else
#define MM_EMU_SCRATCH local float *emu = 0
#endif

/* common.cl's tc_mma, with this work-item's warp's share of the emulation scratch */
INL void mm_mma(float *c, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, local float *emu)
{
    int lid = get_local_id(0);
    tc_mma(c, a0, a1, a2, a3, b0, b1, emu + (lid / 32) * TC_EMU, lid % 32);
}

/* f32 lo, hi -> an f16 pair, each rounded to nearest even */
INL uint mm_pack(float lo, float hi)
{
#ifdef LOOM_MMA
    uint d;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(d) : "f"(hi), "f"(lo)); /* d = {hi, lo} */
    return d;
#else
    ushort h[2];
    vstore_half2_rte((float2)(lo, hi), 0, (half *)h);
    return (uint)h[0] | (uint)h[1] << 16;
#endif
}

/* AWQ word u (k 8j + i in nibble i) -> its 4 local words: pair s = (q_s - z) * sc, (q_s+4 - z) * sc,
 * rounded once to f16. m: the column's meta word (f16 scale | zero << 16). */
INL uint4 mm_dequant(uint u, uint m)
{
#ifdef LOOM_MMA
    uint z2 = (0x6400u + (m >> 16)) * 0x10001u, s2 = (m & 0xffffu) * 0x10001u, r[4];
    for (int s = 0; s < 4; s++) {
        uint d = tc_hsub2(tc_nib(u >> (4 * s), 0x000f000fu), z2); /* (1024 + q) - (1024 + z), twice */
        asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r[s]) : "r"(d), "r"(s2));
    }
    return (uint4)(r[0], r[1], r[2], r[3]);
#else
    float sc = f16_lo(m), z = (float)(m >> 16);
    uint r[4];
    for (int s = 0; s < 4; s++)
        r[s] = mm_pack(((float)((u >> (4 * s)) & 15u) - z) * sc, ((float)((u >> (4 * s + 16)) & 15u) - z) * sc);
    return (uint4)(r[0], r[1], r[2], r[3]);
#endif
}

/* ---- global -> registers (the next step, in flight during the MMAs) -> a local stage ----
 * `rows` (MM_T or 64) is a constant in each kernel: the loops over it unroll. A stage holds
 * `rows` x rows, then MM_N weight columns. */

/* x rows t0.., k0..k0+31: work-item tid takes chunks c = tid + 256 i: row c / 4, k 8 (c % 4) .. +7 */
INL void mm_fetch_x(float4 *r, global const float *x, int T, int K, int t0, int k0, int tid, int rows)
{
    for (int i = 0; i < rows / 64; i++) {
        int c = tid + MM_WG * i, t = t0 + (c >> 2);
        global const float4 *p = (global const float4 *)(x + (size_t)t * K + k0) + 2 * (c & 3);
        r[2 * i] = t < T ? p[0] : (float4)(0.0f), r[2 * i + 1] = t < T ? p[1] : (float4)(0.0f);
    }
}

INL void mm_put_x(local uint4 *st, const float4 *r, int tid, int rows)
{
    for (int i = 0; i < rows / 64; i++) {
        float4 a = r[2 * i], b = r[2 * i + 1];
        st[tid + MM_WG * i] = (uint4)(mm_pack(a.x, b.x), mm_pack(a.y, b.y), mm_pack(a.z, b.z), mm_pack(a.w, b.w));
    }
}

/* dense f16 w [N][K]: the same chunks over columns n0.. */
INL void mm_fetch_f16(uint4 *r, global const ushort *w, int K, int N, int n0, int k0, int tid)
{
    for (int i = 0; i < 2; i++) {
        int c = tid + MM_WG * i, n = n0 + (c >> 2);
        r[i] = n < N ? ((global const uint4 *)(w + (size_t)n * K + k0))[c & 3] : (uint4)(0u);
    }
}

INL void mm_put_f16(local uint4 *st, const uint4 *r, int tid, int rows)
{
    for (int i = 0; i < 2; i++) { /* halves k 0..7 as words (0, 1), (2, 3), (4, 5), (6, 7) -> pairs (k, k + 4) */
        uint4 a = r[i];
        st[rows * MM_ROW + tid + MM_WG * i] = (uint4)((a.x & 0xffffu) | (a.z << 16), (a.x >> 16) | (a.z & 0xffff0000u),
                                                      (a.y & 0xffffu) | (a.w << 16), (a.y >> 16) | (a.w & 0xffff0000u));
    }
}

/* AWQ: work-item tid takes column n0 + tid / 2, q words 2h, 2h + 1 (h = tid % 2: k 16h .. 16h + 15) and
 * its meta word: r = (word 2h, word 2h + 1, meta). Columns past N load zeros (scale 0). */
INL uint4 mm_fetch_awq(global const uint *w, int K, int N, int n0, int k0, int tid)
{
    int n = n0 + (tid >> 1);
    if (n >= N) return (uint4)(0u);
    uint2 q = ((global const uint2 *)w)[((size_t)(k0 / 32) * N + n) * 2 + (tid & 1)];
    return (uint4)(q.x, q.y, AWQ_META(w, 0, K, N)[(size_t)(k0 / 128) * N + n], 0u);
}

INL void mm_put_awq(local uint4 *st, uint4 r, int tid, int rows)
{
    /* the two uint4 stores in an order that keeps a quarter-warp's 8 stores in distinct banks */
    int c = tid >> 1, at = (rows + c) * MM_ROW + 2 * (tid & 1), sw = (c >> 1) & 1;
    st[at + sw] = mm_dequant(sw ? r.y : r.x, r.z);
    st[at + (sw ^ 1)] = mm_dequant(sw ? r.x : r.y, r.z);
}

/* ---- the MMAs of one stage, and the epilogue ---------------------------------------- */

/* warp w: rows rows / 2 (w / 4) .., columns 32 (w % 4) .. of the tile, as rows / 32 m16 tiles x 4 n8
 * tiles; acc [m tile][n tile][C element] */
INL void mm_step(local const uint4 *st, float acc[MM_MT][MM_NT][4], int tid, local float *emu, int rows)
{
    int warp = tid / 32, lane = tid % 32, g = lane >> 2, q = lane & 3, mts = rows / 32;
    local const uint4 *A = st + ((warp >> 2) * (rows / 2) + g) * MM_ROW + q;
    local const uint4 *B = st + (rows + (warp & 3) * 32 + g) * MM_ROW + q;
    uint4 a[MM_MT][2], b[MM_NT];
    for (int nt = 0; nt < MM_NT; nt++) b[nt] = B[nt * 8 * MM_ROW];
    for (int mt = 0; mt < mts; mt++) a[mt][0] = A[mt * 16 * MM_ROW], a[mt][1] = A[(mt * 16 + 8) * MM_ROW];
    /* the first 16 k (words .x, .y) for every tile, then the second (.z, .w): an accumulator's two MMAs apart */
    for (int mt = 0; mt < mts; mt++)
        for (int nt = 0; nt < MM_NT; nt++)
            mm_mma(acc[mt][nt], a[mt][0].x, a[mt][1].x, a[mt][0].y, a[mt][1].y, b[nt].x, b[nt].y, emu);
    for (int mt = 0; mt < mts; mt++)
        for (int nt = 0; nt < MM_NT; nt++)
            mm_mma(acc[mt][nt], a[mt][0].z, a[mt][1].z, a[mt][0].w, a[mt][1].w, b[nt].z, b[nt].w, emu);
}

/* y + bias; pairs: (n, n + 1) may be stored as one float2 (y's offset and N even) */
INL void mm_store(global float *y, bool pairs, float acc[MM_MT][MM_NT][4], global const uchar *bias, ulong bo, int bdt,
                  int T, int N, int t0, int n0, int tid, int rows)
{
    int warp = tid / 32, lane = tid % 32, g = lane >> 2, q = lane & 3;
    for (int nt = 0; nt < MM_NT; nt++) {
        int n = n0 + (warp & 3) * 32 + nt * 8 + 2 * q;
        if (n >= N) continue;
        float b0 = ld_bias(bias, bo, bdt, n), b1 = n + 1 < N ? ld_bias(bias, bo, bdt, n + 1) : 0.0f;
        for (int mt = 0; mt < rows / 32; mt++)
            for (int h = 0; h < 2; h++) {
                int t = t0 + (warp >> 2) * (rows / 2) + mt * 16 + g + 8 * h;
                if (t >= T) continue;
                global float *p = y + (size_t)t * N + n;
                float v0 = acc[mt][nt][2 * h] + b0, v1 = acc[mt][nt][2 * h + 1] + b1;
                if (pairs && n + 1 < N) *(global float2 *)p = (float2)(v0, v1);
                else {
                    p[0] = v0;
                    if (n + 1 < N) p[1] = v1;
                }
            }
    }
}

/* One output tile: rows t0.. (rows of them), columns n0..n0+127 of y (already at its offset); w is
 * the f16 [N][K] or (awq) the packed AWQ weight, at its offset. sm: two stages. */
INL void mm_gemm(global float *y, bool pairs, global const float *x, global const void *w, bool awq,
                 global const uchar *bias, ulong bo, int bdt, int T, int K, int N, int t0, int n0, int rows,
                 local uint4 *sm, local float *emu)
{
    int tid = get_local_id(0), stage = (rows + MM_N) * MM_ROW;
    float acc[MM_MT][MM_NT][4];
    for (int i = 0; i < MM_MT; i++)
        for (int j = 0; j < MM_NT; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.0f;
    float4 rx[4];
    uint4 rw[2];
    global const ushort *wh = (global const ushort *)w;
    global const uint *wq = (global const uint *)w;
    mm_fetch_x(rx, x, T, K, t0, 0, tid, rows);
    if (awq) rw[0] = mm_fetch_awq(wq, K, N, n0, 0, tid);
    else mm_fetch_f16(rw, wh, K, N, n0, 0, tid);
    mm_put_x(sm, rx, tid, rows);
    if (awq) mm_put_awq(sm, rw[0], tid, rows);
    else mm_put_f16(sm, rw, tid, rows);
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k0 = 0, s = 0; k0 < K; k0 += MM_K, s ^= 1) {
        bool more = k0 + MM_K < K;
        if (more) {
            mm_fetch_x(rx, x, T, K, t0, k0 + MM_K, tid, rows);
            if (awq) rw[0] = mm_fetch_awq(wq, K, N, n0, k0 + MM_K, tid);
            else mm_fetch_f16(rw, wh, K, N, n0, k0 + MM_K, tid);
        }
        mm_step(sm + s * stage, acc, tid, emu, rows);
        if (more) { /* the other stage was last read before the previous barrier */
            local uint4 *nx = sm + (s ^ 1) * stage;
            mm_put_x(nx, rx, tid, rows);
            if (awq) mm_put_awq(nx, rw[0], tid, rows);
            else mm_put_f16(nx, rw, tid, rows);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    mm_store(y, pairs, acc, bias, bo, bdt, T, N, t0, n0, tid, rows);
}

/* dense f16 w [N, K]; the arguments of matmul_gemm_f16. global (ceil(T / ROWS) * 256, ceil(N / 128)),
 * ROWS 128 (mma_gemm_f16) or 64 (_t64: more work-groups for fewer tiles). */
#define MM_GEMM_F16(name, ROWS)                                                                                    \
    kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1)))                                                      \
    void name(global float *y, ulong yo, global const float *x, ulong xo, global const ushort *w, ulong wo,         \
              global const uchar *bias, ulong bo, int bdt, int T, int K, int N)                                     \
    {                                                                                                              \
        local uint4 sm[2 * ((ROWS) + MM_N) * MM_ROW];                                                              \
        MM_EMU_SCRATCH;                                                                                            \
        mm_gemm(y + yo, ((yo | (ulong)N) & 1) == 0, x + xo, w + wo, false, bias, bo, bdt, T, K, N,                 \
                get_group_id(0) * (ROWS), get_group_id(1) * MM_N, (ROWS), sm, emu);                                \
    }
MM_GEMM_F16(mma_gemm_f16, MM_T)
MM_GEMM_F16(mma_gemm_f16_t64, 64)

/* AWQ (awq.cl layout), up to three weights side by side in 128-column tiles; the
 * arguments of awq_gemm. global (ceil(T / ROWS) * 256, Σ ceil(N_m / 128)). */
#define MM_AWQ_GEMM(name, ROWS)                                                                                    \
    kernel __attribute__((reqd_work_group_size(MM_WG, 1, 1)))                                                      \
    void name(AWQ_PARAMS)                                                                                          \
    {                                                                                                              \
        local uint4 sm[2 * ((ROWS) + MM_N) * MM_ROW];                                                              \
        MM_EMU_SCRATCH;                                                                                            \
        AWQ_UNPACK_MAT;                                                                                            \
        AWQ_PICK_WEIGHT((int)get_group_id(1), MM_N);                                                               \
        mm_gemm(y + yo, ((yo | (ulong)N) & 1) == 0, x + xo, w + wo, true, bias, bo, bdt, T, K, N,                  \
                get_group_id(0) * (ROWS), n0, (ROWS), sm, emu);                                                    \
    }
MM_AWQ_GEMM(mma_awq_gemm, MM_T)
MM_AWQ_GEMM(mma_awq_gemm_t64, 64)
#endif
