/* conformance.c — every op on one device against the float64 reference, at
 * Qwen2.5's real shapes. See conformance.h for the method. */
#include <stdlib.h>
#include <time.h>

#include "conformance.h"
#include "reference.h"

/* ---- tolerances: the one table --------------------------------------------
 * Max NMSE per (op, dtype). The dtype is the weight's, table's or KV cache's
 * (f32 for activation-only ops). Inputs narrower than f32 are converted to
 * the exact same values on host and device, so a weight dtype by itself adds
 * no error: what is left is f32 arithmetic, plus the f16 rounding of the new
 * k, v a gqa_attn step stores into an f16 cache (the reference keeps them
 * exact). Every value sits >= 10x above what a correct f32 implementation
 * shows on these cases and >= 1000x below a wrong index, layout, position or
 * missing bias (NMSE ~1e-2 .. 2). */
static const struct {
    loom_op    op;
    loom_dtype dt;
    double     max_nmse;
} thresholds[] = {
    /* a row copy (f16/bf16 widen exactly to f32): anything but exact is a bug */
    {LOOM_OP_EMBED,      LOOM_F32,    1e-14},
    {LOOM_OP_EMBED,      LOOM_F16,    1e-14},
    {LOOM_OP_EMBED,      LOOM_BF16,   1e-14},
    /* f32 sum of squares over <= 5120 columns and a rsqrt: ~1e-13 */
    {LOOM_OP_RMSNORM,    LOOM_F32,    1e-10},
    {LOOM_OP_RMSNORM,    LOOM_F16,    1e-10},
    {LOOM_OP_RMSNORM,    LOOM_BF16,   1e-10},
    /* f32 dot products of K <= 27648 terms: ~K·eps² ≈ 1e-11 for naive
     * accumulation. GPU prefill on tensor cores rounds the activations to
     * f16 (~1e-7) or bf16 (~5e-6) with f32 accumulation; that is allowed.
     * A lost K block, a missing bias or a transposed layout is >= 1e-3. */
    {LOOM_OP_MATMUL,     LOOM_F32,    1e-5},
    {LOOM_OP_MATMUL,     LOOM_F16,    1e-5},
    {LOOM_OP_MATMUL,     LOOM_BF16,   1e-5},
    /* (q - z)·s is exact in f32 (4-bit int times an f16): as matmul */
    {LOOM_OP_MATMUL_AWQ, LOOM_Q4_AWQ, 1e-5},
    /* an f32 angle pos·inv_freq at pos ~32000 is off by up to half an ulp
     * (~1e-3 rad for the fastest pair): ~5e-8. One position off: ~1e-1. */
    {LOOM_OP_ROPE,       LOOM_F32,    1e-6},
    /* f32 softmax and weighted sums over <= 4096 positions: ~1e-12 */
    {LOOM_OP_GQA_ATTN,   LOOM_F32,    1e-8},
    /* the step's k, v rounded to f16 in the cache (rel. 2^-11): up to ~1e-7
     * when the step's own tokens dominate (kv_len 1) */
    {LOOM_OP_GQA_ATTN,   LOOM_F16,    1e-5},
    /* expf and two f32 roundings: ~1e-14 */
    {LOOM_OP_SWIGLU,     LOOM_F32,    1e-10},
    /* one f32 rounding: ~1e-15 */
    {LOOM_OP_ADD,        LOOM_F32,    1e-12},
};

double loom_check_threshold(loom_op op, loom_dtype dt)
{
    for (size_t i = 0; i < sizeof thresholds / sizeof *thresholds; i++)
        if (thresholds[i].op == op && thresholds[i].dt == dt) return thresholds[i].max_nmse;
    return 0; /* no entry: nothing passes, so a missing row is noticed */
}

/* ---- the case table ------------------------------------------------------- */
#define MM(l, d, t, k, n, b)        {.label = l, .op = LOOM_OP_MATMUL, .dtype = d, .T = t, .K = k, .N = n, .bias = b}
#define AWQ(l, t, k, n, b)          {.label = l, .op = LOOM_OP_MATMUL_AWQ, .dtype = LOOM_Q4_AWQ, .T = t, .K = k, .N = n, .bias = b}
#define ATT_X(l, d, t, hq, hkv, hd, c, len, ns, shuf) \
    {.label = l, .op = LOOM_OP_GQA_ATTN, .dtype = d, .T = t, .n_head = hq, .n_head_kv = hkv, .head_dim = hd, \
     .ctx = c, .kv_len = len, .n_seq = ns, .shuffle = shuf}
