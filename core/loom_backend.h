/*
 * loom_backend.h — the backend plugin ABI.
 *
 * A backend is a table of function pointers (loom_backend_i) plus the opaque
 * context pointers it hands back. A plugin is a shared library
 * libloom-<name>.so that exports one symbol, loom_backend_entry, and is built
 * against this header alone: it links nothing of loom. What it needs from the
 * host (logging, error reporting) arrives in a loom_host_i table.
 *
 * Data model: a graph is lowered to an array of loom_node, each with up to
 * LOOM_MAX_SRC source tensors and one destination. Every tensor lives in a
 * backend buffer (buf + offset) that the host allocated through this same
 * interface. Activations are f32, row-major; shape[0] of a tensor flagged
 * LOOM_TENSOR_DYNAMIC is the maximum number of rows (tokens), and each
 * execute() runs on the first step->n_tokens rows only.
 *
 * Bump LOOM_BACKEND_ABI on any change to a struct or signature below.
 */
#ifndef LOOM_BACKEND_H
#define LOOM_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LOOM_BACKEND_ABI 3

#define LOOM_MAX_DIMS 4
#define LOOM_MAX_SRC  5
#define LOOM_AWQ_GROUP 128 /* AWQ quantisation group along K */

/* ---- status ------------------------------------------------------------ */
typedef enum loom_status {
    LOOM_OK = 0,
    LOOM_ERR_INVALID,     /* bad argument, shape, dtype, or malformed input */
    LOOM_ERR_NOMEM,       /* host or device allocation failed */
    LOOM_ERR_IO,          /* file could not be read or written */
    LOOM_ERR_FORMAT,      /* file read, but its contents are wrong */
    LOOM_ERR_UNSUPPORTED, /* valid, but this backend or build cannot do it */
    LOOM_ERR_NOT_FOUND,   /* named thing (backend, tensor, file) absent */
    LOOM_ERR_BACKEND,     /* driver or device failure */
    LOOM_ERR_INTERNAL,    /* a loom bug */
} loom_status;

/* ---- dtypes -------------------------------------------------------------- */
/* LOOM_Q4_AWQ is a whole AWQ linear weight, logical shape {K, N} (inputs,
 * outputs) as the checkpoint stores it, in one blob of three parts:
 *   qweight int32 [K][N/8]    eight 4-bit values of consecutive columns per
 *                             int32; nibble i (bits 4i..4i+3) holds column
 *                             8c + loom_awq_order[i]
 *   qzeros  int32 [K/128][N/8] zero points, packed the same way
 *   scales  f16   [K/128][N]
 * w[k][n] = (q[k][n] - z[k/128][n]) * s[k/128][n]; y = x · W. */
typedef enum loom_dtype {
    LOOM_F32,
    LOOM_F16,
    LOOM_BF16,
    LOOM_I32,
    LOOM_Q4_AWQ,
    LOOM_DTYPE_COUNT
} loom_dtype;

/* ---- ops ------------------------------------------------------------------
 * The op set, declared once. X(ID, name, min_src, max_src):
 *   embed      src: table[V,D] f32|f16|bf16, ids[T] i32            -> [T,D]
 *   rmsnorm    src: x[T,D], w[D] f32|f16|bf16             p.eps     -> [T,D]
 *   matmul     src: x[T,K], w[N,K] f32|f16|bf16, bias[N]? (y = x·wᵀ+b) -> [T,N]
 *   matmul_awq src: x[T,K], w{K,N} q4_awq, bias[N]? (y = x·w+b)    -> [T,N]
 *   rope       src: x[T,H*hd]    p.n_head, p.head_dim, p.rope_*     -> [T,H*hd]
 *              neox style: pairs (i, i+hd/2) rotate by pos*inv_freq[i]
 *   gqa_attn   src: q[T,Hq*hd], k[T,Hkv*hd], v[T,Hkv*hd],
 *                   kcache[S,Hkv,C,hd], vcache[S,Hkv,C,hd] f16|f32  -> [T,Hq*hd]
 *              first writes k,v of every token t at (seq[t], pos[t]), then
 *              each token attends causally to positions 0..pos[t] of its slot
 *   swiglu     src: gate[T,F], up[T,F]        silu(gate)*up         -> [T,F]
 *   add        src: a[T,D], b[T,D]                                  -> [T,D]
 * Bias may be f32, f16 or bf16. Everything marked [T,...] is f32. */
