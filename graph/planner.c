/* planner.c — liveness-based arena planning: greedy by size, first fit among
 * the blocks whose lifetimes overlap. Largest first keeps big activations at
 * low offsets and lets small, short-lived ones fill the gaps between them. */
#include <stdlib.h>

#include "graph.h"

typedef struct {
    size_t off, end;
} span;

static int by_size_desc(const void *a, const void *b, void *blocks)
{
    const loom_block *bl = blocks;
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (bl[x].size != bl[y].size) return bl[x].size < bl[y].size ? 1 : -1;
    return x - y; /* stable: equal sizes keep graph order */
}

static int by_offset(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

size_t loom_plan_arena(const loom_block *blocks, int32_t n, size_t align, size_t *offsets)
{
    if (n <= 0) return 0;
    if (!align) align = 1;
    int32_t *order = malloc((size_t)n * sizeof *order);
    bool *placed = calloc((size_t)n, sizeof *placed);
    span *live = malloc((size_t)n * sizeof *live);
    size_t total = 0;
    if (!order || !placed || !live) {
        free(order), free(placed), free(live);
        return (size_t)-1;
    }
    for (int32_t i = 0; i < n; i++) order[i] = i;
    qsort_r(order, (size_t)n, sizeof *order, by_size_desc, (void *)blocks);

    for (int32_t oi = 0; oi < n; oi++) {
        int32_t b = order[oi];
        int32_t nl = 0;
        for (int32_t j = 0; j < n; j++) /* placed blocks alive at the same time */
            if (placed[j] && blocks[j].first <= blocks[b].last && blocks[b].first <= blocks[j].last)
                live[nl++] = (span){offsets[j], offsets[j] + blocks[j].size};
        qsort(live, (size_t)nl, sizeof *live, by_offset);
        size_t off = 0;
        for (int32_t j = 0; j < nl; j++) {
            if (live[j].off >= off + blocks[b].size) break; /* fits in the gap before this one */
            if (live[j].end > off) off = (live[j].end + align - 1) / align * align;
        }
        offsets[b] = off;
        placed[b] = true;
        if (off + blocks[b].size > total) total = off + blocks[b].size;
    }
    free(order), free(placed), free(live);
    return (total + align - 1) / align * align;
}