#define ATT(l, d, t, hq, hkv, hd, c, len, ns)      ATT_X(l, d, t, hq, hkv, hd, c, len, ns, false)
#define ATT_SHUF(l, d, t, hq, hkv, hd, c, len, ns) ATT_X(l, d, t, hq, hkv, hd, c, len, ns, true)
#define ROPE(l, t, h, hd, maxpos, y) \
    {.label = l, .op = LOOM_OP_ROPE, .dtype = LOOM_F32, .T = t, .n_head = h, .head_dim = hd, .ctx = maxpos, .yarn = y}
#define NORM(l, d, t, n)            {.label = l, .op = LOOM_OP_RMSNORM, .dtype = d, .T = t, .N = n}
#define EMB(l, d, t, v, n)          {.label = l, .op = LOOM_OP_EMBED, .dtype = d, .T = t, .K = v, .N = n}
#define EW(l, o, t, n)              {.label = l, .op = o, .dtype = LOOM_F32, .T = t, .N = n}

static const loom_check_case full_cases[] = {
    /* embed: the 0.5B vocabulary, every table dtype */
    EMB("0.5B", LOOM_F32, 9, 151936, 896), EMB("0.5B", LOOM_F16, 9, 151936, 896), EMB("0.5B", LOOM_BF16, 9, 151936, 896),
    /* rmsnorm */
    NORM("0.5B", LOOM_F32, 7, 896), NORM("0.5B", LOOM_F16, 7, 896), NORM("0.5B", LOOM_BF16, 7, 896),
    NORM("7B", LOOM_BF16, 1, 3584), NORM("32B", LOOM_BF16, 16, 5120),
    /* matmul: 0.5B projections (q with bias, up, down), every weight dtype */
    MM("0.5B", LOOM_F32, 1, 896, 4864, false), MM("0.5B", LOOM_F32, 16, 896, 896, true), MM("0.5B", LOOM_F32, 5, 4864, 896, false),
    MM("0.5B", LOOM_F16, 1, 896, 4864, false), MM("0.5B", LOOM_F16, 16, 896, 896, true), MM("0.5B", LOOM_F16, 5, 4864, 896, false),
    MM("0.5B", LOOM_BF16, 1, 896, 4864, false), MM("0.5B", LOOM_BF16, 16, 896, 896, true), MM("0.5B", LOOM_BF16, 5, 4864, 896, false),
    MM("0.5B", LOOM_BF16, 1, 896, 151936, false), /* lm_head */
    MM("7B", LOOM_F16, 1, 3584, 18944, false), MM("7B", LOOM_F16, 1, 3584, 512, true), /* up, k with bias */
    /* matmul_awq: up and down projections, decode and prefill */
    AWQ("0.5B", 1, 896, 4864, false), AWQ("0.5B", 64, 896, 4864, false), AWQ("0.5B", 16, 4864, 896, true),
    AWQ("0.5B", 3, 896, 128, true),
    AWQ("7B", 1, 3584, 18944, false), AWQ("7B", 16, 3584, 18944, false), AWQ("7B", 1, 18944, 3584, false),
    AWQ("7B", 4, 3584, 3584, true),
    AWQ("32B", 1, 5120, 27648, false), AWQ("32B", 1, 27648, 5120, false), AWQ("32B", 2, 5120, 1024, true),
    /* rope: theta 1e6 at positions up to ~32000; one YaRN (factor 4, 32768) */
    ROPE("0.5B", 16, 14, 64, 32000, 0), ROPE("0.5B", 1, 2, 64, 32000, 0), ROPE("7B", 4, 28, 128, 32000, 0),
    ROPE("32B", 2, 40, 128, 32000, 0), ROPE("7B", 8, 28, 128, 32000, 4),
    /* gqa_attn decode over 1, 17, 512 and 4096 positions, f16 and f32 caches */
    ATT("0.5B", LOOM_F16, 1, 14, 2, 64, 64, 1, 1), ATT("0.5B", LOOM_F16, 1, 14, 2, 64, 64, 17, 1),
    ATT("0.5B", LOOM_F16, 1, 14, 2, 64, 1024, 512, 1), ATT("0.5B", LOOM_F16, 1, 14, 2, 64, 4096, 4096, 1),
    ATT("0.5B", LOOM_F32, 1, 14, 2, 64, 64, 1, 1), ATT("0.5B", LOOM_F32, 1, 14, 2, 64, 64, 17, 1),
    ATT("0.5B", LOOM_F32, 1, 14, 2, 64, 1024, 512, 1), ATT("0.5B", LOOM_F32, 1, 14, 2, 64, 4096, 4096, 1),
    ATT("7B", LOOM_F16, 1, 28, 4, 128, 64, 1, 1), ATT("7B", LOOM_F16, 1, 28, 4, 128, 64, 17, 1),
    ATT("7B", LOOM_F16, 1, 28, 4, 128, 1024, 512, 1), ATT("7B", LOOM_F16, 1, 28, 4, 128, 4096, 4096, 1),
    ATT("7B", LOOM_F32, 1, 28, 4, 128, 1024, 512, 1),
    ATT("32B", LOOM_F16, 1, 40, 8, 128, 64, 1, 1), ATT("32B", LOOM_F16, 1, 40, 8, 128, 64, 17, 1),
    ATT("32B", LOOM_F16, 1, 40, 8, 128, 1024, 512, 1), ATT("32B", LOOM_F16, 1, 40, 8, 128, 4096, 4096, 1),
    ATT("32B", LOOM_F32, 1, 40, 8, 128, 4096, 4096, 1),
    /* one-row decode up to and just past 256 positions (where a backend runs
     * short contexts a kernel of their own), in one slot of three, head_dim 32 */
    ATT("7B", LOOM_F16, 1, 28, 4, 128, 512, 256, 2), ATT("7B", LOOM_F16, 1, 28, 4, 128, 512, 257, 1),
    ATT("0.5B", LOOM_F16, 1, 14, 2, 64, 256, 200, 2), ATT("hd32", LOOM_F16, 1, 8, 2, 32, 256, 130, 1),
    /* decode steps of 2..8 rows (several slots, one slot's consecutive rows,
     * shuffled), long contexts (several partitions where a backend splits
     * them), GQA 7 and 5, and groups of 2 and 16 query heads per KV head */
    ATT("7B", LOOM_F16, 8, 28, 4, 128, 4096, 4096, 3), ATT("7B", LOOM_F16, 8, 28, 4, 128, 512, 200, 1),
    ATT("7B", LOOM_F16, 1, 28, 4, 128, 16384, 16000, 1), ATT("7B", LOOM_F32, 4, 28, 4, 128, 4096, 3000, 2),
    ATT_SHUF("0.5B", LOOM_F16, 5, 14, 2, 64, 2048, 1500, 2), ATT("0.5B", LOOM_F32, 2, 14, 2, 64, 4096, 3000, 2),
    ATT("32B", LOOM_F16, 4, 40, 8, 128, 8192, 6000, 2), ATT_SHUF("32B", LOOM_F32, 7, 40, 8, 128, 1024, 700, 3),
    ATT("G2", LOOM_F16, 6, 8, 4, 128, 1024, 600, 2), ATT("G16", LOOM_F16, 3, 16, 1, 64, 512, 300, 3),
    /* prefill of 32 tokens over a 100-token prefix (and from position 0) */
    ATT("0.5B", LOOM_F16, 32, 14, 2, 64, 256, 132, 1), ATT("0.5B", LOOM_F32, 32, 14, 2, 64, 256, 132, 1),
    ATT("0.5B", LOOM_F16, 32, 14, 2, 64, 64, 32, 1),
    ATT("7B", LOOM_F16, 32, 28, 4, 128, 256, 132, 1), ATT("32B", LOOM_F16, 32, 40, 8, 128, 256, 132, 1),
    /* several sequences in one step: decode in 3 slots, mixed prefill in 2 */
    ATT("0.5B", LOOM_F16, 3, 14, 2, 64, 512, 300, 3), ATT("7B", LOOM_F32, 3, 28, 4, 128, 512, 300, 3),
    ATT("7B", LOOM_F16, 12, 28, 4, 128, 256, 40, 2), ATT("32B", LOOM_F16, 9, 40, 8, 128, 256, 100, 3),
    /* longer prefill (several blocks of rows and tiles of positions where a
     * backend tiles them): after a prefix, from 0, mixed slots, tokens shuffled */
    ATT("7B", LOOM_F16, 100, 28, 4, 128, 512, 300, 1), ATT("0.5B", LOOM_F32, 77, 14, 2, 64, 128, 77, 1),
    ATT("7B", LOOM_F32, 70, 28, 4, 128, 512, 200, 3), ATT_SHUF("0.5B", LOOM_F16, 64, 14, 2, 64, 256, 150, 2),
    ATT_SHUF("7B", LOOM_F16, 50, 28, 4, 128, 256, 90, 3),
    /* head sizes outside Qwen's, where a backend has a general path besides its
     * tuned ones: not a multiple of 8 (decode and prefill), and 256 */
    ATT("hd20", LOOM_F16, 2, 8, 2, 20, 512, 300, 2), ATT("hd20", LOOM_F32, 20, 8, 2, 20, 128, 60, 1),
    ATT("hd256", LOOM_F16, 1, 8, 2, 256, 512, 300, 1), ATT("hd256", LOOM_F16, 24, 8, 2, 256, 256, 100, 2),
    /* swiglu, add */
    EW("0.5B", LOOM_OP_SWIGLU, 16, 4864), EW("7B", LOOM_OP_SWIGLU, 1, 18944), EW("32B", LOOM_OP_SWIGLU, 3, 27648),
    EW("0.5B", LOOM_OP_ADD, 16, 896), EW("7B", LOOM_OP_ADD, 1, 3584), EW("32B", LOOM_OP_ADD, 5, 5120),
    /* an output of 68 MB: the GPU backends read past their pinned staging (64 MiB) straight to the caller */
    EW("68 MB", LOOM_OP_ADD, 1024, 16600),
};

