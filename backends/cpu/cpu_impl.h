/*
 * cpu_impl.h — internals of the built-in CPU backend, shared by its files.
 *
 *   cpu.c        the loom_backend_i table: init, devices, buffers, weights,
 *                compile (scratch sizing, RoPE tables), execute (op dispatch)
 *   cpu_pool.c   persistent worker threads and parallel_for
 *   cpu_ops.c    embed, rmsnorm, rope, swiglu, add
 *   cpu_matmul.c dense matmul: OpenBLAS sgemm, converting GEMV, blocked f16/bf16
 *   cpu_awq.c    AWQ int4: repacked layout, GEMV (scalar/AVX2/AVX-512), prefill
 *   cpu_attn.c   gqa_attn: KV cache append, causal softmax attention
 *
 * Nothing here is visible outside backends/cpu except through cpu.h.
 */
#ifndef LOOM_CPU_IMPL_H
#define LOOM_CPU_IMPL_H

#include <stdint.h>

#include "loom_backend.h"

/* ---- host services ---------------------------------------------------------- */
const loom_host_i *loom__cpu_host(void);
#define CPU_ERR(st, ...) (loom__cpu_host()->error((st), __VA_ARGS__))
#define CPU_LOG(lvl, ...) (loom__cpu_host()->log((lvl), __VA_ARGS__))

/* ---- instruction set, picked once at init ------------------------------------ */
typedef enum { CPU_ISA_SCALAR, CPU_ISA_AVX2, CPU_ISA_AVX512 } cpu_isa;
const char *loom__cpu_isa_name(cpu_isa isa);

/* ---- thread pool -------------------------------------------------------------
 * n_threads - 1 persistent workers plus the calling thread. parallel_for cuts
 * [0, n) into one contiguous chunk per thread; threads claim chunks, so one
 * the OS delays is covered by the others. Returns when all items are done.
 * fn's tid (0..n_threads-1) names the thread, for per-thread scratch. Workers
 * spin briefly after a job, then sleep, so OpenBLAS (called between jobs from
 * the calling thread) gets the cores. */
typedef struct cpu_pool cpu_pool;
typedef void (*cpu_task_fn)(void *ctx, int64_t begin, int64_t end, int tid);

int  loom__cpu_pool_create(int n_threads, cpu_pool **out); /* 0 ok, else errno */
void loom__cpu_pool_destroy(cpu_pool *p);                   /* accepts NULL */
int  loom__cpu_pool_threads(const cpu_pool *p);
void loom__cpu_parallel_for(cpu_pool *p, int64_t n, cpu_task_fn fn, void *ctx);
/* Same, but the workers sleep at once afterwards instead of spinning: use it
 * right before calling OpenBLAS so its threads get the cores. */
void loom__cpu_parallel_for_park(cpu_pool *p, int64_t n, cpu_task_fn fn, void *ctx);
/* Same, but threads claim chunks of `chunk` items dynamically (uneven work). */
void loom__cpu_parallel_for_dyn(cpu_pool *p, int64_t n, int64_t chunk, cpu_task_fn fn, void *ctx);

/* ---- buffers --------------------------------------------------------------------- */
#define CPU_ALIGN 64

typedef struct cpu_awq_packed cpu_awq_packed;

struct loom_buffer {
    void               *data;  /* CPU_ALIGN-aligned */
    size_t              size;
    struct loom_buffer *prev, *next; /* the device's list of live buffers */
};

/* ---- one opened device ------------------------------------------------------------- */
typedef struct cpu_dev {
    cpu_pool           *pool;
    int                 n_threads;
    cpu_isa             isa;
    struct loom_buffer *buffers; /* live buffers, freed by device_close */
    struct cpu_prog    *progs;   /* live programs, freed by device_close */
} cpu_dev;

/* Working memory of one execute(): handed to kernels, never allocated there. */
typedef struct cpu_ctx {
    cpu_pool *pool;
    int       n_threads;
    cpu_isa   isa;
    float    *scratch;       /* 64-byte aligned */
    size_t    scratch_floats;
} cpu_ctx;

