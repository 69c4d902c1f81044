/* mma.cl — the tensor-core prefill GEMMs for NVIDIA's OpenCL, built only with
 * -DLOOM_MMA (ocl_program.c adds it on an NVIDIA platform; a build that fails
 * is retried without it) or -DLOOM_MMA_EMU (the same kernels with the MMA
 * emulated through local memory, to test the tiling on any device).
 *
 * y[T,N] = x[T,K] · W + b in 64 x 64 output tiles, K in steps of 32: x is
 * rounded to f16, the weight (f16 as stored, AWQ as (q - z) * s rounded once
 * to f16) staged as f16 in local memory, then each of the 4 warps multiplies
 * its 32 x 32 quarter as 2 x 4 mma.sync.m16n8k16 tiles with f32 accumulators.
 * Fragments (PTX ISA, m16n8k16 .f16, lane = 4 g + q): A reg r holds row
 * g + 8 (r & 1), columns 2q + 8 (r >> 1) + {0, 1}; B reg r holds k = 2q + 8r
 * + {0, 1} of column g; C element i is row g + 8 (i >> 1), column 2q + (i & 1).
 * Needs K % 32 == 0 (the host checks). */
#if defined(LOOM_MMA) || defined(LOOM_MMA_EMU)
#define MM_T 64
#define MM_N 64
#define MM_K 32
#define MM_LD (MM_K + 8) /* halves per local row */
#define MM_EMU_FLOATS (4 * 384)
/* each kernel's local scratch for the emulated mma (none with the real one) */
#ifdef LOOM_MMA_EMU
#define MM_EMU_SCRATCH local float emu[MM_EMU_FLOATS]
#else
#define MM_EMU_SCRATCH local float *emu = 0
#endif

INL uint mm_word(local const ushort *p) { return (uint)p[0] | (uint)p[1] << 16; }

INL void mm_mma(float *c, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, local float *emu)
{
#ifdef LOOM_MMA
    float d0, d1, d2, d3;
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%10, %11, %12, %13};"
                 : "=f"(d0), "=f"(d1), "=f"(d2), "=f"(d3)
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
    c[0] = d0, c[1] = d1, c[2] = d2, c[3] = d3;
#else
    /* the warp's fragments through local memory, in the layout above */
    int lane = get_local_id(0) % 32, g = lane >> 2, q = lane & 3;
    local float *A = emu + (get_local_id(0) / 32) * 384, *B = A + 256; /* A [16][16], B [16 k][8 n] */
    uint a[4] = {a0, a1, a2, a3}, b[2] = {b0, b1};
    for (int r = 0; r < 4; r++) {
        int row = g + 8 * (r & 1), col = 2 * q + 8 * (r >> 1);
        A[row * 16 + col] = f16_lo(a[r]), A[row * 16 + col + 1] = f16_lo(a[r] >> 16);
    }
    for (int r = 0; r < 2; r++) {
        int k = 2 * q + 8 * r;
        B[k * 8 + g] = f16_lo(b[r]), B[(k + 1) * 8 + g] = f16_lo(b[r] >> 16);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int i = 0; i < 4; i++) {
        int row = g + 8 * (i >> 1), col = 2 * q + (i & 1);
        float s = c[i];
        for (int k = 0; k < 16; k++) s = fma(A[row * 16 + k], B[k * 8 + col], s);
        c[i] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
#endif
}

/* x rows t0.. as f16 into As [64][MM_LD]: work-item tid takes row tid / 2, 16 k */
INL void mm_load_x(local ushort *As, global const float *x, int T, int K, int t0, int k0, int tid)
{
    int r = tid >> 1, kk = (tid & 1) * 16, t = t0 + r;
    float16 v = t < T ? vload16(0, x + (size_t)t * K + k0 + kk) : (float16)(0.0f);
    vstore_half8_rte(v.lo, (r * MM_LD + kk) / 8, (local half *)As); /* MM_LD, kk: multiples of 8 */
    vstore_half8_rte(v.hi, (r * MM_LD + kk) / 8 + 1, (local half *)As);
}

/* The warps' MMAs over one K step; acc [2 m tiles][4 n tiles][4]. */
INL void mm_step(local const ushort *As, local const ushort *Bs, float acc[2][4][4], int tid, local float *emu)
{
    int warp = tid / 32, lane = tid % 32, g = lane >> 2, q = lane & 3, wm = warp >> 1, wn = warp & 1;
    for (int ks = 0; ks < MM_K; ks += 16) {
        uint a[2][4], b[4][2];
        for (int mt = 0; mt < 2; mt++)
            for (int r = 0; r < 4; r++)
                a[mt][r] = mm_word(As + (wm * 32 + mt * 16 + g + 8 * (r & 1)) * MM_LD + ks + 2 * q + 8 * (r >> 1));
        for (int nt = 0; nt < 4; nt++)
            for (int r = 0; r < 2; r++) b[nt][r] = mm_word(Bs + (wn * 32 + nt * 8 + g) * MM_LD + ks + 2 * q + 8 * r);
        for (int mt = 0; mt < 2; mt++)
            for (int nt = 0; nt < 4; nt++)
                mm_mma(acc[mt][nt], a[mt][0], a[mt][1], a[mt][2], a[mt][3], b[nt][0], b[nt][1], emu);
    }
}

