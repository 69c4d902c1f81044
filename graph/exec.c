/* exec.c — compiling a graph onto devices and running steps.
 *
 * Compile: place every node (first device that supports it), find where each
 * tensor must exist (an instance per device that uses it), plan one arena of
 * activations per device, upload weights once, lower each run of consecutive
 * nodes on one device (a segment) to that backend's program.
 * Run: for each segment, copy in the activations it needs from other devices,
 * then execute it with the step descriptor. */
#include <stdlib.h>

#include "graph_impl.h"

#define ARENA_ALIGN 256
#define ARENA_FUSE_SLACK 2 /* nodes; see lifetime() */

typedef struct {
    loom_tid tid;
    int32_t  from, to;      /* device indices */
    int32_t  first_use;     /* first consuming node on `to` */
} copy_op;

typedef struct {
    int32_t    dev;
    int32_t    first, count; /* node range */
    loom_node *nodes;
    void      *prog;
    int32_t   *copies;       /* copy_op indices to run before this segment */
    int32_t    n_copies;
} segment;

typedef struct {
    loom_device          *dev;
    const loom_backend_i *i;
    void                 *ctx;
    loom_buffer          *arena, *states, *weights, *io;
    size_t                arena_size, unshared, states_size, weights_size, io_size;
} devstate;

struct loom_exec {
    loom_graph  *g;
    int32_t      nd;
    devstate    *d;
    loom_tensor *inst;   /* [nt * nd]: tensor t's instance on device d */
    uint8_t     *has;    /* [nt * nd] */
    uint8_t     *prepared; /* [nt * nd]: weight went through weight_prepare */
    int32_t     *home;   /* [nt]: device of activations and states, -1 otherwise */
    int32_t     *place;  /* [nn] */
    segment     *seg;
    int32_t      n_seg;
    copy_op     *copies;
    int32_t      n_copies;
    void        *staging;
    size_t       staging_size;
    bool         needs_pos;
    void        *view;       /* loom_exec_view's host buffer ... */
    size_t       view_cap;
    int32_t      view_dev;   /* ... from this device's host_alloc, or -1: malloc */
};

#define INST(e, t, dv) (&(e)->inst[(size_t)(t) * (e)->nd + (dv)])
#define HAS(e, t, dv)  ((e)->has[(size_t)(t) * (e)->nd + (dv)])

static void probe_node(const loom_graph *g, int32_t i, loom_node *out)
{
    const gnode *n = &g->n[i];
    memset(out, 0, sizeof *out);
    out->op = n->op;
    out->n_src = n->n_src;
    out->p = n->p;
    for (int32_t s = 0; s < n->n_src; s++)
        out->src[s] = n->src[s] == LOOM_TID_NONE ? NULL : (loom_tensor *)&g->t[n->src[s]].desc;
    out->dst = (loom_tensor *)&g->t[n->dst].desc;
}

static const char *node_desc(const loom_graph *g, int32_t i, char *buf, size_t len)
{
    const gnode *n = &g->n[i];
    int k = snprintf(buf, len, "node #%d '%s' (%s", i, n->name, loom_op_name(n->op));
    for (int32_t s = 0; s < n->n_src && k < (int)len; s++) {
        if (n->src[s] == LOOM_TID_NONE) continue;
        char tb[96];
        k += snprintf(buf + k, len - k, "%s %s", s ? "," : ":", loom_tensor_str(&g->t[n->src[s]].desc, tb, sizeof tb));
    }
    if (k < (int)len) snprintf(buf + k, len - k, ")");
    return buf;
}