/* ---- AWQ ----------------------------------------------------------------------------
 * Repacked layout (made once by weight_prepare, from the checkpoint's blob):
 * columns are cut into tiles of CPU_AWQ_TILE; each tile is a contiguous run of
 * K/128 group blocks, and each group block is
 *   u32 q[16][CPU_AWQ_TILE]  word (r, c) holds q[8r+i][col c] in bits 4i..4i+3
 *                            (eight consecutive k of one column)
 *   f16 s[CPU_AWQ_TILE]      scales
 *   u8  z[CPU_AWQ_TILE]      zero points
 * so a GEMV streams the weight once, front to back, per thread. Columns past N
 * in the last tile are zero (q = z = 0, s = 0). */
#define CPU_AWQ_TILE 64
#define CPU_AWQ_QBYTES (16 * CPU_AWQ_TILE * 4)
#define CPU_AWQ_BLOCK (CPU_AWQ_QBYTES + CPU_AWQ_TILE * 2 + CPU_AWQ_TILE)

struct cpu_awq_packed {
    uint32_t magic; /* CPU_AWQ_MAGIC */
    int64_t  K, N, n_tiles, n_groups;
    uint8_t *data;  /* n_tiles * n_groups * CPU_AWQ_BLOCK bytes, 64-aligned */
};
#define CPU_AWQ_MAGIC 0x71344157u

size_t loom__cpu_awq_packed_bytes(int64_t K, int64_t N);
/* Fill p->data (already allocated, packed_bytes) from a checkpoint blob. */
void   loom__cpu_awq_repack(cpu_awq_packed *p, const void *blob, cpu_pool *pool);
/* Floats of scratch that matmul_awq needs for up to max_t rows. */
size_t loom__cpu_awq_scratch(int64_t K, int64_t N, int64_t max_t);
loom_status loom__cpu_matmul_awq(cpu_ctx *c, const cpu_awq_packed *w, const float *x, float *y, int64_t T,
                                 const void *bias, loom_dtype bias_dt);

/* ---- dense matmul ------------------------------------------------------------------- */
size_t loom__cpu_matmul_scratch(loom_dtype wdt, int64_t K, int64_t N, int64_t max_t);
loom_status loom__cpu_matmul(cpu_ctx *c, const float *x, const void *w, loom_dtype wdt, float *y, int64_t T,
                             int64_t K, int64_t N, const void *bias, loom_dtype bias_dt);
/* Add bias (any float dtype) to T rows of y [T, N], in parallel. */
void loom__cpu_add_bias(cpu_ctx *c, float *y, int64_t T, int64_t N, const void *bias, loom_dtype bias_dt);
/* Convert n elements of a f32/f16/bf16 vector to f32 (vectorised where possible). */
void loom__cpu_to_f32(cpu_isa isa, const void *src, loom_dtype dt, float *dst, int64_t n);

/* ---- other ops ---------------------------------------------------------------------- */
loom_status loom__cpu_embed(cpu_ctx *c, const void *table, loom_dtype dt, int64_t V, int64_t D, const int32_t *ids,
                            float *y, int64_t T);
void loom__cpu_rmsnorm(cpu_ctx *c, const float *x, const void *w, loom_dtype wdt, float eps, float *y, int64_t T,
                       int64_t D);
/* inv_freq: head_dim/2 entries; uses scratch for the per-token cos/sin table. */
size_t loom__cpu_rope_scratch(int64_t max_t, int32_t head_dim);
void loom__cpu_rope(cpu_ctx *c, const float *x, float *y, int64_t T, int32_t n_head, int32_t head_dim,
                    const double *inv_freq, double mscale, const int32_t *pos);
void loom__cpu_swiglu(cpu_ctx *c, const float *g, const float *u, float *y, int64_t n);
void loom__cpu_add(cpu_ctx *c, const float *a, const float *b, float *y, int64_t n);

typedef struct cpu_attn_args {
    const float *q, *k, *v;      /* [T, Hq*hd], [T, Hkv*hd], [T, Hkv*hd] */
    void        *kc, *vc;        /* [S, Hkv, C, hd] */
    loom_dtype   cache_dt;       /* f16 or f32 */
    float       *y;              /* [T, Hq*hd] */
    int64_t      T, S, C;
    int32_t      n_head, n_head_kv, head_dim;
    float        scale;
    const int32_t *pos, *seq;
} cpu_attn_args;
size_t loom__cpu_attn_scratch(int n_threads, int64_t C, int32_t head_dim);
loom_status loom__cpu_gqa_attn(cpu_ctx *c, const cpu_attn_args *a);

/* Elementwise work below this many elements runs on the calling thread: waking
 * workers costs more than it saves. */
#define CPU_PAR_MIN 16384

#endif
