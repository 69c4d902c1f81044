/*
 * loom.h — public API of the core: status and errors, dtypes, logging, the
 * backend registry and device selection. The graph API is graph/graph.h.
 */
#ifndef LOOM_H
#define LOOM_H

#include <stdio.h>

#include "loom_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ---------------------------------------------------------------
 * Every fallible call returns loom_status; the message of the last failure on
 * this thread is loom_last_error(). */
const char *loom_last_error(void);
const char *loom_status_name(loom_status st);
loom_status loom_error(loom_status st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void        loom_clear_error(void);

/* ---- dtypes and sizes ------------------------------------------------------ */
const char *loom_dtype_name(loom_dtype dt);
loom_status loom_dtype_parse(const char *name, loom_dtype *out);
size_t      loom_dtype_size(loom_dtype dt); /* bytes per element; 0 for LOOM_Q4_AWQ */
const char *loom_op_name(loom_op op);
loom_status loom_op_parse(const char *name, loom_op *out);
/* Bytes of a tensor of this dtype and shape, overflow-checked (AWQ: all three
 * parts; requires ndim 2, K % 128 == 0 and N % 8 == 0). */
loom_status loom_tensor_nbytes(loom_dtype dt, int32_t ndim, const int64_t *shape, size_t *out);
/* Bytes of rows [0, rows) of t: what a step of `rows` tokens touches. */
size_t      loom_tensor_rows_bytes(const loom_tensor *t, int64_t rows);
size_t      loom_tensor_bytes(const loom_tensor *t);

/* ---- logging (LOOM_LOG=error|warn|info|debug|trace, default warn) ----------- */
void loom_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int  loom_log_level(void);
void loom_log_set_level(int level);

/* ---- backends and devices --------------------------------------------------
 * The registry holds the built-in CPU backend and every plugin found on
 * LOOM_PLUGIN_PATH, beside the executable's build tree and in the install
 * directory. A backend whose plugin or driver fails is listed with the reason
 * and never selected. */
typedef struct loom_backend loom_backend;
typedef struct loom_device  loom_device;

loom_status         loom_registry_init(void);        /* idempotent; loads plugins once */
void                loom_registry_shutdown(void);
int                 loom_backend_count(void);
loom_backend       *loom_backend_at(int i);
loom_backend       *loom_backend_find(const char *name);
const char         *loom_backend_name(const loom_backend *b);
const char         *loom_backend_origin(const loom_backend *b);  /* "built-in" or the plugin's path */
bool                loom_backend_available(const loom_backend *b);
const char         *loom_backend_reason(const loom_backend *b);  /* why unavailable; "" if available */
int                 loom_backend_device_count(const loom_backend *b);
loom_status         loom_backend_device_info(const loom_backend *b, int dev, loom_device_info *info);
const loom_backend_i *loom_backend_iface(const loom_backend *b);

/* Selection. spec is "name", "name:N" or a comma-separated priority list of
 * those; NULL or "" reads LOOM_BACKEND, and if that is unset too picks the
 * best available (cuda > vulkan > opencl > other plugins > cpu; a backend whose
 * device is the host CPU, such as PoCL or lavapipe, after cpu). The CPU is
 * appended as the last fallback when the list does not name it. Devices come
 * back opened, in priority order; an unknown or unavailable name is an error
 * whose message lists what is available. */
loom_status loom_select(const char *spec, loom_device ***devs, int *n_devs);
void        loom_devices_close(loom_device **devs, int n_devs); /* accepts NULL */

loom_status loom_device_open(loom_backend *b, int dev, loom_device **out);
void        loom_device_close(loom_device *d);                   /* accepts NULL */
const char *loom_device_label(const loom_device *d);              /* e.g. "cuda:0" */
const loom_backend_i *loom_device_iface(const loom_device *d);
void       *loom_device_ctx(const loom_device *d);


#ifdef __cplusplus
}
#endif
#endif /* LOOM_H */
