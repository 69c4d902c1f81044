/* common.cl — helpers shared by every kernel of the loom OpenCL backend.
 *
 * Built once per device as OpenCL C 1.2. The host prepends build-time
 * constants (-D): GT_T, GT_N, GT_TM (the tiled matmuls' output tile, tokens
 * x columns, and tokens per work-item: 64 x 128 by 8, or 32 x 64 by 4),
 * GV_WG (work-group of the GEMV kernels), GEMV_W, GEMV_R (the unaligned dense
 * GEMV), RED_W (rmsnorm work-group), ATT_W (attention work-group), ATT_TW
 * (the tiled prefill attention's work-group, 128 or 64; absent where local
 * memory is too small for it), ATT_DW (the decode attention's work-group,
 * 128 or 64; absent likewise). Every tensor is addressed as a buffer plus
 * an element offset (tensors share buffers at aligned offsets). f16 data is
 * read and written with vload_half / vstore_half_rte or converted by bit
 * operations (core OpenCL 1.2), so no cl_khr_fp16 is needed; all arithmetic
 * is f32. */
#define GEMV_MAXT 8             /* rows handled by the GEMV kernels */
#define ATT_DPT 4               /* head dims per attention work-item: head_dim <= ATT_W * ATT_DPT */

/* The tiled prefill attention (typed.cl attn_tile): ATT_BQ query rows of one
 * head per work-group, ATT_BK cache positions per tile, head_dim <= ATT_HD and
 * a multiple of 4 (the host mirrors these three). Local memory: q, one K or V
 * tile (rows of hd + 4 floats) and the tile's scores: 27.5 KiB. */
#define ATT_BQ 32
#define ATT_BK 16
#define ATT_HD 128
#ifdef ATT_TW
#define ATT_RH (ATT_BQ / 2)                       /* scores: a work-item takes rows r and r + ATT_RH ... */
#define ATT_QC (ATT_BQ * ATT_BK / (2 * ATT_TW))   /* ... and ATT_QC keys (2 at 128 work-items, 4 at 64) ... */
#define ATT_KG (ATT_BK / ATT_QC)                  /* ... ATT_KG apart */
#define ATT_DL (ATT_TW / (ATT_BQ / 4))            /* P·V: work-items along the head dims (rows by 4) */
#define ATT_PV4 (ATT_HD / (4 * ATT_DL))           /* P·V: float4 of head dims per work-item */
#define ATT_LD4 (ATT_BK * ATT_HD / (4 * ATT_TW))  /* float4 of a K or V tile each work-item fetches */
#define ATT_SL (ATT_BQ + 4)                       /* row stride of the scores [key][query row] */
#endif

/* The decode attention (typed.cl attn_dec, steps of <= GEMV_MAXT rows): a
 * work-group serves up to ATT_NQ query vectors ((row, head) pairs of one KV
 * head) over a partition of at most ATT_PLMAX positions, which go by in
 * rounds of ATT_DP (4 work-items per position for K: hd / 4 dims each).
 * head_dim <= ATT_HD and a multiple of 4 * CE (32 for f16, 16 for f32 caches).
 * Local memory: q, the partition's scores, and one round's K partial sums or
 * (in turn) V as f32: 29.1 KiB at 128 work-items, 21.1 KiB at 64. The host
 * mirrors ATT_NQ, ATT_PLMAX and the local memory it takes. */
#define ATT_NQ 8
#define ATT_PLMAX 256
#define ATT_SP 256 /* typed.cl attn_dec1: the most positions (the host mirrors it) */
#ifdef ATT_DW
#define ATT_DP (ATT_DW / 4)                     /* positions per round */
#define ATT_SCL (ATT_PLMAX + 1)                 /* row stride of the scores [query vector][position] */
#define ATT_SUB (ATT_DW / ATT_NQ)               /* softmax: work-items per query vector */
#define ATT_PVN (ATT_NQ * ATT_HD / (4 * ATT_DW)) /* P·V: (query vector, float4 of dims) pairs per work-item */
#define ATT_QN ATT_PVN                          /* q: float4 a work-item loads (as many) */
#define ATT_JB 8                                /* attn_dec's join: partitions loaded at a time */
#define ATT_UN4 (2 * ATT_NQ * ATT_DP > ATT_DP * ATT_HD / 4 ? 2 * ATT_NQ * ATT_DP : ATT_DP * ATT_HD / 4)
#endif

