/* k_gemm.cu — the tensor-core matmul for many rows (prefill):
 *   y[T,N] = x[T,K] · Wᵀ + bias, W dense f16/bf16 [N][K] or AWQ (repacked, cuda_impl.h).
 *
 * x is first rounded once into f16 (gm_xh_kernel; bf16 weights: bf16 hi + lo planes, since one
 * bf16 rounding of x alone costs ~1e-6 NMSE per matmul), so that the GEMM reads half the bytes
 * of x and copies them straight into shared memory. The GEMM then computes yᵀ = W · xᵀ with the
 * weight as the A operand of mma.sync m16n8k16 (16 weight rows = 16 columns of y) and x as B
 * (8 tokens), which is the orientation the repacked AWQ layout is built for: a lane's packed
 * word is its A fragment, dequantised in registers (cu_awq_frag, then one f16 multiply by the
 * scale, rounding (q - z) * s once as the checkpoint's own f16 dequantisation does). For that
 * word's k order (a lane holds k = 4j .. 4j + 3 where the fragment has 2j, 2j + 1, 2j + 8,
 * 2j + 9), x is stored with k permuted within each 16 (gm_xh_pos), so ldmatrix hands every
 * lane the matching x.
 *
 * Up to three weights that read the same x run as one launch (gm_launch: q, k, v; gate, up).
 * Block tile: 128 weight rows x BT tokens (128, or 64 where 128 leaves SMs idle) x 64 k, 8 warps
 * (gm_shape: how they share it), f32 accumulators. The stages are filled by cp.async (16 bytes a
 * thread at a time, zero-filled past the matrix, addresses worked out once per block), three for
 * dense weights and four for AWQ, so two or three k-tiles' loads are in flight while the warps
 * multiply another; one barrier per k-tile. Shared rows are 64 + 8 halves (144 bytes): the 8
 * row addresses of an ldmatrix phase fall in 8 distinct 16-byte bank groups. (H100, 7B AWQ at
 * 512 tokens: 2 blocks of 128 registers per SM; 1 block with more registers, 3 or 5 AWQ stages
 * and 128-token tiles for q, o and down measured no faster. Splitting K across blocks, partial
 * sums added by the last to arrive, was slower for q, o, k and v and only 5% faster for down.)
 *
 * On sm_90a (the H100) the MMAs are wgmma's instead (WG, gm_wg_stage): each warp still makes its
 * 16 weight rows' A fragments in registers as above, and a warpgroup multiplies its 64 rows by all
 * BT tokens of x in one wgmma per k16 step, reading x from shared memory through a descriptor
 * (x rows stored unpadded in wgmma's 128-byte swizzle). That took the 7B AWQ layer's GEMMs from
 * 0.35-0.36 to 0.47-0.49 of cuBLAS's f16 rate (docs/PERF.md). LOOM_CUDA_WGMMA=0 keeps mma.sync.
 *
 * The stage loads (address arithmetic and bounds), the AWQ fragments, the x conversion and the
 * epilogue are __host__ __device__: tests/cuda_host.cu runs them on the CPU with ldmatrix, mma and
 * wgmma's reads of x emulated from the PTX ISA's fragment and swizzle layouts. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cuda_impl.h"
#include "k_common.cuh"

#define GM_BN 128          /* weight rows (columns of y) per block */
#define GM_BK 64           /* k per stage: one chunk of the AWQ layout */
#define GM_LDS (GM_BK + 8) /* halves per shared row */
#define GM_THREADS 256
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) /* this pass compiles for sm_90a: wgmma */
#define GM_WGMMA 1
#else
#define GM_WGMMA 0
#endif
#define GM_META_OFF (GM_BN / 16 * 32 * 8) /* AWQ stage: halves of packed words before the meta words */

enum { GM_F16 = 0, GM_BF16 = 1, GM_AWQ = 2 }; /* the weight source */

struct gm_params {
    const uint16_t *xh;   /* x rounded: [T][K] f16 (AWQ: k permuted), or bf16 hi [T][K] then lo [T][K] */
    const void     *w;    /* dense [N][K], or the AWQ q words */
    const uint32_t *meta; /* AWQ scales and zeros */
    const void     *bias;
    int             bdt, T, K, N;
    float          *y;
};

/* One stage in shared memory, in halves: the weight tile (dense: [128][LDS]; AWQ: 8 tiles x 32
 * lanes x 16 bytes of packed words, then the 128 columns' meta words), then x [BT][XLD] (bf16:
 * hi, then lo). WG (wgmma, sm_90a): x rows are 64 halves, 128 bytes, unpadded and swizzled as
 * wgmma's 128-byte mode reads them (gm_xswz), so each x plane starts on a 1024-byte boundary. */