static const loom_check_case quick_cases[] = {
    EMB("small", LOOM_F32, 5, 100, 24), EMB("small", LOOM_F16, 5, 100, 24), EMB("small", LOOM_BF16, 5, 100, 24),
    NORM("small", LOOM_F32, 3, 40), NORM("small", LOOM_F16, 3, 40), NORM("small", LOOM_BF16, 1, 40),
    MM("small", LOOM_F32, 3, 64, 48, false), MM("small", LOOM_F32, 1, 64, 48, true),
    MM("small", LOOM_F16, 3, 64, 48, true), MM("small", LOOM_BF16, 3, 64, 48, true),
    AWQ("small", 1, 256, 64, false), AWQ("small", 5, 256, 64, true),
    ROPE("small", 4, 3, 16, 32000, 0), ROPE("small", 4, 3, 16, 32000, 4),
    ATT("small", LOOM_F16, 1, 4, 2, 16, 16, 1, 1), ATT("small", LOOM_F16, 1, 4, 2, 16, 16, 9, 1),
    ATT("small", LOOM_F32, 1, 4, 2, 16, 16, 9, 1), ATT("small", LOOM_F16, 6, 4, 2, 16, 32, 20, 1),
    ATT("small", LOOM_F32, 6, 4, 2, 16, 32, 20, 1), ATT("small", LOOM_F16, 5, 4, 2, 16, 32, 12, 3),
    ATT("small", LOOM_F16, 4, 8, 2, 32, 512, 300, 2), ATT("small", LOOM_F16, 40, 4, 2, 16, 64, 50, 2), ATT_SHUF("small", LOOM_F32, 37, 4, 1, 32, 64, 45, 1),
    ATT("small", LOOM_F32, 2, 4, 2, 20, 32, 10, 1), ATT("small", LOOM_F16, 12, 4, 2, 20, 32, 20, 1),
    EW("small", LOOM_OP_SWIGLU, 3, 50), EW("small", LOOM_OP_ADD, 3, 50),
};

