/*
 * vk_impl.h — internals of the Vulkan backend, shared by its files.
 *
 *   vk.c       the loom_backend_i table: instance (+ validation messenger),
 *              physical devices, logical device, memory, buffers, weights,
 *              transfers, the entry point
 *   vk_prog.c  compile (pipelines, descriptor sets, dispatch list, decode
 *              fusion plan), command buffer recording per token count, execute
 *   vk_coop.c  the self-test of the cooperative-matrix GEMM
 *   shaders/   GLSL compute kernels, embedded as SPIR-V (vk_spv.h)
 *
 * Nothing here is visible outside backends/vulkan.
 */
#ifndef LOOM_VK_IMPL_H
#define LOOM_VK_IMPL_H

#include <vulkan/vulkan.h>

#include "loom_backend.h"

const loom_host_i *loom__vk_host(void);
#define VK_ERR(st, ...) (loom__vk_host()->error((st), "vulkan: " __VA_ARGS__))
#define VK_LOG(lvl, ...) (loom__vk_host()->log((lvl), "vulkan: " __VA_ARGS__))
const char *loom__vk_result_name(VkResult r);
/* A failed Vulkan call as a loom error: "vulkan: <what>: VK_ERROR_...". */
loom_status loom__vk_fail(VkResult r, const char *what);

#define VK_LINK(head, x)   ((x)->prev = NULL, (x)->next = (head), (head) ? (head)->prev = (x) : 0, (head) = (x))
#define VK_UNLINK(head, x) ((x)->prev ? ((x)->prev->next = (x)->next) : ((head) = (x)->next), \
                            (x)->next ? (x)->next->prev = (x)->prev : 0)

/* ---- shaders ------------------------------------------------------------------ */
typedef enum {
    VK_SH_ELTWISE, VK_SH_EMBED, VK_SH_RMSNORM, VK_SH_RMSNORM_SG, VK_SH_ROPE, VK_SH_KV_STORE, VK_SH_ATTN,
    VK_SH_ATTN_TILE, VK_SH_ATTN_DEC, VK_SH_ATTN_MERGE, VK_SH_ATTN_DEC1,
    VK_SH_GEMV, VK_SH_GEMV_SG, VK_SH_GEMV_VEC, VK_SH_GEMV_VEC_SG, VK_SH_GEMV_AWQ, VK_SH_GEMM, VK_SH_GEMM_AWQ,
    VK_SH_GEMV_AWQ_FUSED, VK_SH_GEMV_AWQ_FUSED_IDOT, /* the second only with d->idot */
    VK_SH_GEMM_COOP, VK_SH_GEMM_COOP_AWQ,            /* only with d->coopmat */
    VK_SH_COUNT
} vk_shader;

#define VK_BINDINGS   16 /* 0..6 and 8..15 tensors, 7 the step buffer (8 bindings when the device allows no more) */
#define VK_STEP_BIND  7
#define VK_PC_WORDS   32 /* 128 bytes: the least maxPushConstantsSize */
#define VK_GEMV_MAX_T 8 /* matmul: GEMV up to this many tokens (variants for 1, 2, 3-4, 5-8), tiled GEMM above */
#define VK_COOP_N     128 /* gemm_coop.comp: output columns of a tile (its tokens: d->coop_rows), 256 invocations */
#define VK_COOP_SHARED(rows) (2u * ((rows) + VK_COOP_N) * 80u) /* its two stages, 80 bytes a row */

/* ---- AWQ in device memory --------------------------------------------------------
 * weight_prepare repacks the checkpoint's qweight/qzeros/scales once, on the
 * host, into the layout the CUDA backend uses too:
 *   q    uvec4 [K/32][N]   the 16 bytes at (kb, n) are column n's 32 nibbles
 *                          for k = 32kb .. 32kb+31: 32-bit word j, bits
 *                          4i..4i+3 hold k = 32kb + 8j + i
 *   meta u32   [K/128][N]  bits 0..15 the f16 scale of (group, n), 16..23
 *                          its zero point
 * so the GEMV invocation that owns column n reads a whole group as four
 * 16-byte loads plus one word, and a subgroup of consecutive columns reads
 * 512 contiguous bytes per load. */
static inline size_t loom__vk_awq_q_bytes(int64_t K, int64_t N) { return (size_t)(K / 32) * (size_t)N * 16; }
static inline size_t loom__vk_awq_bytes(int64_t K, int64_t N)
{
    return loom__vk_awq_q_bytes(K, N) + (size_t)(K / LOOM_AWQ_GROUP) * (size_t)N * 4;
}

/* ---- memory ----------------------------------------------------------------------
 * A loom_buffer is one VkBuffer over its own VkDeviceMemory: the host asks for
 * pooled buffers (activation arena, inputs, states) and weight_prepare
 * suballocates weights from chunks that are loom_buffers too. `map` is set
 * when the memory is host-visible and coherent (then reads and writes are
 * memcpy); otherwise transfers go through the device's staging buffer. */
struct loom_buffer {
    VkBuffer            buf;
    VkDeviceMemory      mem;
    size_t              size;
    void               *map;
    bool                is_chunk;  /* a weight chunk: freed when its last weight goes */
    bool                host_view; /* from vk_host_alloc: reads copy into it directly */
    size_t              used;      /* weight chunk: bytes handed out */
    int64_t             n_weights; /* weight chunk: live weights in it */
    struct loom_buffer *prev, *next;
};

typedef struct vk_pipe {
    vk_shader       sh;
    uint32_t        spec[4];
    VkPipeline      pipe;
    struct vk_pipe *next;
} vk_pipe;

typedef struct vk_ctx vk_ctx;

