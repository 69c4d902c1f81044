/* checkpoint.c — a Qwen2 checkpoint folder as the publisher ships it:
 * config.json + safetensors, served to the graph builder tensor by tensor,
 * each checked against the config before use. */
#include <stdlib.h>

#include "awq.h"
#include "checkpoint.h"

struct loom_qwen2_ckpt {
    loom_qwen2_config cfg;
    loom_st          *st;
    void            **blobs; /* joined AWQ weights, alive until loom_qwen2_ckpt_drop_staging */
    int32_t           n_blobs;
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

void loom_qwen2_ckpt_drop_staging(loom_qwen2_ckpt *m)
{
    for (int32_t i = 0; i < m->n_blobs; i++) free(m->blobs[i]);
    free(m->blobs);
    m->blobs = NULL;
    m->n_blobs = 0;
}

void loom_qwen2_ckpt_close(loom_qwen2_ckpt *m)
{
    if (!m) return;
    loom_qwen2_ckpt_drop_staging(m);
    loom_st_close(m->st);
    free(m);
}

const loom_qwen2_config *loom_qwen2_ckpt_config(const loom_qwen2_ckpt *m) { return &m->cfg; }
const loom_st *loom_qwen2_ckpt_tensors(const loom_qwen2_ckpt *m) { return m->st; }

/* An AWQ linear layer {K, N}: the three published tensors, checked, joined. */
static const void *awq_weight(loom_qwen2_ckpt *m, const char *prefix, int64_t K, int64_t N)
{
    char name[160];
    const loom_st_tensor *qw, *qz, *sc;
    snprintf(name, sizeof name, "%s.qweight", prefix);
    if (loom_st_get(m->st, name, LOOM_I32, 2, (int64_t[]){K, N / 8}, &qw)) return NULL;
    snprintf(name, sizeof name, "%s.qzeros", prefix);
    if (loom_st_get(m->st, name, LOOM_I32, 2, (int64_t[]){K / LOOM_AWQ_GROUP, N / 8}, &qz)) return NULL;
    snprintf(name, sizeof name, "%s.scales", prefix);
    if (loom_st_get(m->st, name, LOOM_F16, 2, (int64_t[]){K / LOOM_AWQ_GROUP, N}, &sc)) return NULL;
    void **b = realloc(m->blobs, (size_t)(m->n_blobs + 1) * sizeof *b);
    if (!b) return loom_error(LOOM_ERR_NOMEM, "out of memory"), NULL;
    m->blobs = b;
    if (!(b[m->n_blobs] = malloc(loom_awq_nbytes(K, N))))
        return loom_error(LOOM_ERR_NOMEM, "out of memory: %zu bytes for %s", loom_awq_nbytes(K, N), prefix), NULL;
    loom_awq_join(K, N, qw->data, qz->data, sc->data, b[m->n_blobs]);
    return b[m->n_blobs++];
}

const void *loom_qwen2_ckpt_weight(void *ud, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape)
{
    loom_qwen2_ckpt *m = ud;
    if (dt == LOOM_Q4_AWQ) return awq_weight(m, name, shape[0], shape[1]);
    const loom_st_tensor *t;
    return loom_st_get(m->st, name, dt, ndim, shape, &t) ? NULL : t->data;
}

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
    if (!st) st = loom_qwen2_build(&m->ck->cfg, max_tokens, n_slots, n_ctx, LOOM_F16, loom_qwen2_ckpt_weight, m->ck, &m->qg);
    if (!st) st = loom_graph_compile(m->qg.g, devs, n_devs, 0, &m->e);
    if (m->ck) loom_qwen2_ckpt_drop_staging(m->ck); /* devices hold their own copies now */
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