#define LOOM_OPS(X)                       \
    X(EMBED,      embed,      2, 2)       \
    X(RMSNORM,    rmsnorm,    2, 2)       \
    X(MATMUL,     matmul,     2, 3)       \
    X(MATMUL_AWQ, matmul_awq, 2, 3)       \
    X(ROPE,       rope,       1, 1)       \
    X(GQA_ATTN,   gqa_attn,   5, 5)       \
    X(SWIGLU,     swiglu,     2, 2)       \
    X(ADD,        add,        2, 2)

typedef enum loom_op {
#define LOOM_X_ENUM(id, name, lo, hi) LOOM_OP_##id,
    LOOM_OPS(LOOM_X_ENUM)
#undef LOOM_X_ENUM
    LOOM_OP_COUNT
} loom_op;

typedef struct loom_op_params {
    float   eps;             /* rmsnorm */
    int32_t n_head;          /* rope: heads in x; gqa_attn: query heads */
    int32_t n_head_kv;       /* gqa_attn: KV heads (n_head % n_head_kv == 0) */
    int32_t head_dim;        /* rope, gqa_attn (even) */
    float   attn_scale;      /* gqa_attn: logit scale, 0 means 1/sqrt(head_dim) */
    float   rope_theta;      /* rope base */
    float   yarn_factor;     /* rope: YaRN context scale, 0 or 1 means none */
    float   yarn_orig_ctx;   /* rope: original_max_position_embeddings */
    float   yarn_beta_fast;  /* rope: 32 unless the config says otherwise */
    float   yarn_beta_slow;  /* rope: 1 unless the config says otherwise */
} loom_op_params;

/* ---- tensors, nodes, steps ------------------------------------------------ */
typedef struct loom_buffer loom_buffer; /* opaque: defined by each backend */

enum {
    LOOM_TENSOR_DYNAMIC = 1u << 0, /* shape[0] is max rows; a step uses n_tokens */
    LOOM_TENSOR_WEIGHT  = 1u << 1, /* constant, prepared once */
    LOOM_TENSOR_STATE   = 1u << 2, /* persistent across steps (KV cache) */
    LOOM_TENSOR_INPUT   = 1u << 3, /* written by the host before each step */
    LOOM_TENSOR_OUTPUT  = 1u << 4, /* read after the program ran (by the host or a copy to
                                      another device): a backend that fuses nodes must
                                      still write it */
};

typedef struct loom_tensor {
    const char  *name;
    loom_dtype   dtype;
    int32_t      ndim;
    int64_t      shape[LOOM_MAX_DIMS]; /* row-major, shape[0] outermost */
    uint32_t     flags;                /* LOOM_TENSOR_* */
    loom_buffer *buf;                  /* where the data lives on this backend */
    size_t       offset;               /* byte offset of the data within buf */
    void        *extra;                /* backend-private (e.g. a repacked weight) */
} loom_tensor;

typedef struct loom_node {
    loom_op        op;
    int32_t        n_src;              /* max_src of the op */
    loom_tensor   *src[LOOM_MAX_SRC];  /* NULL for an absent optional source */
    loom_tensor   *dst;
    loom_op_params p;
} loom_node;

typedef struct loom_step {
    int32_t        n_tokens; /* rows of every dynamic tensor, 1..shape[0] */
    const int32_t *pos;      /* host [n_tokens]: position of each token */
    const int32_t *seq;      /* host [n_tokens]: sequence slot of each token */
} loom_step;

