/* checkpoint.c — a Qwen2 checkpoint folder as the publisher ships it:
 * config.json + safetensors, served to the graph builder tensor by tensor,
 * each checked against the config before use. */
#include <stdlib.h>

#include "awq.h"
#include "checkpoint.h"

struct loom_qwen2_ckpt {
    loom_qwen2_config cfg;
    loom_st          *st;
};

loom_status loom_qwen2_ckpt_open(const char *dir, loom_qwen2_ckpt **out)
{
    *out = NULL;
    loom_qwen2_ckpt *m = calloc(1, sizeof *m);
    if (!m) return loom_error(LOOM_ERR_NOMEM, "out of memory");
    loom_status st = loom_qwen2_config_load(dir, &m->cfg);
    if (!st) st = loom_st_open_dir(dir, &m->st);
    if (st) {
        loom_qwen2_ckpt_close(m);
        return st;
    }
    *out = m;
    return LOOM_OK;
}

void loom_qwen2_ckpt_close(loom_qwen2_ckpt *m)
{
    if (!m) return;
    loom_st_close(m->st);
    free(m);
}

const loom_qwen2_config *loom_qwen2_ckpt_config(const loom_qwen2_ckpt *m) { return &m->cfg; }
const loom_st *loom_qwen2_ckpt_tensors(const loom_qwen2_ckpt *m) { return m->st; }

/* An AWQ linear layer {K, N}: its three published tensors, checked. */
static loom_status awq_parts(loom_qwen2_ckpt *m, const char *prefix, int64_t K, int64_t N, const loom_st_tensor *p[3])
{
    char name[160];
    loom_status st;
    snprintf(name, sizeof name, "%s.qweight", prefix);
    if ((st = loom_st_get(m->st, name, LOOM_I32, 2, (int64_t[]){K, N / 8}, &p[0]))) return st;
    snprintf(name, sizeof name, "%s.qzeros", prefix);
    if ((st = loom_st_get(m->st, name, LOOM_I32, 2, (int64_t[]){K / LOOM_AWQ_GROUP, N / 8}, &p[1]))) return st;
    snprintf(name, sizeof name, "%s.scales", prefix);
    return loom_st_get(m->st, name, LOOM_F16, 2, (int64_t[]){K / LOOM_AWQ_GROUP, N}, &p[2]);
}

/* Dense weights are the mapped file's bytes; AWQ layers are checked now and
 * joined into loom's one-blob form only when a device takes them (awq_load). */
const void *loom_qwen2_ckpt_weight(void *ud, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape)
{
    loom_qwen2_ckpt *m = ud;
    const loom_st_tensor *t, *p[3];
    if (dt == LOOM_Q4_AWQ) return awq_parts(m, name, shape[0], shape[1], p) ? NULL : LOOM_QWEN2_LATER;
    return loom_st_get(m->st, name, dt, ndim, shape, &t) ? NULL : t->data;
}

static const void *awq_load(void *ud, const char *prefix, loom_dtype dt, int32_t ndim, const int64_t *shape)
{
    const loom_st_tensor *p[3];
    if (dt != LOOM_Q4_AWQ || ndim != 2 || awq_parts(ud, prefix, shape[0], shape[1], p)) return NULL;
    size_t n = loom_awq_nbytes(shape[0], shape[1]);
    void *blob = malloc(n);
    if (!blob) return loom_error(LOOM_ERR_NOMEM, "out of memory: %zu bytes for %s", n, prefix), NULL;
    loom_awq_join(shape[0], shape[1], p[0]->data, p[1]->data, p[2]->data, blob);
    return blob;
}

static void awq_unload(void *ud, const void *blob)
{
    (void)ud;
    free((void *)blob);
}

loom_weight_loader loom_qwen2_ckpt_loader(loom_qwen2_ckpt *m) { return (loom_weight_loader){awq_load, awq_unload, m}; }

struct loom_qwen2_model {
    loom_qwen2_ckpt *ck;
    loom_qwen2_graph qg;
    loom_exec       *e;
    int32_t          n_ctx;
};

