/* config.c — Qwen2 config.json: the fields loom needs, each checked. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <strings.h>

#include "qwen2.h"

typedef struct {
    const char *path;
    cJSON      *root;
} cfg;

/* An integer field: required, or optional keeping *v when absent. */
static loom_status get_int(cfg *c, const char *key, bool required, int32_t *v)
{
    cJSON *e = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!e || cJSON_IsNull(e)) {
        if (required) return loom_error(LOOM_ERR_FORMAT, "%s: field '%s' is missing", c->path, key);
        return LOOM_OK;
    }
    if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 || e->valuedouble > 1e9)
        return loom_error(LOOM_ERR_FORMAT, "%s: field '%s' must be a non-negative integer", c->path, key);
    *v = (int32_t)e->valuedouble;
    return LOOM_OK;
}

static loom_status get_float(cJSON *obj, const char *path, const char *key, float *v)
{
    cJSON *e = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!e || cJSON_IsNull(e)) return LOOM_OK;
    if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble))
        return loom_error(LOOM_ERR_FORMAT, "%s: field '%s' must be a number", path, key);
    *v = (float)e->valuedouble;
    return LOOM_OK;
}

static loom_status get_dtype(cfg *c, loom_dtype *dt)
{
    /* newer transformers write "dtype", older "torch_dtype" */
    cJSON *e = cJSON_GetObjectItemCaseSensitive(c->root, "dtype");
    if (!cJSON_IsString(e)) e = cJSON_GetObjectItemCaseSensitive(c->root, "torch_dtype");
    if (!e) return LOOM_OK;
    const char *s = cJSON_IsString(e) ? e->valuestring : "";
    if (!strcmp(s, "bfloat16")) *dt = LOOM_BF16;
    else if (!strcmp(s, "float16")) *dt = LOOM_F16;
    else if (!strcmp(s, "float32")) *dt = LOOM_F32;
    else return loom_error(LOOM_ERR_FORMAT, "%s: dtype '%s' is not bfloat16, float16 or float32", c->path, s);
    return LOOM_OK;
}

/* RoPE: transformers <= 4 writes rope_theta and rope_scaling at the top
 * level; transformers 5 writes one rope_parameters object holding both. */
static loom_status get_rope(cfg *c, loom_qwen2_config *out)
{
    cJSON *rs = cJSON_GetObjectItemCaseSensitive(c->root, "rope_scaling");
    cJSON *rp = cJSON_GetObjectItemCaseSensitive(c->root, "rope_parameters");
    loom_status st = get_float(c->root, c->path, "rope_theta", &out->rope_theta);
    if (!st && cJSON_IsObject(rp)) st = get_float(rp, c->path, "rope_theta", &out->rope_theta);
    if (st) return st;
    if (!cJSON_IsObject(rs)) rs = rp;
    if (!cJSON_IsObject(rs)) return LOOM_OK;
    cJSON *type = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(type)) type = cJSON_GetObjectItemCaseSensitive(rs, "type");
    const char *t = cJSON_IsString(type) ? type->valuestring : "";
    if (!*t || !strcmp(t, "default")) return LOOM_OK;
    if (strcmp(t, "yarn"))
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: rope scaling type '%s' is not supported (only yarn)", c->path, t);
    out->yarn_orig_ctx = (float)out->max_pos;
    if ((st = get_float(rs, c->path, "factor", &out->yarn_factor)) ||
        (st = get_float(rs, c->path, "original_max_position_embeddings", &out->yarn_orig_ctx)) ||
        (st = get_float(rs, c->path, "beta_fast", &out->yarn_beta_fast)) ||
        (st = get_float(rs, c->path, "beta_slow", &out->yarn_beta_slow)))
        return st;
    if (!(out->yarn_factor >= 1) || !(out->yarn_orig_ctx >= 1))
        return loom_error(LOOM_ERR_FORMAT, "%s: rope_scaling needs factor >= 1 and original_max_position_embeddings >= 1",
                          c->path);
    return LOOM_OK;
}