template <int BT, int SRC, bool WG = false> struct gm_shape {
    static constexpr int XP = SRC == GM_BF16 ? 2 : 1;
    static constexpr int XLD = WG ? GM_BK : GM_LDS; /* halves per shared x row */
    static constexpr int W_RAW = SRC == GM_AWQ ? GM_META_OFF + GM_BN * 2 : GM_BN * GM_LDS;
    static constexpr int W_HALVES = WG ? (W_RAW + 511) / 512 * 512 : W_RAW;
    static constexpr int X_PLANE = BT * XLD;
    static constexpr int STAGE = W_HALVES + XP * X_PLANE;
    static constexpr int STAGES = SRC == GM_AWQ ? 4 : 3;
    static constexpr int SMEM_BYTES = STAGES * STAGE * 2 + (WG ? 1024 : 0); /* WG: room to align the stages */
    /* The warps' tiles: AWQ and WG, 8 (weight rows) x 1, each 16 rows x BT tokens, so that no two
     * warps dequantise the same words (WG: a warpgroup's wgmma takes 64 rows, 16 from each warp);
     * dense mma.sync, 4 x 2, each 32 rows x BT / 2 tokens (fewer B fragment loads for the A
     * fragments that ldmatrix reads anyway). */
    static constexpr int WM = SRC == GM_AWQ || WG ? 1 : 2; /* m16 tiles (weight rows) per warp */
    static constexpr int WARPS_W = GM_BN / (16 * WM);       /* warps along the weight rows */
    static constexpr int WN = BT / 8 / (8 / WARPS_W);       /* n8 tiles (tokens) per warp */
    typedef float acc_t[WM][WN][4];
    /* two blocks per SM where their shared memory fits (and then at most 128 registers) */
    static constexpr int MIN_BLOCKS = 2 * (SMEM_BYTES + 1024) <= 228 * 1024 ? 2 : 1;
};

/* Where 16-byte chunk c (k = 8c .. 8c + 7) of x row r sits in a WG stage's x plane, in halves:
 * wgmma's 128-byte swizzle XORs the chunk with the row's place in its 8-row, 1024-byte atom. */
static CU_HD int gm_xswz(int r, int c) { return r * GM_BK + ((c ^ (r & 7)) << 3); }

/* ---- x, rounded once ------------------------------------------------------------------------ */
/* Where logical k (within its 16) sits in an AWQ GEMM's x row: the fragment's k pairs (2j, 2j + 1)
 * and (2j + 8, 2j + 9) of lane j must hold x at 4j .. 4j + 3, the weights that lane's word holds. */
static CU_HD int gm_xh_pos(int k) { return (k & ~15) | (k & 2) << 2 | (k & 12) >> 1 | (k & 1); }

/* Unit i of the conversion: 8 consecutive x of one row (rows of K, K % 8 == 0; AWQ: 16, K % 16
 * == 0, since its permutation stays within 16). */
template <int SRC> static CU_HD void gm_xh_unit(const float *x, uint16_t *xh, int64_t TK, int64_t i)
{
    constexpr int U = SRC == GM_AWQ ? 16 : 8;
    const int64_t at = i * U;
    float v[U];
    CU_UNROLL
    for (int j = 0; j < U / 4; j++) {
        float4 f = CU_LDG(reinterpret_cast<const float4 *>(x + at) + j);
        v[4 * j] = f.x, v[4 * j + 1] = f.y, v[4 * j + 2] = f.z, v[4 * j + 3] = f.w;
    }
    if (SRC == GM_BF16) {
        float lo[U];
        CU_UNROLL
        for (int e = 0; e < U; e++) {
            float hi = __bfloat162float(__float2bfloat16_rn(v[e]));
            lo[e] = v[e] - hi; /* exact */
            v[e] = hi;
        }
        *reinterpret_cast<uint4 *>(xh + TK + at) = make_uint4(cu_pack2(lo[0], lo[1], true), cu_pack2(lo[2], lo[3], true),
                                                              cu_pack2(lo[4], lo[5], true), cu_pack2(lo[6], lo[7], true));
    }
    if (SRC == GM_AWQ) {
        float p[U];
        CU_UNROLL
        for (int e = 0; e < U; e++) p[gm_xh_pos(e)] = v[e];
        CU_UNROLL
        for (int e = 0; e < U; e++) v[e] = p[e];
    }
    CU_UNROLL
    for (int j = 0; j < U / 8; j++) {
        const bool bf = SRC == GM_BF16;
        const float *q = v + 8 * j;
        *reinterpret_cast<uint4 *>(xh + at + 8 * j) =
            make_uint4(cu_pack2(q[0], q[1], bf), cu_pack2(q[2], q[3], bf), cu_pack2(q[4], q[5], bf), cu_pack2(q[6], q[7], bf));
    }
}

template <int SRC> __global__ void gm_xh_kernel(const float *x, uint16_t *xh, int64_t TK)
{
    constexpr int U = SRC == GM_AWQ ? 16 : 8;
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < TK / U) gm_xh_unit<SRC>(x, xh, TK, i);
}

