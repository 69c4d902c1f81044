/* What a decode step's structure costs on a Vulkan device, without its
 * arithmetic: a Qwen2.5 layer's weight traffic (q/k/v, attention, o, gate/up,
 * down, with the AWQ bytes of each) for every layer, streamed
 *   disp  as loom records a step now: one dispatch per phase, a pipeline
 *         barrier between each two;
 *   pers  as one persistent dispatch whose work-groups meet at a grid barrier
 *         (an atomic counter per phase) after each phase;
 *   one   as a single dispatch over the same bytes: the rate they could stream at;
 * and the floors: the same dispatches and barriers with nothing to read
 * (empty), the persistent grid barriers with nothing to read (pers-empty);
 * and the persistent variant with what a real phase adds before its barrier:
 * each work-group writing 32 words that the fence must wait for (pers+write),
 * each invocation loading its first word of the next phase before the wait,
 * as a GEMV can its weights (pers+ahead), and both (pers+both); and two
 * forms that need no grid resident at once: a dispatch per phase recorded
 * without barriers, each work-group waiting on the counter of the phase
 * before (chain; chain+ahead with its first load before the wait), and every
 * phase in one dispatch, work-groups placed by an atomic ticket (ticket,
 * ticket+ahead); chain-vol waits by an unbounded loop of volatile reads
 * rather than atomicOr(c, 0) (it hangs where the others give up). A chained
 * wait that gives up (a deadlock: a later dispatch's work-groups holding the
 * places an earlier one's still need) is counted and printed beside its
 * variant.
 *
 * The streaming phases launch DISP work-groups of 256 (default 1056: what
 * the H100 holds at once, 8 an SM); more shows whether chained dispatches
 * stay live when a phase does not fit the GPU at once.
 * Times from timestamps around each variant's command buffer, median of REPS.
 *
 *   glslc --target-env=vulkan1.1 -O bench/vulkan/phases.comp -o phases.spv
 *   cc -O2 -o vk-phases bench/vulkan/phases.c -lvulkan
 *   ./vk-phases phases.spv [7b|0.5b] [layers] [persistent work-groups] [device] [DISP]
 *
 * The persistent variant assumes every work-group of its grid is resident at
 * once (NVIDIA: 4 x 256 invocations an SM of this shader are); a grid that is
 * not would wait forever, so keep the default or check residency first.
 * Attention's phase reads the layer's KV rows at 128 positions with one
 * work-group per query head (a latency phase, as the real one). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>

#define CK(call)                                                                          \
    do {                                                                                  \
        VkResult r_ = (call);                                                             \
        if (r_ != VK_SUCCESS) {                                                           \
            fprintf(stderr, "vk-phases: %s:%d: %s failed: %d\n", __FILE__, __LINE__, #call, r_); \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

enum { REPS = 30, PER_LAYER = 5 };

typedef struct { uint32_t off, len, wgs, pad; } phase; /* uvec4 words; as phases.comp reads them */

/* The variants, each its own pipeline (phases.comp's MODE and FLAGS) and command buffer: how its
 * phases are recorded (form), and which quarter of the phase table it reads (rows) */
enum { DISP, PERS, ONE, CHAIN, TICKET };
enum { ROWS_DISP, ROWS_PERS, ROWS_EMPTY, ROWS_ONE };
static const struct {
    const char *name;
    uint32_t    mode, flags;
    int         form, rows;
} variants[] = {
    {"disp", 0, 0, DISP, ROWS_DISP},        /* the first three feed the summary line */
    {"pers", 1, 0, PERS, ROWS_PERS},
    {"one", 0, 0, ONE, ROWS_ONE},
    {"empty", 2, 0, DISP, ROWS_DISP},
    {"pers-empty", 1, 0, PERS, ROWS_EMPTY},
    {"pers+write", 1, 1, PERS, ROWS_PERS},
    {"pers+ahead", 1, 2, PERS, ROWS_PERS},
    {"pers+both", 1, 3, PERS, ROWS_PERS},
    {"chain", 3, 0, CHAIN, ROWS_DISP},
    {"chain+ahead", 3, 2, CHAIN, ROWS_DISP},
    {"ticket", 4, 0, TICKET, ROWS_DISP},
    {"ticket+ahead", 4, 2, TICKET, ROWS_DISP},
    {"chain-vol", 3, 4, CHAIN, ROWS_DISP},
};
enum { N_VAR = sizeof variants / sizeof *variants };

