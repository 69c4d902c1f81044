/* bad.c — deliberately broken backend plugins for tests/test_registry.c.
 * One source, one -DBAD_<KIND> per shared module; each must leave its backend
 * listed as unavailable with a reason, and the process running. */
#include "loom_backend.h"

static const loom_host_i *host;

static loom_status b_init(void **bctx)
{
    *bctx = NULL;
#ifdef BAD_INITFAIL
    return host->error(LOOM_ERR_BACKEND, "initfail: no such driver (test plugin)");
#else
    return LOOM_OK;
#endif
}
static void        b_shutdown(void *bctx) { (void)bctx; }
#ifdef BAD_NODEV
static int32_t     b_device_count(void *bctx) { (void)bctx; return 0; }
#else
static int32_t     b_device_count(void *bctx) { (void)bctx; return 1; }
#endif
static loom_status b_device_info(void *bctx, int32_t dev, loom_device_info *info) { (void)bctx; (void)dev; (void)info; return LOOM_OK; }
static loom_status b_device_open(void *bctx, int32_t dev, void **dctx) { (void)bctx; (void)dev; *dctx = (void *)&host; return LOOM_OK; }
static void        b_device_close(void *dctx) { (void)dctx; }
static bool        b_supports(void *dctx, const loom_node *n) { (void)dctx; (void)n; return false; }
static loom_status b_buffer_alloc(void *dctx, size_t size, loom_buffer **buf) { (void)dctx; (void)size; *buf = NULL; return LOOM_ERR_NOMEM; }
static void        b_buffer_free(void *dctx, loom_buffer *buf) { (void)dctx; (void)buf; }
static loom_status b_buffer_write(void *dctx, loom_buffer *b, size_t off, const void *src, size_t size) { (void)dctx; (void)b; (void)off; (void)src; (void)size; return LOOM_ERR_INVALID; }
static loom_status b_buffer_read(void *dctx, loom_buffer *b, size_t off, void *dst, size_t size) { (void)dctx; (void)b; (void)off; (void)dst; (void)size; return LOOM_ERR_INVALID; }
#ifndef BAD_NULLS
static loom_status b_compile(void *dctx, loom_node *nodes, int32_t n, void **prog) { (void)dctx; (void)nodes; (void)n; *prog = NULL; return LOOM_ERR_UNSUPPORTED; }
static loom_status b_execute(void *dctx, void *prog, const loom_step *step) { (void)dctx; (void)prog; (void)step; return LOOM_ERR_UNSUPPORTED; }
#endif
static void        b_release(void *dctx, void *prog) { (void)dctx; (void)prog; }
static loom_status b_sync(void *dctx) { (void)dctx; return LOOM_OK; }

static const loom_backend_i iface = {
#ifdef BAD_ABI
    .abi = 42, /* an ABI this loom never had */
#else
    .abi = LOOM_BACKEND_ABI,
#endif
#ifdef BAD_MISNAME
    .name = "othername",
#else
    .name = PLUGIN_NAME,
#endif
    .init = b_init,
    .shutdown = b_shutdown,
    .device_count = b_device_count,
    .device_info = b_device_info,
    .device_open = b_device_open,
    .device_close = b_device_close,
    .supports = b_supports,
    .buffer_alloc = b_buffer_alloc,
    .buffer_free = b_buffer_free,
    .buffer_write = b_buffer_write,
    .buffer_read = b_buffer_read,
#ifndef BAD_NULLS /* compile and execute left NULL */
    .compile = b_compile,
    .execute = b_execute,
#endif
    .release = b_release,
    .sync = b_sync,
};

#ifdef BAD_UNDEF
void loom_test_symbol_that_does_not_exist(void); /* RTLD_NOW: dlopen fails */
#endif

#ifdef BAD_NOSYM
#define ENTRY_NAME loom_backend_entry_misspelt
#else
#define ENTRY_NAME loom_backend_entry
#endif

__attribute__((visibility("default"))) const loom_backend_i *ENTRY_NAME(const loom_host_i *h)
{
    host = h;
#ifdef BAD_UNDEF
    loom_test_symbol_that_does_not_exist();
#endif
#ifdef BAD_NULLENTRY
    h->error(LOOM_ERR_UNSUPPORTED, "nullentry: this host is not for me (test plugin)");
    return NULL;
#endif
    return &iface;
}