/* One opened device. */
typedef struct vk_dev {
    vk_ctx                          *ctx;
    int32_t                          index;
    VkPhysicalDevice                 pd;
    VkPhysicalDeviceProperties       props;
    VkPhysicalDeviceMemoryProperties memp;
    VkDevice                         dev;
    VkQueue                          queue;
    uint32_t                         qfam;
    bool                             subgroup;    /* subgroup arithmetic in compute: *_sg shaders */
    uint32_t                         sg_size;     /* default subgroup size (sizes GEMV work-groups) */
    uint32_t                         wg_max;      /* maxComputeWorkGroupInvocations */
    uint32_t                         wg_max_x;    /* maxComputeWorkGroupSize[0] */
    uint32_t                         wg_max_y;    /* maxComputeWorkGroupSize[1] */
    uint32_t                         shared_max;  /* maxComputeSharedMemorySize */
    bool                             scalar_gemv; /* LOOM_VK_SCALAR_GEMV=1: the scalar fallbacks (tests them) */
    uint32_t                         n_bind;      /* bindings in the set layout: VK_BINDINGS, or 8 */
    bool                             fuse;        /* decode fusion (needs 16 bindings; LOOM_VK_FUSE=0 turns it off) */
    bool                             att_short;   /* one-row decode over <= 256 positions on attn_dec1 (LOOM_VK_ATT_SHORT=0: not) */
    bool                             idot;        /* decode GEMVs on packed int8 dot products (gemv_awq_fused_idot) */
    bool                             coopmat;     /* prefill GEMM on VK_NV_cooperative_matrix (gemm_coop.comp) */
    uint32_t                         coop_rows;   /* ... its tile's tokens: 64, or 128 (LOOM_VK_COOP_ROWS=128) */
    bool                             profile;     /* LOOM_VK_PROFILE=1: timestamps around every dispatch (vk_prog.c) */
    double                           ts_ns;       /* ... nanoseconds per timestamp tick (timestampPeriod) */
    uint64_t                         ts_mask;     /* ... the queue's timestampValidBits as a mask */
    bool                             pipestats;   /* LOOM_VK_PIPESTATS=1: the driver's statistics of each pipeline */
    uint32_t                         mt_device;   /* memory type for buffers */
    bool                             mt_mappable; /* ... that is also host-visible + coherent */
    uint32_t                         mt_host;     /* host-visible coherent type (staging, step buffers) */
    int32_t                          mt_bar;      /* device-local host-visible coherent type for small buffers, or -1 */
    VkDeviceSize                     max_range;   /* maxStorageBufferRange */
    VkDeviceSize                     align;       /* minStorageBufferOffsetAlignment */
    VkCommandPool                    cmd_pool;
    VkCommandBuffer                  xfer;        /* transfers through staging */
    VkFence                          fence;
    VkFence                          read_fence;  /* a read's copy, submitted behind the running step */
    bool                             in_flight;   /* a submission not yet waited for */
    bool                             spin;        /* waits poll the fence (GPUs; LOOM_VK_SPIN=0|1 decides) */
    struct vk_prog                  *last_prog;   /* its program (error flags) */
    loom_buffer                     *staging;     /* host-visible, persistent */
    VkShaderModule                   modules[VK_SH_COUNT];
    VkDescriptorSetLayout            dsl;
    VkPipelineLayout                 layout;
    vk_pipe                         *pipes;       /* created once per (shader, spec) */
    loom_buffer                     *buffers;     /* live buffers (incl. weight chunks) */
    loom_buffer                     *chunk;       /* weight chunk being filled */
    struct vk_prog                  *progs;
    uint64_t                         val_seen;    /* validation errors already reported */
} vk_dev;

/* vk.c */
loom_status loom__vk_alloc(vk_dev *d, size_t size, bool host, loom_buffer **out);
void        loom__vk_free(vk_dev *d, loom_buffer *b);
loom_status loom__vk_write(vk_dev *d, loom_buffer *b, size_t off, const void *src, size_t size); /* blocking */
loom_status loom__vk_wait(vk_dev *d);             /* wait for the last submission; report device-side errors */
loom_status loom__vk_check_validation(vk_dev *d); /* a validation error since last time is a failure */
loom_status loom__vk_submit(vk_dev *d, VkCommandBuffer cb, struct vk_prog *p);
/* the pipeline of shader sh with specialisation constants 0..3 (ids a shader does not declare are ignored) */
loom_status loom__vk_pipeline4(vk_dev *d, vk_shader sh, uint32_t s0, uint32_t s1, uint32_t s2, uint32_t s3,
                               VkPipeline *out);
#define loom__vk_pipeline(d, sh, s0, s1, out) loom__vk_pipeline4((d), (sh), (s0), (s1), 0, 0, (out))
const char *loom__vk_shader_name(vk_shader sh); /* its SPIR-V module's stem: "gemm_coop_awq" */

/* vk_coop.c: run the cooperative-matrix GEMM (candidate; else the tiled GEMM
 * against itself) on a small random problem; the worst NMSE against the tiled GEMM */
loom_status loom__vk_coop_selftest(vk_dev *d, bool candidate, double *worst);

/* vk_prog.c */
loom_status loom__vk_compile(void *dctx, loom_node *nodes, int32_t n_nodes, void **prog);
loom_status loom__vk_execute(void *dctx, void *prog, const loom_step *step);
void        loom__vk_release(void *dctx, void *prog);
bool        loom__vk_supports(void *dctx, const loom_node *node);
uint32_t    loom__vk_prog_errors(struct vk_prog *p); /* read and clear the shaders' error flags */

#endif