/* Helpers are static (a C99 plain `inline` that the compiler declines to
 * inline is an unresolved external) and always inlined (the tile helpers take
 * private arrays, which must stay in registers). */
#define INL static inline __attribute__((always_inline))

#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)

/* Error codes a kernel reports through the device's error word (read back by
 * the host at sync / buffer_read): err[0] = code, err[1..3] = details. */
#define LOOM_KERR_EMBED_ID 1

INL void report(global int *err, int code, int a, int b, int c)
{
    if (atomic_cmpxchg(err, 0, code) == 0) {
        err[1] = a;
        err[2] = b;
        err[3] = c;
    }
}

/* Orders the work-item's global stores before, and its global loads after, as seen by every
 * work-group of the launch (a work-group that counts itself in, the last one that then reads
 * what the others wrote). OpenCL 1.2's mem_fence promises that only within a work-group, and
 * NVIDIA's compiler emits it as membar.cta; on NVIDIA's platform (-DLOOM_NV) membar.gl, the GPU-scope
 * fence every NVIDIA GPU has. */
INL void device_fence(void)
{
#ifdef LOOM_NV
    asm volatile("membar.gl;" ::: "memory");
#else
    mem_fence(CLK_GLOBAL_MEM_FENCE);
#endif
}

/* bias of a matmul: bdt 0 none, 1 f32, 2 f16, 3 bf16; bo is an element offset */
INL float ld_bias(global const uchar *b, ulong bo, int bdt, int n)
{
    if (bdt == 1) return ((global const float *)b)[bo + n];
    if (bdt == 2) return vload_half(bo + n, (global const half *)b);
    if (bdt == 3) return as_float((uint)((global const ushort *)b)[bo + n] << 16);
    return 0.0f;
}

/* f16 to f32 on bits, for data read as 16-byte words (vload_half would be
 * one 2-byte load per element). Word u holds two halves, lo then hi. An
 * arithmetic shift by 3 puts exponent and mantissa at f32 bits 13..27 with
 * the sign at 31 (bits 28..30 masked off); the product with 2^112 rebias the
 * exponent and is exact for normal and subnormal halves (f32 keeps
 * denormals unless built with -cl-denorms-are-zero). Exponent 31 (inf, nan)
 * lands in [2^16, 2^17), above the largest finite half: those get the all-ones
 * f32 exponent instead. */
INL float4 f16x4(uint a, uint b) /* lo(a), hi(a), lo(b), hi(b) */
{
    uint4 m = as_uint4((int4)((int)(a << 16), (int)a, (int)(b << 16), (int)b) >> 3) & 0x8fffe000u;
    float4 f = as_float4(m) * 0x1p112f;
    return select(f, as_float4(m | 0x70000000u), isgreaterequal(fabs(f), (float4)(0x1p16f)));
}

INL float f16_lo(uint a) /* the half in bits 0..15 */
{
    uint m = (uint)((int)(a << 16) >> 3) & 0x8fffe000u;
    float f = as_float(m) * 0x1p112f;
    return fabs(f) >= 0x1p16f ? as_float(m | 0x70000000u) : f;
}

INL float4 bf16x4(uint a, uint b) { return as_float4((uint4)(a << 16, a & 0xffff0000u, b << 16, b & 0xffff0000u)); }

/* Elements k .. k + 7 of a vector of dtype dt (ld_bias's codes, 1..3) at element offset bo,
 * k a multiple of 8: one or two 16-byte loads where bo keeps them aligned, not eight. */
