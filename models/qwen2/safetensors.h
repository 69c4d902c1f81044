/*
 * safetensors.h — read-only, memory-mapped safetensors checkpoints: one file,
 * or the shards named by model.safetensors.index.json. Every header is
 * validated against its file before any tensor is handed out.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
 * "__metadata__": {...}}, then the data; offsets are relative to the data.
 */
#ifndef LOOM_SAFETENSORS_H
#define LOOM_SAFETENSORS_H

#include "loom.h"

#define LOOM_ST_MAX_DIMS 8

typedef struct loom_st_tensor {
    const char *name;
    const char *file;       /* path of the file that holds it */
    char        dtype[8];   /* as written: "BF16", "I32", ... */
    bool        known;      /* dtype maps to a loom dtype */
    loom_dtype  dt;
    int32_t     ndim;
    int64_t     shape[LOOM_ST_MAX_DIMS];
    const void *data;       /* inside the mapping */
    size_t      nbytes;
} loom_st_tensor;

typedef struct loom_st loom_st;

/* A folder: model.safetensors.index.json if present, else model.safetensors,
 * else the single *.safetensors file in it. */
loom_status loom_st_open_dir(const char *dir, loom_st **out);
loom_status loom_st_open_file(const char *path, loom_st **out);
void        loom_st_close(loom_st *st); /* accepts NULL */

int32_t               loom_st_count(const loom_st *st);
const loom_st_tensor *loom_st_at(const loom_st *st, int32_t i);
const loom_st_tensor *loom_st_find(const loom_st *st, const char *name);

/* The tensor `name` with exactly this dtype and shape, or an error naming
 * the file, the tensor and what was expected. */
loom_status loom_st_get(const loom_st *st, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape,
                        const loom_st_tensor **out);

/* Parse and validate one header held in memory (for tests and fuzzing):
 * buf is the whole file (or its first bytes), file_size the real size. */
loom_status loom_st_parse(const uint8_t *buf, size_t len, size_t file_size, const char *file, loom_st **out);



/* ---- writing (for `loom synth` and tests) ---------------------------------- */
typedef struct loom_st_entry {
    const char *name;
    const char *dtype;                   /* "F16", "I32", ... */
    int32_t     ndim;
    int64_t     shape[LOOM_ST_MAX_DIMS];
} loom_st_entry;

/* Fill the bytes of entry i (nbytes of them) into buf. */
typedef loom_status (*loom_st_fill_fn)(void *ud, int32_t i, void *buf, size_t nbytes);

/* Write a safetensors file, producing each tensor's data through fill, one at
 * a time (so no more than the largest tensor is ever held in memory). */
loom_status loom_st_write(const char *path, const loom_st_entry *entries, int32_t n, loom_st_fill_fn fill, void *ud);
#endif
