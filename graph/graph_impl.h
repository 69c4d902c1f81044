/* graph_impl.h — the graph's internals, shared by builder.c, ops.c and exec.c. */
#ifndef LOOM_GRAPH_IMPL_H
#define LOOM_GRAPH_IMPL_H

#include "graph.h"

typedef enum { GT_INPUT, GT_WEIGHT, GT_STATE, GT_ACT } gt_kind;

typedef struct gtensor {
    loom_tensor desc;     /* name (owned), dtype, shape, flags; buf/offset unused here */
    gt_kind     kind;
    const void *data;     /* weights: borrowed host bytes; NULL: made by loader */
    loom_weight_loader loader;
    size_t      nbytes;   /* whole tensor */
    int32_t     producer; /* node index, or -1 for leaves */
    bool        output;
} gtensor;

/* A weight's bytes: borrowed, or loaded (weight_put gives them back). */
loom_status weight_get(const loom_graph *g, loom_tid t, const void **data);
void        weight_put(const loom_graph *g, loom_tid t, const void *data);

typedef struct gnode {
    loom_op        op;
    int32_t        n_src;
    loom_tid       src[LOOM_MAX_SRC];
    loom_tid       dst;
    loom_op_params p;
    char           name[64];
} gnode;

struct loom_graph {
    int32_t     max_tokens;
    gtensor    *t;
    int32_t     nt, ct;
    gnode      *n;
    int32_t     nn, cn;
    loom_status status;
    char        error[512];
};

typedef struct loom_op_info {
    const char *name;
    int32_t     min_src, max_src;
    /* Check sources and params; fill out's dtype, rank, shape and DYNAMIC flag. */
    loom_status (*shape)(const loom_tensor *const *src, const loom_op_params *p, loom_tensor *out);
} loom_op_info;

const loom_op_info *loom_op_info_of(loom_op op);

/* "[T=16,896] f32" style description of a tensor, for messages and dumps. */
const char *loom_tensor_str(const loom_tensor *t, char *buf, size_t len);

#endif
