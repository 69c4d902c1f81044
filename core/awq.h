/*
 * awq.h — the AWQ int4 weight as published checkpoints store it (see
 * LOOM_Q4_AWQ in loom_backend.h): packing, unpacking, dequantising.
 */
#ifndef LOOM_AWQ_H
#define LOOM_AWQ_H

#include "loom.h"

/* The three parts of a LOOM_Q4_AWQ blob of logical shape {K, N}. */
typedef struct loom_awq_view {
    int64_t         K, N;
    const uint32_t *qweight; /* [K][N/8] */
    const uint32_t *qzeros;  /* [K/128][N/8] */
    const uint16_t *scales;  /* [K/128][N] f16 */
} loom_awq_view;

loom_status loom_awq_check_shape(int64_t K, int64_t N);
loom_awq_view loom_awq_view_of(const void *blob, int64_t K, int64_t N);

/* q[K][N] and z[K/128][N] hold values 0..15; s[K/128][N] f16 bits. */
loom_status loom_awq_pack(int64_t K, int64_t N, const uint8_t *q, const uint8_t *z, const uint16_t *s, void *blob);
loom_status loom_awq_unpack(int64_t K, int64_t N, const void *blob, uint8_t *q, uint8_t *z, uint16_t *s);
/* The value of one element, w[k][n], as float. */
float       loom_awq_get(const loom_awq_view *v, int64_t k, int64_t n);
/* Join the checkpoint's three tensors (as stored in safetensors) into a blob. */
void        loom_awq_join(int64_t K, int64_t N, const void *qweight, const void *qzeros, const void *scales, void *blob);

#endif