const loom_check_case *loom_check_cases(bool quick, int32_t *n)
{
    *n = quick ? (int32_t)(sizeof quick_cases / sizeof *quick_cases) : (int32_t)(sizeof full_cases / sizeof *full_cases);
    return quick ? quick_cases : full_cases;
}

const char *loom_check_verdict_name(loom_check_verdict v)
{
    return v == LOOM_CHECK_PASS ? "PASS" : v == LOOM_CHECK_FAIL ? "FAIL" : "unsupported";
}

/* ---- random data ------------------------------------------------------------ */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s) /* [0, 1) */
{
    return (splitmix(s) >> 11) * 0x1.0p-53;
}

/* Mean 0, variance 1, bell-shaped: the sum of four 16-bit uniforms (fast
 * enough for the 136M-element embedding table and lm_head). */
static double gauss(uint64_t *s)
{
    uint64_t r = splitmix(s);
    double u = (double)(r & 0xffff) + (double)((r >> 16) & 0xffff) + (double)((r >> 32) & 0xffff) + (double)(r >> 48);
    return (u / 65536.0 - 2.0) * 1.7320508075688772;
}

static void store(void *p, loom_dtype dt, int64_t i, double v)
{
    switch (dt) {
    case LOOM_F32:  ((float *)p)[i] = (float)v; break;
    case LOOM_F16:  ((uint16_t *)p)[i] = loom_f32_to_f16((float)v); break;
    case LOOM_BF16: ((uint16_t *)p)[i] = loom_f32_to_bf16((float)v); break;
    case LOOM_I32:  ((int32_t *)p)[i] = (int32_t)v; break;
    default: break;
    }
}

static void fill_gauss(uint64_t *s, void *p, loom_dtype dt, int64_t n, double mean, double std)
{
    for (int64_t i = 0; i < n; i++) store(p, dt, i, mean + std * gauss(s));
}

/* Random nibbles for qweight and qzeros; scales uniform in [0.01, 0.05]. */
static void fill_awq(uint64_t *s, void *blob, int64_t K, int64_t N)
{
    size_t nq = (size_t)(K * N / 2 + K / LOOM_AWQ_GROUP * N / 2);
    uint8_t *b = blob;
    for (size_t i = 0; i < nq; i += 8) {
        uint64_t r = splitmix(s);
        memcpy(b + i, &r, nq - i < 8 ? nq - i : 8);
    }
    uint16_t *sc = (uint16_t *)(b + nq);
    for (int64_t i = 0; i < K / LOOM_AWQ_GROUP * N; i++) sc[i] = loom_f32_to_f16((float)(0.01 + 0.04 * uniform(s)));
}