INL float8 ld8_dt(global const uchar *b, ulong bo, int dt, int k)
{
    const ulong e = bo + (ulong)k;
    if (dt == 1) return vload8(0, (global const float *)b + e);
    if (e % 8) {
        float8 v;
        float *f = (float *)&v;
        for (int i = 0; i < 8; i++) f[i] = ld_bias(b, bo, dt, k + i);
        return v;
    }
    const uint4 u = *(global const uint4 *)(b + 2 * e);
    return dt == 2 ? (float8)(f16x4(u.x, u.y), f16x4(u.z, u.w)) : (float8)(bf16x4(u.x, u.y), bf16x4(u.z, u.w));
}

/* ---- tiled matmul (prefill) ------------------------------------------------------
 * y [T, N] in output tiles of GT_T tokens x GT_N columns, one work-group of
 * GT_NTH = (GT_N / 8) * (GT_T / GT_TM) work-items each: work-item (tx, ty)
 * owns tokens GT_TM ty .. GT_TM ty + GT_TM - 1 and columns 4tx..4tx+3 and
 * GT_N/2 + 4tx..+3 (GT_TM x 8 sums in registers). Per k it reads GT_TM / 4 +
 * 2 float4 from local memory for 8 GT_TM FMAs; a warp's B reads are 16
 * consecutive float4 (conflict-free), its A reads one or two broadcast
 * addresses. K goes by in steps of GT_K = 32 (one AWQ 32-row word, a quarter
 * group): the x tile (As [k][token]) and the weight tile (Bs [k][column],
 * dequantised once per step) pass through local memory; the next step's
 * global loads are issued into registers before the current step's FMAs, so
 * they are in flight meanwhile. */
#define GT_K 32
#define GT_TX (GT_N / 8)
#define GT_NTH (GT_TX * (GT_T / GT_TM))
#define GT_LDA (GT_T + 4)                /* row pitch of As, floats (float4 aligned) */
#define GT_LDB (GT_N + 4)                /* row pitch of Bs */
#define GT_XPER (GT_T * GT_K / GT_NTH)   /* x elements fetched per work-item per step */

/* This work-item's share of the x tile (tokens t0.., k0..; zero outside): one
 * k (tid % 32: consecutive work-items on consecutive k), rows tid / 32 + i *
 * GT_RSTEP. */
#define GT_RSTEP (GT_NTH / GT_K)
INL void gt_fetch_x(float *r, global const float *x, int T, int K, int t0, int k0, int tid)
{
    int t = t0 + tid / GT_K, k = k0 + tid % GT_K;
    global const float *p = x + (size_t)t * K + k;
#pragma unroll
    for (int i = 0; i < GT_XPER; i++) r[i] = (t + GT_RSTEP * i < T && k < K) ? p[(size_t)GT_RSTEP * i * K] : 0.0f;
}

INL void gt_store_x(local float *As, const float *r, int tid)
{
    local float *p = As + (tid % GT_K) * GT_LDA + tid / GT_K;
#pragma unroll
    for (int i = 0; i < GT_XPER; i++) p[GT_RSTEP * i] = r[i];
}

