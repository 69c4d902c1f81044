/* dtype.c — dtype and op names, tensor sizes with overflow checks. */
#include <strings.h>

#include "loom.h"

static const char *const dtype_names[LOOM_DTYPE_COUNT] = {"f32", "f16", "bf16", "i32", "q4_awq"};
static const size_t dtype_sizes[LOOM_DTYPE_COUNT] = {4, 2, 2, 4, 0};

const char *loom_dtype_name(loom_dtype dt)
{
    return (unsigned)dt < LOOM_DTYPE_COUNT ? dtype_names[dt] : "?";
}

loom_status loom_dtype_parse(const char *name, loom_dtype *out)
{
    for (int i = 0; i < LOOM_DTYPE_COUNT; i++)
        if (name && !strcasecmp(name, dtype_names[i])) return *out = (loom_dtype)i, LOOM_OK;
    return loom_error(LOOM_ERR_INVALID, "unknown dtype '%s' (expected f32, f16, bf16, i32 or q4_awq)", name ? name : "");
}

size_t loom_dtype_size(loom_dtype dt)
{
    return (unsigned)dt < LOOM_DTYPE_COUNT ? dtype_sizes[dt] : 0;
}

const char *loom_op_name(loom_op op)
{
    return loom_op_str(op);
}

loom_status loom_op_parse(const char *name, loom_op *out)
{
    for (int i = 0; i < LOOM_OP_COUNT; i++)
        if (name && !strcasecmp(name, loom_op_str((loom_op)i))) return *out = (loom_op)i, LOOM_OK;
    return loom_error(LOOM_ERR_INVALID, "unknown op '%s'", name ? name : "");
}

loom_status loom_tensor_nbytes(loom_dtype dt, int32_t ndim, const int64_t *shape, size_t *out)
{
    if ((unsigned)dt >= LOOM_DTYPE_COUNT)
        return loom_error(LOOM_ERR_INVALID, "invalid dtype %d", (int)dt);
    if (ndim < 1 || ndim > LOOM_MAX_DIMS)
        return loom_error(LOOM_ERR_INVALID, "rank %d is outside 1..%d", ndim, LOOM_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0 || shape[i] > ((int64_t)1 << 40))
            return loom_error(LOOM_ERR_INVALID, "dimension %d is %lld (must be 1..2^40)", i, (long long)shape[i]);
    if (dt == LOOM_Q4_AWQ) {
        if (ndim != 2)
            return loom_error(LOOM_ERR_INVALID, "an AWQ weight is 2-D {K, N}, not rank %d", ndim);
        if (shape[0] % LOOM_AWQ_GROUP || shape[1] % 8)
            return loom_error(LOOM_ERR_INVALID, "AWQ weight {K=%lld, N=%lld}: K must be a multiple of %d and N of 8",
                              (long long)shape[0], (long long)shape[1], LOOM_AWQ_GROUP);
        if (shape[0] > (1 << 24) || shape[1] > (1 << 24))
            return loom_error(LOOM_ERR_INVALID, "AWQ weight {K=%lld, N=%lld} is too large", (long long)shape[0], (long long)shape[1]);
        *out = loom_awq_nbytes(shape[0], shape[1]);
        return LOOM_OK;
    }
    size_t n = dtype_sizes[dt];
    for (int i = 0; i < ndim; i++)
        if (__builtin_mul_overflow(n, (size_t)shape[i], &n))
            return loom_error(LOOM_ERR_INVALID, "tensor size overflows");
    if (n > ((size_t)1 << 46))
        return loom_error(LOOM_ERR_INVALID, "tensor of %zu bytes is too large", n);
    *out = n;
    return LOOM_OK;
}

size_t loom_tensor_bytes(const loom_tensor *t)
{
    size_t n = 0;
    return loom_tensor_nbytes(t->dtype, t->ndim, t->shape, &n) == LOOM_OK ? n : 0;
}

size_t loom_tensor_rows_bytes(const loom_tensor *t, int64_t rows)
{
    size_t all = loom_tensor_bytes(t);
    if (rows >= t->shape[0]) return all;
    return all / (size_t)t->shape[0] * (size_t)rows;
}