static loom_status place_nodes(loom_exec *e, uint32_t flags)
{
    loom_graph *g = e->g;
    int32_t tries = (flags & LOOM_COMPILE_NO_FALLBACK) ? 1 : e->nd;
    for (int32_t i = 0; i < g->nn; i++) {
        loom_node probe;
        probe_node(g, i, &probe);
        e->place[i] = -1;
        for (int32_t d = 0; d < tries && e->place[i] < 0; d++)
            if (e->d[d].i->supports(e->d[d].ctx, &probe)) e->place[i] = d;
        if (e->place[i] < 0) {
            char b[512];
            if (tries == 1)
                return loom_error(LOOM_ERR_UNSUPPORTED, "%s does not support %s", loom_device_label(e->d[0].dev),
                                  node_desc(g, i, b, sizeof b));
            return loom_error(LOOM_ERR_UNSUPPORTED, "no selected device supports %s", node_desc(g, i, b, sizeof b));
        }
        if (g->n[i].op == LOOM_OP_ROPE || g->n[i].op == LOOM_OP_GQA_ATTN) e->needs_pos = true;
    }
    return LOOM_OK;
}

static loom_status make_segments(loom_exec *e)
{
    loom_graph *g = e->g;
    e->seg = calloc((size_t)(uint32_t)g->nn, sizeof *e->seg);
    if (!e->seg) return loom_error(LOOM_ERR_NOMEM, "out of memory compiling the graph");
    for (int32_t i = 0; i < g->nn; i++) {
        if (e->n_seg && e->seg[e->n_seg - 1].dev == e->place[i]) {
            e->seg[e->n_seg - 1].count++;
            continue;
        }
        e->seg[e->n_seg++] = (segment){.dev = e->place[i], .first = i, .count = 1};
    }
    return LOOM_OK;
}

static int32_t segment_of(const loom_exec *e, int32_t node)
{
    for (int32_t s = 0; s < e->n_seg; s++)
        if (node >= e->seg[s].first && node < e->seg[s].first + e->seg[s].count) return s;
    return -1;
}

/* Which device needs which tensor; the copies between them. */
static loom_status find_instances(loom_exec *e)
{
    loom_graph *g = e->g;
    for (int32_t t = 0; t < g->nt; t++) e->home[t] = -1;
    e->copies = calloc((size_t)(uint32_t)g->nt * (size_t)e->nd + 1, sizeof *e->copies);
    if (!e->copies) return loom_error(LOOM_ERR_NOMEM, "out of memory compiling the graph");
    for (int32_t i = 0; i < g->nn; i++) {
        const gnode *n = &g->n[i];
        int32_t d = e->place[i];
        e->home[n->dst] = d;
        HAS(e, n->dst, d) = 1;
        for (int32_t s = 0; s < n->n_src; s++) {
            loom_tid t = n->src[s];
            if (t == LOOM_TID_NONE) continue;
            gtensor *gt = &g->t[t];
            if (gt->kind == GT_STATE) {
                if (e->home[t] >= 0 && e->home[t] != d)
                    return loom_error(LOOM_ERR_UNSUPPORTED, "state '%s' is used on %s and on %s; a state lives on one device",
                                      gt->desc.name, loom_device_label(e->d[e->home[t]].dev), loom_device_label(e->d[d].dev));
                e->home[t] = d;
            } else if (gt->kind == GT_ACT && e->home[t] != d && !HAS(e, t, d)) {
                e->copies[e->n_copies++] = (copy_op){t, e->home[t], d, i};
            }
            HAS(e, t, d) = 1;
        }
    }
    for (int32_t t = 0; t < g->nt; t++)
        if (g->t[t].kind == GT_STATE && e->home[t] < 0) e->home[t] = 0, HAS(e, t, 0) = 1;
    /* attach each copy to the segment it feeds */
    for (int32_t c = 0; c < e->n_copies; c++) {
        segment *s = &e->seg[segment_of(e, e->copies[c].first_use)];
        int32_t *p = realloc(s->copies, (size_t)(s->n_copies + 1) * sizeof *p);
        if (!p) return loom_error(LOOM_ERR_NOMEM, "out of memory compiling the graph");
        s->copies = p;
        s->copies[s->n_copies++] = c;
    }
    return LOOM_OK;
}

