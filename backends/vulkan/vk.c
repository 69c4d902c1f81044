/* vk.c — the Vulkan backend: instance, devices, memory, buffers, weights,
 * transfers and the plugin table. Programs (pipelines, command buffers,
 * execute) are in vk_prog.c. See vk_impl.h for the layout of the backend.
 *
 * Memory: every loom_buffer is one VkBuffer over its own VkDeviceMemory. The
 * host allocates few of them (one activation arena, one input pool, one state
 * pool per graph); weights are suballocated from 256 MiB chunks by
 * weight_prepare. On a device whose device-local memory is host-visible,
 * coherent and cached (integrated GPUs, lavapipe) buffers are mapped once
 * and transfers are memcpy; otherwise they go through one persistent
 * host-visible staging buffer (LOOM_VK_STAGING=1 forces that path), except
 * small buffers, mapped in device-local host-visible memory (the BAR window
 * of a discrete GPU) when the device has such a type (LOOM_VK_STAGING=all:
 * not even those, so that CI's golden checkpoints read back as a discrete
 * GPU's logits do). A read lands directly in host memory from host_alloc
 * (loom_exec_view) when it is there, else in the staging buffer. AWQ
 * weights are repacked on the host before upload (layout in vk_impl.h).
 *
 * LOOM_VK_NO_SUBGROUP=1 and LOOM_VK_SCALAR_GEMV=1 force the shaders' other
 * paths (no subgroup arithmetic; scalar GEMV loads), so tests can cover them
 * on a device that would never take them. LOOM_VK_FUSE=0 runs every node of
 * a decode step as its own dispatch (to bisect a fusion problem).
 * LOOM_VK_ATT_SHORT=0 runs one-row decode attention over <= 256 positions
 * on attn_dec.comp, not attn_dec1.comp (for A/B; vk_prog.c attn_plan).
 * LOOM_VK_PROFILE=1 times every dispatch on the device (vk_prog.c).
 * LOOM_VK_PIPESTATS=1 logs, at info level, what the driver reports of each
 * pipeline it compiles (VK_KHR_pipeline_executable_properties: on NVIDIA the
 * registers per invocation, which bound how many work-groups share a
 * multiprocessor).
 * LOOM_VK_IDOT=0 runs the fused decode GEMVs on FMAs where the device
 * accelerates int8 dot products; =1 on int8 dot products where it only
 * emulates them (lavapipe: how CI tests them). See idot_usable.
 *
 * Prefill GEMMs of f16 and AWQ weights run on tensor cores (gemm_coop.comp)
 * where the device has VK_NV_cooperative_matrix with a 16x16x16 f16 x f16 ->
 * f32 subgroup configuration and the GEMM passes its self-test at open
 * (vk_coop.c); LOOM_VK_COOP_ROWS=128 makes its tiles 128 tokens high instead
 * of 64; LOOM_VK_COOPMAT=0 keeps the tiled GEMM, LOOM_VK_COOPMAT=test
 * runs the self-test's harness alone (on any device). LOOM_LOG=debug says
 * which was chosen and why. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vk_impl.h"
#include "vk_spv.h"

static const loom_host_i *host;
const loom_host_i *loom__vk_host(void) { return host; }

#define STAGING_BYTES ((size_t)64 << 20)
#define CHUNK_BYTES   ((size_t)256 << 20)
#define WEIGHT_ALIGN  256
#define BAR_BYTES     ((size_t)256 << 10) /* buffers up to this size go to device-local host-visible memory */

const char *loom__vk_result_name(VkResult r)
{
    switch (r) {
#define R(x) case x: return #x;
    R(VK_SUCCESS) R(VK_NOT_READY) R(VK_TIMEOUT) R(VK_INCOMPLETE) R(VK_ERROR_OUT_OF_HOST_MEMORY)
    R(VK_ERROR_OUT_OF_DEVICE_MEMORY) R(VK_ERROR_INITIALIZATION_FAILED) R(VK_ERROR_DEVICE_LOST)
    R(VK_ERROR_MEMORY_MAP_FAILED) R(VK_ERROR_LAYER_NOT_PRESENT) R(VK_ERROR_EXTENSION_NOT_PRESENT)
    R(VK_ERROR_FEATURE_NOT_PRESENT) R(VK_ERROR_INCOMPATIBLE_DRIVER) R(VK_ERROR_TOO_MANY_OBJECTS)
    R(VK_ERROR_FORMAT_NOT_SUPPORTED) R(VK_ERROR_FRAGMENTED_POOL) R(VK_ERROR_UNKNOWN)
    R(VK_ERROR_OUT_OF_POOL_MEMORY) R(VK_ERROR_INVALID_EXTERNAL_HANDLE) R(VK_ERROR_FRAGMENTATION)
#undef R
    default: return "VK_ERROR_(unknown)";
    }
}

loom_status loom__vk_fail(VkResult r, const char *what)
{
    loom_status st = r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY ? LOOM_ERR_NOMEM
                                                                                              : LOOM_ERR_BACKEND;
    return VK_ERR(st, "%s: %s (%d)", what, loom__vk_result_name(r), (int)r);
}

/* ---- instance ------------------------------------------------------------------ */
struct vk_ctx {
    VkInstance               inst;
    VkDebugUtilsMessengerEXT messenger;
    bool                     validate;
    uint64_t                 val_errors; /* validation errors seen (messenger) */
    char                     val_last[400];
    VkPhysicalDevice        *pds;        /* usable devices: Vulkan >= 1.1 with a compute queue */
    int32_t                  n_pd;
};

static VKAPI_ATTR VkBool32 VKAPI_CALL on_debug(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                               VkDebugUtilsMessageTypeFlagsEXT type,
                                               const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
    vk_ctx *c = user;
    const char *msg = data && data->pMessage ? data->pMessage : "(no message)";
    if (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
        c->val_errors++;
        snprintf(c->val_last, sizeof c->val_last, "%s", msg);
        host->log(LOOM_LOG_ERROR, "vulkan validation: %s", msg);
    } else if (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT) { /* general: the loader's notes */
        host->log(type == VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT ? LOOM_LOG_DEBUG : LOOM_LOG_WARN,
                  "vulkan validation: %s", msg);
    } else {
        host->log(LOOM_LOG_TRACE, "vulkan: %s", msg);
    }
    return VK_FALSE;
}

static bool has_instance_ext(const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateInstanceExtensionProperties(NULL, &n, NULL) != VK_SUCCESS || !n) return false;
    VkExtensionProperties *e = calloc(n, sizeof *e);
    bool found = false;
    if (e && vkEnumerateInstanceExtensionProperties(NULL, &n, e) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = !strcmp(e[i].extensionName, name);
    free(e);
    return found;
}

static bool has_layer(const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateInstanceLayerProperties(&n, NULL) != VK_SUCCESS || !n) return false;
    VkLayerProperties *l = calloc(n, sizeof *l);
    bool found = false;
    if (l && vkEnumerateInstanceLayerProperties(&n, l) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = !strcmp(l[i].layerName, name);
    free(l);
    return found;
}

static void vk_shutdown(void *bctx)
{
    vk_ctx *c = bctx;
    if (!c) return;
    if (c->messenger) {
        PFN_vkDestroyDebugUtilsMessengerEXT f =
            (PFN_vkDestroyDebugUtilsMessengerEXT)vkGetInstanceProcAddr(c->inst, "vkDestroyDebugUtilsMessengerEXT");
        if (f) f(c->inst, c->messenger, NULL);
    }
    if (c->inst) vkDestroyInstance(c->inst, NULL);
    free(c->pds);
    free(c);
}

static bool pd_usable(VkPhysicalDevice pd)
{
    VkPhysicalDeviceProperties p;
    vkGetPhysicalDeviceProperties(pd, &p);
    if (p.apiVersion < VK_API_VERSION_1_1) return false;
    uint32_t n = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, NULL);
    VkQueueFamilyProperties q[32];
    if (n > 32) n = 32;
    vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, q);
    for (uint32_t i = 0; i < n; i++)
        if (q[i].queueFlags & VK_QUEUE_COMPUTE_BIT) return true;
    return false;
}

