/* trace.c — a CUDA injection library that records every kernel and copy a
 * process runs on the GPU, with the GPU's own start and end timestamps, through
 * CUPTI's activity API (what Nsight Systems does; the lent machine has no nsys).
 * Unlike Nsight Compute it serialises nothing: kernels overlapping under
 * programmatic dependent launch show as they ran, and so do the gaps between a
 * decode step's kernels and the host's part of a step.
 *
 *   cc -O2 -shared -fPIC -I$CUDA/include -o /tmp/libtrace.so bench/cuda/trace.c -L$CUDA/lib64 -lcupti
 *   CUDA_INJECTION64_PATH=/tmp/libtrace.so LOOM_TRACE_OUT=/tmp/trace.csv loom bench model ...
 *   python3 bench/cuda/trace-summary.py /tmp/trace.csv
 *
 * Writes one line per record at exit: kind (K kernel, C copy), start and end
 * (ns), then the kernel's name or the copy's kind and bytes. */
#include <cupti.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define BUF_BYTES (8u << 20)

static FILE *out;

static void CUPTIAPI buffer_requested(uint8_t **buf, size_t *size, size_t *max_records)
{
    *buf = aligned_alloc(8, BUF_BYTES);
    *size = *buf ? BUF_BYTES : 0;
    *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buf, size_t size, size_t valid)
{
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *r = NULL;
    while (out && cuptiActivityGetNextRecord(buf, valid, &r) == CUPTI_SUCCESS) {
        if (r->kind == CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL || r->kind == CUPTI_ACTIVITY_KIND_KERNEL) {
            const CUpti_ActivityKernel10 *k = (const CUpti_ActivityKernel10 *)r;
            fprintf(out, "K,%llu,%llu,%s\n", (unsigned long long)k->start, (unsigned long long)k->end, k->name);
        } else if (r->kind == CUPTI_ACTIVITY_KIND_MEMCPY) {
            const CUpti_ActivityMemcpy6 *c = (const CUpti_ActivityMemcpy6 *)r;
            fprintf(out, "C,%llu,%llu,%u %llu\n", (unsigned long long)c->start, (unsigned long long)c->end,
                    (unsigned)c->copyKind, (unsigned long long)c->bytes);
        }
    }
    free(buf);
}

static void flush_at_exit(void)
{
    cuptiActivityFlushAll(1);
    if (out) fclose(out), out = NULL;
}

/* called by the CUDA driver when it initialises, CUDA_INJECTION64_PATH naming this library */
int InitializeInjection(void)
{
    const char *path = getenv("LOOM_TRACE_OUT");
    out = fopen(path && *path ? path : "trace.csv", "w");
    if (!out) return 0;
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY) != CUPTI_SUCCESS) {
        fprintf(stderr, "trace: CUPTI would not record activity\n");
        return 0;
    }
    atexit(flush_at_exit);
    return 1;
}