/* ---- stage loads ------------------------------------------------------------------------------ */
/* A thread's share of every stage's 16-byte copies, worked out once per block (Nsight Compute:
 * redone per stage, their address arithmetic was most of the instructions besides the MMAs).
 * Dense weight and x: chunk j is row (tid >> 3) + 32 j of its tile at k offset (tid & 7) * 8.
 * AWQ: the thread's word chunk of tile (n0 >> 4) + (tid >> 5), and threads below 32 the meta
 * words of columns n0 + 4 tid .. + 3. A stage then adds only k0. Rows, tokens and k past the
 * matrix read as zeros (K % 8 == 0: a chunk is wholly in or out; AWQ tiles past N16 and their
 * meta likewise, scale 0). */
struct gm_loader {
    int64_t  woff, xoff, moff; /* the first chunk's source at k = 0, in elements of w (halves), xh, meta */
    int64_t  row32, plane;     /* 32 rows of K; one bf16 plane of xh (T K) */
    int      dst, xdst, col;   /* (tid >> 3) * LDS + col; the same for x (WG: swizzled); (tid & 7) * 8 */
    int      n16;              /* AWQ: N16 */
    uint32_t win, xin;         /* bit j: chunk j's weight row (AWQ: bit 0 the tile, bit 1 the meta) / token inside */
};

template <int BT, int SRC, bool WG = false> static CU_HD gm_loader gm_loader_at(const gm_params &P, int n0, int t0, int tid)
{
    gm_loader L;
    const int r = tid >> 3;
    L.col = (tid & 7) * 8, L.dst = r * GM_LDS + L.col, L.row32 = (int64_t)32 * P.K, L.plane = (int64_t)P.T * P.K;
    L.xdst = WG ? gm_xswz(r, tid & 7) : L.dst; /* rows r + 32 j: the same place in their atoms */
    L.xoff = (int64_t)(t0 + r) * P.K + L.col, L.xin = 0;
    for (int j = 0; j < BT / 32; j++) L.xin |= (uint32_t)(t0 + r + 32 * j < P.T) << j;
    L.n16 = CU_AWQ_N16(P.N), L.win = 0, L.moff = 0;
    if (SRC == GM_AWQ) { /* in halves: a lane's 16 bytes are 8 */
        const int tile = (n0 >> 4) + (tid >> 5);
        L.woff = ((int64_t)tile * (P.K >> 6) * 32 + (tid & 31)) * 8, L.moff = n0 + 4 * tid;
        L.win = (uint32_t)(tile * 16 < L.n16) | (uint32_t)(tid < GM_BN / 4 && n0 + 4 * tid < L.n16) << 1;
    } else {
        L.woff = (int64_t)(n0 + r) * P.K + L.col;
        for (int j = 0; j < GM_BN / 32; j++) L.win |= (uint32_t)(n0 + r + 32 * j < P.N) << j;
    }
    return L;
}

/* The thread's copies of k-tile k0 into stage st. */
template <int BT, int SRC, bool WG = false>
static CU_HD void gm_load_stage(const gm_params &P, const gm_loader &L, int k0, int tid, uint16_t *st)
{
    typedef gm_shape<BT, SRC, WG> S;
    const uint16_t *w = (const uint16_t *)P.w;
    const bool kin = k0 + L.col < P.K;
    if (SRC == GM_AWQ) {
        const bool in = L.win & 1; /* chunk k0 / 64 of the tile: 32 lanes x 16 bytes further per chunk */
        cu_cp16(st + tid * 8, w + (in ? L.woff + (int64_t)(k0 >> 6) * 256 : 0), in);
        if (tid < GM_BN / 4) { /* the meta of the group holding k0 */
            const bool min = L.win >> 1 & 1;
            cu_cp16(st + GM_META_OFF + 8 * tid, P.meta + (min ? L.moff + (int64_t)(k0 >> 7) * L.n16 : 0), min);
        }
    } else {
        CU_UNROLL
        for (int j = 0; j < GM_BN / 32; j++) {
            const bool in = (L.win >> j & 1) && kin;
            cu_cp16(st + L.dst + 32 * j * GM_LDS, w + (in ? L.woff + j * L.row32 + k0 : 0), in);
        }
    }
    CU_UNROLL
    for (int j = 0; j < S::XP * BT / 32; j++) {
        const int p = j / (BT / 32), jj = j % (BT / 32);
        const bool in = (L.xin >> jj & 1) && kin;
        cu_cp16(st + S::W_HALVES + p * S::X_PLANE + L.xdst + 32 * jj * S::XLD, P.xh + (in ? L.xoff + p * L.plane + jj * L.row32 + k0 : 0), in);
    }
}