static loom_status vk_init(void **bctx)
{
    *bctx = NULL;
    uint32_t api = 0;
    PFN_vkEnumerateInstanceVersion ev =
        (PFN_vkEnumerateInstanceVersion)vkGetInstanceProcAddr(NULL, "vkEnumerateInstanceVersion");
    if (!ev || ev(&api) != VK_SUCCESS || api < VK_API_VERSION_1_1)
        return VK_ERR(LOOM_ERR_UNSUPPORTED, "the Vulkan loader is older than 1.1");
    vk_ctx *c = calloc(1, sizeof *c);
    if (!c) return VK_ERR(LOOM_ERR_NOMEM, "out of memory");

    const char *layers_env = getenv("VK_INSTANCE_LAYERS");
    bool want = loom_env_is("LOOM_VK_VALIDATE", "1"), requested = layers_env && strstr(layers_env, "VK_LAYER_KHRONOS_validation");
    const char *layers[1], *exts[2];
    uint32_t n_layers = 0, n_exts = 0;
    if (want && !requested) {
        if (has_layer("VK_LAYER_KHRONOS_validation"))
            layers[n_layers++] = "VK_LAYER_KHRONOS_validation";
        else
            host->log(LOOM_LOG_WARN, "vulkan: LOOM_VK_VALIDATE=1 but VK_LAYER_KHRONOS_validation is not installed");
    }
    /* the validation layer provides debug_utils; ask for it when validating */
    c->validate = (n_layers || requested) && (has_instance_ext(VK_EXT_DEBUG_UTILS_EXTENSION_NAME) || n_layers || requested);
    if (c->validate) exts[n_exts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;

    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO, .pApplicationName = "loom",
                             .pEngineName = "loom", .apiVersion = VK_API_VERSION_1_1};
    VkDebugUtilsMessengerCreateInfoEXT mci = {
        .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
        .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT,
        .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
        .pfnUserCallback = on_debug, .pUserData = c};
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, .pNext = c->validate ? &mci : NULL,
                               .pApplicationInfo = &app, .enabledLayerCount = n_layers, .ppEnabledLayerNames = layers,
                               .enabledExtensionCount = n_exts, .ppEnabledExtensionNames = exts};
    VkResult r = vkCreateInstance(&ci, NULL, &c->inst);
    if (r == VK_ERROR_EXTENSION_NOT_PRESENT && c->validate) { /* no debug_utils: validate without the messenger */
        host->log(LOOM_LOG_WARN, "vulkan: VK_EXT_debug_utils missing; validation messages are not captured");
        c->validate = false;
        ci.pNext = NULL, ci.enabledExtensionCount = 0;
        r = vkCreateInstance(&ci, NULL, &c->inst);
    }
    if (r != VK_SUCCESS) {
        free(c);
        if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
            return VK_ERR(LOOM_ERR_UNSUPPORTED, "no Vulkan driver (ICD) found: vkCreateInstance: VK_ERROR_INCOMPATIBLE_DRIVER");
        return loom__vk_fail(r, "vkCreateInstance");
    }
    if (c->validate) {
        PFN_vkCreateDebugUtilsMessengerEXT f =
            (PFN_vkCreateDebugUtilsMessengerEXT)vkGetInstanceProcAddr(c->inst, "vkCreateDebugUtilsMessengerEXT");
        if (!f || f(c->inst, &mci, NULL, &c->messenger) != VK_SUCCESS) c->messenger = VK_NULL_HANDLE;
        host->log(LOOM_LOG_DEBUG, "vulkan: validation messenger %s", c->messenger ? "on" : "unavailable");
    }
    uint32_t n = 0;
    r = vkEnumeratePhysicalDevices(c->inst, &n, NULL);
    if (r != VK_SUCCESS) {
        vk_shutdown(c);
        return loom__vk_fail(r, "vkEnumeratePhysicalDevices");
    }
    VkPhysicalDevice *all = calloc(n ? n : 1, sizeof *all);
    c->pds = calloc(n ? n : 1, sizeof *c->pds);
    if (!all || !c->pds) {
        free(all);
        vk_shutdown(c);
        return VK_ERR(LOOM_ERR_NOMEM, "out of memory");
    }
    if (n && (r = vkEnumeratePhysicalDevices(c->inst, &n, all)) != VK_SUCCESS && r != VK_INCOMPLETE) {
        free(all);
        vk_shutdown(c);
        return loom__vk_fail(r, "vkEnumeratePhysicalDevices");
    }
    for (uint32_t i = 0; i < n; i++)
        if (pd_usable(all[i])) c->pds[c->n_pd++] = all[i];
    free(all);
    if (!c->n_pd) {
        vk_shutdown(c);
        if (n) return VK_ERR(LOOM_ERR_UNSUPPORTED, "none of the %u Vulkan devices has Vulkan 1.1 and a compute queue", n);
        return VK_ERR(LOOM_ERR_UNSUPPORTED, "no Vulkan devices found (the loader found no ICD with a device)");
    }
    *bctx = c;
    return LOOM_OK;
}

static int32_t vk_device_count(void *bctx) { return bctx ? ((vk_ctx *)bctx)->n_pd : 0; }

/* ---- device facts ------------------------------------------------------------------ */
static bool has_device_ext(VkPhysicalDevice pd, const char *name)
{
    uint32_t n = 0;
    if (vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL) != VK_SUCCESS || !n) return false;
    VkExtensionProperties *e = calloc(n, sizeof *e);
    bool found = false;
    if (e && vkEnumerateDeviceExtensionProperties(pd, NULL, &n, e) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++) found = !strcmp(e[i].extensionName, name);
    free(e);
    return found;
}

typedef struct {
    VkPhysicalDeviceProperties       p;
    VkPhysicalDeviceSubgroupProperties sg;
    VkPhysicalDeviceDriverProperties drv;
    bool                             has_drv;
    VkPhysicalDevice16BitStorageFeatures s16;
    VkPhysicalDeviceShaderFloat16Int8Features f16i8;
    bool                             has_f16i8;
    VkPhysicalDeviceMemoryProperties mem;
    VkPhysicalDeviceMemoryBudgetPropertiesEXT budget;
    bool                             has_budget;
    VkDeviceSize                     max_alloc;
} pd_facts;

static void query(VkPhysicalDevice pd, pd_facts *f)
{
    memset(f, 0, sizeof *f);
    vkGetPhysicalDeviceProperties(pd, &f->p);
    f->has_drv = f->p.apiVersion >= VK_API_VERSION_1_2 || has_device_ext(pd, "VK_KHR_driver_properties");
    f->has_f16i8 = f->p.apiVersion >= VK_API_VERSION_1_2 || has_device_ext(pd, "VK_KHR_shader_float16_int8");
    f->has_budget = has_device_ext(pd, "VK_EXT_memory_budget");
    VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
    f->sg.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
    f->sg.pNext = &m3;
    f->drv.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES;
    if (f->has_drv) m3.pNext = &f->drv;
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &f->sg};
    vkGetPhysicalDeviceProperties2(pd, &p2);
    f->max_alloc = m3.maxMemoryAllocationSize;

    f->s16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES;
    f->f16i8.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
    if (f->has_f16i8) f->s16.pNext = &f->f16i8;
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f->s16};
    vkGetPhysicalDeviceFeatures2(pd, &f2);

    f->budget.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT;
    VkPhysicalDeviceMemoryProperties2 m2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
                                            .pNext = f->has_budget ? &f->budget : NULL};
    vkGetPhysicalDeviceMemoryProperties2(pd, &m2);
    f->mem = m2.memoryProperties;
}