typedef struct loom_device_info {
    char     name[128];      /* e.g. "NVIDIA H100 80GB HBM3" */
    char     driver[128];    /* driver / API version, free text */
    uint64_t mem_total;      /* bytes; 0 if unknown */
    uint64_t mem_free;       /* bytes; 0 if unknown */
    char     details[512];   /* extra facts for `loom backends`, free text */
    int32_t  host_cpu;       /* 1: the device is the host's CPU (PoCL, lavapipe); auto
                                selection then prefers the built-in CPU backend */
} loom_device_info;

/* ---- the host, as a plugin sees it ---------------------------------------- */
enum { LOOM_LOG_ERROR, LOOM_LOG_WARN, LOOM_LOG_INFO, LOOM_LOG_DEBUG, LOOM_LOG_TRACE };

typedef struct loom_host_i {
    uint32_t    abi;                                            /* LOOM_BACKEND_ABI of the host */
    void        (*log)  (int level, const char *fmt, ...);      /* goes through LOOM_LOG filtering */
    loom_status (*error)(loom_status st, const char *fmt, ...); /* set loom_last_error(); returns st */
} loom_host_i;

/* ---- the backend interface ------------------------------------------------
 * bctx: the backend's context from init(); dctx: one opened device.
 * Every call that can fail returns loom_status and, on failure, has said why
 * through host->error(). Calls on one dctx come from one thread at a time. */
typedef struct loom_backend_i {
    uint32_t    abi;                                                     /* LOOM_BACKEND_ABI it was built against */
    const char *name;                                                    /* what LOOM_BACKEND calls it: "cuda", ... */

    loom_status (*init)           (void **bctx);                         /* load the driver; failure makes the backend unavailable */
    void        (*shutdown)       (void *bctx);                          /* undo init; accepts NULL */
    int32_t     (*device_count)   (void *bctx);                          /* devices usable after init */
    loom_status (*device_info)    (void *bctx, int32_t dev, loom_device_info *info);
    loom_status (*device_open)    (void *bctx, int32_t dev, void **dctx);
    void        (*device_close)   (void *dctx);                          /* frees everything still allocated; accepts NULL */

    bool        (*supports)       (void *dctx, const loom_node *node);   /* can this device run the node (op, dtypes, shapes)? */

    loom_status (*buffer_alloc)   (void *dctx, size_t size, loom_buffer **buf);
    void        (*buffer_free)    (void *dctx, loom_buffer *buf);       /* accepts NULL */
    loom_status (*buffer_write)   (void *dctx, loom_buffer *buf, size_t off, const void *src, size_t size); /* after queued work */
    loom_status (*buffer_read)    (void *dctx, loom_buffer *buf, size_t off, void *dst, size_t size);       /* waits for queued work */
    void       *(*buffer_host_ptr)(void *dctx, loom_buffer *buf);       /* (optional) host address if host-visible; NULL member: never */
    void       *(*host_alloc)     (void *dctx, size_t size);            /* (optional) host memory the device writes directly: a buffer_read into it skips any staging copy; NULL member or result: the host uses malloc */
    void        (*host_free)      (void *dctx, void *ptr);              /* (optional, with host_alloc) accepts NULL */

    loom_status (*weight_prepare) (void *dctx, loom_tensor *t, const void *data); /* (optional) own layout: set t->buf/offset/extra; NULL member: alloc + write as is */
    void        (*weight_release) (void *dctx, loom_tensor *t);          /* (optional) undo weight_prepare */

    loom_status (*compile)        (void *dctx, loom_node *nodes, int32_t n_nodes, void **prog); /* nodes stay valid until release */
    loom_status (*execute)        (void *dctx, void *prog, const loom_step *step);              /* run (or enqueue) every node once */
    void        (*release)        (void *dctx, void *prog);             /* accepts NULL */
    loom_status (*sync)           (void *dctx);                          /* wait for all queued work */
} loom_backend_i;

/* The one symbol a plugin exports. Returns NULL if it cannot serve this host. */
typedef const loom_backend_i *(*loom_backend_entry_fn)(const loom_host_i *host);
#define LOOM_BACKEND_ENTRY "loom_backend_entry"