/* ---- one case ------------------------------------------------------------------ */
typedef enum { S_ACT, S_IDS, S_WEIGHT, S_STATE } src_kind;

typedef struct {
    src_kind   kind;
    loom_dtype dt;
    int32_t    ndim;
    int64_t    shape[LOOM_MAX_DIMS];
    double     mean, std; /* gauss fill; S_IDS: std is the vocabulary */
    void      *host;
    size_t     bytes;
    loom_tid   tid;
} src_spec;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int32_t op_max_src(loom_op op)
{
    static const int32_t max_src[LOOM_OP_COUNT] = {
#define X(id, name, lo, hi) [LOOM_OP_##id] = hi,
        LOOM_OPS(X)
#undef X
    };
    return max_src[op];
}

static void describe(const loom_check_case *c, char *b, size_t n)
{
    switch (c->op) {
    case LOOM_OP_EMBED: snprintf(b, n, "T=%d V=%lld D=%lld", c->T, (long long)c->K, (long long)c->N); break;
    case LOOM_OP_MATMUL:
    case LOOM_OP_MATMUL_AWQ:
        snprintf(b, n, "T=%d K=%lld N=%lld%s", c->T, (long long)c->K, (long long)c->N, c->bias ? " +bias" : "");
        break;
    case LOOM_OP_ROPE:
        snprintf(b, n, "T=%d H=%d hd=%d pos<%d%s", c->T, c->n_head, c->head_dim, c->ctx, c->yarn > 1 ? " yarn4" : "");
        break;
    case LOOM_OP_GQA_ATTN:
        snprintf(b, n, "T=%d %d:%d hd=%d kv=%d C=%d seq=%d%s", c->T, c->n_head, c->n_head_kv, c->head_dim, c->kv_len,
                 c->ctx, c->n_seq, c->shuffle ? " shuf" : "");
        break;
    default: snprintf(b, n, "T=%d D=%lld", c->T, (long long)c->N); break;
    }
}

/* Positions and slots of the step. rope: distinct positions below c->ctx,
 * including 0 and the largest. gqa_attn: n_seq distinct slots out of
 * n_seq + 1; each slot's tokens have consecutive positions, interleaved in
 * the batch (token t belongs to slot t % n_seq); the first slot's last token
 * sits at kv_len - 1, the others end at random positions below kv_len.
 * With c->shuffle the tokens are then put in random order. */
static loom_status make_step(const loom_check_case *c, uint64_t *rng, int32_t *pos, int32_t *seq)
{
    for (int32_t t = 0; t < c->T; t++) pos[t] = seq[t] = 0;
    if (c->op == LOOM_OP_ROPE) {
        for (int32_t t = 0; t < c->T; t++)
            pos[t] = t == 0 ? c->ctx - 1 : t == 1 ? 0 : (int32_t)(uniform(rng) * c->ctx);
    } else if (c->op == LOOM_OP_GQA_ATTN) {
        int32_t ns = c->n_seq < 1 ? 1 : c->n_seq, S = ns + 1, slots[4] = {0, 1, 2, 3};
        if (ns > 3 || c->kv_len > c->ctx || c->kv_len < (c->T + ns - 1) / ns)
            return loom_error(LOOM_ERR_INVALID, "check case: bad attention case");
        for (int32_t i = S - 1; i > 0; i--) { /* shuffle the slots */
            int32_t j = (int32_t)(uniform(rng) * (i + 1)), x = slots[i];
            slots[i] = slots[j], slots[j] = x;
        }
        for (int32_t k = 0; k < ns; k++) {
            int32_t len = (c->T - k + ns - 1) / ns; /* tokens of slot k */
            int32_t last = k == 0 ? c->kv_len - 1 : len - 1 + (int32_t)(uniform(rng) * (c->kv_len - len + 1));
            for (int32_t i = 0; i < len; i++) {
                int32_t t = k + i * ns;
                seq[t] = slots[k];
                pos[t] = last - (len - 1) + i;
            }
        }
        for (int32_t i = c->shuffle ? c->T - 1 : 0; i > 0; i--) {
            int32_t j = (int32_t)(uniform(rng) * (i + 1)), p = pos[i], q = seq[i];
            pos[i] = pos[j], seq[i] = seq[j], pos[j] = p, seq[j] = q;
        }
    }
    return LOOM_OK;
}

static void set_result(loom_check_result *r, loom_check_verdict v, const char *fmt, const char *msg)
{
    r->verdict = v;
    snprintf(r->message, sizeof r->message, fmt, msg);
}