static bool subgroup_arith(const pd_facts *f)
{
    return (f->sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
           (f->sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
           (f->sg.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) && f->sg.subgroupSize >= 4 &&
           f->sg.subgroupSize <= 128;
}

static loom_status vk_device_info(void *bctx, int32_t dev, loom_device_info *info)
{
    vk_ctx *c = bctx;
    if (!c || dev < 0 || dev >= c->n_pd) return VK_ERR(LOOM_ERR_NOT_FOUND, "no device %d", (int)dev);
    pd_facts f;
    query(c->pds[dev], &f);
    snprintf(info->name, sizeof info->name, "%.127s", f.p.deviceName);
    uint32_t a = f.p.apiVersion;
    if (f.has_drv)
        snprintf(info->driver, sizeof info->driver, "%.40s %.60s, Vulkan %u.%u.%u", f.drv.driverName, f.drv.driverInfo,
                 VK_API_VERSION_MAJOR(a), VK_API_VERSION_MINOR(a), VK_API_VERSION_PATCH(a));
    else
        snprintf(info->driver, sizeof info->driver, "driver version 0x%x, Vulkan %u.%u.%u", f.p.driverVersion,
                 VK_API_VERSION_MAJOR(a), VK_API_VERSION_MINOR(a), VK_API_VERSION_PATCH(a));
    info->mem_total = info->mem_free = 0;
    char heaps[160] = "";
    for (uint32_t h = 0; h < f.mem.memoryHeapCount; h++) {
        bool local = f.mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT;
        if (local) {
            info->mem_total += f.mem.memoryHeaps[h].size;
            if (f.has_budget && f.budget.heapBudget[h] > f.budget.heapUsage[h])
                info->mem_free += f.budget.heapBudget[h] - f.budget.heapUsage[h];
        }
        size_t len = strlen(heaps);
        snprintf(heaps + len, sizeof heaps - len, "%s%.1f GiB%s", h ? ", " : "",
                 (double)f.mem.memoryHeaps[h].size / (1 << 30), local ? " local" : "");
    }
    static const char *types[] = {"other", "integrated", "discrete", "virtual", "cpu"};
    snprintf(info->details, sizeof info->details,
             "%s GPU; heaps: %s; subgroup %u%s; fp16 arith %s, int8 %s, 16-bit storage %s (kernels read f16/bf16 "
             "as packed u32: no feature needed); max storage range %.0f MiB",
             f.p.deviceType <= 4 ? types[f.p.deviceType] : "other", heaps, f.sg.subgroupSize,
             subgroup_arith(&f) ? " (arithmetic: used)" : " (no arithmetic)",
             f.has_f16i8 && f.f16i8.shaderFloat16 ? "yes" : "no", f.has_f16i8 && f.f16i8.shaderInt8 ? "yes" : "no",
             f.s16.storageBuffer16BitAccess ? "yes" : "no", (double)f.p.limits.maxStorageBufferRange / (1 << 20));
    info->host_cpu = f.p.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU; /* lavapipe: the built-in CPU backend is faster */
    return LOOM_OK;
}

/* ---- memory ---------------------------------------------------------------------- */
static int find_type(const VkPhysicalDeviceMemoryProperties *m, uint32_t bits, VkMemoryPropertyFlags want)
{
    for (uint32_t i = 0; i < m->memoryTypeCount; i++)
        if ((bits & (1u << i)) && (m->memoryTypes[i].propertyFlags & want) == want) return (int)i;
    return -1;
}

loom_status loom__vk_alloc(vk_dev *d, size_t size, bool host_side, loom_buffer **out)
{
    *out = NULL;
    loom_buffer *b = calloc(1, sizeof *b);
    if (!b) return VK_ERR(LOOM_ERR_NOMEM, "out of host memory for a buffer of %zu bytes", size);
    b->size = size;
    size_t vsize = size < 16 ? 16 : (size + 15) / 16 * 16;
    VkBufferCreateInfo bi = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = vsize,
                             .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                      VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                             .sharingMode = VK_SHARING_MODE_EXCLUSIVE};
    VkResult r = vkCreateBuffer(d->dev, &bi, NULL, &b->buf);
    if (r != VK_SUCCESS) {
        free(b);
        return VK_ERR(r == VK_ERROR_OUT_OF_DEVICE_MEMORY ? LOOM_ERR_NOMEM : LOOM_ERR_BACKEND,
                      "vkCreateBuffer of %zu bytes: %s", size, loom__vk_result_name(r));
    }
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(d->dev, b->buf, &req);
    /* a small buffer (the step buffer, the token-id pool) in the BAR window
     * when there is one: the GPU reads it from its own memory, and the host
     * writes it with a memcpy instead of a staged copy, a submission and a
     * wait per step */
    bool bar = d->mt_bar >= 0 && size <= BAR_BYTES && (req.memoryTypeBits & (1u << d->mt_bar));
    uint32_t mt = bar ? (uint32_t)d->mt_bar : host_side ? d->mt_host : d->mt_device;
    if (!(req.memoryTypeBits & (1u << mt))) {
        int alt = find_type(&d->memp, req.memoryTypeBits,
                            host_side ? VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT : 0);
        if (alt < 0) {
            vkDestroyBuffer(d->dev, b->buf, NULL);
            free(b);
            return VK_ERR(LOOM_ERR_BACKEND, "no memory type for a buffer of %zu bytes", size);
        }
        mt = (uint32_t)alt;
    }
    VkMemoryAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, .allocationSize = req.size,
                               .memoryTypeIndex = mt};
    r = vkAllocateMemory(d->dev, &ai, NULL, &b->mem);
    if (r != VK_SUCCESS && bar && (req.memoryTypeBits & (1u << (host_side ? d->mt_host : d->mt_device)))) {
        bar = false; /* the window is full: where the buffer would have gone without it */
        ai.memoryTypeIndex = mt = host_side ? d->mt_host : d->mt_device;
        r = vkAllocateMemory(d->dev, &ai, NULL, &b->mem);
    }
    if (r != VK_SUCCESS) {
        vkDestroyBuffer(d->dev, b->buf, NULL);
        free(b);
        return VK_ERR(r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY ? LOOM_ERR_NOMEM
                                                                                               : LOOM_ERR_BACKEND,
                      "cannot allocate %zu bytes of %s memory (type %u): %s", (size_t)req.size,
                      host_side ? "host-visible" : "device", mt, loom__vk_result_name(r));
    }
    if ((r = vkBindBufferMemory(d->dev, b->buf, b->mem, 0)) != VK_SUCCESS) {
        vkFreeMemory(d->dev, b->mem, NULL);
        vkDestroyBuffer(d->dev, b->buf, NULL);
        free(b);
        return loom__vk_fail(r, "vkBindBufferMemory");
    }
    VkMemoryPropertyFlags fl = d->memp.memoryTypes[mt].propertyFlags;
    if ((host_side || bar || d->mt_mappable) && (fl & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) &&
        (fl & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)) {
        if ((r = vkMapMemory(d->dev, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map)) != VK_SUCCESS) {
            vkFreeMemory(d->dev, b->mem, NULL);
            vkDestroyBuffer(d->dev, b->buf, NULL);
            free(b);
            return loom__vk_fail(r, "vkMapMemory");
        }
    }
    VK_LINK(d->buffers, b);
    *out = b;
    return LOOM_OK;
}

void loom__vk_free(vk_dev *d, loom_buffer *b)
{
    if (!b) return;
    VK_UNLINK(d->buffers, b);
    if (d->chunk == b) d->chunk = NULL;
    if (b->map) vkUnmapMemory(d->dev, b->mem);
    vkDestroyBuffer(d->dev, b->buf, NULL);
    vkFreeMemory(d->dev, b->mem, NULL);
    free(b);
}

/* ---- submission ------------------------------------------------------------------ */
loom_status loom__vk_check_validation(vk_dev *d)
{
    if (d->ctx->val_errors == d->val_seen) return LOOM_OK;
    d->val_seen = d->ctx->val_errors;
    return VK_ERR(LOOM_ERR_BACKEND, "validation error: %s", d->ctx->val_last);
}

loom_status loom__vk_submit(vk_dev *d, VkCommandBuffer cb, struct vk_prog *p)
{
    loom_status st = loom__vk_wait(d);
    if (st) return st;
    VkResult r = vkResetFences(d->dev, 1, &d->fence);
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cb};
    if (r == VK_SUCCESS) r = vkQueueSubmit(d->queue, 1, &si, d->fence);
    if (r != VK_SUCCESS) return loom__vk_fail(r, "vkQueueSubmit");
    d->in_flight = true;
    d->last_prog = p;
    return loom__vk_check_validation(d);
}

static VkResult fence_wait(vk_dev *d, VkFence f)
{
    VkResult r = VK_NOT_READY;
    if (d->spin)
        while ((r = vkGetFenceStatus(d->dev, f)) == VK_NOT_READY) {}
    return r == VK_NOT_READY ? vkWaitForFences(d->dev, 1, &f, VK_TRUE, UINT64_MAX) : r;
}