/* One GT_K step: acc[i][j] += Σ_k As[k][GT_TM ty + i] * Bs[k][column j]. */
INL void gt_step(local const float4 *As4, local const float4 *Bs4, float acc[GT_TM][8], int tx, int ty)
{
#pragma unroll 2
    for (int kk = 0; kk < GT_K; kk++) {
        float av[GT_TM];
#pragma unroll
        for (int i = 0; i < GT_TM / 4; i++) {
            float4 a = As4[kk * (GT_LDA / 4) + (GT_TM / 4) * ty + i];
            av[4 * i] = a.x, av[4 * i + 1] = a.y, av[4 * i + 2] = a.z, av[4 * i + 3] = a.w;
        }
        float4 b0 = Bs4[kk * (GT_LDB / 4) + tx], b1 = Bs4[kk * (GT_LDB / 4) + GT_TX + tx];
        float bv[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
        for (int i = 0; i < GT_TM; i++)
#pragma unroll
            for (int j = 0; j < 8; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }
}

INL void gt_store_y(global float *y, ulong yo, const float acc[GT_TM][8], global const uchar *bias, ulong bo, int bdt,
                    int T, int N, int t0, int n0, int tx, int ty)
{
#pragma unroll
    for (int j = 0; j < 8; j++) {
        int n = n0 + (j < 4 ? 4 * tx + j : GT_N / 2 + 4 * tx + j - 4);
        if (n >= N) continue;
        float b = ld_bias(bias, bo, bdt, n);
#pragma unroll
        for (int i = 0; i < GT_TM; i++) {
            int t = t0 + GT_TM * ty + i;
            if (t < T) y[yo + (size_t)t * N + n] = acc[i][j] + b;
        }
    }
}

/* ---- elementwise and row ops that only touch f32 activations --------------- */
kernel void swiglu(global float *y, ulong yo, global const float *g, ulong go, global const float *u, ulong uo, ulong n)
{
    size_t i = get_global_id(0);
    if (i >= n) return;
    float a = g[go + i];
    y[yo + i] = a / (1.0f + exp(-a)) * u[uo + i];
}

kernel void add(global float *y, ulong yo, global const float *a, ulong ao, global const float *b, ulong bo, ulong n)
{
    size_t i = get_global_id(0);
    if (i >= n) return;
    y[yo + i] = a[ao + i] + b[bo + i];
}

/* rope (neox): pair (i, i + hd/2) of head h of token t rotates by the angle
 * whose cos, sin (times the YaRN magnitude) the host computed in double for
 * this step: cs[(t * hd/2 + i) * 2 + {0, 1}]. One work-item per pair:
 * global (n..). Pairs n1..n-1 belong to a second tensor (y2, x2, H2 heads)
 * with the same positions and table: q and k in one launch (n1 = n: one). */
kernel void rope(global float *y, ulong yo, global const float *x, ulong xo, global const float *cs, ulong cso, int H,
                 int hd, ulong n, global float *y2, ulong y2o, global const float *x2, ulong x2o, int H2, ulong n1)
{
    size_t g = get_global_id(0);
    if (g >= n) return;
    if (g >= n1) g -= n1, y = y2, yo = y2o, x = x2, xo = x2o, H = H2;
    int h2 = hd / 2, i = g % h2;
    size_t r = g / h2, t = r / H, o = r * hd + i; /* r = t * H + h */
    float c = cs[cso + (t * h2 + i) * 2], s = cs[cso + (t * h2 + i) * 2 + 1];
    float a = x[xo + o], b = x[xo + o + h2];
    y[yo + o] = a * c - b * s;
    y[yo + o + h2] = b * c + a * s;
}

/* gqa_attn with partitions (typed.cl attn_dec, attn): per (head, token) the partitions'
 * outputs o_p (relative to their max m_p, with sums l_p) joined:
 * y = Σ_p o_p e^(m_p - M) / Σ_p l_p e^(m_p - M), M = max_p m_p, partitions in
 * order. part [T][Hq][P][hd + 2]. global (ATT_W * Hq, T), work-groups of ATT_W. */
kernel void attn_merge(global float *y, ulong yo, global const float *part, int Hq, int hd, int P)
{
    int lid = get_local_id(0), h = get_group_id(0), t = get_group_id(1), W = get_local_size(0);
    global const float *pp = part + ((size_t)t * Hq + h) * P * (hd + 2);
    float M = -INFINITY, L = 0.0f;
    for (int p = 0; p < P; p++) M = fmax(M, pp[p * (hd + 2) + hd]);
    for (int p = 0; p < P; p++) L += pp[p * (hd + 2) + hd + 1] * exp(pp[p * (hd + 2) + hd] - M);
    float inv = 1.0f / L;
    for (int d = lid; d < hd; d += W) {
        float o = 0.0f;
        for (int p = 0; p < P; p++) {
            float mp = pp[p * (hd + 2) + hd];
            if (mp > -INFINITY) o = fma(pp[p * (hd + 2) + d], exp(mp - M), o);
        }
        y[yo + ((size_t)t * Hq + h) * hd + d] = o * inv;
    }
}


#ifdef ATT_TW
/* typed.cl attn_tile: the K or V tile a work-item fetched (att_fetch_<dt>)
 * into local memory, kv4 [ATT_BK][hd / 4 + 1] float4: float4 e of position
 * j = fj[i] goes to j * (hd / 4 + 1) + e - j * hd / 4 = e + j */
INL void att_stage(local float4 *kv4, const float4 *r, const int *fj)
{
#pragma unroll
    for (int i = 0; i < ATT_LD4; i++)
        if (fj[i] < ATT_BK) kv4[get_local_id(0) + ATT_TW * i + fj[i]] = r[i];
}
#endif

/* ---- tensor cores (NVIDIA) -------------------------------------------------------
 * With -DLOOM_MMA (ocl_program.c adds it on NVIDIA's platform) the PTX below runs
 * as inline asm; with -DLOOM_MMA_EMU the same operations are emulated, so that
 * the kernels using them (mma.cl, the AWQ GEMV in awq_gemv.cl) run on any device
 * in tests. An f16x2 operand is a uint: the half in bits 0..15 first.
 * tc_mma: one warp's mma.sync.m16n8k16 (f16 A and B, f32 accumulators c[4]).
 * Fragments (PTX ISA, lane = 4 g + q): A reg r holds row g + 8 (r & 1), k
 * 2q + 8 (r >> 1) + {0, 1}; B reg r holds k 2q + 8r + {0, 1} of column g; C
 * element i is row g + 8 (i >> 1), column 2q + (i & 1). Emulated, it goes
 * through the warp's TC_EMU floats of local memory (scr) and has barriers:
 * every work-item of the work-group must call it, as often as the others. */
#if defined(LOOM_MMA) || defined(LOOM_MMA_EMU)
#define TC_EMU 384 /* floats of emulation scratch per warp */

INL void tc_mma(float *c, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1, local float *scr, int lane)
{
#ifdef LOOM_MMA
    float d0, d1, d2, d3;
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
                 "{%10, %11, %12, %13};"
                 : "=f"(d0), "=f"(d1), "=f"(d2), "=f"(d3)
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
    c[0] = d0, c[1] = d1, c[2] = d2, c[3] = d3;
#else
    int g = lane >> 2, q = lane & 3;
    local float *A = scr, *B = scr + 256; /* A [16][16], B [16 k][8 n] */
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

/* (w & m) | 0x64006400: one LOP3 */
INL uint tc_nib(uint w, uint m)
{
#ifdef LOOM_MMA
    uint d;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(d) : "r"(w), "r"(m), "r"(0x64006400u));
    return d;
#else
    return (w & m) | 0x64006400u;
#endif
}

#ifndef LOOM_MMA
INL uint tc_half(float f) /* f32 to f16 bits, rounded to nearest even */
{
    ushort h;
    vstore_half_rte(f, 0, (private half *)&h);
    return h;
}
#endif

INL uint tc_hsub2(uint a, uint b) /* a - b per half */
{
#ifdef LOOM_MMA
    uint d;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
    return d;
#else
    return tc_half(f16_lo(a) - f16_lo(b)) | tc_half(f16_lo(a >> 16) - f16_lo(b >> 16)) << 16;
#endif
}

INL uint tc_hfma2(uint a, uint b, uint c) /* a * b + c per half, rounded once */
{
#ifdef LOOM_MMA
    uint d;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
#else
    return tc_half(fma(f16_lo(a), f16_lo(b), f16_lo(c))) | tc_half(fma(f16_lo(a >> 16), f16_lo(b >> 16), f16_lo(c >> 16))) << 16;
#endif
}
#endif
