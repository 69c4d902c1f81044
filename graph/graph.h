/*
 * graph.h — the static op graph: build it once, compile it onto devices once,
 * then run it step after step.
 *
 *   loom_graph *g = loom_graph_create(max_tokens);
 *   loom_tid ids = loom_graph_input(g, "ids", LOOM_I32, 1, (int64_t[]){max_tokens}, true);
 *   loom_tid x   = loom_embed(g, table, ids);              // [T, D]
 *   ...
 *   loom_graph_output(g, logits);
 *   loom_exec *e; loom_graph_compile(g, devs, n_devs, 0, &e);
 *   loom_exec_write(e, ids, tokens, n * 4);
 *   loom_exec_run(e, &step);
 *   loom_exec_read(e, logits, out, n * vocab * 4);
 *
 * Builder calls never fail loudly: a failed call returns LOOM_TID_NONE, any
 * later call given LOOM_TID_NONE returns LOOM_TID_NONE too, and
 * loom_graph_status() reports the first error (with loom_last_error() text
 * kept in loom_graph_error()). So a model builder checks once, at the end.
 */
#ifndef LOOM_GRAPH_H
#define LOOM_GRAPH_H

#include <stdio.h>

#include "loom.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t loom_tid; /* tensor id within one graph */
#define LOOM_TID_NONE (-1)

typedef struct loom_graph loom_graph;
typedef struct loom_exec  loom_exec;

loom_graph *loom_graph_create(int32_t max_tokens);
void        loom_graph_destroy(loom_graph *g); /* accepts NULL */
int32_t     loom_graph_max_tokens(const loom_graph *g);
loom_status loom_graph_status(const loom_graph *g);
const char *loom_graph_error(const loom_graph *g);

/* Leaves. `dynamic` marks shape[0] as the token dimension (rows per step).
 * Weight data is borrowed: it must stay valid until loom_graph_compile()
 * returns (each device takes its own copy or layout). */
loom_tid loom_graph_input (loom_graph *g, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape, bool dynamic);
loom_tid loom_graph_weight(loom_graph *g, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape, const void *data);
loom_tid loom_graph_state (loom_graph *g, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape); /* zero-filled at compile */

/* A weight made only when a device (or the reference) needs it: load returns its
 * bytes (or NULL after loom_error), unload takes them back as soon as that device
 * has its own copy. For weights converted from the checkpoint's form (AWQ: three
 * tensors joined into one), so a model never holds more than one converted
 * weight at a time. The loader is copied; ud must outlive compile. */
typedef struct loom_weight_loader {
    const void *(*load)  (void *ud, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape);
    void        (*unload)(void *ud, const void *data);
    void         *ud;
} loom_weight_loader;
loom_tid loom_graph_weight_lazy(loom_graph *g, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape,
                                const loom_weight_loader *ld);

/* One op node. src holds max_src ids (LOOM_TID_NONE for an absent optional
 * source). Validates dtypes and shapes and infers the output's shape. */
loom_tid loom_graph_op(loom_graph *g, loom_op op, const loom_tid *src, int32_t n_src, const loom_op_params *p, const char *name);

/* Mark a tensor to be read after a step (keeps it alive to the end). */
loom_status loom_graph_output(loom_graph *g, loom_tid t);

/* Record an error met while building (a missing weight, say) as the graph's
 * first error; returns LOOM_TID_NONE. */