loom_status loom__vk_wait(vk_dev *d)
{
    if (d->in_flight) {
        VkResult r = fence_wait(d, d->fence);
        if (r != VK_SUCCESS) return loom__vk_fail(r, "vkWaitForFences");
        d->in_flight = false;
        struct vk_prog *p = d->last_prog;
        d->last_prog = NULL;
        uint32_t err = p ? loom__vk_prog_errors(p) : 0;
        if (err & 1u) return VK_ERR(LOOM_ERR_INVALID, "embed: a token id of the step is outside the vocabulary");
    }
    return loom__vk_check_validation(d);
}

/* The host buffer from vk_host_alloc that holds dst .. dst + size, or NULL. */
static loom_buffer *host_buffer_of(vk_dev *d, const void *dst, size_t size)
{
    for (loom_buffer *h = d->buffers; h; h = h->next)
        if (h->host_view && loom_within(h->map, h->size, dst, size)) return h;
    return NULL;
}

/* A read of memory the host cannot map: copied into host-visible memory (dst itself when it
 * lies in a vk_host_alloc buffer, else the staging buffer and then on to dst). The copy is
 * submitted at once, behind whatever runs, and its leading barrier orders it after that work's
 * writes: the host waits once, not for the step and then again for a copy. */
static loom_status read_back(vk_dev *d, loom_buffer *b, size_t off, void *dst, size_t size)
{
    loom_buffer *h = host_buffer_of(d, dst, size);
    for (size_t done = 0; done < size;) {
        size_t n = h || size - done < d->staging->size ? size - done : d->staging->size;
        VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                       .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
        VkResult r = vkBeginCommandBuffer(d->xfer, &bi);
        if (r != VK_SUCCESS) return loom__vk_fail(r, "vkBeginCommandBuffer");
        VkMemoryBarrier pre = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                               .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
                               .dstAccessMask = VK_ACCESS_TRANSFER_READ_BIT};
        vkCmdPipelineBarrier(d->xfer, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                             VK_PIPELINE_STAGE_TRANSFER_BIT, 0, 1, &pre, 0, NULL, 0, NULL);
        VkBufferCopy reg = {.srcOffset = off + done, .dstOffset = h ? (VkDeviceSize)((char *)dst - (char *)h->map) : 0,
                            .size = n};
        vkCmdCopyBuffer(d->xfer, b->buf, h ? h->buf : d->staging->buf, 1, &reg);
        VkMemoryBarrier post = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                                .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
        vkCmdPipelineBarrier(d->xfer, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &post, 0, NULL,
                             0, NULL);
        if ((r = vkEndCommandBuffer(d->xfer)) != VK_SUCCESS) return loom__vk_fail(r, "vkEndCommandBuffer");
        VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &d->xfer};
        if ((r = vkResetFences(d->dev, 1, &d->read_fence)) == VK_SUCCESS) r = vkQueueSubmit(d->queue, 1, &si, d->read_fence);
        if (r != VK_SUCCESS) return loom__vk_fail(r, "vkQueueSubmit");
        r = fence_wait(d, d->read_fence);
        loom_status st = loom__vk_wait(d); /* done by now; its error flags */
        if (r != VK_SUCCESS) return loom__vk_fail(r, "vkWaitForFences");
        if (st) return st;
        if (!h) memcpy((char *)dst + done, d->staging->map, n);
        done += n;
    }
    return loom__vk_check_validation(d);
}

static loom_status transfer(vk_dev *d, loom_buffer *b, size_t off, void *hostp, size_t size, bool to_dev)
{
    if (off > b->size || size > b->size - off)
        return VK_ERR(LOOM_ERR_INVALID, "%s of %zu bytes at %zu overruns a %zu-byte buffer", to_dev ? "write" : "read",
                      size, off, b->size);
    if (!to_dev && !b->map) return read_back(d, b, off, hostp, size);
    loom_status st = loom__vk_wait(d);
    if (st) return st;
    if (b->map) {
        if (to_dev)
            memcpy((char *)b->map + off, hostp, size);
        else
            memcpy(hostp, (const char *)b->map + off, size);
        return LOOM_OK;
    }
    for (size_t done = 0; done < size;) { /* a write through the staging buffer */
        size_t n = size - done < d->staging->size ? size - done : d->staging->size;
        memcpy(d->staging->map, (const char *)hostp + done, n);
        VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                       .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
        VkResult r = vkBeginCommandBuffer(d->xfer, &bi);
        if (r != VK_SUCCESS) return loom__vk_fail(r, "vkBeginCommandBuffer");
        VkBufferCopy reg = {.srcOffset = 0, .dstOffset = off + done, .size = n};
        vkCmdCopyBuffer(d->xfer, d->staging->buf, b->buf, 1, &reg);
        VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
                              .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                                               VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                                               VK_ACCESS_HOST_READ_BIT};
        vkCmdPipelineBarrier(d->xfer, VK_PIPELINE_STAGE_TRANSFER_BIT,
                             VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT |
                                 VK_PIPELINE_STAGE_HOST_BIT,
                             0, 1, &mb, 0, NULL, 0, NULL);
        if ((r = vkEndCommandBuffer(d->xfer)) != VK_SUCCESS) return loom__vk_fail(r, "vkEndCommandBuffer");
        if ((st = loom__vk_submit(d, d->xfer, NULL)) || (st = loom__vk_wait(d))) return st;
        done += n;
    }
    return LOOM_OK;
}

/* ---- devices ---------------------------------------------------------------------- */
static void vk_device_close(void *dctx)
{
    vk_dev *d = dctx;
    if (!d) return;
    if (d->dev) {
        vkDeviceWaitIdle(d->dev);
        while (d->progs) loom__vk_release(d, d->progs);
        if (d->staging) VK_LINK(d->buffers, d->staging), d->staging = NULL; /* kept off the list while open */
        while (d->buffers) loom__vk_free(d, d->buffers);
        for (vk_pipe *p = d->pipes, *next; p; p = next) {
            next = p->next;
            vkDestroyPipeline(d->dev, p->pipe, NULL);
            free(p);
        }
        for (int i = 0; i < VK_SH_COUNT; i++)
            if (d->modules[i]) vkDestroyShaderModule(d->dev, d->modules[i], NULL);
        if (d->layout) vkDestroyPipelineLayout(d->dev, d->layout, NULL);
        if (d->dsl) vkDestroyDescriptorSetLayout(d->dev, d->dsl, NULL);
        if (d->fence) vkDestroyFence(d->dev, d->fence, NULL);
        if (d->read_fence) vkDestroyFence(d->dev, d->read_fence, NULL);
        if (d->cmd_pool) vkDestroyCommandPool(d->dev, d->cmd_pool, NULL);
        vkDestroyDevice(d->dev, NULL);
    }
    free(d);
}

static const struct { const uint32_t *code; size_t size; const char *name; } spv[VK_SH_COUNT] = {
#define S(id, name) [id] = {vk_spv_##name, sizeof vk_spv_##name, #name}
    S(VK_SH_ELTWISE, eltwise), S(VK_SH_EMBED, embed), S(VK_SH_RMSNORM, rmsnorm), S(VK_SH_RMSNORM_SG, rmsnorm_sg),
    S(VK_SH_ROPE, rope), S(VK_SH_KV_STORE, kv_store), S(VK_SH_ATTN, attn), S(VK_SH_ATTN_TILE, attn_tile),
    S(VK_SH_ATTN_DEC, attn_dec), S(VK_SH_ATTN_MERGE, attn_merge), S(VK_SH_ATTN_DEC1, attn_dec1),
    S(VK_SH_GEMV, gemv), S(VK_SH_GEMV_SG, gemv_sg), S(VK_SH_GEMV_VEC, gemv_vec), S(VK_SH_GEMV_VEC_SG, gemv_vec_sg),
    S(VK_SH_GEMV_AWQ, gemv_awq), S(VK_SH_GEMM, gemm), S(VK_SH_GEMM_AWQ, gemm_awq),
    S(VK_SH_GEMV_AWQ_FUSED, gemv_awq_fused), S(VK_SH_GEMV_AWQ_FUSED_IDOT, gemv_awq_fused_idot),
    S(VK_SH_GEMM_COOP, gemm_coop), S(VK_SH_GEMM_COOP_AWQ, gemm_coop_awq),
#undef S
};

const char *loom__vk_shader_name(vk_shader sh) { return sh >= 0 && sh < VK_SH_COUNT ? spv[sh].name : "?"; }