loom_status loom_check_case_run(loom_device *dev, const loom_check_case *c, uint64_t seed, const loom_check_opts *opts,
                                loom_check_result *r)
{
    double t0 = now();
    memset(r, 0, sizeof *r);
    r->c = *c;
    r->nmse = r->max_abs = NAN;
    r->threshold = loom_check_threshold(c->op, c->dtype);
    describe(c, r->shape, sizeof r->shape);

    int32_t T = c->T, maxT = c->T + 2; /* rows beyond the step's stay unused */
    uint64_t rng = seed;
    loom_op_params p = {0};
    src_spec s[LOOM_MAX_SRC] = {0};
    int32_t ns = 0;
    int64_t cols = c->N;
#define LEAF(k, d, m, sd, ...) \
    (src_spec){.kind = k, .dt = d, .ndim = sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t), \
               .shape = {__VA_ARGS__}, .mean = m, .std = sd}
#define ACT(n, m, sd) (s[ns++] = LEAF(S_ACT, LOOM_F32, m, sd, maxT, n))
    switch (c->op) {
    case LOOM_OP_EMBED:
        s[ns++] = LEAF(S_WEIGHT, c->dtype, 0, 1, c->K, c->N);
        s[ns++] = LEAF(S_IDS, LOOM_I32, 0, (double)c->K, maxT);
        break;
    case LOOM_OP_RMSNORM:
        ACT(c->N, 0.1, 2);
        s[ns++] = LEAF(S_WEIGHT, c->dtype, 1, 0.2, c->N);
        p.eps = 1e-6f;
        break;
    case LOOM_OP_MATMUL:
    case LOOM_OP_MATMUL_AWQ:
        ACT(c->K, 0, 1);
        if (c->op == LOOM_OP_MATMUL)
            s[ns++] = LEAF(S_WEIGHT, c->dtype, 0, 1 / sqrt((double)c->K), c->N, c->K);
        else
            s[ns++] = LEAF(S_WEIGHT, LOOM_Q4_AWQ, 0, 0, c->K, c->N);
        if (c->bias)
            s[ns++] = LEAF(S_WEIGHT, c->op == LOOM_OP_MATMUL ? c->dtype : LOOM_F16, 0, 0.5, c->N);
        else
            s[ns++] = (src_spec){.tid = LOOM_TID_NONE};
        break;
    case LOOM_OP_ROPE:
        cols = (int64_t)c->n_head * c->head_dim;
        ACT(cols, 0, 1);
        p.n_head = c->n_head, p.head_dim = c->head_dim, p.rope_theta = 1e6f;
        if (c->yarn > 1) p.yarn_factor = c->yarn, p.yarn_orig_ctx = 32768, p.yarn_beta_fast = 32, p.yarn_beta_slow = 1;
        break;
    case LOOM_OP_GQA_ATTN: {
        int64_t hd = c->head_dim, S = (c->n_seq < 1 ? 1 : c->n_seq) + 1;
        cols = c->n_head * hd;
        ACT(cols, 0, 1);
        ACT(c->n_head_kv * hd, 0, 1);
        ACT(c->n_head_kv * hd, 0, 1);
        for (int i = 0; i < 2; i++)
            s[ns++] = LEAF(S_STATE, c->dtype, 0, 1, S, c->n_head_kv, c->ctx, hd);
        p.n_head = c->n_head, p.n_head_kv = c->n_head_kv, p.head_dim = c->head_dim;
        break;
    }
    case LOOM_OP_SWIGLU:
        ACT(c->N, 0, 2);
        ACT(c->N, 0, 1);
        break;
    case LOOM_OP_ADD:
        ACT(c->N, 0, 1);
        ACT(c->N, 0, 1);
        break;
    default:
        set_result(r, LOOM_CHECK_FAIL, "%s", "unknown op");
        return LOOM_OK;
    }
