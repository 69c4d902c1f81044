/* fuzz_safetensors.c — libFuzzer target: any bytes as a safetensors file.
 * Parsing must either succeed with every tensor inside the buffer or fail
 * cleanly; never read outside it. */
#include <stdlib.h>

#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* a private copy, so reads past the end hit ASan's redzone */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    loom_st *st = NULL;
    if (loom_st_parse(buf, size, size, "fuzz.safetensors", &st) == LOOM_OK) {
        for (int32_t i = 0; i < loom_st_count(st); i++) {
            const loom_st_tensor *t = loom_st_at(st, i);
            const uint8_t *p = t->data;
            if (p < buf || p + t->nbytes > buf + size) abort();
            volatile uint8_t sink = 0;
            if (t->nbytes) sink ^= p[0] ^ p[t->nbytes - 1];
            (void)sink;
        }
        loom_st_close(st);
    }
    free(buf);
    return 0;
}
