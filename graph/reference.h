/*
 * reference.h — the float64 oracle: every op computed in double precision,
 * straight from its definition in loom_backend.h, with no shortcuts. It is
 * what `loom check` measures every backend against.
 */
#ifndef LOOM_REFERENCE_H
#define LOOM_REFERENCE_H

#include "loom.h"

/* Run one node on the host. src[i] points at the host bytes of source i in
 * its storage dtype (NULL for an absent optional source); for gqa_attn,
 * src[3] and src[4] are the caches as they were before the step. dst receives
 * step->n_tokens rows of the node's output, as doubles. */
loom_status loom_ref_node(const loom_node *node, const loom_step *step, const void *const *src, double *dst);

#endif