/* ---- fragments -------------------------------------------------------------------------------- */
/* ldmatrix .x4 row addresses (lane l gives row l & 7 of matrix l >> 3), in halves from the tile start.
 * A (weight rows r0..r0+15 at k = kk..kk+15): matrices (r0, kk), (r0+8, kk), (r0, kk+8), (r0+8, kk+8)
 * are the fragment registers a0..a3 of mma m16n8k16.
 * B (tokens c0..c0+15): matrices (c0, kk), (c0, kk+8), (c0+8, kk), (c0+8, kk+8) are b0, b1 of the n8
 * tile at c0 and b0, b1 of the one at c0 + 8. */
static CU_HD int gm_a_row(int lane, int r0, int kk) { return (r0 + (lane & 7) + ((lane >> 3) & 1) * 8) * GM_LDS + kk + (lane >> 4) * 8; }
static CU_HD int gm_b_row(int lane, int c0, int kk) { return (c0 + (lane & 7) + (lane >> 4) * 8) * GM_LDS + kk + ((lane >> 3) & 1) * 8; }

/* The warp's share of the block tile: its first weight row and token. */
template <int BT, int SRC, bool WG = false> static CU_HD int gm_warp_w(int warp)
{
    typedef gm_shape<BT, SRC, WG> S;
    return warp % S::WARPS_W * 16 * S::WM;
}
template <int BT, int SRC, bool WG = false> static CU_HD int gm_warp_t(int warp)
{
    typedef gm_shape<BT, SRC, WG> S;
    return warp / S::WARPS_W * 8 * S::WN;
}

/* An AWQ tile's words and scales in a stage, as one lane takes them: tile j (0..7) of the block. */
struct gm_awq_lane {
    uint4    q;        /* word s: the A fragment of the k16 step s */
    uint32_t za, zb;   /* cu_awq_frag's zero constants, columns g and g + 8 */
    uint32_t sa, sb;   /* their scales, twice */
};

static CU_HD gm_awq_lane gm_awq_take(const uint16_t *st, int j, int lane)
{
    const uint32_t *meta = reinterpret_cast<const uint32_t *>(st + GM_META_OFF) + j * 16 + (lane >> 2);
    gm_awq_lane r;
    r.q = reinterpret_cast<const uint4 *>(st)[j * 32 + lane];
    r.za = cu_awq_za(meta[0]), r.zb = cu_awq_zb(meta[8]);
    r.sa = (meta[0] & 0xffffu) * 0x10001u, r.sb = (meta[8] & 0xffffu) * 0x10001u;
    return r;
}

/* The A fragment of step s: (q - z) * s, one rounding (rows g: a0, a2; rows g + 8: a1, a3). */
static CU_HD void gm_awq_frag(const gm_awq_lane &r, int s, uint32_t (&a)[4])
{
    cu_awq_frag(s == 0 ? r.q.x : s == 1 ? r.q.y : s == 2 ? r.q.z : r.q.w, r.za, r.zb, a);
    a[0] = cu_hmul2(a[0], r.sa), a[1] = cu_hmul2(a[1], r.sb), a[2] = cu_hmul2(a[2], r.sa), a[3] = cu_hmul2(a[3], r.sb);
}

/* Accumulator (j, nt, e) of a lane: weight row g (+8 for e >= 2) of the warp's m16 tile j, token
 * 2tg (+1 for odd e) of its n8 tile nt; y[token][row] = it + bias[row]. */
template <int BT, int SRC, bool WG = false>
static CU_HD void gm_epilogue(const gm_params &P, int n0, int t0, int warp, int lane, const typename gm_shape<BT, SRC, WG>::acc_t &acc)
{
    typedef gm_shape<BT, SRC, WG> S;
    const int g = lane >> 2, tg = lane & 3;
    CU_UNROLL
    for (int j = 0; j < S::WM; j++)
        CU_UNROLL
        for (int h = 0; h < 2; h++) {
            const int n = n0 + gm_warp_w<BT, SRC, WG>(warp) + j * 16 + g + 8 * h;
            if (n >= P.N) continue;
            const float b = P.bias ? cu_load_dt(P.bias, P.bdt, n) : 0.0f;
            CU_UNROLL
            for (int nt = 0; nt < S::WN; nt++)
                CU_UNROLL
                for (int e = 0; e < 2; e++) {
                    const int t = t0 + gm_warp_t<BT, SRC, WG>(warp) + nt * 8 + 2 * tg + e;
                    if (t < P.T) P.y[(int64_t)t * P.N + n] = acc[j][nt][2 * h + e] + b;
                }
        }
}

#ifdef __CUDA_ARCH__
static __device__ __forceinline__ void gm_ldsm4(uint32_t (&r)[4], const uint16_t *p)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}


