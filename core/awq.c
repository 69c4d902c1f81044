/* awq.c — AWQ int4 (group 128, zero points) in the checkpoint's packed layout. */
#include "awq.h"

loom_status loom_awq_check_shape(int64_t K, int64_t N)
{
    size_t n;
    return loom_tensor_nbytes(LOOM_Q4_AWQ, 2, (const int64_t[]){K, N}, &n);
}

loom_awq_view loom_awq_view_of(const void *blob, int64_t K, int64_t N)
{
    const uint8_t *p = blob;
    loom_awq_view v = {K, N, NULL, NULL, NULL};
    v.qweight = (const uint32_t *)p;
    v.qzeros = (const uint32_t *)(p + K * N / 2);
    v.scales = (const uint16_t *)(p + K * N / 2 + (K / LOOM_AWQ_GROUP) * N / 2);
    return v;
}

/* Pack rows of 4-bit values, N per row, into N/8 words per row. */
static void pack_rows(int64_t rows, int64_t N, const uint8_t *vals, uint32_t *words)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < N / 8; c++) {
            uint32_t w = 0;
            for (int i = 0; i < 8; i++)
                w |= (uint32_t)(vals[r * N + 8 * c + loom_awq_order[i]] & 0xf) << (4 * i);
            words[r * (N / 8) + c] = w;
        }
}

static void unpack_rows(int64_t rows, int64_t N, const uint32_t *words, uint8_t *vals)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < N / 8; c++)
            for (int i = 0; i < 8; i++)
                vals[r * N + 8 * c + loom_awq_order[i]] = (words[r * (N / 8) + c] >> (4 * i)) & 0xf;
}

loom_status loom_awq_pack(int64_t K, int64_t N, const uint8_t *q, const uint8_t *z, const uint16_t *s, void *blob)
{
    loom_status st = loom_awq_check_shape(K, N);
    if (st) return st;
    for (int64_t i = 0; i < K * N; i++)
        if (q[i] > 15) return loom_error(LOOM_ERR_INVALID, "AWQ pack: q[%lld] = %d is not a 4-bit value", (long long)i, q[i]);
    for (int64_t i = 0; i < K / LOOM_AWQ_GROUP * N; i++)
        if (z[i] > 15) return loom_error(LOOM_ERR_INVALID, "AWQ pack: z[%lld] = %d is not a 4-bit value", (long long)i, z[i]);
    loom_awq_view v = loom_awq_view_of(blob, K, N);
    pack_rows(K, N, q, (uint32_t *)v.qweight);
    pack_rows(K / LOOM_AWQ_GROUP, N, z, (uint32_t *)v.qzeros);
    memcpy((uint16_t *)v.scales, s, (size_t)(K / LOOM_AWQ_GROUP * N) * 2);
    return LOOM_OK;
}

loom_status loom_awq_unpack(int64_t K, int64_t N, const void *blob, uint8_t *q, uint8_t *z, uint16_t *s)
{
    loom_status st = loom_awq_check_shape(K, N);
    if (st) return st;
    loom_awq_view v = loom_awq_view_of(blob, K, N);
    unpack_rows(K, N, v.qweight, q);
    unpack_rows(K / LOOM_AWQ_GROUP, N, v.qzeros, z);
    memcpy(s, v.scales, (size_t)(K / LOOM_AWQ_GROUP * N) * 2);
    return LOOM_OK;
}

/* Nibble of column n within its packed word: the inverse of loom_awq_order. */
static inline uint32_t nibble(const uint32_t *words, int64_t N, int64_t row, int64_t n)
{
    static const int slot_of[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* slot_of[order[i]] == i */
    return (words[row * (N / 8) + n / 8] >> (4 * slot_of[n % 8])) & 0xf;
}

float loom_awq_get(const loom_awq_view *v, int64_t k, int64_t n)
{
    int64_t g = k / LOOM_AWQ_GROUP;
    float q = (float)nibble(v->qweight, v->N, k, n), z = (float)nibble(v->qzeros, v->N, g, n);
    return (q - z) * loom_f16_to_f32(v->scales[g * v->N + n]);
}

void loom_awq_join(int64_t K, int64_t N, const void *qweight, const void *qzeros, const void *scales, void *blob)
{
    uint8_t *p = blob;
    size_t qw = (size_t)(K * N / 2), qz = (size_t)(K / LOOM_AWQ_GROUP * N / 2);
    memcpy(p, qweight, qw);
    memcpy(p + qw, qzeros, qz);
    memcpy(p + qw + qz, scales, (size_t)(K / LOOM_AWQ_GROUP * N) * 2);
}