/* VK_NV_cooperative_matrix with a subgroup-scope f16 x f16 -> f32 16x16x16
 * configuration, and what its shaders need besides (f16 arithmetic, the
 * Vulkan memory model glslang declares for them, 8 subgroups of 32 per
 * work-group, the shared memory of 128-row tiles); else *why says what is
 * missing. */
static bool coop_usable(VkInstance inst, VkPhysicalDevice pd, const pd_facts *f, const char **why)
{
    if (!has_device_ext(pd, VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME)) return *why = "no VK_NV_cooperative_matrix", false;
    if (!has_device_ext(pd, VK_KHR_VULKAN_MEMORY_MODEL_EXTENSION_NAME) ||
        !has_device_ext(pd, VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME))
        return *why = "no VK_KHR_vulkan_memory_model or VK_KHR_shader_float16_int8", false;
    VkPhysicalDeviceCooperativeMatrixFeaturesNV cm = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
    VkPhysicalDeviceVulkanMemoryModelFeatures mm = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES,
                                                    .pNext = &cm};
    VkPhysicalDeviceShaderFloat16Int8Features h = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES,
                                                   .pNext = &mm};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &h};
    vkGetPhysicalDeviceFeatures2(pd, &f2);
    if (!cm.cooperativeMatrix || !mm.vulkanMemoryModel || !h.shaderFloat16)
        return *why = "cooperativeMatrix, vulkanMemoryModel or shaderFloat16 not supported", false;
    if (!(f->sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) || f->sg.subgroupSize != 32 ||
        f->p.limits.maxComputeWorkGroupInvocations < 256 || f->p.limits.maxComputeSharedMemorySize < VK_COOP_SHARED(128))
        return *why = "subgroups not of 32, or work-groups or shared memory too small", false;
    PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV props = (PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)
        vkGetInstanceProcAddr(inst, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV");
    uint32_t n = 0;
    if (!props || props(pd, &n, NULL) != VK_SUCCESS || !n) return *why = "no cooperative-matrix configurations", false;
    VkCooperativeMatrixPropertiesNV *c = calloc(n, sizeof *c);
    bool found = false;
    for (uint32_t i = 0; c && i < n; i++) c[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
    if (c && props(pd, &n, c) == VK_SUCCESS)
        for (uint32_t i = 0; i < n && !found; i++)
            found = c[i].MSize == 16 && c[i].NSize == 16 && c[i].KSize == 16 &&
                    c[i].AType == VK_COMPONENT_TYPE_FLOAT16_NV && c[i].BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
                    c[i].CType == VK_COMPONENT_TYPE_FLOAT32_NV && c[i].DType == VK_COMPONENT_TYPE_FLOAT32_NV &&
                    c[i].scope == VK_SCOPE_SUBGROUP_NV;
    free(c);
    return found || (*why = "no subgroup f16 x f16 -> f32 16x16x16 configuration", false);
}

/* VK_KHR_shader_integer_dot_product for gemv_awq_fused_idot; *accel: its
 * signed-by-unsigned packed 4 x 8-bit dot product runs in hardware (NVIDIA
 * since Turing: one IDP4A) rather than as emulated byte arithmetic. */
static bool idot_usable(VkPhysicalDevice pd, bool *accel, const char **why)
{
    *accel = false;
    if (!has_device_ext(pd, VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME))
        return *why = "no VK_KHR_shader_integer_dot_product", false;
    VkPhysicalDeviceShaderIntegerDotProductFeatures idf = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &idf};
    vkGetPhysicalDeviceFeatures2(pd, &f2);
    if (!idf.shaderIntegerDotProduct) return *why = "shaderIntegerDotProduct not supported", false;
    VkPhysicalDeviceShaderIntegerDotProductProperties idp = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES};
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, .pNext = &idp};
    vkGetPhysicalDeviceProperties2(pd, &p2);
    *accel = idp.integerDotProduct4x8BitPackedMixedSignednessAccelerated;
    return true;
}

