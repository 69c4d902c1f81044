/* vk_coop.c — the self-test of the cooperative-matrix GEMM (gemm_coop.comp).
 *
 * The tensor-core path cannot be checked where it is written (lavapipe has no
 * VK_NV_cooperative_matrix), so each device that offers it runs it once at
 * open on a small random problem whose edges are not tile multiples (f16 and
 * AWQ weights, with a bias) and compares with the tiled GEMM (gemm.comp); on a mismatch
 * the caller logs a warning and keeps the tiled GEMM. With `candidate` false
 * the tiled GEMM is compared with itself: LOOM_VK_COOPMAT=test runs that on
 * any device, so the harness is exercised without the extension. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vk_impl.h"

static uint32_t lcg(uint32_t *s) { return *s = *s * 1664525u + 1013904223u, *s >> 8; }

#define CT 150 /* tokens: two full 64-row tiles (one of 128) and a partial one */
#define CK 256 /* two AWQ groups, eight K steps */
#define CN 200 /* one full and one partial 128-column tile (the tiled GEMM's: 3 and 1 of 64) */

/* One problem (f16 or AWQ weight): NMSE of the candidate against the tiled GEMM. */
static loom_status run_one(vk_dev *d, bool awq, bool candidate, double *nmse)
{
    size_t xb = (size_t)CT * CK * 4, yb = (size_t)CT * CN * 4, bb = (size_t)CN * 4;
    size_t qb = awq ? loom__vk_awq_q_bytes(CK, CN) : 0, wb = awq ? loom__vk_awq_bytes(CK, CN) : (size_t)CN * CK * 2;
    loom_buffer *x = NULL, *w = NULL, *y0 = NULL, *y1 = NULL, *bias = NULL;
    VkDescriptorPool pool = VK_NULL_HANDLE;
    VkCommandBuffer cb = VK_NULL_HANDLE;
    loom_status st;
    if ((st = loom__vk_alloc(d, xb, true, &x)) || (st = loom__vk_alloc(d, wb, true, &w)) ||
        (st = loom__vk_alloc(d, yb, true, &y0)) || (st = loom__vk_alloc(d, yb, true, &y1)) ||
        (st = loom__vk_alloc(d, bb, true, &bias)))
        goto done;
    if (!x->map || !w->map || !y0->map || !y1->map || !bias->map) {
        st = VK_ERR(LOOM_ERR_BACKEND, "self-test buffers are not host-visible");
        goto done;
    }
    uint32_t seed = awq ? 7u : 3u;
    float *xf = x->map;
    for (size_t i = 0; i < (size_t)CT * CK; i++) xf[i] = (float)((int)(lcg(&seed) % 2001) - 1000) / 1000.0f;
    for (size_t i = 0; i < CN; i++) ((float *)bias->map)[i] = (float)((int)(lcg(&seed) % 2001) - 1000) / 500.0f;
    if (awq) {
        uint32_t *q = w->map, *meta = (uint32_t *)((char *)w->map + qb);
        for (size_t i = 0; i < qb / 4; i++) q[i] = lcg(&seed) ^ lcg(&seed) << 16;
        for (size_t i = 0; i < (size_t)(CK / LOOM_AWQ_GROUP) * CN; i++)
            meta[i] = loom_f32_to_f16((float)(1 + lcg(&seed) % 32) / 256.0f) | (lcg(&seed) % 16) << 16;
    } else {
        uint16_t *h = w->map;
        for (size_t i = 0; i < (size_t)CN * CK; i++) h[i] = loom_f32_to_f16((float)((int)(lcg(&seed) % 2001) - 1000) / 1024.0f);
    }
    memset(y0->map, 0xff, yb), memset(y1->map, 0xff, yb); /* NaN: an unwritten output fails */

    VkPipeline ref, test;
    vk_shader rs = awq ? VK_SH_GEMM_AWQ : VK_SH_GEMM, cs = awq ? VK_SH_GEMM_COOP_AWQ : VK_SH_GEMM_COOP;
    if ((st = loom__vk_pipeline(d, rs, awq ? 0 : 1, 0, &ref))) goto done;
    if (candidate) st = loom__vk_pipeline4(d, cs, 1, 0, 0, d->coop_rows, &test);
    else test = ref;
    if (st) goto done;

    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 2 * d->n_bind};
    VkDescriptorPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, .maxSets = 2,
                                      .poolSizeCount = 1, .pPoolSizes = &ps};
    VkResult r = vkCreateDescriptorPool(d->dev, &pci, NULL, &pool);
    if (r != VK_SUCCESS) {
        st = loom__vk_fail(r, "vkCreateDescriptorPool");
        goto done;
    }
    VkDescriptorSetLayout layouts[2] = {d->dsl, d->dsl};
    VkDescriptorSetAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, .descriptorPool = pool,
                                      .descriptorSetCount = 2, .pSetLayouts = layouts};
    VkDescriptorSet sets[2];
    if ((r = vkAllocateDescriptorSets(d->dev, &ai, sets)) != VK_SUCCESS) {
        st = loom__vk_fail(r, "vkAllocateDescriptorSets");
        goto done;
    }
    for (int s = 0; s < 2; s++) { /* 0 x, 1 w (AWQ: q), 2 bias (f32), 3 y, 4 AWQ meta */
        VkDescriptorBufferInfo info[VK_BINDINGS];
        for (uint32_t b = 0; b < d->n_bind; b++) info[b] = (VkDescriptorBufferInfo){x->buf, 0, VK_WHOLE_SIZE};
        info[1] = (VkDescriptorBufferInfo){w->buf, 0, awq ? qb : wb};
        info[2] = (VkDescriptorBufferInfo){bias->buf, 0, VK_WHOLE_SIZE};
        info[3] = (VkDescriptorBufferInfo){s ? y1->buf : y0->buf, 0, VK_WHOLE_SIZE};
        if (awq) info[4] = (VkDescriptorBufferInfo){w->buf, qb, wb - qb};
        VkWriteDescriptorSet wr = {.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, .dstSet = sets[s],
                                   .descriptorCount = d->n_bind, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                   .pBufferInfo = info};
        vkUpdateDescriptorSets(d->dev, 1, &wr, 0, NULL);
    }
    VkCommandBufferAllocateInfo cai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                       .commandPool = d->cmd_pool, .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                       .commandBufferCount = 1};
    if ((r = vkAllocateCommandBuffers(d->dev, &cai, &cb)) != VK_SUCCESS) {
        cb = VK_NULL_HANDLE;
        st = loom__vk_fail(r, "vkAllocateCommandBuffers");
        goto done;
    }
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    if ((r = vkBeginCommandBuffer(cb, &bi)) != VK_SUCCESS) {
        st = loom__vk_fail(r, "vkBeginCommandBuffer");
        goto done;
    }
    uint32_t pc[VK_PC_WORDS] = {0};
    pc[0] = CT, pc[7] = CK, pc[8] = CN, pc[9] = CN, pc[10] = 0, pc[11] = 1;
    for (int s = 0; s < 2; s++) {
        bool coop = s && candidate;
        vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, s ? test : ref);
        vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, d->layout, 0, 1, &sets[s], 0, NULL);
        vkCmdPushConstants(cb, d->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof pc, pc);
        uint32_t rows = d->coop_rows;
        if (coop) vkCmdDispatch(cb, (CN + VK_COOP_N - 1) / VK_COOP_N, (CT + rows - 1) / rows, 1);
        else vkCmdDispatch(cb, (CN + 63) / 64, (CT + 31) / 32, 1);
    }
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER, .srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_HOST_READ_BIT};
    vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0,
                         NULL);
    if ((r = vkEndCommandBuffer(cb)) != VK_SUCCESS) {
        st = loom__vk_fail(r, "vkEndCommandBuffer");
        goto done;
    }
    if ((st = loom__vk_submit(d, cb, NULL)) || (st = loom__vk_wait(d))) goto done;
    const float *a = y1->map, *b = y0->map;
    double num = 0, den = 0;
    for (size_t i = 0; i < (size_t)CT * CN; i++) {
        double e = (double)a[i] - (double)b[i];
        num += e * e, den += (double)b[i] * b[i];
    }
    *nmse = den > 0 && isfinite(num) ? num / den : INFINITY;
done:
    if (cb) vkFreeCommandBuffers(d->dev, d->cmd_pool, 1, &cb);
    if (pool) vkDestroyDescriptorPool(d->dev, pool, NULL);
    loom__vk_free(d, x), loom__vk_free(d, w), loom__vk_free(d, y0), loom__vk_free(d, y1), loom__vk_free(d, bias);
    return st;
}

/* f16 rounding of x and of the dequantised weights: NMSE ~1e-7; a wrong
 * fragment layout or tile edge gives ~1. */
#define COOP_MAX_NMSE 1e-5

loom_status loom__vk_coop_selftest(vk_dev *d, bool candidate, double *worst)
{
    *worst = 0;
    for (int awq = 0; awq < 2; awq++) {
        double e = INFINITY;
        loom_status st = run_one(d, awq, candidate, &e);
        if (st) return st;
        if (!(e <= *worst)) *worst = e;
        if (!(e <= COOP_MAX_NMSE)) return LOOM_ERR_BACKEND; /* the caller says so, with *worst */
    }
    return LOOM_OK;
}