/* The warp's MMAs over one stage (tests/cuda_host.cu: host_mma_stage is its CPU twin). */
template <int BT, int SRC>
static __device__ __forceinline__ void gm_mma_stage(const uint16_t *st, int warp, int lane, typename gm_shape<BT, SRC>::acc_t &acc)
{
    typedef gm_shape<BT, SRC> S;
    constexpr bool BF = SRC == GM_BF16;
    const int wr = gm_warp_w<BT, SRC>(warp), wt = gm_warp_t<BT, SRC>(warp);
    gm_awq_lane q[S::WM];
#pragma unroll
    for (int j = 0; j < S::WM; j++)
        if (SRC == GM_AWQ) q[j] = gm_awq_take(st, wr / 16 + j, lane);
    const uint16_t *xs = st + S::W_HALVES;
#pragma unroll
    for (int s = 0; s < GM_BK / 16; s++) {
        const int kk = s * 16;
        uint32_t a[S::WM][4];
#pragma unroll
        for (int j = 0; j < S::WM; j++) {
            if (SRC == GM_AWQ) gm_awq_frag(q[j], s, a[j]);
            else gm_ldsm4(a[j], st + gm_a_row(lane, wr + j * 16, kk));
        }
#pragma unroll
        for (int p = 0; p < S::WN / 2; p++) {
            uint32_t b[4], bl[4];
            gm_ldsm4(b, xs + gm_b_row(lane, wt + p * 16, kk));
            if (BF) gm_ldsm4(bl, xs + S::X_PLANE + gm_b_row(lane, wt + p * 16, kk));
#pragma unroll
            for (int j = 0; j < S::WM; j++) {
                cu_mma<BF>(acc[j][2 * p], a[j], b[0], b[1]);
                cu_mma<BF>(acc[j][2 * p + 1], a[j], b[2], b[3]);
                if (BF) cu_mma<true>(acc[j][2 * p], a[j], bl[0], bl[1]), cu_mma<true>(acc[j][2 * p + 1], a[j], bl[2], bl[3]);
            }
        }
    }
}

#if GM_WGMMA
/* wgmma's shared-memory descriptor of an x plane (K-major, 128-byte swizzle): the start address,
 * the leading offset (unused by swizzled K-major layouts: 1), 1024 bytes from one 8-row atom to the
 * next, swizzle mode 1. A k16 step within the 64 k of a row adds its 32 bytes to the start. */
static __device__ __forceinline__ uint64_t gm_desc(const uint16_t *p)
{
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    return (uint64_t)((a & 0x3ffffu) >> 4) | (uint64_t)1 << 16 | (uint64_t)(1024 >> 4) << 32 | (uint64_t)1 << 62;
}

/* d += A · B for the warpgroup: A 64 weight rows x k16 from registers (each warp's 16 rows as an
 * mma.sync m16n8k16 A fragment), B the BT tokens' x at desc; d as gm_shape's acc_t (n8 tile nt,
 * element e: d[4 nt + e], mma.sync's C layout per tile). */
/* wgmma m64nNk16 with f32 accumulators: TY the A and B type, D the accumulator registers' names,
 * A the A fragment's and the descriptor's, then the accumulator operands. */
#define GM_WGMMA_ASM(N, TY, D, A, ...)                                                                          \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\nwgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY \
                 " " D ", " A ", p, 1, 1, 0;\n}\n"                                                              \
                 : __VA_ARGS__                                                                                 \
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc))
#define GM_D8(i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define GM_D32(i) GM_D8(i), GM_D8(i + 8), GM_D8(i + 16), GM_D8(i + 24)
#define GM_DREGS64 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define GM_DREGS32 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
template <int BT, bool BF> static __device__ __forceinline__ void gm_wgmma(float *d, const uint32_t (&a)[4], uint64_t desc)
{
    static_assert(BT == 128 || BT == 64, "token tiles of 128 or 64");
    if constexpr (BT == 128 && BF) GM_WGMMA_ASM(128, "bf16", GM_DREGS64, "{%64, %65, %66, %67}, %68", GM_D32(0), GM_D32(32));
    else if constexpr (BT == 128) GM_WGMMA_ASM(128, "f16", GM_DREGS64, "{%64, %65, %66, %67}, %68", GM_D32(0), GM_D32(32));
    else if constexpr (BF) GM_WGMMA_ASM(64, "bf16", GM_DREGS32, "{%32, %33, %34, %35}, %36", GM_D32(0));
    else GM_WGMMA_ASM(64, "f16", GM_DREGS32, "{%32, %33, %34, %35}, %36", GM_D32(0));
}
#undef GM_WGMMA_ASM
#undef GM_D8
#undef GM_D32
#undef GM_DREGS64
#undef GM_DREGS32
#endif

/* The warp's A fragments of a WG stage's four k16 steps: its 16 weight rows, made as gm_mma_stage
 * makes them. */