typedef struct {
    const char *name;
    int64_t     hidden, inter, heads, kv_heads, head_dim, layers;
} shape;

static const shape shapes[] = {
    {"7b", 3584, 18944, 28, 4, 128, 28},
    {"0.5b", 896, 4864, 14, 2, 64, 24},
};

static uint64_t awq_bytes(int64_t K, int64_t N) { return (uint64_t)(K * N / 2 + K / 128 * N * 4); }

static VkDevice dev;
static VkPhysicalDevice pd;
static uint32_t mt_dev = UINT32_MAX, mt_host = UINT32_MAX;

static void pick_types(void)
{
    VkPhysicalDeviceMemoryProperties mp;
    vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    for (uint32_t i = 0; i < mp.memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = mp.memoryTypes[i].propertyFlags;
        if (mt_dev == UINT32_MAX && (f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT)) mt_dev = i;
        if (mt_host == UINT32_MAX && (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) && (f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT))
            mt_host = i;
    }
    if (mt_dev == UINT32_MAX || mt_host == UINT32_MAX) fprintf(stderr, "vk-phases: no usable memory types\n"), exit(1);
}

static VkBuffer buffer(VkDeviceSize size, bool host, void **map)
{
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = size,
                             .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT};
    VkBuffer b;
    CK(vkCreateBuffer(dev, &bi, NULL, &b));
    VkMemoryRequirements mr;
    vkGetBufferMemoryRequirements(dev, b, &mr);
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = mr.size,
                               .memoryTypeIndex = host ? mt_host : mt_dev};
    VkDeviceMemory m;
    CK(vkAllocateMemory(dev, &ai, NULL, &m));
    CK(vkBindBufferMemory(dev, b, m, 0));
    if (map) CK(vkMapMemory(dev, m, 0, size, 0, map));
    return b;
}

