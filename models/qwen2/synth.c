/* synth.c — `loom synth`: a checkpoint folder with a preset's exact shapes and
 * random weights, laid out as the publisher's (the stand-in for real weights
 * on machines that cannot download them). The tensor list comes from the graph
 * builder itself, so the names and shapes cannot drift from what loading needs. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "awq.h"
#include "checkpoint.h"

typedef struct {
    loom_st_entry *e;
    int32_t        n, cap;
    loom_status    st;
    uint64_t       seed;
} recorder;

static void add_entry(recorder *r, const char *name, const char *dtype, int32_t ndim, const int64_t *shape)
{
    if (r->st) return;
    if (r->n == r->cap) {
        int32_t c = r->cap ? r->cap * 2 : 512;
        loom_st_entry *e = realloc(r->e, (size_t)c * sizeof *e);
        if (!e) {
            r->st = loom_error(LOOM_ERR_NOMEM, "out of memory");
            return;
        }
        r->e = e, r->cap = c;
    }
    loom_st_entry *e = &r->e[r->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name))) {
        r->st = loom_error(LOOM_ERR_NOMEM, "out of memory");
        return;
    }
    e->dtype = dtype;
    e->ndim = ndim;
    memcpy(e->shape, shape, (size_t)ndim * sizeof *shape);
    r->n++;
}

static const char *st_dtype(loom_dtype dt)
{
    return dt == LOOM_F32 ? "F32" : dt == LOOM_F16 ? "F16" : dt == LOOM_BF16 ? "BF16" : "I32";
}

/* Weight provider that only records what the builder asks for. */
static const void *record(void *ud, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape)
{
    static const uint8_t placeholder[1];
    recorder *r = ud;
    char buf[192];
    if (dt == LOOM_Q4_AWQ) {
        int64_t K = shape[0], N = shape[1];
        snprintf(buf, sizeof buf, "%s.qweight", name);
        add_entry(r, buf, "I32", 2, (int64_t[]){K, N / 8});
        snprintf(buf, sizeof buf, "%s.qzeros", name);
        add_entry(r, buf, "I32", 2, (int64_t[]){K / LOOM_AWQ_GROUP, N / 8});
        snprintf(buf, sizeof buf, "%s.scales", name);
        add_entry(r, buf, "F16", 2, (int64_t[]){K / LOOM_AWQ_GROUP, N});
    } else {
        add_entry(r, name, st_dtype(dt), ndim, shape);
    }
    return r->st ? NULL : placeholder;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform(uint64_t *s) /* in [-1, 1) */
{
    return (double)(splitmix(s) >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static void put(void *buf, size_t i, const char *dtype, double v)
{
    if (!strcmp(dtype, "F32")) ((float *)buf)[i] = (float)v;
    else if (!strcmp(dtype, "F16")) ((uint16_t *)buf)[i] = loom_f32_to_f16((float)v);
    else ((uint16_t *)buf)[i] = loom_f32_to_bf16((float)v);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Random values shaped like a trained model's: unit-ish norms, weights of
 * standard deviation ~1/sqrt(fan-in), AWQ zeros near 8. */
static loom_status fill(void *ud, int32_t i, void *buf, size_t nbytes)
{
    recorder *r = ud;
    const loom_st_entry *e = &r->e[i];
    uint64_t s = r->seed * 0x100000001b3ull + (uint64_t)i * 0x9e3779b97f4a7c15ull;
    size_t n = 1;
    for (int32_t d = 0; d < e->ndim; d++) n *= (size_t)e->shape[d];
    const double sqrt3 = 1.7320508075688772;
    if (ends_with(e->name, ".qweight")) {
        for (size_t k = 0; k < n; k++) ((uint32_t *)buf)[k] = (uint32_t)splitmix(&s);
    } else if (ends_with(e->name, ".qzeros")) {
        for (size_t k = 0; k < n; k++) {
            uint32_t w = 0;
            for (int j = 0; j < 8; j++) w |= (uint32_t)(6 + splitmix(&s) % 4) << (4 * j);
            ((uint32_t *)buf)[k] = w;
        }
    } else if (ends_with(e->name, ".scales")) { /* (q - z) has std ~4.6; target 1/sqrt(K) */
        double K = (double)e->shape[0] * LOOM_AWQ_GROUP;
        for (size_t k = 0; k < n; k++) put(buf, k, "F16", (1.0 + 0.25 * uniform(&s)) / (4.6 * sqrt(K)));
    } else if (e->ndim == 1 && ends_with(e->name, ".bias")) {
        for (size_t k = 0; k < n; k++) put(buf, k, e->dtype, 0.1 * uniform(&s));
    } else if (e->ndim == 1) { /* norm weights */
        for (size_t k = 0; k < n; k++) put(buf, k, e->dtype, 1.0 + 0.2 * uniform(&s));
    } else { /* [N, K] dense: uniform with std 1/sqrt(K) */
        double a = sqrt3 / sqrt((double)e->shape[e->ndim - 1]);
        if (strstr(e->name, "embed_tokens")) a = sqrt3 * 0.5;
        for (size_t k = 0; k < n; k++) put(buf, k, e->dtype, a * uniform(&s));
    }
    (void)nbytes;
    return LOOM_OK;
}

static const char *hf_dtype(loom_dtype dt)
{
    return dt == LOOM_F32 ? "float32" : dt == LOOM_F16 ? "float16" : "bfloat16";
}

static loom_status write_config(const loom_qwen2_config *c, const char *path)
{
    cJSON *j = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(j, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("Qwen2ForCausalLM"));
    cJSON_AddStringToObject(j, "model_type", "qwen2");
    cJSON_AddStringToObject(j, "hidden_act", "silu");
    cJSON_AddNumberToObject(j, "hidden_size", c->hidden);
    cJSON_AddNumberToObject(j, "intermediate_size", c->ffn);
    cJSON_AddNumberToObject(j, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(j, "num_attention_heads", c->n_head);
    cJSON_AddNumberToObject(j, "num_key_value_heads", c->n_head_kv);
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab);
    cJSON_AddNumberToObject(j, "max_position_embeddings", c->max_pos);
    cJSON_AddNumberToObject(j, "rope_theta", c->rope_theta);
    cJSON_AddNumberToObject(j, "rms_norm_eps", c->rms_eps);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", c->tied);
    cJSON_AddBoolToObject(j, "use_sliding_window", 0);
    cJSON_AddStringToObject(j, "torch_dtype", hf_dtype(c->dtype));
    cJSON_AddNumberToObject(j, "bos_token_id", 151643);
    cJSON_AddNumberToObject(j, "eos_token_id", 151645);
    if (c->yarn_factor > 1) {
        cJSON *rs = cJSON_AddObjectToObject(j, "rope_scaling");
        cJSON_AddStringToObject(rs, "type", "yarn");
        cJSON_AddNumberToObject(rs, "factor", c->yarn_factor);
        cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c->yarn_orig_ctx);
    }
    if (c->awq) {
        cJSON *q = cJSON_AddObjectToObject(j, "quantization_config");
        cJSON_AddNumberToObject(q, "bits", 4);
        cJSON_AddNumberToObject(q, "group_size", LOOM_AWQ_GROUP);
        cJSON_AddStringToObject(q, "quant_method", "awq");
        cJSON_AddStringToObject(q, "version", "gemm");
        cJSON_AddBoolToObject(q, "zero_point", 1);
    }
    char *text = cJSON_Print(j);
    cJSON_Delete(j);
    if (!text) return loom_error(LOOM_ERR_NOMEM, "out of memory");
    FILE *f = fopen(path, "w");
    loom_status st = LOOM_OK;
    if (!f || fputs(text, f) < 0 || fputc('\n', f) == EOF) st = loom_error(LOOM_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    if (f && fclose(f) && !st) st = loom_error(LOOM_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    free(text);
    return st;
}

loom_status loom_qwen2_synth(const loom_qwen2_config *c, uint64_t seed, const char *dir)
{
    loom_status st = loom_qwen2_validate(c);
    if (st) return st;
    if (mkdir(dir, 0755) && errno != EEXIST) return loom_error(LOOM_ERR_IO, "%s: cannot create folder: %s", dir, strerror(errno));
    recorder r = {.seed = seed};
    loom_qwen2_graph qg;
    st = loom_qwen2_build(c, 1, 1, 1, LOOM_F16, record, &r, NULL, &qg);
    if (!st) loom_graph_destroy(qg.g);
    if (!st) st = r.st;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!st) st = write_config(c, path);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!st) st = loom_st_write(path, r.e, r.n, fill, &r);
    for (int32_t i = 0; i < r.n; i++) free((char *)r.e[i].name);
    free(r.e);
    return st;
}