/* ---- helpers every backend needs the same way ------------------------------ */
static inline const char *loom_op_str(loom_op op) /* "matmul", ...; "?" if out of range */
{
    static const char *const names[LOOM_OP_COUNT] = {
#define LOOM_X_NAME(id, name, lo, hi) #name,
        LOOM_OPS(LOOM_X_NAME)
#undef LOOM_X_NAME
    };
    return (unsigned)op < LOOM_OP_COUNT ? names[op] : "?";
}

/* Does p .. p + n lie within base .. base + cap? (no wrap-around; a NULL base holds nothing) */
static inline bool loom_within(const void *base, size_t cap, const void *p, size_t n)
{
    const char *b = (const char *)base, *q = (const char *)p;
    return b && q >= b && (size_t)(q - b) <= cap && n <= cap - (size_t)(q - b);
}

static const int loom_awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7}; /* nibble i -> column offset */

static inline size_t loom_awq_nbytes(int64_t K, int64_t N)
{
    return (size_t)(K * N / 2 + (K / LOOM_AWQ_GROUP) * N / 2 + (K / LOOM_AWQ_GROUP) * N * 2);
}

static inline float loom_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t loom_f32_to_f16(float f) /* round to nearest even */
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) { /* subnormal half or zero */
        if (ax < 0x33000000u) return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000, shift = 126 - e;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((ax >> 13) - ((127 - 15) << 10)), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

static inline float loom_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t loom_f32_to_bf16(float f) /* round to nearest even */
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

/* Whether environment variable name is set to exactly value: the backends' switches ("0" turns
 * a default path off for A/B, "1" turns a test or tuning path on) */
static inline bool loom_env_is(const char *name, const char *value)
{
    const char *s = getenv(name);
    return s && !strcmp(s, value);
}

/* An integer setting of a backend from the environment: *v = dflt where name is unset or empty;
 * false where it is not an integer in lo..hi, which the backend reports as an error (a mistyped
 * tuning knob silently ignored would measure the default). */
static inline bool loom_env_long(const char *name, long lo, long hi, long dflt, long *v)
{
    const char *s = getenv(name);
    char *end;
    *v = dflt;
    if (!s || !*s) return true;
    *v = strtol(s, &end, 10);
    return !*end && *v >= lo && *v <= hi;
}

/* RoPE inverse frequency of rotary pair i (0 <= i < head_dim/2), YaRN when
 * p->yarn_factor > 1 (as Hugging Face's "yarn" rope type computes it), and
 * the cos/sin magnitude (YaRN's attention factor; 1 otherwise). Backends
 * build their tables from these so every backend rotates identically. */
static inline double loom_rope_inv_freq(const loom_op_params *p, int32_t i)
{
    double d = p->head_dim, base = p->rope_theta;
    double f = 1.0 / pow(base, 2.0 * i / d);
    if (!(p->yarn_factor > 1.0f)) return f;
    double pi = 3.14159265358979323846, ctx = p->yarn_orig_ctx;
    double bf = p->yarn_beta_fast ? p->yarn_beta_fast : 32, bs = p->yarn_beta_slow ? p->yarn_beta_slow : 1;
    double lo = d * log(ctx / (bf * 2 * pi)) / (2 * log(base));
    double hi = d * log(ctx / (bs * 2 * pi)) / (2 * log(base));
    lo = floor(lo), hi = ceil(hi);
    if (lo < 0) lo = 0;
    if (hi > d - 1) hi = d - 1;
    if (hi == lo) hi += 0.001;
    double ramp = (i - lo) / (hi - lo);
    ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
    double extrap = 1.0 - ramp; /* 1: keep the original frequency */
    return (f / p->yarn_factor) * (1.0 - extrap) + f * extrap;
}

static inline double loom_rope_mscale(const loom_op_params *p)
{
    return p->yarn_factor > 1.0f ? 0.1 * log(p->yarn_factor) + 1.0 : 1.0;
}

#ifdef __cplusplus
}
#endif
#endif /* LOOM_BACKEND_H */