static loom_status vk_device_open(void *bctx, int32_t dev, void **dctx)
{
    vk_ctx *c = bctx;
    *dctx = NULL;
    if (!c || dev < 0 || dev >= c->n_pd) return VK_ERR(LOOM_ERR_NOT_FOUND, "no device %d", (int)dev);
    vk_dev *d = calloc(1, sizeof *d);
    if (!d) return VK_ERR(LOOM_ERR_NOMEM, "out of memory opening device %d", (int)dev);
    d->ctx = c, d->index = dev, d->pd = c->pds[dev], d->val_seen = c->val_errors;
    long rows = 64; /* LOOM_VK_COOP_ROWS: the cooperative-matrix GEMM's tile, 64 tokens or 128 */
    if (!loom_env_long("LOOM_VK_COOP_ROWS", 64, 128, 64, &rows) || (rows != 64 && rows != 128)) {
        free(d);
        return VK_ERR(LOOM_ERR_INVALID, "LOOM_VK_COOP_ROWS='%s': 64 or 128", getenv("LOOM_VK_COOP_ROWS"));
    }
    d->coop_rows = (int)rows;
    long idot_env; /* LOOM_VK_IDOT: 0 never, 1 wherever the device has it, unset where it is accelerated */
    if (!loom_env_long("LOOM_VK_IDOT", 0, 1, -1, &idot_env)) {
        free(d);
        return VK_ERR(LOOM_ERR_INVALID, "LOOM_VK_IDOT='%s': 0 or 1", getenv("LOOM_VK_IDOT"));
    }
    pd_facts f;
    query(d->pd, &f);
    d->props = f.p;
    d->memp = f.mem;
    d->max_range = f.p.limits.maxStorageBufferRange;
    if (f.max_alloc && f.max_alloc < d->max_range) d->max_range = f.max_alloc;
    d->align = f.p.limits.minStorageBufferOffsetAlignment ? f.p.limits.minStorageBufferOffsetAlignment : 4;
    d->subgroup = subgroup_arith(&f) && !getenv("LOOM_VK_NO_SUBGROUP");
    d->sg_size = f.sg.subgroupSize ? f.sg.subgroupSize : 1;
    d->wg_max = f.p.limits.maxComputeWorkGroupInvocations;
    d->wg_max_x = f.p.limits.maxComputeWorkGroupSize[0];
    d->wg_max_y = f.p.limits.maxComputeWorkGroupSize[1];
    d->shared_max = f.p.limits.maxComputeSharedMemorySize;
    d->scalar_gemv = loom_env_is("LOOM_VK_SCALAR_GEMV", "1");
    /* the fused decode shader binds 15 tensors; a device with fewer bindings runs every node on its own */
    d->n_bind = f.p.limits.maxPerStageDescriptorStorageBuffers >= VK_BINDINGS &&
                        f.p.limits.maxDescriptorSetStorageBuffers >= VK_BINDINGS
                    ? VK_BINDINGS
                    : 8;
    d->fuse = d->n_bind == VK_BINDINGS && !loom_env_is("LOOM_VK_FUSE", "0");
    d->att_short = !loom_env_is("LOOM_VK_ATT_SHORT", "0");
    /* Waits poll the fence on a GPU: NVIDIA's vkWaitForFences sleeps, and waking cost a 7B
     * decode step 0.1-0.5 ms at random (docs/PERF.md). On a CPU device the poll would take
     * a core from the driver's own threads. */
    d->spin = f.p.deviceType != VK_PHYSICAL_DEVICE_TYPE_CPU ? !loom_env_is("LOOM_VK_SPIN", "0")
                                                              : loom_env_is("LOOM_VK_SPIN", "1");

    uint32_t nq = 0;
    VkQueueFamilyProperties qf[32];
    vkGetPhysicalDeviceQueueFamilyProperties(d->pd, &nq, NULL);
    if (nq > 32) nq = 32;
    vkGetPhysicalDeviceQueueFamilyProperties(d->pd, &nq, qf);
    d->qfam = UINT32_MAX;
    for (uint32_t i = 0; i < nq && d->qfam == UINT32_MAX; i++) /* a compute queue without graphics first */
        if ((qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && !(qf[i].queueFlags & VK_QUEUE_GRAPHICS_BIT)) d->qfam = i;
    for (uint32_t i = 0; i < nq && d->qfam == UINT32_MAX; i++)
        if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) d->qfam = i;
    /* LOOM_VK_PROFILE=1: a device time per dispatch, where the queue has a timer */
    if (loom_env_is("LOOM_VK_PROFILE", "1") && d->qfam != UINT32_MAX) {
        uint32_t bits = qf[d->qfam].timestampValidBits;
        if (!bits || !(f.p.limits.timestampPeriod > 0))
            host->log(LOOM_LOG_WARN, "vulkan:%d: LOOM_VK_PROFILE=1, but queue family %u has no timestamps "
                      "(timestampValidBits 0): not profiling", (int)dev, d->qfam);
        else
            d->profile = true, d->ts_ns = f.p.limits.timestampPeriod, d->ts_mask = bits >= 64 ? ~0ull : (1ull << bits) - 1;
    }
    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, .queueFamilyIndex = d->qfam,
                                   .queueCount = 1, .pQueuePriorities = &prio};
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .queueCreateInfoCount = 1,
                              .pQueueCreateInfos = &qci};
    /* tensor cores for prefill GEMMs (LOOM_VK_COOPMAT=0: never) */
    const char *cm_why = "off (LOOM_VK_COOPMAT=0)";
    bool cm_test = loom_env_is("LOOM_VK_COOPMAT", "test"); /* the self-test harness alone, on any device */
    d->coopmat = !loom_env_is("LOOM_VK_COOPMAT", "0") && coop_usable(c->inst, d->pd, &f, &cm_why);
    const char *cm_exts[3] = {VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME, VK_KHR_VULKAN_MEMORY_MODEL_EXTENSION_NAME,
                              VK_KHR_SHADER_FLOAT16_INT8_EXTENSION_NAME};
    VkPhysicalDeviceCooperativeMatrixFeaturesNV cmf = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
                                                       .cooperativeMatrix = VK_TRUE};
    VkPhysicalDeviceVulkanMemoryModelFeatures mmf = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_MEMORY_MODEL_FEATURES,
                                                     .pNext = &cmf, .vulkanMemoryModel = VK_TRUE};
    VkPhysicalDeviceShaderFloat16Int8Features hf = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES,
                                                    .pNext = &mmf, .shaderFloat16 = VK_TRUE};
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pef = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
        .pipelineExecutableInfo = VK_TRUE};
    /* int8 dot products for the decode GEMVs (only the fused shader has them) */
    bool idot_accel = false;
    const char *idot_why = "off (LOOM_VK_IDOT=0)";
    if (idot_env != 0 && !d->fuse) {
        idot_why = "decode fusion off";
    } else if (idot_env != 0 && idot_usable(d->pd, &idot_accel, &idot_why)) {
        d->idot = idot_accel || idot_env == 1;
        idot_why = idot_accel ? "accelerated" : d->idot ? "emulated (LOOM_VK_IDOT=1)" : "not accelerated (LOOM_VK_IDOT=1: use them)";
    }
    if (idot_env == 1 && !d->idot)
        host->log(LOOM_LOG_WARN, "vulkan:%d: LOOM_VK_IDOT=1, but %s: decode GEMVs on FMAs", (int)dev, idot_why);
    VkPhysicalDeviceShaderIntegerDotProductFeatures idf = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES, .shaderIntegerDotProduct = VK_TRUE};
    d->pipestats = loom_env_is("LOOM_VK_PIPESTATS", "1");
    if (d->pipestats && !has_device_ext(d->pd, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME)) {
        host->log(LOOM_LOG_WARN, "vulkan:%d: LOOM_VK_PIPESTATS=1, but the device has no %s", (int)dev,
                  VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
        d->pipestats = false;
    }
    const char *exts[5];
    uint32_t n_ext = 0;
    if (d->coopmat) dci.pNext = &hf, memcpy(exts, cm_exts, sizeof cm_exts), n_ext = 3;
    if (d->pipestats) {
        pef.pNext = (void *)dci.pNext, dci.pNext = &pef;
        exts[n_ext++] = VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME;
    }
    if (d->idot) {
        idf.pNext = (void *)dci.pNext, dci.pNext = &idf;
        exts[n_ext++] = VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME;
    }
    dci.enabledExtensionCount = n_ext, dci.ppEnabledExtensionNames = n_ext ? exts : NULL;
    VkResult r = vkCreateDevice(d->pd, &dci, NULL, &d->dev);
    if (r != VK_SUCCESS && n_ext) { /* as before, without them */
        if (d->coopmat) d->coopmat = false, cm_why = "vkCreateDevice with VK_NV_cooperative_matrix failed";
        if (d->idot) d->idot = false, idot_why = "vkCreateDevice with VK_KHR_shader_integer_dot_product failed";
        if (d->pipestats)
            host->log(LOOM_LOG_WARN, "vulkan:%d: LOOM_VK_PIPESTATS=1, but vkCreateDevice failed with %s: no statistics",
                      (int)dev, VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
        d->pipestats = false;
        dci.pNext = NULL, dci.enabledExtensionCount = 0, dci.ppEnabledExtensionNames = NULL;
        r = vkCreateDevice(d->pd, &dci, NULL, &d->dev);
    }
    if (r != VK_SUCCESS) {
        free(d);
        return loom__vk_fail(r, "vkCreateDevice");
    }
    vkGetDeviceQueue(d->dev, d->qfam, 0, &d->queue);

    /* memory types: device-local for buffers (mapped when it is host-visible,
     * coherent and cached: unified memory), host-visible coherent for staging */
    bool stage_all = loom_env_is("LOOM_VK_STAGING", "all"), force_staging = stage_all || loom_env_is("LOOM_VK_STAGING", "1");
    const VkMemoryPropertyFlags hv = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    int uma = find_type(&d->memp, ~0u, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | hv | VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
    int local = find_type(&d->memp, ~0u, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    int hostm = find_type(&d->memp, ~0u, hv | VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
    if (hostm < 0) hostm = find_type(&d->memp, ~0u, hv);
    d->mt_mappable = uma >= 0 && !force_staging;
    d->mt_device = (uint32_t)(d->mt_mappable ? uma : local >= 0 ? local : 0);
    d->mt_host = (uint32_t)(hostm >= 0 ? hostm : 0);
    d->mt_bar = d->mt_mappable || stage_all ? -1 : find_type(&d->memp, ~0u, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | hv);
    loom_status st = LOOM_OK;
    if (hostm < 0) st = VK_ERR(LOOM_ERR_UNSUPPORTED, "device %d has no host-visible coherent memory", (int)dev);

    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                   .queueFamilyIndex = d->qfam};
    if (!st && (r = vkCreateCommandPool(d->dev, &pci, NULL, &d->cmd_pool)) != VK_SUCCESS)
        st = loom__vk_fail(r, "vkCreateCommandPool");
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = d->cmd_pool, .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                       .commandBufferCount = 1};
    if (!st && (r = vkAllocateCommandBuffers(d->dev, &cai, &d->xfer)) != VK_SUCCESS)
        st = loom__vk_fail(r, "vkAllocateCommandBuffers");
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    if (!st && (r = vkCreateFence(d->dev, &fci, NULL, &d->fence)) != VK_SUCCESS) st = loom__vk_fail(r, "vkCreateFence");
    if (!st && (r = vkCreateFence(d->dev, &fci, NULL, &d->read_fence)) != VK_SUCCESS) st = loom__vk_fail(r, "vkCreateFence");
    if (!st && !d->mt_mappable) st = loom__vk_alloc(d, STAGING_BYTES, true, &d->staging);
    if (!st && d->staging) VK_UNLINK(d->buffers, d->staging), d->staging->prev = d->staging->next = NULL;

    for (int i = 0; i < VK_SH_COUNT && !st; i++) {
        if ((i == VK_SH_GEMM_COOP || i == VK_SH_GEMM_COOP_AWQ) && !d->coopmat) continue; /* need the extensions */
        if (i == VK_SH_GEMV_AWQ_FUSED_IDOT && !d->idot) continue;
        VkShaderModuleCreateInfo smi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = spv[i].size,
                                        .pCode = spv[i].code};
        if ((r = vkCreateShaderModule(d->dev, &smi, NULL, &d->modules[i])) != VK_SUCCESS)
            st = loom__vk_fail(r, "vkCreateShaderModule");
    }
    VkDescriptorSetLayoutBinding bind[VK_BINDINGS];
    for (uint32_t i = 0; i < d->n_bind; i++)
        bind[i] = (VkDescriptorSetLayoutBinding){.binding = i, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                                 .descriptorCount = 1, .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo dli = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                           .bindingCount = d->n_bind, .pBindings = bind};
    if (!st && (r = vkCreateDescriptorSetLayout(d->dev, &dli, NULL, &d->dsl)) != VK_SUCCESS)
        st = loom__vk_fail(r, "vkCreateDescriptorSetLayout");
    VkPushConstantRange pcr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .size = VK_PC_WORDS * 4};
    VkPipelineLayoutCreateInfo pli = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .setLayoutCount = 1,
                                      .pSetLayouts = &d->dsl, .pushConstantRangeCount = 1, .pPushConstantRanges = &pcr};
    if (!st && (r = vkCreatePipelineLayout(d->dev, &pli, NULL, &d->layout)) != VK_SUCCESS)
        st = loom__vk_fail(r, "vkCreatePipelineLayout");
    if (!st) st = loom__vk_check_validation(d);
    double cm_nmse = -1; /* -1: no self-test ran */
    if (!st && (d->coopmat || cm_test)) { /* a failed self-test only turns the path off */
        loom_status cs = loom__vk_coop_selftest(d, d->coopmat, &cm_nmse);
        if (cm_test && !cs) host->log(LOOM_LOG_INFO, "vulkan:%d: self-test harness (tiled GEMM against itself): NMSE %g", (int)dev, cm_nmse);
        if (cs == LOOM_ERR_NOMEM) st = cs;
        else if (cs)
            host->log(LOOM_LOG_WARN, "vulkan:%d: the cooperative-matrix GEMM failed its self-test (status %d, NMSE %.3g); "
                      "prefill uses the tiled GEMM", (int)dev, (int)cs, cm_nmse);
        if (cs) d->coopmat = false, cm_why = "self-test failed";
    }
    if (st) {
        vk_device_close(d);
        return st;
    }
    char cm_desc[96];
    if (d->coopmat) snprintf(cm_desc, sizeof cm_desc, "%.2g, tiles %u x %d", cm_nmse, d->coop_rows, VK_COOP_N);
    else snprintf(cm_desc, sizeof cm_desc, "%s", cm_why);
    host->log(LOOM_LOG_DEBUG,
              "vulkan:%d: %s; queue family %u; buffers in memory type %u (%s), staging type %u, small buffers %d; "
              "subgroup arithmetic %s (size %u); f16/bf16 as packed u32 (no 16-bit storage needed); max storage range "
              "%llu, offset alignment %llu; decode fusion %s; one-row attention over <= 256 positions %s; "
              "decode GEMVs on int8 dot products %s%s; prefill GEMM %s%s; waits %s; validation %s",
              (int)dev, d->props.deviceName, d->qfam, d->mt_device, d->mt_mappable ? "mapped, memcpy transfers"
                                                                                   : "device-local, staged transfers",
              d->mt_host, (int)d->mt_bar, d->subgroup ? "used" : "not used", f.sg.subgroupSize,
              (unsigned long long)d->max_range, (unsigned long long)d->align,
              d->fuse ? "on" : d->n_bind < VK_BINDINGS ? "off (fewer than 16 storage bindings)" : "off (LOOM_VK_FUSE=0)",
              d->att_short ? "attn_dec1 where it fits" : "attn_dec (LOOM_VK_ATT_SHORT=0)",
              d->idot ? "used, " : "not used: ", idot_why,
              d->coopmat ? "VK_NV_cooperative_matrix 16x16x16 f16->f32, self-test NMSE " : "tiled f32; cooperative matrix: ",
              cm_desc, d->spin ? "poll the fence" : "block in the driver", c->messenger ? "on" : "off");
    *dctx = d;
    return LOOM_OK;
}