void loom_qwen2_model_free(loom_qwen2_model *m)
{
    if (!m) return;
    loom_exec_destroy(m->e);
    loom_graph_destroy(m->qg.g);
    loom_qwen2_ckpt_close(m->ck);
    free(m);
}

loom_status loom_qwen2_model_load(const char *dir, loom_device *const *devs, int32_t n_devs, int32_t max_tokens,
                                  int32_t n_slots, int32_t n_ctx, loom_qwen2_model **out)
{
    *out = NULL;
    loom_qwen2_model *m = calloc(1, sizeof *m);
    if (!m) return loom_error(LOOM_ERR_NOMEM, "out of memory");
    loom_status st = loom_qwen2_ckpt_open(dir, &m->ck);
    loom_weight_loader awq = m->ck ? loom_qwen2_ckpt_loader(m->ck) : (loom_weight_loader){0};
    if (!st)
        st = loom_qwen2_build(&m->ck->cfg, max_tokens, n_slots, n_ctx, LOOM_F16, loom_qwen2_ckpt_weight, m->ck, &awq, &m->qg);
    if (!st) st = loom_graph_compile(m->qg.g, devs, n_devs, 0, &m->e);
    if (st) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", loom_last_error());
        loom_qwen2_model_free(m);
        return loom_error(st, "%s", msg);
    }
    m->n_ctx = n_ctx;
    *out = m;
    return LOOM_OK;
}

int32_t loom_qwen2_model_max_tokens(const loom_qwen2_model *m) { return loom_graph_max_tokens(m->qg.g); }
int32_t loom_qwen2_model_n_ctx(const loom_qwen2_model *m) { return m->n_ctx; }

const loom_qwen2_config *loom_qwen2_model_config(const loom_qwen2_model *m) { return &m->ck->cfg; }
loom_exec *loom_qwen2_model_exec(const loom_qwen2_model *m) { return m->e; }
const loom_graph *loom_qwen2_model_graph(const loom_qwen2_model *m) { return m->qg.g; }

static loom_status model_run(loom_qwen2_model *m, const int32_t *ids, const loom_step *step)
{
    const loom_qwen2_config *c = &m->ck->cfg;
    for (int32_t t = 0; t < step->n_tokens; t++)
        if (ids[t] < 0 || ids[t] >= c->vocab)
            return loom_error(LOOM_ERR_INVALID, "token id %d at position %d is outside the vocabulary (0..%d)", ids[t], t,
                              c->vocab - 1);
    loom_status st;
    if (step->n_tokens > loom_graph_max_tokens(m->qg.g))
        return loom_error(LOOM_ERR_INVALID, "%d tokens in one step; the model was loaded for at most %d", step->n_tokens,
                          loom_graph_max_tokens(m->qg.g));
    if ((st = loom_exec_write(m->e, m->qg.ids, ids, (size_t)step->n_tokens * sizeof *ids))) return st;
    return loom_exec_run(m->e, step);
}

loom_status loom_qwen2_model_step(loom_qwen2_model *m, const int32_t *ids, const loom_step *step, float *logits)
{
    size_t row = (size_t)m->ck->cfg.vocab * sizeof *logits;
    loom_status st = model_run(m, ids, step);
    if (st || !logits) return st;
    return loom_exec_read(m->e, m->qg.logits, logits, (size_t)step->n_tokens * row);
}

loom_status loom_qwen2_model_step_last(loom_qwen2_model *m, const int32_t *ids, const loom_step *step, float *logits)
{
    size_t row = (size_t)m->ck->cfg.vocab * sizeof *logits;
    loom_status st = model_run(m, ids, step);
    if (st || !logits) return st;
    return loom_exec_read_at(m->e, m->qg.logits, (size_t)(step->n_tokens - 1) * row, logits, row);
}

loom_status loom_qwen2_model_step_view(loom_qwen2_model *m, const int32_t *ids, const loom_step *step, float **logits)
{
    size_t row = (size_t)m->ck->cfg.vocab * sizeof **logits;
    *logits = NULL;
    loom_status st = model_run(m, ids, step);
    void *v = NULL;
    if (!st) st = loom_exec_view(m->e, m->qg.logits, (size_t)(step->n_tokens - 1) * row, row, &v);
    *logits = v;
    return st;
}
