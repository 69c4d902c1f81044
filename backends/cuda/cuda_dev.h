/*
 * cuda_dev.h — the host-side state of the CUDA backend (C only): one opened
 * device, its buffers and its programs. See cuda_impl.h for the map of files.
 */
#ifndef LOOM_CUDA_DEV_H
#define LOOM_CUDA_DEV_H

#include <stdbool.h>

#include "cuda_impl.h"

const loom_host_i *loom__cu_host(void);
#define CU_ERR(st, ...) (loom__cu_host()->error((st), __VA_ARGS__))
#define CU_LOG(lvl, ...) (loom__cu_host()->log((lvl), __VA_ARGS__))

/* A device allocation; an AWQ weight's descriptor rides along. */
struct loom_buffer {
    void               *ptr;  /* device memory */
    size_t              size;
    cu_awq              awq;  /* magic set when this buffer holds a repacked AWQ weight */
    struct loom_buffer *prev, *next; /* the device's live buffers */
};

typedef struct cu_dev {
    int                 dev;        /* CUDA ordinal */
    cudaStream_t        stream;     /* every copy and kernel of this device, in order */
    int                 sm_count;
    int                *d_err;      /* device [4]: error flag, token, id (embed) */
    int                *h_err;      /* pinned [4]: where d_err is read back */
    void               *h_read;     /* pinned staging of buffer reads (cuda.c read_stage), h_read_cap bytes */
    size_t              h_read_cap;
    bool                graphs;     /* LOOM_CUDA_GRAPHS != 0 */
    bool                pdl;        /* decode kernels as programmatic dependents: sm_90+, LOOM_CUDA_PDL != 0 */
    int                 graph_max_t;/* capture graphs for steps of at most this many tokens */
    size_t              bytes;      /* in live buffers */
    struct loom_buffer *buffers;    /* freed by device_close */
    struct cu_prog     *progs;      /* freed by device_close */
} cu_dev;

/* "cuda:N: what failed: driver text", with the free memory for allocations. */
loom_status loom__cu_fail(cu_dev *d, cudaError_t e, const char *what);
/* Make d's device current on the calling thread. */
loom_status loom__cu_use(cu_dev *d);
/* Check the device error word that kernels set (bad token ids) after the queued work; clears it. */
loom_status loom__cu_check_err(cu_dev *d);
loom_status loom__cu_malloc(cu_dev *d, size_t size, void **ptr, const char *what);

bool        loom__cu_supports(void *dctx, const loom_node *n);

/* cuda_graph.c */
loom_status loom__cu_compile(void *dctx, loom_node *nodes, int32_t n_nodes, void **prog);
loom_status loom__cu_execute(void *dctx, void *prog, const loom_step *step);
void        loom__cu_release(void *dctx, void *prog);

#endif