INL void mm_store(global float *y, ulong yo, const float acc[2][4][4], global const uchar *bias, ulong bo, int bdt,
                  int T, int N, int t0, int n0, int tid)
{
    int warp = tid / 32, lane = tid % 32, g = lane >> 2, q = lane & 3, wm = warp >> 1, wn = warp & 1;
    for (int mt = 0; mt < 2; mt++)
        for (int nt = 0; nt < 4; nt++)
            for (int i = 0; i < 4; i++) {
                int t = t0 + wm * 32 + mt * 16 + g + 8 * (i >> 1), n = n0 + wn * 32 + nt * 8 + 2 * q + (i & 1);
                if (t < T && n < N) y[yo + (size_t)t * N + n] = acc[mt][nt][i] + ld_bias(bias, bo, bdt, n);
            }
}

/* dense f16 w [N, K]; the arguments of matmul_gemm_f16. global (ceil(N / 64) * 128, ceil(T / 64)). */
kernel __attribute__((reqd_work_group_size(128, 1, 1)))
void mma_gemm_f16(global float *y, ulong yo, global const float *x, ulong xo, global const ushort *w, ulong wo,
                  global const uchar *bias, ulong bo, int bdt, int T, int K, int N)
{
    local ushort As[MM_T * MM_LD], Bs[MM_N * MM_LD];
    MM_EMU_SCRATCH;
    int tid = get_local_id(0), n0 = get_group_id(0) * MM_N, t0 = get_group_id(1) * MM_T;
    float acc[2][4][4];
    for (int i = 0; i < 32; i++) ((float *)acc)[i] = 0.0f;
    int c = tid >> 1, kk = (tid & 1) * 16, n = n0 + c;
    for (int k0 = 0; k0 < K; k0 += MM_K) {
        barrier(CLK_LOCAL_MEM_FENCE);
        mm_load_x(As, x + xo, T, K, t0, k0, tid);
        ushort16 v = n < N ? vload16(0, w + wo + (size_t)n * K + k0 + kk) : (ushort16)(0);
        vstore8(v.lo, 0, Bs + c * MM_LD + kk), vstore8(v.hi, 0, Bs + c * MM_LD + kk + 8);
        barrier(CLK_LOCAL_MEM_FENCE);
        mm_step(As, Bs, acc, tid, emu);
    }
    mm_store(y, yo, acc, bias, bo, bdt, T, N, t0, n0, tid);
}

/* AWQ (awq.cl layout), up to three weights side by side in 64-column tiles; the
 * arguments of awq_gemm. global (Σ ceil(N_m / 64) * 128, ceil(T / 64)). */
kernel __attribute__((reqd_work_group_size(128, 1, 1)))
void mma_awq_gemm(AWQ_GEMM_PARAMS)
{
    local ushort As[MM_T * MM_LD], Bs[MM_N * MM_LD];
    MM_EMU_SCRATCH;
    int tid = get_local_id(0), tile = get_group_id(0), t0 = get_group_id(1) * MM_T;
    AWQ_PICK_WEIGHT(tile, MM_N);
    float acc[2][4][4];
    for (int i = 0; i < 32; i++) ((float *)acc)[i] = 0.0f;
    int c = tid >> 1, h = tid & 1, n = n0 + c; /* column c, words 2h, 2h + 1 (k 16h .. 16h + 15) */
    for (int k0 = 0; k0 < K; k0 += MM_K) {
        barrier(CLK_LOCAL_MEM_FENCE);
        mm_load_x(As, x + xo, T, K, t0, k0, tid);
        uint u[2] = {0u, 0u}, mt = 0u;
        if (n < N) {
            global const uint *qp = w + wo + ((size_t)(k0 / 32) * N + n) * 4 + 2 * h;
            u[0] = qp[0], u[1] = qp[1], mt = AWQ_META(w, wo, K, N)[(size_t)(k0 / 128) * N + n];
        }
        float s = f16_lo(mt), z = (float)(mt >> 16);
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < 8; i++)
                vstore_half_rte(((float)((u[j] >> (4 * i)) & 15u) - z) * s, c * MM_LD + 16 * h + 8 * j + i,
                                (local half *)Bs);
        barrier(CLK_LOCAL_MEM_FENCE);
        mm_step(As, Bs, acc, tid, emu);
    }
    mm_store(y, yo, acc, bias, bo, bdt, T, N, t0, n0, tid);
}
#endif
