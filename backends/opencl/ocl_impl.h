/* ocl_impl.h — internals of the OpenCL backend plugin (libloom-opencl.so),
 * shared by ocl.c (devices, buffers, weights), ocl_program.c (building the
 * kernels, the on-disk binary cache) and ocl_exec.c (compile, execute).
 * Nothing here is visible outside the plugin: only loom_backend_entry is
 * exported. */
#ifndef LOOM_OCL_IMPL_H
#define LOOM_OCL_IMPL_H

#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include "loom_backend.h"

/* The host's services, set by loom_backend_entry (the plugin's only global
 * besides the interface table). */
extern const loom_host_i *loom__ocl_host;

#define OCL_FAIL(st, ...) loom__ocl_host->error((st), "opencl: " __VA_ARGS__)
#define OCL_LOG(lvl, ...) loom__ocl_host->log((lvl), "opencl: " __VA_ARGS__)

/* A CL call that failed: its error name, and the loom status that fits
 * (NOMEM for allocation failures, BACKEND otherwise). */
const char *loom__ocl_errname(cl_int err);
loom_status loom__ocl_fail(cl_int err, const char *call, const char *what);
#define OCL_CHECK(expr, what)                                         \
    do {                                                              \
        cl_int ocl_rc_ = (expr);                                      \
        if (ocl_rc_ != CL_SUCCESS) return loom__ocl_fail(ocl_rc_, #expr, (what)); \
    } while (0)

/* Build-time configuration of the kernels, chosen from device limits. */
typedef struct ocl_cfg {
    int gt_t;      /* tiled matmul output tile: tokens ... */
    int gt_n;      /* ... x columns ... */
    int gt_tm;     /* ... and tokens per work-item (64 x 128 by 8: 128 work-items; 32 x 64 by 4: 64) */
    int gv_wg;     /* GEMV work-group (AWQ: columns x K slices; dense: 32 per column) */
    int gemv_w;    /* unaligned dense GEMV work-group */
    int gemv_r;    /* unaligned dense GEMV output columns per work-group */
    int red_w;     /* rmsnorm work-group */
    int att_w;     /* attention work-group; head_dim <= 4 * att_w */
    int att_tw;    /* tiled prefill attention work-group (128 or 64); 0: not built (local memory too small) */
    int att_dw;    /* decode attention work-group (128 or 64); 0: not built (local memory too small) */
    int att_sw;    /* one-row decode attention's work-group (256; attn_dec1, up to ATT_SP positions); 0: not built */
    int ew_w;      /* elementwise work-group */
} ocl_cfg;

struct loom_buffer {
    cl_mem              mem;
    size_t              size;
    size_t              used;        /* a weight slab: bytes handed out (ocl.c weight_prepare) ... */
    int32_t             refs;        /* ... and tensors in it still prepared */
    struct loom_buffer *prev, *next; /* the device's live buffers */
};

struct ocl_prog;

#define OCL_VIEWS 4 /* host buffers from host_alloc a device holds at once (loom_exec_view takes one) */

typedef struct ocl_dev {
    cl_platform_id   platform;
    cl_device_id     device;
    cl_context       ctx;
    cl_command_queue queue;
    cl_program       program;
    cl_program       program_tc; /* the tensor-core decode GEMVs (ocl_program.c), or NULL */
    cl_mem           err;      /* int[4]: a kernel-reported error (embed id out of range) */
    cl_mem           dummy;    /* bound where a kernel's optional buffer is absent */
    cl_mem           pin;      /* pinned staging of buffer reads (ocl.c pin_stage), mapped at pin_host */
    unsigned char   *pin_host;
    size_t           pin_cap;
    struct { cl_mem mem; unsigned char *host; size_t size; } views[OCL_VIEWS]; /* ocl_host_alloc's, mapped */
    unsigned char    wst[256]; /* a small write's copy while it is queued (ocl.c ocl_buffer_write) ... */
    cl_event         wst_ev;   /* ... until this completes */
    ocl_cfg          cfg;
    size_t           max_wg, local_mem, max_alloc;
    size_t           max_item[3]; /* CL_DEVICE_MAX_WORK_ITEM_SIZES */
    int32_t          cus;      /* compute units (LOOM_OPENCL_CUS overrides): sizes the GEMV split */
    int32_t          att_one;  /* decode attention over at most this many positions: one partition
                                  (LOOM_OPENCL_ATT_ONE overrides) */
    int32_t          att_vs;    /* attn_dec1's work-groups per query head (LOOM_OPENCL_ATT_VSPLIT) */
    bool             att_short; /* one-row decode over short contexts runs attn_dec1 (LOOM_OPENCL_ATT_SHORT=0: not) */
    int32_t          tc_wgs;   /* tensor-core decode GEMV: resident work-groups per compute unit its
                                  launches and register cap are sized to (LOOM_OPENCL_TC_WGS; 0: one
                                  work-group per tile) */
    int32_t          index;    /* opencl:N */
    char             label[96];
    loom_buffer     *buffers;
    loom_buffer     *slab;     /* the weight slab being filled (ocl.c weight_prepare), or NULL */
    struct ocl_prog *progs;
    size_t           bytes;    /* in live buffers */
    bool             profile;  /* LOOM_OPENCL_PROFILE=1: every kernel's time on the device, logged per node */
    bool             fuse;     /* LOOM_OPENCL_FUSE=0 clears it: every node its own launches (to bisect) */
    int              mma;      /* prefill on tensor cores (mma.cl): 0 no, 1 inline PTX, 2 emulated (tests) */
    bool             nv;       /* NVIDIA's platform: kernels may use inline PTX (-DLOOM_NV) */
    int              mma_rows; /* mma.cl row tile forced by LOOM_OPENCL_MMA_ROWS (64, 128), else 0 (64) */
    uint32_t         dfuse;    /* OCL_DF_* the decode GEMVs may take on (LOOM_OPENCL_FUSE=norm,rope,...) */
    int32_t          launches; /* kernels enqueued by the running execute() (logged at debug level) */
    int32_t          flush_every; /* clFlush after a step's first launch and every this many (LOOM_OPENCL_FLUSH) */
    cl_event        *pev;      /* LOOM_OPENCL_PROFILE=1: the running step's kernels ... */
    int32_t         *pev_node; /* ... their nodes ... */
    cl_kernel       *pev_kern; /* ... and the kernels they ran */
    int32_t          npev, pev_cap;
} ocl_dev;

/* What a decode GEMV launch may take on (ocl_exec.c plan_decode). */
enum { OCL_DF_NORM = 1, OCL_DF_ADD = 2, OCL_DF_SWIGLU = 4, OCL_DF_ROPE = 8, OCL_DF_KV = 16, OCL_DF_ALL = 31 };

/* One entry of the flat device list (all devices of all platforms). */
typedef struct ocl_devref {
    cl_platform_id platform;
    cl_device_id   device;
} ocl_devref;

typedef struct ocl_backend {
    int32_t     n;
    ocl_devref *devs;
} ocl_backend;

/* ocl_program.c: build (or load from the cache) the programs of one device, and release them. */
loom_status loom__ocl_build(ocl_dev *d);
void        loom__ocl_unbuild(ocl_dev *d);
void        loom__ocl_pick_cfg(ocl_dev *d);
/* ocl.c: the device info strings the cache key is made of */
loom_status loom__ocl_dev_string(cl_device_id dev, cl_device_info what, char *out, size_t len);
bool        loom__ocl_has_ext(cl_device_id dev, const char *name);

/* ocl_exec.c */
bool        loom__ocl_supports(ocl_dev *d, const loom_node *n);
loom_status loom__ocl_compile(ocl_dev *d, loom_node *nodes, int32_t n_nodes, void **prog);
loom_status loom__ocl_execute(ocl_dev *d, void *prog, const loom_step *step);
void        loom__ocl_release(ocl_dev *d, void *prog);
loom_status loom__ocl_check_kernel_error(ocl_dev *d);              /* reads the error word (blocking) */
loom_status loom__ocl_kernel_error(ocl_dev *d, const cl_int e[4]); /* the error word as read */
bool        loom__ocl_mma_selftest(ocl_dev *d);                      /* mma.cl against the portable GEMMs */

#define OCL_LINK(head, x)   ((x)->prev = NULL, (x)->next = (head), (head) ? (head)->prev = (x) : 0, (head) = (x))
#define OCL_UNLINK(head, x) ((x)->prev ? ((x)->prev->next = (x)->next) : ((head) = (x)->next), \
                             (x)->next ? (x)->next->prev = (x)->prev : 0)

#endif /* LOOM_OCL_IMPL_H */