#undef ACT
#undef LEAF

    int32_t *pos = calloc((size_t)maxT, sizeof *pos), *seq = calloc((size_t)maxT, sizeof *seq);
    float *out = malloc((size_t)maxT * (size_t)cols * sizeof *out);
    double *ref = malloc((size_t)T * (size_t)cols * sizeof *ref);
    loom_graph *g = loom_graph_create(maxT);
    loom_exec *e = NULL;
    loom_status st = LOOM_OK;
    if (!pos || !seq || !out || !ref || !g) {
        st = loom_error(LOOM_ERR_NOMEM, "out of memory");
        goto done;
    }

    /* host data, then the graph's leaves */
    for (int32_t i = 0; i < ns && !st; i++) {
        src_spec *x = &s[i];
        if (x->tid == LOOM_TID_NONE && !x->ndim) continue;
        if ((st = loom_tensor_nbytes(x->dt, x->ndim, x->shape, &x->bytes))) break;
        if (!(x->host = malloc(x->bytes))) {
            st = loom_error(LOOM_ERR_NOMEM, "out of memory: %zu bytes of test data", x->bytes);
            break;
        }
        if (x->dt == LOOM_Q4_AWQ) {
            fill_awq(&rng, x->host, x->shape[0], x->shape[1]);
        } else if (x->kind == S_IDS) { /* the first and last rows of the table, then random */
            int32_t *ids = x->host, V = (int32_t)x->std;
            for (int64_t t = 0; t < x->shape[0]; t++)
                ids[t] = t == 0 ? V - 1 : t == 1 ? 0 : (int32_t)(uniform(&rng) * V);
        } else {
            int64_t n = (int64_t)(x->bytes / loom_dtype_size(x->dt));
            fill_gauss(&rng, x->host, x->dt, n, x->mean, x->std);
        }
        char name[16];
        snprintf(name, sizeof name, "src%d", i);
        switch (x->kind) {
        case S_ACT:
        case S_IDS: x->tid = loom_graph_input(g, name, x->dt, x->ndim, x->shape, true); break;
        case S_WEIGHT: x->tid = loom_graph_weight(g, name, x->dt, x->ndim, x->shape, x->host); break;
        case S_STATE: x->tid = loom_graph_state(g, name, x->dt, x->ndim, x->shape); break;
        }
    }
    loom_tid tids[LOOM_MAX_SRC];
    for (int32_t i = 0; i < ns; i++) tids[i] = s[i].tid;
    loom_tid y = st ? LOOM_TID_NONE : loom_graph_op(g, c->op, tids, ns, &p, "out");
    if (!st && y != LOOM_TID_NONE) loom_graph_output(g, y);
    if (!st && (st = loom_graph_status(g))) {
        set_result(r, LOOM_CHECK_FAIL, "building the graph: %s", loom_graph_error(g));
        st = LOOM_OK;
        goto done;
    }
    if (st) goto done;

    st = loom_graph_compile(g, &dev, 1, LOOM_COMPILE_NO_FALLBACK, &e);
    if (st == LOOM_ERR_UNSUPPORTED) {
        set_result(r, LOOM_CHECK_UNSUPPORTED, "%s", loom_last_error());
        st = LOOM_OK;
        goto done;
    }
    if (st) {
        set_result(r, LOOM_CHECK_FAIL, "compile: %s", loom_last_error());
        st = LOOM_OK;
        goto done;
    }

    /* inputs and caches, a poisoned output, one step */
    size_t out_bytes = (size_t)maxT * (size_t)cols * sizeof *out;
    memset(out, 0xff, out_bytes); /* NaN */
    const char *stage = "writing inputs";
    for (int32_t i = 0; i < ns && !st; i++)
        if (s[i].host && s[i].kind != S_WEIGHT) st = loom_exec_write(e, s[i].tid, s[i].host, s[i].bytes);
    if (!st) stage = "poisoning the output", st = loom_exec_write(e, y, out, out_bytes);
    if (!st) stage = "making the step", st = make_step(c, &rng, pos, seq);
    loom_step step = {.n_tokens = T, .pos = pos, .seq = seq};
    if (!st) stage = "running the step", st = loom_exec_run(e, &step);
    if (!st) stage = "reading the output", st = loom_exec_read(e, y, out, (size_t)T * (size_t)cols * sizeof *out);
    if (st) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s: %s", stage, loom_last_error());
        set_result(r, LOOM_CHECK_FAIL, "%s", msg);
        st = LOOM_OK;
        goto done;
    }
    int64_t n = (int64_t)T * cols;
    if (opts && opts->tamper) opts->tamper(c, out, n, opts->user);

    /* the reference, on the same host bytes */
    loom_tensor desc[LOOM_MAX_SRC + 1];
    loom_node node = {.op = c->op, .n_src = op_max_src(c->op), .p = p};
    const void *hsrc[LOOM_MAX_SRC] = {0};
    for (int32_t i = 0; i < ns; i++) {
        if (s[i].tid == LOOM_TID_NONE) continue;
        desc[i] = *loom_graph_tensor(g, s[i].tid);
        node.src[i] = &desc[i];
        hsrc[i] = s[i].host;
    }
    desc[LOOM_MAX_SRC] = *loom_graph_tensor(g, y);
    node.dst = &desc[LOOM_MAX_SRC];
    if ((st = loom_ref_node(&node, &step, hsrc, ref))) {
        set_result(r, LOOM_CHECK_FAIL, "reference: %s", loom_last_error());
        st = LOOM_OK;
        goto done;
    }

    r->n_elems = n;
    r->nmse = loom_check_compare(out, ref, n, &r->max_abs, &r->n_nonfinite);
    if (r->n_nonfinite) {
        int64_t i = 0;
        while (i < n && isfinite(out[i])) i++;
        snprintf(r->message, sizeof r->message, "%lld of %lld outputs are NaN/inf (unwritten?), first at [%lld,%lld]",
                 (long long)r->n_nonfinite, (long long)n, (long long)(i / cols), (long long)(i % cols));
        r->verdict = LOOM_CHECK_FAIL;
    } else if (!(r->nmse <= r->threshold)) {
        int64_t w = 0;
        for (int64_t i = 1; i < n; i++)
            if (fabs(out[i] - ref[i]) > fabs(out[w] - ref[w])) w = i;
        snprintf(r->message, sizeof r->message, "NMSE %.3g > %.3g; worst at [%lld,%lld]: got %.9g, want %.9g", r->nmse,
                 r->threshold, (long long)(w / cols), (long long)(w % cols), out[w], ref[w]);
        r->verdict = LOOM_CHECK_FAIL;
    } else {
        r->verdict = LOOM_CHECK_PASS;
    }

