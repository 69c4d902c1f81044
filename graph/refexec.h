/*
 * refexec.h — a whole graph run by the float64 reference, node by node on the
 * host: the oracle of `loom check model`. Each node is computed in double
 * (loom_ref_node); what passes between nodes is stored in the tensor's own
 * dtype (f32 activations, the cache dtype for KV), as the graph defines it.
 * Weights are read from the graph's borrowed host data, which must stay valid.
 */
#ifndef LOOM_REFEXEC_H
#define LOOM_REFEXEC_H

#include "graph.h"

typedef struct loom_ref_exec loom_ref_exec;

loom_status loom_ref_exec_create(const loom_graph *g, loom_ref_exec **out);
void        loom_ref_exec_destroy(loom_ref_exec *r); /* accepts NULL */
loom_status loom_ref_exec_write(loom_ref_exec *r, loom_tid t, const void *src, size_t nbytes);
loom_status loom_ref_exec_read(loom_ref_exec *r, loom_tid t, void *dst, size_t nbytes);
loom_status loom_ref_exec_run(loom_ref_exec *r, const loom_step *step);

#endif