/* LOOM_VK_PIPESTATS=1: one line per pipeline, its first executable's statistics */
static void log_stats(vk_dev *d, const vk_pipe *p)
{
    PFN_vkGetPipelineExecutableStatisticsKHR get =
        (PFN_vkGetPipelineExecutableStatisticsKHR)vkGetDeviceProcAddr(d->dev, "vkGetPipelineExecutableStatisticsKHR");
    VkPipelineExecutableInfoKHR ei = {.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR, .pipeline = p->pipe};
    VkPipelineExecutableStatisticKHR s[24];
    uint32_t n = 24;
    for (uint32_t i = 0; i < n; i++)
        s[i] = (VkPipelineExecutableStatisticKHR){.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR};
    VkResult r = get ? get(d->dev, &ei, &n, s) : VK_ERROR_EXTENSION_NOT_PRESENT;
    if (r != VK_SUCCESS && r != VK_INCOMPLETE) {
        host->log(LOOM_LOG_WARN, "vulkan:%d: statistics of pipeline %s: %s", d->index, spv[p->sh].name,
                  loom__vk_result_name(r));
        return;
    }
    char line[1024];
    int len = 0;
    for (uint32_t i = 0; i < n && len < (int)sizeof line - 1; i++) {
        const VkPipelineExecutableStatisticValueKHR *v = &s[i].value;
        char *o = line + len;
        size_t room = sizeof line - (size_t)len;
        int w;
        switch (s[i].format) {
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
            w = snprintf(o, room, "; %s %s", s[i].name, v->b32 ? "yes" : "no");
            break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
            w = snprintf(o, room, "; %s %lld", s[i].name, (long long)v->i64);
            break;
        case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
            w = snprintf(o, room, "; %s %llu", s[i].name, (unsigned long long)v->u64);
            break;
        default: w = snprintf(o, room, "; %s %g", s[i].name, v->f64);
        }
        if (w > 0) len += w < (int)room ? w : (int)room - 1;
    }
    host->log(LOOM_LOG_INFO, "vulkan:%d: pipeline %s (specialised %u, %u, %u, %u)%s", d->index, spv[p->sh].name,
              p->spec[0], p->spec[1], p->spec[2], p->spec[3], len ? line : "; no statistics");
}

/* Pipelines are made once per (shader, specialisation) and kept until the
 * device closes, so every program of the device shares them. */
loom_status loom__vk_pipeline4(vk_dev *d, vk_shader sh, uint32_t s0, uint32_t s1, uint32_t s2, uint32_t s3,
                               VkPipeline *out)
{
    const uint32_t spec[4] = {s0, s1, s2, s3};
    for (vk_pipe *p = d->pipes; p; p = p->next)
        if (p->sh == sh && !memcmp(p->spec, spec, sizeof spec)) return *out = p->pipe, LOOM_OK;
    vk_pipe *p = calloc(1, sizeof *p);
    if (!p) return VK_ERR(LOOM_ERR_NOMEM, "out of memory");
    p->sh = sh;
    memcpy(p->spec, spec, sizeof spec);
    VkSpecializationMapEntry me[4] = {{0, 0, 4}, {1, 4, 4}, {2, 8, 4}, {3, 12, 4}};
    VkSpecializationInfo si = {.mapEntryCount = 4, .pMapEntries = me, .dataSize = sizeof p->spec, .pData = p->spec};
    VkComputePipelineCreateInfo ci = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .flags = d->pipestats ? VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR : 0,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = d->modules[sh], .pName = "main", .pSpecializationInfo = &si},
        .layout = d->layout};
    VkResult r = vkCreateComputePipelines(d->dev, VK_NULL_HANDLE, 1, &ci, NULL, &p->pipe);
    if (r != VK_SUCCESS) {
        free(p);
        return loom__vk_fail(r, "vkCreateComputePipelines");
    }
    p->next = d->pipes;
    d->pipes = p;
    *out = p->pipe;
    if (d->pipestats) log_stats(d, p);
    return LOOM_OK;
}

/* ---- buffers ------------------------------------------------------------------------- */
static loom_status vk_buffer_alloc(void *dctx, size_t size, loom_buffer **buf)
{
    return loom__vk_alloc(dctx, size, false, buf);
}

static void vk_buffer_free(void *dctx, loom_buffer *buf)
{
    vk_dev *d = dctx;
    if (!buf) return;
    loom__vk_wait(d); /* the GPU may still use it */
    loom__vk_free(d, buf);
}

static loom_status vk_buffer_write(void *dctx, loom_buffer *b, size_t off, const void *src, size_t size)
{
    return transfer(dctx, b, off, (void *)src, size, true);
}

loom_status loom__vk_write(vk_dev *d, loom_buffer *b, size_t off, const void *src, size_t size)
{
    return vk_buffer_write(d, b, off, src, size);
}