static void barrier(VkCommandBuffer cb, VkPipelineStageFlags src, VkPipelineStageFlags dst)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT};
    vkCmdPipelineBarrier(cb, src, dst, 0, 1, &mb, 0, NULL, 0, NULL);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: vk-phases phases.spv [7b|0.5b] [layers] [persistent work-groups] [device] [DISP]\n");
        return 2;
    }
    const shape *sh = &shapes[0];
    if (argc > 2) {
        sh = NULL;
        for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++)
            if (!strcmp(argv[2], shapes[i].name)) sh = &shapes[i];
        if (!sh) return fprintf(stderr, "vk-phases: unknown shape '%s' (7b, 0.5b)\n", argv[2]), 2;
    }
    int64_t layers = argc > 3 ? atol(argv[3]) : sh->layers;
    uint32_t g_pers = argc > 4 ? (uint32_t)atol(argv[4]) : 528;
    uint32_t dev_index = argc > 5 ? (uint32_t)atol(argv[5]) : 0;
    long g_disp_arg = argc > 6 ? atol(argv[6]) : 1056;
    if (layers < 1 || layers > 200 || g_pers < 1 || g_disp_arg < 1 || g_disp_arg > 65535)
        return fprintf(stderr, "vk-phases: bad layers or work-groups\n"), 2;

    FILE *f = fopen(argv[1], "rb");
    if (!f) return fprintf(stderr, "vk-phases: cannot open %s\n", argv[1]), 1;
    static uint32_t spv[1 << 16];
    size_t spv_len = fread(spv, 1, sizeof spv, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    if (!spv_len || spv_len % 4 || more) return fprintf(stderr, "vk-phases: %s is not a SPIR-V module of this size\n", argv[1]), 1;

    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .apiVersion = VK_API_VERSION_1_1};
    VkInstanceCreateInfo ici = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pApplicationInfo = &app};
    VkInstance inst;
    CK(vkCreateInstance(&ici, NULL, &inst));
    uint32_t n_pd = 0;
    CK(vkEnumeratePhysicalDevices(inst, &n_pd, NULL));
    VkPhysicalDevice pds[16];
    if (n_pd > 16) n_pd = 16;
    CK(vkEnumeratePhysicalDevices(inst, &n_pd, pds));
    if (dev_index >= n_pd) return fprintf(stderr, "vk-phases: no device %u (%u found)\n", dev_index, n_pd), 1;
    pd = pds[dev_index];
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(pd, &props);
    uint32_t nq = 0, qfam = UINT32_MAX;
    VkQueueFamilyProperties qf[16];
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, NULL);
    if (nq > 16) nq = 16;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &nq, qf);
    for (uint32_t i = 0; i < nq && qfam == UINT32_MAX; i++)
        if ((qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && qf[i].timestampValidBits) qfam = i;
    if (qfam == UINT32_MAX) return fprintf(stderr, "vk-phases: no compute queue with timestamps\n"), 1;
    float prio = 1;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = qfam,
                                   .queueCount = 1, .pQueuePriorities = &prio};
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .queueCreateInfoCount = 1,
                              .pQueueCreateInfos = &qci};
    CK(vkCreateDevice(pd, &dci, NULL, &dev));
    VkQueue queue;
    vkGetDeviceQueue(dev, qfam, 0, &queue);
    pick_types();

    /* the phases: per layer q/k/v, attention, o, gate/up, down; then each mode's rows */
    int64_t H = sh->hidden, I = sh->inter, hd = sh->head_dim, n_ph = layers * PER_LAYER;
    uint64_t per[PER_LAYER] = {awq_bytes(H, (sh->heads + 2 * sh->kv_heads) * hd),
                               (uint64_t)(2 * sh->kv_heads * 128 * hd * 2), awq_bytes(H, H), awq_bytes(H, 2 * I),
                               awq_bytes(I, H)};
    uint64_t layer_bytes = 0;
    for (int k = 0; k < PER_LAYER; k++) layer_bytes += (per[k] + 255) / 256 * 256;
    uint64_t total = layer_bytes * (uint64_t)layers;
    if (total / 16 > UINT32_MAX || total > props.limits.maxStorageBufferRange) {
        fprintf(stderr, "vk-phases: %.2f GB of weights exceed the device's storage range (%.2f GB): fewer layers\n",
                total / 1e9, props.limits.maxStorageBufferRange / 1e9);
        return 1;
    }
    uint32_t g_disp = (uint32_t)g_disp_arg; /* a streaming phase's work-groups (loom's GEMVs launch 112..1184) */
    phase *tab;
    /* the table's quarters (ROWS_*): the phases as dispatched, as the persistent grid takes them, the
     * same with nothing to read, and ONE's single row over every byte */
    VkBuffer tab_b = buffer((VkDeviceSize)(3 * n_ph + 1) * sizeof *tab, true, (void **)&tab);
    uint64_t at = 0;
    uint32_t tickets = 0;
    for (int64_t l = 0; l < layers; l++)
        for (int k = 0; k < PER_LAYER; k++) {
            int64_t i = l * PER_LAYER + k;
            uint32_t len = (uint32_t)(per[k] / 16), need = (len + 255) / 256, heads = (uint32_t)sh->heads;
            uint32_t d = k == 1 ? heads : need < g_disp ? need : g_disp;
            uint32_t p = k == 1 ? heads : g_pers;
            tab[i] = (phase){(uint32_t)(at / 16), len, d, tickets}; /* pad: the phase's first ticket (MODE 4) */
            tickets += d;
            tab[n_ph + i] = (phase){(uint32_t)(at / 16), len, p, 0};
            tab[2 * n_ph + i] = (phase){(uint32_t)(at / 16), 0, p, 0};
            at += (per[k] + 255) / 256 * 256;
        }
    tab[3 * n_ph] = (phase){0, (uint32_t)(total / 16), g_disp, 0};
    if (tickets > props.limits.maxComputeWorkGroupCount[0])
        return fprintf(stderr, "vk-phases: the ticket dispatch's %u work-groups exceed the device's %u: fewer layers\n",
                       tickets, props.limits.maxComputeWorkGroupCount[0]), 1;

    VkBuffer w_b = buffer(total, false, NULL), sync_b = buffer((VkDeviceSize)(n_ph + 1) * 4, false, NULL);
    VkBuffer sink_b = buffer(8 + (VkDeviceSize)n_ph * g_pers * 32 * 4, false, NULL);
    uint32_t *timeouts;
    VkBuffer to_b = buffer(4, true, (void **)&timeouts);

    /* pipelines: MODE 0, 1, 2 */
    VkDescriptorSetLayoutBinding lb[5];
    for (int i = 0; i < 5; i++)
        lb[i] = (VkDescriptorSetLayoutBinding){i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL};
    VkDescriptorSetLayoutCreateInfo dli = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                           .bindingCount = 5, .pBindings = lb};
    VkDescriptorSetLayout dsl;
    CK(vkCreateDescriptorSetLayout(dev, &dli, NULL, &dsl));
    VkPushConstantRange pcr = {VK_SHADER_STAGE_COMPUTE_BIT, 0, 16};
    VkPipelineLayoutCreateInfo pli = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .setLayoutCount = 1,
                                      .pSetLayouts = &dsl, .pushConstantRangeCount = 1, .pPushConstantRanges = &pcr};
    VkPipelineLayout layout;
    CK(vkCreatePipelineLayout(dev, &pli, NULL, &layout));
    VkShaderModuleCreateInfo smi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = spv_len,
                                    .pCode = spv};
    VkShaderModule mod;
    CK(vkCreateShaderModule(dev, &smi, NULL, &mod));
    VkPipeline pipe[N_VAR];
    for (int v = 0; v < N_VAR; v++) {
        uint32_t sc[2] = {variants[v].mode, variants[v].flags};
        VkSpecializationMapEntry me[2] = {{0, 0, 4}, {1, 4, 4}};
        VkSpecializationInfo si = {2, me, 8, sc};
        VkComputePipelineCreateInfo cpi = {
            .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
            .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                      .module = mod, .pName = "main", .pSpecializationInfo = &si},
            .layout = layout};
        CK(vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &cpi, NULL, &pipe[v]));
    }
    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 5};
    VkDescriptorPoolCreateInfo dpi = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = 1,
                                      .poolSizeCount = 1, .pPoolSizes = &ps};
    VkDescriptorPool dp;
    CK(vkCreateDescriptorPool(dev, &dpi, NULL, &dp));
    VkDescriptorSetAllocateInfo dai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, .descriptorPool = dp,
                                       .descriptorSetCount = 1, .pSetLayouts = &dsl};
    VkDescriptorSet set;
    CK(vkAllocateDescriptorSets(dev, &dai, &set));
    VkDescriptorBufferInfo bis[5] = {{w_b, 0, VK_WHOLE_SIZE}, {tab_b, 0, VK_WHOLE_SIZE}, {sync_b, 0, VK_WHOLE_SIZE},
                                     {sink_b, 0, VK_WHOLE_SIZE}, {to_b, 0, VK_WHOLE_SIZE}};
    VkWriteDescriptorSet wd = {.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = set, .descriptorCount = 5,
                               .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, .pBufferInfo = bis};
    vkUpdateDescriptorSets(dev, 1, &wd, 0, NULL);

    VkCommandPoolCreateInfo cpi = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, .queueFamilyIndex = qfam};
    VkCommandPool pool;
    CK(vkCreateCommandPool(dev, &cpi, NULL, &pool));
    VkQueryPoolCreateInfo qpi = {.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO, .queryType = VK_QUERY_TYPE_TIMESTAMP,
                                 .queryCount = 2};
    VkQueryPool qp;
    CK(vkCreateQueryPool(dev, &qpi, NULL, &qp));
    VkFence fence;
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    CK(vkCreateFence(dev, &fci, NULL, &fence));

    /* the weights' bytes: a pattern (their values only feed the xor) */
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, .commandPool = pool,
                                       .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY, .commandBufferCount = 1};
    VkCommandBufferBeginInfo cbi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
    VkSubmitInfo sub = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1};

    double med[N_VAR];
    uint32_t gave_up[N_VAR];
    for (int v = -1; v < N_VAR; v++) {
        VkCommandBuffer cb;
        CK(vkAllocateCommandBuffers(dev, &cai, &cb));
        CK(vkBeginCommandBuffer(cb, &cbi));
        if (v < 0) { /* setup: fill the weights once */
            vkCmdFillBuffer(cb, w_b, 0, VK_WHOLE_SIZE, 0x5bd1e995u);
            vkCmdFillBuffer(cb, sink_b, 0, VK_WHOLE_SIZE, 0);
        }
        vkCmdResetQueryPool(cb, qp, 0, 2);
        vkCmdFillBuffer(cb, sync_b, 0, VK_WHOLE_SIZE, 0);
        barrier(cb, VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT);
        vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, 1, &set, 0, NULL);
        vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, qp, 0);
        uint32_t pcv[4] = {0, 0, 0x9e3779b9u, 0};
        int form = v < 0 ? -1 : variants[v].form;
        if (v >= 0) vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, pipe[v]);
        if (form == DISP || form == CHAIN) { /* a dispatch per phase; barriers between them but chained */
            for (int64_t i = 0; i < n_ph; i++) {
                if (i && form == DISP) barrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT);
                pcv[0] = (uint32_t)i;
                vkCmdPushConstants(cb, layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, 16, pcv);
                vkCmdDispatch(cb, tab[i].wgs, 1, 1);
            }
        } else if (form >= 0) { /* one dispatch */
            pcv[0] = (uint32_t)(variants[v].rows * n_ph), pcv[1] = (uint32_t)n_ph;
            vkCmdPushConstants(cb, layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, 16, pcv);
            vkCmdDispatch(cb, form == PERS ? g_pers : form == ONE ? g_disp : tickets, 1, 1);
        }
        vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, qp, 1);
        CK(vkEndCommandBuffer(cb));
        sub.pCommandBuffers = &cb;
        double t[REPS];
        int reps = v < 0 ? 1 : REPS;
        *timeouts = 0;
        for (int r = 0; r < reps; r++) {
            CK(vkQueueSubmit(queue, 1, &sub, fence));
            CK(vkWaitForFences(dev, 1, &fence, VK_TRUE, UINT64_MAX));
            CK(vkResetFences(dev, 1, &fence));
            uint64_t ts[2];
            CK(vkGetQueryPoolResults(dev, qp, 0, 2, sizeof ts, ts, 8, VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT));
            t[r] = (double)(ts[1] - ts[0]) * props.limits.timestampPeriod * 1e-6; /* ms */
        }
        vkFreeCommandBuffers(dev, pool, 1, &cb);
        if (v < 0) continue;
        qsort(t, REPS, sizeof *t, by_value);
        med[v] = t[REPS / 2];
        gave_up[v] = *timeouts;
    }
    printf("vk-phases: %s, %s shapes, %lld layers x %d phases, %.1f MB a step (weights and KV at 128 positions; "
           "no lm_head), %u persistent work-groups, %u a streaming dispatch, median of %d\n",
           props.deviceName, sh->name, (long long)layers, PER_LAYER, total / 1e6, g_pers, g_disp, REPS);
    for (int v = 0; v < N_VAR; v++) {
        bool empty = variants[v].mode == 2 || variants[v].rows == ROWS_EMPTY;
        bool gives_up = variants[v].mode >= 3 && !(variants[v].flags & 4); /* chain-vol waits forever instead */
        printf("  %-12s %8.4f ms", variants[v].name, med[v]);
        if (!empty) printf("  %7.1f GB/s", total / med[v] * 1e-6);
        if (empty) printf("  %6.2f us a phase", med[v] * 1e3 / (double)n_ph);
        if (gives_up) printf("  %u waits gave up in %d steps", gave_up[v], REPS);
        printf("\n");
    }
    printf("  disp - one = %.4f ms (%.2f us a phase), pers - one = %.4f ms (%.2f us a phase)\n", med[0] - med[2],
           (med[0] - med[2]) * 1e3 / (double)n_ph, med[1] - med[2], (med[1] - med[2]) * 1e3 / (double)n_ph);
    return 0;
}