template <int BT, int SRC>
static __device__ __forceinline__ void gm_wg_frags(const uint16_t *st, int warp, int lane, uint32_t (&a)[GM_BK / 16][4])
{
    const int wr = gm_warp_w<BT, SRC, true>(warp);
    if (SRC == GM_AWQ) {
        const gm_awq_lane q = gm_awq_take(st, wr / 16, lane);
#pragma unroll
        for (int s = 0; s < GM_BK / 16; s++) gm_awq_frag(q, s, a[s]);
    } else {
#pragma unroll
        for (int s = 0; s < GM_BK / 16; s++) gm_ldsm4(a[s], st + gm_a_row(lane, wr, s * 16));
    }
}

/* The warpgroup's wgmmas over a WG stage, one per k16 step (two for bf16: x's hi and lo planes)
 * over all BT tokens, committed as one group; the caller waits for them (wgmma.wait_group) before
 * the stage or the fragments are written again. */
template <int BT, int SRC>
static __device__ __forceinline__ void gm_wg_issue(const uint16_t *st, const uint32_t (&a)[GM_BK / 16][4],
                                                   typename gm_shape<BT, SRC, true>::acc_t &acc)
{
#if GM_WGMMA
    typedef gm_shape<BT, SRC, true> S;
    constexpr bool BF = SRC == GM_BF16;
    const uint64_t xd = gm_desc(st + S::W_HALVES);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int s = 0; s < GM_BK / 16; s++) {
        gm_wgmma<BT, BF>(&acc[0][0][0], a[s], xd + 2 * s);
        if (BF) gm_wgmma<BT, true>(&acc[0][0][0], a[s], xd + (S::X_PLANE * 2 >> 4) + 2 * s);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
    __trap(); /* launched only where gm_wg_probe found sm_90a code */
#endif
}

template <int N> static __device__ __forceinline__ void gm_wg_wait(void)
{
#if GM_WGMMA
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
#endif

/* Up to CU_GEMM_MAX_W weights that read the same x, in one launch: the block rows of weight i are
 * blk0[i] .. blk0[i + 1] - 1 of blockIdx.y (k and v alone are 4 blocks of weight rows each in a
 * 7B layer: 32 blocks for 132 SMs at 512 tokens). */
struct gm_launch {
    gm_params P[CU_GEMM_MAX_W];
    int       blk0[CU_GEMM_MAX_W + 1];
};
static_assert(CU_GEMM_MAX_W == 3, "gm_pick picks among three weights");

/* Sets the n weights' shared fields and blk0; returns their weight rows in whole blocks. */
static int64_t gm_layout(gm_launch &G, int n, const uint16_t *xh, int T, int K)
{
    int64_t rows = 0;
    for (int i = 0; i <= CU_GEMM_MAX_W; i++) {
        G.blk0[i] = (int)(rows / GM_BN);
        if (i >= n) continue;
        G.P[i].xh = xh, G.P[i].T = T, G.P[i].K = K;
        rows += (G.P[i].N + GM_BN - 1) / GM_BN * GM_BN;
    }
    return rows;
}

/* The weight of block row by, and (*n0) its first weight row in that block. */
static CU_HD const gm_params &gm_pick(const gm_launch &G, int by, int *n0)
{
    const int i = by >= G.blk0[1] ? (by >= G.blk0[2] ? 2 : 1) : 0;
    *n0 = (by - G.blk0[i]) * GM_BN;
    return G.P[i];
}

/* blockIdx.x walks the token tiles fastest, so the blocks sharing a weight tile run together and
 * the weight comes from DRAM about once. WG: the MMAs are wgmma's (sm_90a). */
template <int BT, int SRC, bool WG = false>
__global__ void __launch_bounds__(GM_THREADS, gm_shape<BT, SRC, WG>::MIN_BLOCKS) gemm_kernel(const gm_launch G)
{
#ifdef __CUDA_ARCH__
    extern __shared__ __align__(16) uint16_t gm_smem_raw[];
    typedef gm_shape<BT, SRC, WG> S;
    /* WG: wgmma's swizzle atoms are 1024-byte aligned */
    uint16_t *gm_smem = gm_smem_raw + (WG ? (1024 - (__cvta_generic_to_shared(gm_smem_raw) & 1023)) % 1024 / 2 : 0);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int n0;
    const gm_params &P = gm_pick(G, blockIdx.y, &n0);
    const int t0 = blockIdx.x * BT, nk = (P.K + GM_BK - 1) / GM_BK;
    const gm_loader L = gm_loader_at<BT, SRC, WG>(P, n0, t0, tid);
    typename S::acc_t acc;
#pragma unroll
    for (int j = 0; j < S::WM; j++)
#pragma unroll
        for (int nt = 0; nt < S::WN; nt++) acc[j][nt][0] = acc[j][nt][1] = acc[j][nt][2] = acc[j][nt][3] = 0.0f;
#pragma unroll
    for (int s = 0; s < S::STAGES - 1; s++) {
        if (s < nk) gm_load_stage<BT, SRC, WG>(P, L, s * GM_BK, tid, gm_smem + s * S::STAGE);
        cu_cp_commit(); /* empty groups too: the wait below counts groups */
    }
    for (int kt = 0; kt < nk; kt++) {
        cu_cp_wait<S::STAGES - 2>(); /* this thread's copies of k-tile kt have landed ... */
        if (WG) asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); /* ... visible to wgmma ... */
        __syncthreads(); /* ... and everyone's; and k-tile kt - 1's stage is free again */
        const int nx = kt + S::STAGES - 1;
        if (nx < nk) gm_load_stage<BT, SRC, WG>(P, L, nx * GM_BK, tid, gm_smem + (nx % S::STAGES) * S::STAGE);
        cu_cp_commit();
        const uint16_t *st = gm_smem + (kt % S::STAGES) * S::STAGE;
        if constexpr (WG) {
            /* all of it before the next barrier: wgmma's reads of A registers defined while an earlier
             * wgmma runs make ptxas serialise them (C7513), so a k-tile's fragments cannot be made
             * while the last one's wgmmas run; the SM's other three warpgroups fill that gap */
            uint32_t a[GM_BK / 16][4];
            gm_wg_frags<BT, SRC>(st, warp, lane, a);
            gm_wg_issue<BT, SRC>(st, a, acc);
            gm_wg_wait<0>();
        } else {
            gm_mma_stage<BT, SRC>(st, warp, lane, acc);
        }
    }
    gm_epilogue<BT, SRC, WG>(P, n0, t0, warp, lane, acc);
#endif
}