done:
    loom_exec_destroy(e);
    loom_graph_destroy(g);
    for (int32_t i = 0; i < ns; i++) free(s[i].host);
    free(pos), free(seq), free(out), free(ref);
    r->seconds = now() - t0;
    if (st) set_result(r, LOOM_CHECK_FAIL, "%s", loom_last_error());
    return st;
}

double loom_check_compare(const float *out, const double *ref, int64_t n, double *max_abs, int64_t *n_nonfinite)
{
    double num = 0, den = 0, mx = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(out[i])) {
            bad++;
            continue;
        }
        double d = out[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
        if (fabs(d) > mx) mx = fabs(d);
    }
    if (max_abs) *max_abs = mx;
    if (n_nonfinite) *n_nonfinite = bad;
    if (bad) return INFINITY;
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return num / den;
}

/* ---- the whole table ----------------------------------------------------------- */
static void device_info(loom_device *dev, loom_check_report *rep)
{
    snprintf(rep->device, sizeof rep->device, "%s", loom_device_label(dev));
    char name[64];
    snprintf(name, sizeof name, "%s", rep->device);
    char *colon = strrchr(name, ':');
    int idx = colon ? atoi(colon + 1) : 0;
    if (colon) *colon = 0;
    loom_backend *b = loom_backend_find(name);
    if (!b || loom_backend_device_info(b, idx, &rep->info)) memset(&rep->info, 0, sizeof rep->info);
}

loom_status loom_check_ops(loom_device *dev, const loom_check_opts *opts, loom_check_report *rep)
{
    static const loom_check_opts none = {0};
    memset(rep, 0, sizeof *rep);
    if (!opts) opts = &none;
    if (!dev) return loom_error(LOOM_ERR_INVALID, "check ops: no device");
    loom_op only = LOOM_OP_COUNT;
    if (opts->op && loom_op_parse(opts->op, &only)) {
        char names[256] = "";
        for (int i = 0; i < LOOM_OP_COUNT; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", loom_op_name((loom_op)i));
        return loom_error(LOOM_ERR_INVALID, "unknown op '%s' (ops: %s)", opts->op, names);
    }
    double t0 = now();
    rep->seed = opts->seed;
    device_info(dev, rep);
    int32_t n;
    const loom_check_case *cases = loom_check_cases(opts->quick, &n);
    if (!(rep->results = calloc((size_t)n, sizeof *rep->results)))
        return loom_error(LOOM_ERR_NOMEM, "check ops: out of memory");
    for (int32_t i = 0; i < n; i++) {
        if (only != LOOM_OP_COUNT && cases[i].op != only) continue;
        uint64_t seed = opts->seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(i + 1)); /* a stream per case */
        splitmix(&seed);
        loom_check_result *r = &rep->results[rep->n_results++];
        loom_status st = loom_check_case_run(dev, &cases[i], seed, opts, r);
        if (st == LOOM_ERR_NOMEM) loom_log(LOOM_LOG_WARN, "check ops: %s", loom_last_error());
        if (r->verdict == LOOM_CHECK_PASS) rep->n_pass++;
        else if (r->verdict == LOOM_CHECK_FAIL) rep->n_fail++;
        else rep->n_unsupported++;
        if (opts->progress) opts->progress(r, opts->user);
    }
    if (rep->n_results && rep->n_unsupported == rep->n_results) {
        rep->none_supported = true;
        rep->n_fail++;
    }
    rep->seconds = now() - t0;
    return LOOM_OK;
}

void loom_check_report_free(loom_check_report *rep)
{
    if (!rep) return;
    free(rep->results);
    rep->results = NULL;
    rep->n_results = 0;
}