static loom_status vk_buffer_read(void *dctx, loom_buffer *b, size_t off, void *dst, size_t size)
{
    return transfer(dctx, b, off, dst, size, false);
}

/* Host-visible memory a read copies into directly; where buffers are mapped anyway
 * (unified memory) reads are a memcpy, and plain memory does as well. */
static void *vk_host_alloc(void *dctx, size_t size)
{
    vk_dev *d = dctx;
    loom_buffer *h;
    if (d->mt_mappable || loom__vk_alloc(d, size, true, &h)) return NULL;
    if (!h->map) {
        loom__vk_free(d, h);
        return NULL;
    }
    h->host_view = true;
    return h->map;
}

static void vk_host_free(void *dctx, void *ptr)
{
    vk_dev *d = dctx;
    loom_buffer *h = ptr ? host_buffer_of(d, ptr, 0) : NULL;
    if (!h) return;
    loom__vk_wait(d);
    loom__vk_free(d, h);
}

/* ---- weights: suballocated from chunks ---------------------------------------------- */
static size_t weight_bytes(const loom_tensor *t)
{
    if (t->dtype == LOOM_Q4_AWQ) return t->ndim == 2 ? loom__vk_awq_bytes(t->shape[0], t->shape[1]) : 0;
    size_t n = t->dtype == LOOM_F16 || t->dtype == LOOM_BF16 ? 2 : 4;
    for (int32_t i = 0; i < t->ndim; i++) n *= (size_t)t->shape[i];
    return n;
}

/* Transpose an 8 x 8 matrix of nibbles held as 8 words (word r, nibble s)
 * in place, by swapping 4x4, 2x2 and 1x1 blocks: after it, word s nibble r
 * holds what word r nibble s held. */
static void nibble_transpose8(uint32_t a[8])
{
    for (int r = 0; r < 4; r++) {
        uint32_t t = ((a[r] >> 16) ^ a[r + 4]) & 0x0000ffffu;
        a[r + 4] ^= t, a[r] ^= t << 16;
    }
    static const int r2[4] = {0, 1, 4, 5};
    for (int i = 0; i < 4; i++) {
        int r = r2[i];
        uint32_t t = ((a[r] >> 8) ^ a[r + 2]) & 0x00ff00ffu;
        a[r + 2] ^= t, a[r] ^= t << 8;
    }
    for (int r = 0; r < 8; r += 2) {
        uint32_t t = ((a[r] >> 4) ^ a[r + 1]) & 0x0f0f0f0fu;
        a[r + 1] ^= t, a[r] ^= t << 4;
    }
}

/* The checkpoint's AWQ blob (loom_backend.h: qweight u32 [K][N/8], nibble i
 * of word (k, c) is column 8c + loom_awq_order[i]; qzeros u32 [K/128][N/8]
 * packed the same; scales f16 [K/128][N]) into the layout of vk_impl.h.
 * Eight rows of one packed word column are an 8 x 8 nibble matrix (k by
 * slot); its transpose is, per slot, the word of 8 consecutive k. */
static void awq_repack(int64_t K, int64_t N, const void *blob, void *dst)
{
    static const int slot_of[8] = {0, 4, 1, 5, 2, 6, 3, 7}; /* column offset -> nibble: slot_of[order[i]] == i */
    const uint8_t *b = blob;
    const uint32_t *qw = (const uint32_t *)b, *qz = (const uint32_t *)(b + K * N / 2);
    const uint16_t *sc = (const uint16_t *)(b + K * N / 2 + K / LOOM_AWQ_GROUP * N / 2);
    uint32_t *q = dst, *meta = (uint32_t *)((uint8_t *)dst + loom__vk_awq_q_bytes(K, N));
    int64_t N8 = N / 8;
    for (int64_t kb = 0; kb < K / 32; kb++)
        for (int j = 0; j < 4; j++) /* 8 source rows at a time: 8 sequential streams */
            for (int64_t c = 0; c < N8; c++) {
                uint32_t a[8];
                for (int r = 0; r < 8; r++) a[r] = qw[(kb * 32 + j * 8 + r) * N8 + c];
                nibble_transpose8(a);
                for (int i = 0; i < 8; i++) q[((kb * N + 8 * c + loom_awq_order[i]) * 4) + j] = a[i];
            }
    for (int64_t g = 0; g < K / LOOM_AWQ_GROUP; g++)
        for (int64_t n = 0; n < N; n++)
            meta[g * N + n] = sc[g * N + n] | ((qz[g * N8 + n / 8] >> (4 * slot_of[n % 8])) & 15u) << 16;
}

static loom_status vk_weight_prepare(void *dctx, loom_tensor *t, const void *data)
{
    vk_dev *d = dctx;
    size_t n = weight_bytes(t);
    if (!n) return VK_ERR(LOOM_ERR_INVALID, "weight '%s' has no size", t->name ? t->name : "?");
    loom_buffer *c = d->chunk;
    size_t off = c ? (c->used + WEIGHT_ALIGN - 1) / WEIGHT_ALIGN * WEIGHT_ALIGN : 0;
    if (!c || off + n > c->size) {
        loom_status st = loom__vk_alloc(d, n > CHUNK_BYTES ? n : CHUNK_BYTES, false, &c);
        if (st && n < CHUNK_BYTES) st = loom__vk_alloc(d, n, false, &c); /* a tight one when 256 MiB fails */
        if (st) return st;
        c->is_chunk = true;
        if (n < CHUNK_BYTES) d->chunk = c; /* an oversized tensor gets its own */
        off = 0;
    }
    loom_status st = LOOM_OK;
    if (t->dtype == LOOM_Q4_AWQ && c->map) { /* mapped: repack in place */
        if (!(st = loom__vk_wait(d))) awq_repack(t->shape[0], t->shape[1], data, (uint8_t *)c->map + off);
    } else if (t->dtype == LOOM_Q4_AWQ) {
        void *tmp = malloc(n);
        if (!tmp) {
            st = VK_ERR(LOOM_ERR_NOMEM, "out of host memory repacking '%s' (%zu bytes)", t->name ? t->name : "?", n);
        } else {
            awq_repack(t->shape[0], t->shape[1], data, tmp);
            st = transfer(d, c, off, tmp, n, true);
            free(tmp);
        }
    } else {
        st = transfer(d, c, off, (void *)data, n, true);
    }
    if (st) {
        if (!c->n_weights) loom__vk_free(d, c);
        return st;
    }
    c->used = off + n;
    c->n_weights++;
    t->buf = c;
    t->offset = off;
    return LOOM_OK;
}

static void vk_weight_release(void *dctx, loom_tensor *t)
{
    vk_dev *d = dctx;
    loom_buffer *c = t->buf;
    if (!c || !c->is_chunk) return;
    t->buf = NULL;
    if (--c->n_weights <= 0) {
        loom__vk_wait(d);
        loom__vk_free(d, c);
    }
}

static loom_status vk_sync(void *dctx) { return loom__vk_wait(dctx); }

/* ---- the table and the entry point --------------------------------------------------- */
static const loom_backend_i vulkan_iface = {
    .abi             = LOOM_BACKEND_ABI,
    .name            = "vulkan",
    .init            = vk_init,
    .shutdown        = vk_shutdown,
    .device_count    = vk_device_count,
    .device_info     = vk_device_info,
    .device_open     = vk_device_open,
    .device_close    = vk_device_close,
    .supports        = loom__vk_supports,
    .buffer_alloc    = vk_buffer_alloc,
    .buffer_free     = vk_buffer_free,
    .buffer_write    = vk_buffer_write,
    .buffer_read     = vk_buffer_read,
    .buffer_host_ptr = NULL, /* the host reads through buffer_read */
    .host_alloc      = vk_host_alloc,
    .host_free       = vk_host_free,
    .weight_prepare  = vk_weight_prepare,
    .weight_release  = vk_weight_release,
    .compile         = loom__vk_compile,
    .execute         = loom__vk_execute,
    .release         = loom__vk_release,
    .sync            = vk_sync,
};

__attribute__((visibility("default"))) const loom_backend_i *loom_backend_entry(const loom_host_i *h)
{
    if (!h || h->abi != LOOM_BACKEND_ABI || !h->log || !h->error) return NULL;
    host = h;
    return &vulkan_iface;
}