/* Whether this build has sm_90a code for the device set up: its probe writes 1 only there. */
__device__ int gm_wg_flag;
__global__ void gm_wg_probe(void) { gm_wg_flag = GM_WGMMA; }

/* 128-token tiles when they still give every SM two blocks; 64 otherwise (short prompts,
 * narrow matrices such as o, k, v and down), trading weight re-reads for occupancy. */
static int gm_tokens(int T, int N, int sm_count)
{
    int64_t tiles = (int64_t)((T + 127) / 128) * ((N + GM_BN - 1) / GM_BN);
    return tiles >= 2 * (int64_t)sm_count ? 128 : 64;
}

/* The least opt-in shared memory per block of the devices set up (loom__cu_gemm_init): tiles whose
 * stages do not fit are not used (sm_86 and sm_89 allow 99 KiB a block, the A100 163, the H100 227).
 * gm_wg: every device set up runs this build's sm_90a code, and wgmma was not turned off. */
static size_t gm_smem_limit = SIZE_MAX;
static bool   gm_wg, gm_any_init;
template <int BT, int SRC> static bool gm_fits(void)
{
    return (size_t)(gm_wg ? gm_shape<BT, SRC, true>::SMEM_BYTES : gm_shape<BT, SRC>::SMEM_BYTES) <= gm_smem_limit;
}

template <int BT, int SRC> static void gm_go(dim3 grid, cudaStream_t s, const gm_launch &G)
{
    if (gm_wg) gemm_kernel<BT, SRC, true><<<grid, GM_THREADS, gm_shape<BT, SRC, true>::SMEM_BYTES, s>>>(G);
    else gemm_kernel<BT, SRC><<<grid, GM_THREADS, gm_shape<BT, SRC>::SMEM_BYTES, s>>>(G);
}

/* Rounds x into xh (unless xh already holds this x in this form), then multiplies by the n
 * weights of G.P (their w, meta, bias, y and N set). */
template <int SRC> static cudaError_t gm_run(cudaStream_t s, const float *x, cu_xh *xh, gm_launch G, int n, int T, int K, int sm_count)
{
    const int64_t TK = (int64_t)T * K;
    if (n < 1 || n > CU_GEMM_MAX_W || !cu_aligned16(x) || K % (SRC == GM_AWQ ? 16 : 8) ||
        xh->bytes < loom__cu_gemm_xh_bytes(SRC == GM_BF16 ? LOOM_BF16 : LOOM_F16, T, K) || !gm_fits<64, SRC>())
        return cudaErrorInvalidValue;
    if (xh->x != x || xh->T != T || xh->K != K || xh->form != SRC) {
        const int64_t units = TK / (SRC == GM_AWQ ? 16 : 8);
        gm_xh_kernel<SRC><<<(unsigned)((units + 255) / 256), 256, 0, s>>>(x, (uint16_t *)xh->p, TK);
        cudaError_t e = cudaGetLastError();
        if (e) return e;
        xh->x = x, xh->T = T, xh->K = K, xh->form = SRC;
    }
    const int64_t rows = gm_layout(G, n, (const uint16_t *)xh->p, T, K);
    for (int i = 0; i < n; i++)
        if ((uintptr_t)G.P[i].y < (uintptr_t)(x + TK) && (uintptr_t)x < (uintptr_t)(G.P[i].y + (int64_t)T * G.P[i].N))
            xh->x = nullptr; /* a y written over x: the next x at this address is another */
    if (rows > 65535 * GM_BN) return cudaErrorInvalidValue;
    const int bt = gm_fits<128, SRC>() ? gm_tokens(T, (int)rows, sm_count) : 64;
    dim3 grid((unsigned)((T + bt - 1) / bt), (unsigned)(rows / GM_BN));
    if (bt == 128) gm_go<128, SRC>(grid, s, G);
    else gm_go<64, SRC>(grid, s, G);
    return cudaGetLastError();
}