loom_tid loom_graph_fail(loom_graph *g, loom_status st, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Rename tensor t (and the node computing it); returns t, so it wraps a call:
 *   q = loom_name(g, loom_matmul(g, x, wq, bq), "blk.%d.q", il); */
loom_tid loom_name(loom_graph *g, loom_tid t, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Named wrappers so a model reads like its forward pass. */
loom_tid loom_embed     (loom_graph *g, loom_tid table, loom_tid ids);
loom_tid loom_rmsnorm   (loom_graph *g, loom_tid x, loom_tid w, float eps);
loom_tid loom_matmul    (loom_graph *g, loom_tid x, loom_tid w, loom_tid bias);
loom_tid loom_matmul_awq(loom_graph *g, loom_tid x, loom_tid w, loom_tid bias);
loom_tid loom_rope      (loom_graph *g, loom_tid x, const loom_op_params *p);
loom_tid loom_gqa_attn  (loom_graph *g, loom_tid q, loom_tid k, loom_tid v, loom_tid kcache, loom_tid vcache, const loom_op_params *p);
loom_tid loom_swiglu    (loom_graph *g, loom_tid gate, loom_tid up);
loom_tid loom_add       (loom_graph *g, loom_tid a, loom_tid b);

/* Introspection (for tools and tests). */
int32_t            loom_graph_n_tensors(const loom_graph *g);
int32_t            loom_graph_n_nodes(const loom_graph *g);
const loom_tensor *loom_graph_tensor(const loom_graph *g, loom_tid t); /* shape, dtype, flags, name */

/* ---- compile and run --------------------------------------------------------
 * Placement: each node goes on the first device of devs whose supports()
 * accepts it; with LOOM_COMPILE_NO_FALLBACK only devs[0] is tried and a node
 * it rejects is an error. Copies are inserted where a tensor crosses devices.
 * Activations of each device share one arena, planned by liveness. */
enum { LOOM_COMPILE_NO_FALLBACK = 1u << 0 };

loom_status loom_graph_compile(loom_graph *g, loom_device *const *devs, int32_t n_devs, uint32_t flags, loom_exec **out);
void        loom_exec_destroy(loom_exec *e); /* accepts NULL; the graph must outlive it */

/* Host data in and out. Inputs and states may be written, outputs (and
 * states) read; nbytes may cover a prefix (the rows of this step). */
loom_status loom_exec_write(loom_exec *e, loom_tid t, const void *src, size_t nbytes);
loom_status loom_exec_read (loom_exec *e, loom_tid t, void *dst, size_t nbytes);
/* Bytes offset .. offset + nbytes only (e.g. the last row of the logits). */
loom_status loom_exec_read_at(loom_exec *e, loom_tid t, size_t offset, void *dst, size_t nbytes);
/* The same bytes read into a host buffer the exec owns, *view pointed at them: memory
 * the device writes directly where its backend offers it (pinned), so a decode step's
 * logits arrive without a staging copy. The bytes are the caller's to read and change
 * until the next loom_exec_view or loom_exec_destroy. */
loom_status loom_exec_view(loom_exec *e, loom_tid t, size_t offset, size_t nbytes, void **view);
loom_status loom_exec_run  (loom_exec *e, const loom_step *step);
/* Wait until every device has finished the work queued so far. */
loom_status loom_exec_sync (loom_exec *e);

/* Where each node runs, copies, arena sizes: human-readable. */
void        loom_exec_dump(const loom_exec *e, FILE *f);
/* Device placed for node i (0-based, graph order) */
const loom_device *loom_exec_node_device(const loom_exec *e, int32_t node);
int32_t     loom_exec_n_copies(const loom_exec *e);
/* Arena bytes on device d (index into devs) and what it would be unshared. */
size_t      loom_exec_arena_bytes(const loom_exec *e, int32_t d, size_t *unshared);

/* Activation arena the graph needs on one device, planned without any device
 * (what `loom info` reports); 0 on error. */
size_t      loom_graph_arena_estimate(loom_graph *g);

/* ---- the memory planner, on its own for testing ------------------------------
 * Each block lives over [first, last] (inclusive step indices); blocks whose
 * lifetimes overlap never share bytes. Fills offsets (aligned to `align`) and
 * returns the arena size. */
typedef struct loom_block {
    size_t  size;
    int32_t first, last;
} loom_block;

size_t loom_plan_arena(const loom_block *blocks, int32_t n, size_t align, size_t *offsets);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_GRAPH_H */