static loom_status get_quant(cfg *c, loom_qwen2_config *out)
{
    cJSON *q = cJSON_GetObjectItemCaseSensitive(c->root, "quantization_config");
    if (!q || cJSON_IsNull(q)) return LOOM_OK;
    cJSON *m = cJSON_GetObjectItemCaseSensitive(q, "quant_method");
    const char *method = cJSON_IsString(m) ? m->valuestring : "";
    if (strcmp(method, "awq"))
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: quantization '%s' is not supported (only awq)", c->path, method);
    cJSON *bits = cJSON_GetObjectItemCaseSensitive(q, "bits"), *gs = cJSON_GetObjectItemCaseSensitive(q, "group_size");
    cJSON *zp = cJSON_GetObjectItemCaseSensitive(q, "zero_point"), *ver = cJSON_GetObjectItemCaseSensitive(q, "version");
    if (!cJSON_IsNumber(bits) || bits->valuedouble != 4 || !cJSON_IsNumber(gs) || gs->valuedouble != LOOM_AWQ_GROUP)
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: AWQ must be 4 bits with group_size %d", c->path, LOOM_AWQ_GROUP);
    if (zp && !cJSON_IsTrue(zp))
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: AWQ without zero points is not supported", c->path);
    if (ver && (!cJSON_IsString(ver) || strcasecmp(ver->valuestring, "gemm")))
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: AWQ version '%s' is not supported (only gemm)", c->path,
                          cJSON_IsString(ver) ? ver->valuestring : "?");
    out->awq = true;
    return LOOM_OK;
}

loom_status loom_qwen2_config_load(const char *dir, loom_qwen2_config *out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return loom_error(LOOM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    bool more = fgetc(f) != EOF;
    fclose(f);
    if (more) return loom_error(LOOM_ERR_FORMAT, "%s: larger than %zu bytes; not a model config", path, sizeof buf - 1);
    buf[n] = 0;
    cfg c = {path, cJSON_Parse(buf)};
    if (!cJSON_IsObject(c.root)) {
        cJSON_Delete(c.root);
        return loom_error(LOOM_ERR_FORMAT, "%s: not a JSON object", path);
    }
    loom_qwen2_config q = {.rope_theta = 10000.0f, .rms_eps = 1e-6f, .dtype = LOOM_BF16, .max_pos = 32768, .tied = false};
    snprintf(q.name, sizeof q.name, "config.json");
    loom_status st = LOOM_OK;
    cJSON *arch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c.root, "architectures"), 0);
    if (cJSON_IsString(arch) && strcmp(arch->valuestring, "Qwen2ForCausalLM"))
        st = loom_error(LOOM_ERR_UNSUPPORTED, "%s: architecture %s is not Qwen2ForCausalLM", path, arch->valuestring);
    int32_t head_dim = 0;
    if (!st) st = get_int(&c, "num_hidden_layers", true, &q.n_layers);
    if (!st) st = get_int(&c, "hidden_size", true, &q.hidden);
    if (!st) st = get_int(&c, "num_attention_heads", true, &q.n_head);
    if (!st) st = get_int(&c, "intermediate_size", true, &q.ffn);
    if (!st) st = get_int(&c, "vocab_size", true, &q.vocab);
    q.n_head_kv = q.n_head;
    if (!st) st = get_int(&c, "num_key_value_heads", false, &q.n_head_kv);
    if (!st) st = get_int(&c, "max_position_embeddings", false, &q.max_pos);
    if (!st) st = get_int(&c, "head_dim", false, &head_dim);
    if (!st) st = get_float(c.root, path, "rms_norm_eps", &q.rms_eps);
    if (!st) st = get_dtype(&c, &q.dtype);
    cJSON *tie = cJSON_GetObjectItemCaseSensitive(c.root, "tie_word_embeddings");
    if (tie) q.tied = cJSON_IsTrue(tie);
    if (!st) st = get_rope(&c, &q);
    if (!st) st = get_quant(&c, &q);
    cJSON_Delete(c.root);
    if (st) return st;
    if (q.n_head > 0) q.head_dim = head_dim ? head_dim : q.hidden / q.n_head;
    if (!(q.rms_eps > 0) || !(q.rope_theta > 1))
        return loom_error(LOOM_ERR_FORMAT, "%s: rms_norm_eps must be > 0 and rope_theta > 1", path);
    if ((st = loom_qwen2_validate(&q))) return loom_error(st, "%s: %s", path, loom_last_error());
    *out = q;
    return LOOM_OK;
}
