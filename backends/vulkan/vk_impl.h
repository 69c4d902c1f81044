/*
 * vk_impl.h — internals of the Vulkan backend, shared by its two files.
 *
 *   vk.c       the loom_backend_i table: instance (+ validation messenger),
 *              physical devices, logical device, memory, buffers, weights,
 *              transfers, the entry point
 *   vk_prog.c  compile (pipelines, descriptor sets, dispatch list), command
 *              buffer recording per token count, execute
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
    VK_SH_GEMV, VK_SH_GEMV_SG, VK_SH_GEMV_AWQ, VK_SH_GEMM, VK_SH_GEMM_AWQ, VK_SH_COUNT
} vk_shader;

#define VK_BINDINGS   8 /* 0..5 tensors, 6 unused, 7 the step buffer */
#define VK_STEP_BIND  7
#define VK_PC_WORDS   24
#define VK_GEMV_MAX_T 8 /* matmul: GEMV up to this many tokens (in blocks of 4), tiled GEMM above */

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
    size_t              used;      /* weight chunk: bytes handed out */
    int64_t             n_weights; /* weight chunk: live weights in it */
    struct loom_buffer *prev, *next;
};

typedef struct vk_pipe {
    vk_shader       sh;
    uint32_t        spec[2];
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
    uint32_t                         mt_device;   /* memory type for buffers */
    bool                             mt_mappable; /* ... that is also host-visible + coherent */
    uint32_t                         mt_host;     /* host-visible coherent type (staging, step buffers) */
    VkDeviceSize                     max_range;   /* maxStorageBufferRange */
    VkDeviceSize                     align;       /* minStorageBufferOffsetAlignment */
    VkCommandPool                    cmd_pool;
    VkCommandBuffer                  xfer;        /* transfers through staging */
    VkFence                          fence;
    bool                             in_flight;   /* a submission not yet waited for */
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
loom_status loom__vk_wait(vk_dev *d);             /* wait for the last submission; report device-side errors */
loom_status loom__vk_check_validation(vk_dev *d); /* a validation error since last time is a failure */
loom_status loom__vk_submit(vk_dev *d, VkCommandBuffer cb, struct vk_prog *p);
loom_status loom__vk_pipeline(vk_dev *d, vk_shader sh, uint32_t spec0, uint32_t spec1, VkPipeline *out);

/* vk_prog.c */
loom_status loom__vk_compile(void *dctx, loom_node *nodes, int32_t n_nodes, void **prog);
loom_status loom__vk_execute(void *dctx, void *prog, const loom_step *step);
void        loom__vk_release(void *dctx, void *prog);
bool        loom__vk_supports(void *dctx, const loom_node *node);
uint32_t    loom__vk_prog_errors(struct vk_prog *p); /* read and clear the shaders' error flags */

#endif