/* Lifetime of tensor t's instance on device d, in node indices. */
static void lifetime(const loom_exec *e, loom_tid t, int32_t d, int32_t *first, int32_t *last)
{
    const loom_graph *g = e->g;
    *first = g->t[t].producer;
    *last = *first;
    if (e->home[t] != d) /* a copy: written just before the segment of its first use */
        for (int32_t c = 0; c < e->n_copies; c++)
            if (e->copies[c].tid == t && e->copies[c].to == d) *first = e->seg[segment_of(e, e->copies[c].first_use)].first;
    for (int32_t i = 0; i < g->nn; i++)
        for (int32_t s = 0; s < g->n[i].n_src; s++)
            if (g->n[i].src[s] == t && (e->place[i] == d || e->home[t] == d) && i > *last) *last = i;
    if (g->t[t].output && e->home[t] == d) *last = g->nn;
    /* Backends fuse a node with up to two after it (CUDA: a GEMV with the residual add and
     * the next rmsnorm, or with RoPE), writing those nodes' outputs while the first one still
     * reads its inputs: keep an input's bytes that long past its last reader. */
    *last = *last + ARENA_FUSE_SLACK < g->nn ? *last + ARENA_FUSE_SLACK : g->nn;
}

static loom_status plan_arenas(loom_exec *e)
{
    loom_graph *g = e->g;
    loom_block *blocks = malloc((size_t)(uint32_t)g->nt * sizeof *blocks);
    loom_tid *ids = malloc((size_t)(uint32_t)g->nt * sizeof *ids);
    size_t *offs = malloc((size_t)(uint32_t)g->nt * sizeof *offs);
    loom_status st = LOOM_OK;
    if (!blocks || !ids || !offs) st = loom_error(LOOM_ERR_NOMEM, "out of memory planning the arena");
    for (int32_t d = 0; d < e->nd && !st; d++) {
        int32_t n = 0;
        devstate *ds = &e->d[d];
        for (loom_tid t = 0; t < g->nt; t++) {
            if (g->t[t].kind != GT_ACT || !HAS(e, t, d)) continue;
            blocks[n].size = g->t[t].nbytes;
            lifetime(e, t, d, &blocks[n].first, &blocks[n].last);
            ds->unshared += (g->t[t].nbytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
            ids[n++] = t;
        }
        ds->arena_size = loom_plan_arena(blocks, n, ARENA_ALIGN, offs);
        if (ds->arena_size == (size_t)-1) {
            st = loom_error(LOOM_ERR_NOMEM, "out of memory planning the arena");
            break;
        }
        for (int32_t b = 0; b < n; b++) INST(e, ids[b], d)->offset = offs[b];
    }
    free(blocks), free(ids), free(offs);
    return st;
}

static loom_status alloc_pool(devstate *ds, size_t size, loom_buffer **buf, const char *what)
{
    if (!size) return LOOM_OK;
    loom_status st = ds->i->buffer_alloc(ds->ctx, size, buf);
    if (st)
        return loom_error(st, "%s: cannot allocate %zu bytes of %s: %s", loom_device_label(ds->dev), size, what,
                          loom_last_error());
    return LOOM_OK;
}

/* Is t read by a node outside the segment that produces it (on its device or,
 * through a copy, on another)? Then the producing program must write it. */
static bool read_outside_segment(const loom_exec *e, loom_tid t)
{
    const loom_graph *g = e->g;
    int32_t p = g->t[t].producer;
    if (p < 0) return false;
    int32_t home = segment_of(e, p);
    for (int32_t i = 0; i < g->nn; i++)
        for (int32_t s = 0; s < g->n[i].n_src; s++)
            if (g->n[i].src[s] == t && segment_of(e, i) != home) return true;
    return false;
}

/* Give every instance its buffer and offset; upload weights; zero states. */
static loom_status allocate(loom_exec *e)
{
    loom_graph *g = e->g;
    loom_status st;
    for (int32_t d = 0; d < e->nd; d++) {
        devstate *ds = &e->d[d];
        for (loom_tid t = 0; t < g->nt; t++) {
            if (!HAS(e, t, d)) continue;
            loom_tensor *in = INST(e, t, d);
            size_t offset = in->offset;
            *in = g->t[t].desc;
            in->offset = offset;
            if (e->home[t] == d && (g->t[t].output || read_outside_segment(e, t))) in->flags |= LOOM_TENSOR_OUTPUT;
            size_t sz = (g->t[t].nbytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
            switch (g->t[t].kind) {
            case GT_INPUT: in->offset = ds->io_size, ds->io_size += sz; break;
            case GT_STATE: in->offset = ds->states_size, ds->states_size += sz; break;
            case GT_WEIGHT:
                if (!ds->i->weight_prepare) in->offset = ds->weights_size, ds->weights_size += sz;
                break;
            case GT_ACT: break;
            }
        }
        if ((st = alloc_pool(ds, ds->arena_size, &ds->arena, "activations")) ||
            (st = alloc_pool(ds, ds->io_size, &ds->io, "inputs")) ||
            (st = alloc_pool(ds, ds->states_size, &ds->states, "state (KV cache)")) ||
            (st = alloc_pool(ds, ds->weights_size, &ds->weights, "weights")))
            return st;
        for (loom_tid t = 0; t < g->nt; t++) {
            if (!HAS(e, t, d)) continue;
            loom_tensor *in = INST(e, t, d);
            gtensor *gt = &g->t[t];
            switch (gt->kind) {
            case GT_INPUT: in->buf = ds->io; break;
            case GT_ACT: in->buf = ds->arena; break;
            case GT_STATE: in->buf = ds->states; break;
            case GT_WEIGHT: {
                const void *data;
                if ((st = weight_get(g, t, &data))) return st;
                if (ds->i->weight_prepare) {
                    st = ds->i->weight_prepare(ds->ctx, in, data);
                    if (!st) e->prepared[(size_t)t * e->nd + d] = 1;
                } else {
                    in->buf = ds->weights;
                    st = ds->i->buffer_write(ds->ctx, in->buf, in->offset, data, gt->nbytes);
                }
                weight_put(g, t, data);
                if (st)
                    return loom_error(st, "%s: cannot upload weight '%s' (%zu bytes): %s", loom_device_label(ds->dev),
                                      gt->desc.name, gt->nbytes, loom_last_error());
                break;
            }
            }
        }
        if (ds->states_size) { /* a fresh KV cache holds zeros, not garbage */
            static const uint8_t zeros[1 << 16];
            for (size_t off = 0; off < ds->states_size; off += sizeof zeros) {
                size_t n = ds->states_size - off < sizeof zeros ? ds->states_size - off : sizeof zeros;
                if ((st = ds->i->buffer_write(ds->ctx, ds->states, off, zeros, n))) return st;
            }
        }
    }
    for (int32_t c = 0; c < e->n_copies; c++) {
        size_t n = g->t[e->copies[c].tid].nbytes;
        if (n > e->staging_size) e->staging_size = n;
    }
    if (e->staging_size && !(e->staging = malloc(e->staging_size)))
        return loom_error(LOOM_ERR_NOMEM, "out of memory: %zu bytes of copy staging", e->staging_size);
    return LOOM_OK;
}

static loom_status lower_segments(loom_exec *e)
{
    loom_graph *g = e->g;
    for (int32_t s = 0; s < e->n_seg; s++) {
        segment *sg = &e->seg[s];
        devstate *ds = &e->d[sg->dev];
        if (!(sg->nodes = calloc((size_t)sg->count, sizeof *sg->nodes)))
            return loom_error(LOOM_ERR_NOMEM, "out of memory compiling the graph");
        for (int32_t k = 0; k < sg->count; k++) {
            const gnode *n = &g->n[sg->first + k];
            loom_node *ln = &sg->nodes[k];
            ln->op = n->op;
            ln->n_src = n->n_src;
            ln->p = n->p;
            for (int32_t i = 0; i < n->n_src; i++)
                ln->src[i] = n->src[i] == LOOM_TID_NONE ? NULL : INST(e, n->src[i], sg->dev);
            ln->dst = INST(e, n->dst, sg->dev);
        }
        loom_status st = ds->i->compile(ds->ctx, sg->nodes, sg->count, &sg->prog);
        if (st)
            return loom_error(st, "%s: cannot compile nodes %d..%d: %s", loom_device_label(ds->dev), sg->first,
                              sg->first + sg->count - 1, loom_last_error());
    }
    return LOOM_OK;
}

/* An exec for n_devs devices with its per-tensor and per-node tables; NULL
 * when out of memory. Devices are filled in by the caller. */
static loom_exec *exec_new(loom_graph *g, int32_t n_devs)
{
    loom_exec *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->g = g;
    e->nd = n_devs;
    e->view_dev = -1;
    size_t ni = (size_t)(uint32_t)g->nt * (size_t)(uint32_t)n_devs;
    e->d = calloc((size_t)(uint32_t)n_devs, sizeof *e->d);
    e->inst = calloc(ni, sizeof *e->inst);
    e->has = calloc(ni, 1);
    e->prepared = calloc(ni, 1);
    e->home = calloc((size_t)(uint32_t)g->nt, sizeof *e->home);
    e->place = calloc((size_t)(uint32_t)g->nn, sizeof *e->place);
    if (!e->d || !e->inst || !e->has || !e->prepared || !e->home || !e->place) {
        loom_exec_destroy(e);
        return NULL;
    }
    return e;
}

loom_status loom_graph_compile(loom_graph *g, loom_device *const *devs, int32_t n_devs, uint32_t flags, loom_exec **out)
{
    *out = NULL;
    if (g->status) return loom_error(g->status, "graph has an error: %s", g->error);
    if (!g->nn) return loom_error(LOOM_ERR_INVALID, "graph has no nodes");
    if (n_devs < 1 || !devs) return loom_error(LOOM_ERR_INVALID, "no device to compile the graph for");
    loom_exec *e = exec_new(g, n_devs);
    if (!e) return loom_error(LOOM_ERR_NOMEM, "out of memory compiling the graph");
    loom_status st = LOOM_OK;
    for (int32_t d = 0; d < n_devs && !st; d++)
        e->d[d] = (devstate){.dev = devs[d], .i = loom_device_iface(devs[d]), .ctx = loom_device_ctx(devs[d])};
    if (!st) st = place_nodes(e, flags);
    if (!st) st = make_segments(e);
    if (!st) st = find_instances(e);
    if (!st) st = plan_arenas(e);
    if (!st) st = allocate(e);
    if (!st) st = lower_segments(e);
    if (st) {
        loom_status keep = st;
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", loom_last_error());
        loom_exec_destroy(e);
        return loom_error(keep, "%s", msg);
    }
    for (int32_t d = 0; d < n_devs; d++)
        loom_log(LOOM_LOG_INFO, "%s: arena %.1f MiB (%.1f MiB unshared), weights %.1f MiB, state %.1f MiB",
                 loom_device_label(devs[d]), e->d[d].arena_size / 1048576.0, e->d[d].unshared / 1048576.0,
                 e->d[d].weights_size / 1048576.0, e->d[d].states_size / 1048576.0);
    *out = e;
    return LOOM_OK;
}

size_t loom_graph_arena_estimate(loom_graph *g)
{
    if (g->status || !g->nn) return 0;
    loom_exec *e = exec_new(g, 1); /* no device: every node on 0, nothing allocated or uploaded */
    size_t bytes = 0;
    if (e && !make_segments(e) && !find_instances(e) && !plan_arenas(e)) bytes = e->d[0].arena_size;
    loom_exec_destroy(e);
    return bytes;
}

static void view_free(loom_exec *e)
{
    if (e->view_dev >= 0) e->d[e->view_dev].i->host_free(e->d[e->view_dev].ctx, e->view);
    else free(e->view);
    e->view = NULL, e->view_cap = 0, e->view_dev = -1;
}

void loom_exec_destroy(loom_exec *e)
{
    if (!e) return;
    view_free(e);
    for (int32_t s = 0; s < e->n_seg; s++) {
        if (e->seg[s].prog) e->d[e->seg[s].dev].i->release(e->d[e->seg[s].dev].ctx, e->seg[s].prog);
        free(e->seg[s].nodes);
        free(e->seg[s].copies);
    }
    for (int32_t d = 0; d < e->nd && e->d; d++) {
        devstate *ds = &e->d[d];
        if (!ds->i) continue;
        for (int32_t t = 0; t < e->g->nt && e->prepared; t++)
            if (e->prepared[(size_t)t * e->nd + d] && ds->i->weight_release) ds->i->weight_release(ds->ctx, INST(e, t, d));
        ds->i->buffer_free(ds->ctx, ds->arena);
        ds->i->buffer_free(ds->ctx, ds->io);
        ds->i->buffer_free(ds->ctx, ds->states);
        ds->i->buffer_free(ds->ctx, ds->weights);
    }
    free(e->seg), free(e->copies), free(e->staging);
    free(e->d), free(e->inst), free(e->has), free(e->prepared), free(e->home), free(e->place);
    free(e);
}

static loom_status check_tid(const loom_exec *e, loom_tid t, size_t offset, size_t nbytes, const char *what)
{
    if (t < 0 || t >= e->g->nt) return loom_error(LOOM_ERR_INVALID, "%s: tensor id %d is not in this graph", what, t);
    if (offset > e->g->t[t].nbytes || nbytes > e->g->t[t].nbytes - offset)
        return loom_error(LOOM_ERR_INVALID, "%s '%s': bytes %zu..%zu asked for, the tensor holds %zu", what,
                          e->g->t[t].desc.name, offset, offset + nbytes, e->g->t[t].nbytes);
    return LOOM_OK;
}

loom_status loom_exec_write(loom_exec *e, loom_tid t, const void *src, size_t nbytes)
{
    loom_status st = check_tid(e, t, 0, nbytes, "write");
    if (st) return st;
    const gtensor *gt = &e->g->t[t];
    if (gt->kind == GT_WEIGHT)
        return loom_error(LOOM_ERR_INVALID, "write: '%s' is a weight; weights are fixed at compile", gt->desc.name);
    for (int32_t d = 0; d < e->nd; d++) {
        /* inputs go to every device that reads them; states and activations live on one */
        if (!HAS(e, t, d) || (gt->kind != GT_INPUT && e->home[t] != d)) continue;
        const loom_tensor *in = INST(e, t, d);
        if ((st = e->d[d].i->buffer_write(e->d[d].ctx, in->buf, in->offset, src, nbytes))) return st;
    }
    return LOOM_OK;
}

loom_status loom_exec_read(loom_exec *e, loom_tid t, void *dst, size_t nbytes)
{
    return loom_exec_read_at(e, t, 0, dst, nbytes);
}

loom_status loom_exec_read_at(loom_exec *e, loom_tid t, size_t offset, void *dst, size_t nbytes)
{
    loom_status st = check_tid(e, t, offset, nbytes, "read");
    if (st) return st;
    const gtensor *gt = &e->g->t[t];
    int32_t d = e->home[t];
    for (int32_t k = 0; d < 0 && k < e->nd; k++)
        if (HAS(e, t, k) && gt->kind == GT_INPUT) d = k;
    if (d < 0) return loom_error(LOOM_ERR_INVALID, "read: '%s' has no readable copy on any device", gt->desc.name);
    const loom_tensor *in = INST(e, t, d);
    return e->d[d].i->buffer_read(e->d[d].ctx, in->buf, in->offset + offset, dst, nbytes);
}

/* The buffer is kept for the next view: a decode step reads the same row size
 * each time, and pinned memory is slow to allocate. */
loom_status loom_exec_view(loom_exec *e, loom_tid t, size_t offset, size_t nbytes, void **view)
{
    *view = NULL;
    loom_status st = check_tid(e, t, offset, nbytes, "view");
    if (st) return st;
    int32_t d = e->home[t];
    if (e->view && (e->view_cap < nbytes || (d >= 0 && e->view_dev >= 0 && e->view_dev != d))) view_free(e);
    if (!e->view) {
        size_t cap = nbytes ? nbytes : 1;
        const loom_backend_i *i = d >= 0 ? e->d[d].i : NULL;
        if (i && i->host_alloc && i->host_free && (e->view = i->host_alloc(e->d[d].ctx, cap))) e->view_dev = d;
        else if (!(e->view = malloc(cap))) return loom_error(LOOM_ERR_NOMEM, "view: out of memory for %zu bytes", cap);
        e->view_cap = cap;
    }
    if ((st = loom_exec_read_at(e, t, offset, e->view, nbytes))) return st;
    *view = e->view;
    return LOOM_OK;
}

static loom_status run_copy(loom_exec *e, const copy_op *c, int32_t rows)
{
    const loom_tensor *src = INST(e, c->tid, c->from), *dst = INST(e, c->tid, c->to);
    devstate *a = &e->d[c->from], *b = &e->d[c->to];
    size_t n = loom_tensor_rows_bytes(&e->g->t[c->tid].desc, (src->flags & LOOM_TENSOR_DYNAMIC) ? rows : src->shape[0]);
    loom_status st;
    void *host = a->i->buffer_host_ptr ? a->i->buffer_host_ptr(a->ctx, src->buf) : NULL;
    if (host) { /* host-visible source: wait for it, then write straight from it */
        if ((st = a->i->sync(a->ctx))) return st;
        return b->i->buffer_write(b->ctx, dst->buf, dst->offset, (const char *)host + src->offset, n);
    }
    if ((st = a->i->buffer_read(a->ctx, src->buf, src->offset, e->staging, n))) return st;
    return b->i->buffer_write(b->ctx, dst->buf, dst->offset, e->staging, n);
}

static loom_status check_step(const loom_exec *e, const loom_step *step)
{
    if (!step) return loom_error(LOOM_ERR_INVALID, "run: no step descriptor");
    if (step->n_tokens < 1 || step->n_tokens > e->g->max_tokens)
        return loom_error(LOOM_ERR_INVALID, "run: %d tokens, the graph was built for 1..%d", step->n_tokens,
                          e->g->max_tokens);
    if (!e->needs_pos) return LOOM_OK;
    if (!step->pos || !step->seq) return loom_error(LOOM_ERR_INVALID, "run: the graph needs positions and sequence slots");
    const loom_graph *g = e->g;
    for (int32_t i = 0; i < g->nn; i++) {
        int64_t slots = 1 << 30, ctx = 1 << 30;
        if (g->n[i].op == LOOM_OP_GQA_ATTN) {
            const loom_tensor *kc = &g->t[g->n[i].src[3]].desc;
            slots = kc->shape[0], ctx = kc->shape[2];
        } else if (g->n[i].op != LOOM_OP_ROPE) {
            continue;
        }
        for (int32_t t = 0; t < step->n_tokens; t++) {
            if (step->pos[t] < 0 || step->pos[t] >= ctx)
                return loom_error(LOOM_ERR_INVALID, "run: token %d has position %d; the context holds 0..%lld", t,
                                  step->pos[t], (long long)ctx - 1);
            if (step->seq[t] < 0 || step->seq[t] >= slots)
                return loom_error(LOOM_ERR_INVALID, "run: token %d is in sequence slot %d; there are %lld slots", t,
                                  step->seq[t], (long long)slots);
        }
    }
    return LOOM_OK;
}

loom_status loom_exec_run(loom_exec *e, const loom_step *step)
{
    loom_status st = check_step(e, step);
    if (st) return st;
    for (int32_t s = 0; s < e->n_seg; s++) {
        segment *sg = &e->seg[s];
        for (int32_t c = 0; c < sg->n_copies; c++)
            if ((st = run_copy(e, &e->copies[sg->copies[c]], step->n_tokens))) return st;
        devstate *ds = &e->d[sg->dev];
        if ((st = ds->i->execute(ds->ctx, sg->prog, step))) {
            char b[512];
            return loom_error(st, "%s: step failed in nodes %d..%d (first: %s): %s", loom_device_label(ds->dev), sg->first,
                              sg->first + sg->count - 1, node_desc(e->g, sg->first, b, sizeof b), loom_last_error());
        }
    }
    return LOOM_OK;
}

loom_status loom_exec_sync(loom_exec *e)
{
    for (int32_t d = 0; d < e->nd; d++) {
        loom_status st = e->d[d].i->sync(e->d[d].ctx);
        if (st) return loom_error(st, "%s: %s", loom_device_label(e->d[d].dev), loom_last_error());
    }
    return LOOM_OK;
}

const loom_device *loom_exec_node_device(const loom_exec *e, int32_t node)
{
    return node >= 0 && node < e->g->nn ? e->d[e->place[node]].dev : NULL;
}

int32_t loom_exec_n_copies(const loom_exec *e) { return e->n_copies; }

size_t loom_exec_arena_bytes(const loom_exec *e, int32_t d, size_t *unshared)
{
    if (d < 0 || d >= e->nd) return 0;
    if (unshared) *unshared = e->d[d].unshared;
    return e->d[d].arena_size;
}

void loom_exec_dump(const loom_exec *e, FILE *f)
{
    const loom_graph *g = e->g;
    fprintf(f, "placed graph: %d nodes, %d segments, %d copies, max %d tokens\n", g->nn, e->n_seg, e->n_copies,
            g->max_tokens);
    fprintf(f, "%4s  %-22s %-10s %-10s %-24s %s\n", "#", "node", "op", "device", "output", "sources");
    for (int32_t s = 0; s < e->n_seg; s++) {
        const segment *sg = &e->seg[s];
        for (int32_t c = 0; c < sg->n_copies; c++) {
            const copy_op *cp = &e->copies[sg->copies[c]];
            fprintf(f, "      copy %s: %s -> %s\n", g->t[cp->tid].desc.name, loom_device_label(e->d[cp->from].dev),
                    loom_device_label(e->d[cp->to].dev));
        }
        for (int32_t i = sg->first; i < sg->first + sg->count; i++) {
            const gnode *n = &g->n[i];
            char ob[96];
            fprintf(f, "%4d  %-22s %-10s %-10s %-24s", i, n->name, loom_op_name(n->op), loom_device_label(e->d[sg->dev].dev),
                    loom_tensor_str(&g->t[n->dst].desc, ob, sizeof ob));
            for (int32_t k = 0; k < n->n_src; k++)
                if (n->src[k] != LOOM_TID_NONE) fprintf(f, "%s%s", k ? ", " : " ", g->t[n->src[k]].desc.name);
            fputc('\n', f);
        }
    }
    for (int32_t d = 0; d < e->nd; d++)
        fprintf(f, "%s: arena %.2f MiB (unshared %.2f MiB), weights %.2f MiB, state %.2f MiB, inputs %.2f KiB\n",
                loom_device_label(e->d[d].dev), e->d[d].arena_size / 1048576.0, e->d[d].unshared / 1048576.0,
                e->d[d].weights_size / 1048576.0, e->d[d].states_size / 1048576.0, e->d[d].io_size / 1024.0);
}