template <int BT, int SRC, bool WG> static cudaError_t gm_allow_smem(void)
{
    if ((size_t)gm_shape<BT, SRC, WG>::SMEM_BYTES > gm_smem_limit) return cudaSuccess;
    cudaError_t e = cudaFuncSetAttribute(gemm_kernel<BT, SRC, WG>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         gm_shape<BT, SRC, WG>::SMEM_BYTES);
    return e ? e : cudaFuncSetAttribute(gemm_kernel<BT, SRC, WG>, cudaFuncAttributePreferredSharedMemoryCarveout,
                                        cudaSharedmemCarveoutMaxShared);
}

template <bool WG> static cudaError_t gm_allow_all(void)
{
    cudaError_t e;
    if ((e = gm_allow_smem<64, GM_F16, WG>()) || (e = gm_allow_smem<128, GM_F16, WG>()) || (e = gm_allow_smem<64, GM_BF16, WG>()) ||
        (e = gm_allow_smem<128, GM_BF16, WG>()) || (e = gm_allow_smem<64, GM_AWQ, WG>()) || (e = gm_allow_smem<128, GM_AWQ, WG>()))
        return e;
    return cudaSuccess;
}

/* Every stage set is above the 48 KiB default: raise the limit for those the current device fits.
 * Then probe whether the device runs the sm_90a code (only those kernels have wgmma). */
extern "C" cudaError_t loom__cu_gemm_init(int allow_wgmma, int *wgmma)
{
    int dev, optin, flag = 0;
    cudaError_t e;
    if ((e = cudaGetDevice(&dev)) || (e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev)))
        return e;
    if ((size_t)optin < gm_smem_limit) gm_smem_limit = (size_t)optin;
    if (allow_wgmma) {
        gm_wg_probe<<<1, 1>>>();
        if ((e = cudaGetLastError()) || (e = cudaMemcpyFromSymbol(&flag, gm_wg_flag, sizeof flag))) return e;
    }
    gm_wg = (gm_any_init ? gm_wg : true) && flag, gm_any_init = true;
    *wgmma = gm_wg;
    return gm_wg ? gm_allow_all<true>() : gm_allow_all<false>();
}

extern "C" size_t loom__cu_gemm_xh_bytes(int wdt, int T, int64_t K)
{
    return (wdt == LOOM_BF16 ? 2 : 1) * (size_t)T * (size_t)K * sizeof(uint16_t);
}

extern "C" cudaError_t loom__cu_gemm(cudaStream_t s, const float *x, int wdt, const cu_gemm_w *w, int n, int T, int64_t K,
                                     cu_xh *xh, int sm_count)
{
    gm_launch G = {};
    if (n < 1 || n > CU_GEMM_MAX_W) return cudaErrorInvalidValue;
    for (int i = 0; i < n; i++) {
        gm_params &P = G.P[i];
        P.bias = w[i].bias, P.bdt = w[i].bdt, P.y = w[i].y, P.N = (int)w[i].N;
        if (wdt == LOOM_Q4_AWQ) {
            const cu_awq *a = w[i].awq;
            if (a->K != K || !cu_aligned16(a->q) || !cu_aligned16(a->meta)) return cudaErrorInvalidValue;
            P.w = a->q, P.meta = a->meta;
        } else {
            P.w = w[i].w;
        }
    }
    if (wdt == LOOM_Q4_AWQ) return gm_run<GM_AWQ>(s, x, xh, G, n, T, (int)K, sm_count);
    bool tc = K % 8 == 0 && K <= INT32_MAX && cu_aligned16(x) && (wdt == LOOM_F16 || wdt == LOOM_BF16) &&
              (wdt == LOOM_BF16 ? gm_fits<64, GM_BF16>() : gm_fits<64, GM_F16>());
    for (int i = 0; i < n; i++) tc = tc && cu_aligned16(w[i].w);
    if (tc) return wdt == LOOM_BF16 ? gm_run<GM_BF16>(s, x, xh, G, n, T, (int)K, sm_count)
                                    : gm_run<GM_F16>(s, x, xh, G, n, T, (int)K, sm_count);
    xh->x = nullptr; /* a y may land where that x was */
    for (int i = 0; i < n; i++) {
        cudaError_t e = loom__cu_gemv(s, x, w[i].w, wdt, w[i].bias, w[i].bdt, w[i].y, T, K, w[i].N, sm_count);
        if (e) return e;
    }
    return cudaSuccess;
}
