/*
 * conformance.h — op conformance: every op of LOOM_OPS, at the shapes Qwen2.5
 * really uses, run on one device and compared with the float64 reference
 * (reference.h). What `loom check ops` prints.
 *
 * Each case builds a one-node graph with the public graph API, compiles it
 * for the device alone (LOOM_COMPILE_NO_FALLBACK), fills inputs, weights and
 * KV caches with fresh seeded random data, poisons the output with NaN, runs
 * one step, and compares the output with loom_ref_node() on the same bytes:
 *
 *   NMSE = Σ (out - ref)² / Σ ref²        max|diff| = max |out - ref|
 *
 * A case passes when every element is finite and NMSE <= the threshold of
 * its (op, dtype) in the one table of conformance.c. A node the device's
 * supports() rejects is "unsupported": not a failure (a plugin may claim a
 * subset), unless the device supports none of the selected cases at all.
 *
 *   loom_check_report rep;
 *   loom_check_ops(dev, &(loom_check_opts){.seed = 1, .quick = true}, &rep);
 *   ... rep.results[i], rep.n_fail ...
 *   loom_check_report_free(&rep);
 */
#ifndef LOOM_CONFORMANCE_H
#define LOOM_CONFORMANCE_H

#include "graph.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum loom_check_verdict {
    LOOM_CHECK_PASS,
    LOOM_CHECK_FAIL,        /* out of tolerance, non-finite, or the device returned an error */
    LOOM_CHECK_UNSUPPORTED, /* the device's supports() declined the node */
} loom_check_verdict;

const char *loom_check_verdict_name(loom_check_verdict v); /* "PASS", "FAIL", "unsupported" */

/* What one case is: the op, the dtype its threshold is keyed on (weight,
 * embedding table or KV cache dtype; f32 for activation-only ops), and its
 * dimensions. Unused fields are 0. */
typedef struct loom_check_case {
    const char *label;  /* model the shape comes from: "0.5B", "7B", "32B", "small" */
    loom_op     op;
    loom_dtype  dtype;
    int32_t     T;      /* tokens in the step */
    int64_t     K, N;   /* matmul, matmul_awq: x[T,K] -> y[T,N]; embed: vocab K, dim N;
                           rmsnorm, swiglu, add: N columns */
    int32_t     n_head, n_head_kv, head_dim; /* rope (n_head), gqa_attn */
    int32_t     ctx;    /* gqa_attn: cache capacity C; rope: largest position drawn */
    int32_t     kv_len; /* gqa_attn: positions the last token attends (its pos + 1) */
    int32_t     n_seq;  /* gqa_attn: slots the step's tokens use (1..3) */
    bool        shuffle;/* gqa_attn: the step's tokens in random order (positions not ascending) */
    bool        bias;   /* matmul, matmul_awq */
    float       yarn;   /* rope: YaRN factor (0: none) */
} loom_check_case;

typedef struct loom_check_result {
    loom_check_case    c;
    char               shape[96];   /* e.g. "T=1 K=896 N=4864", for tables */
    loom_check_verdict verdict;
    double             nmse;        /* NAN when not compared */
    double             max_abs;     /* max |out - ref| over finite elements */
    double             threshold;   /* max NMSE allowed for (op, dtype) */
    int64_t            n_elems;     /* elements compared */
    int64_t            n_nonfinite; /* NaN/inf outputs (unwritten ones included) */
    double             seconds;     /* wall time of the case, reference included */
    char               message[256];/* why it failed or is unsupported; "" on pass */
} loom_check_result;

typedef struct loom_check_report {
    char               device[64];  /* loom_device_label() */
    loom_device_info   info;        /* zeroed if the backend could not say */
    uint64_t           seed;
    int32_t            n_results;
    loom_check_result *results;
    int32_t            n_pass, n_fail, n_unsupported;
    bool               none_supported; /* every selected case unsupported: counted in n_fail too */
    double             seconds;
} loom_check_report;

/* Optional hook, called on the device's output (n floats) before it is
 * compared. For tests that prove the checker can fail: corrupt it here. */
typedef void (*loom_check_tamper_fn)(const loom_check_case *c, float *out, int64_t n, void *user);
/* Optional hook, called after each case (e.g. to print a table row live). */
typedef void (*loom_check_progress_fn)(const loom_check_result *r, void *user);

typedef struct loom_check_opts {
    uint64_t               seed;     /* RNG seed; each case derives its own stream from it */
    bool                   quick;    /* small shapes only (seconds, for unit tests) */
    const char            *op;       /* only cases of this op (loom_op_name), NULL for all */
    loom_check_tamper_fn   tamper;   /* (optional) */
    loom_check_progress_fn progress; /* (optional) */
    void                  *user;     /* passed to the hooks */
} loom_check_opts;

/* Run the case table (full or quick, filtered by opts->op) on dev. Returns
 * LOOM_OK when the cases ran, whatever their verdicts (read rep->n_fail);
 * an error only for bad options (unknown op name: LOOM_ERR_INVALID) or out of
 * memory. rep is always initialised; free it with loom_check_report_free. */
loom_status loom_check_ops(loom_device *dev, const loom_check_opts *opts, loom_check_report *rep);
void        loom_check_report_free(loom_check_report *rep); /* accepts NULL */

/* Run one case (not necessarily from the table) on dev. */
loom_status loom_check_case_run(loom_device *dev, const loom_check_case *c, uint64_t seed, const loom_check_opts *opts,
                                loom_check_result *out);

/* The case table: n cases, full or quick. */
const loom_check_case *loom_check_cases(bool quick, int32_t *n);

/* Max NMSE allowed for (op, dtype); the one table, in conformance.c. */
double loom_check_threshold(loom_op op, loom_dtype dt);

/* Compare n device outputs with the reference: NMSE, max|diff| over finite
 * elements, count of non-finite outputs. Returns the NMSE (inf if any output
 * is non-finite, or if the reference is all zeros and out is not). */
double loom_check_compare(const float *out, const double *ref, int64_t n, double *max_abs, int64_t *n_nonfinite);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_CONFORMANCE_H */
