/* cmd_model.c — model commands: synth, logits, info. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "cli.h"
#include "commands.h"

/* Copy a file into dir/name (the tokenizer travels with a synthetic checkpoint). */
static loom_status copy_file(const char *from, const char *dir, const char *name)
{
    char to[4096], buf[1 << 16];
    snprintf(to, sizeof to, "%s/%s", dir, name);
    FILE *in = fopen(from, "rb"), *out = in ? fopen(to, "wb") : NULL;
    loom_status st = LOOM_OK;
    if (!in || !out) st = loom_error(LOOM_ERR_IO, "cannot copy %s to %s", from, to);
    for (size_t n; !st && (n = fread(buf, 1, sizeof buf, in)) > 0;)
        if (fwrite(buf, 1, n, out) != n) st = loom_error(LOOM_ERR_IO, "%s: write failed", to);
    if (in) fclose(in);
    if (out && fclose(out) && !st) st = loom_error(LOOM_ERR_IO, "%s: write failed", to);
    return st;
}

int loom_cmd_synth(int argc, char **argv)
{
    const char *preset = NULL, *out = NULL, *tokenizer = NULL;
    long layers = 0, seed = 1;
    bool awq = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--preset") && v) preset = v, i++;
        else if (!strcmp(a, "--out") && v) out = v, i++;
        else if (!strcmp(a, "--tokenizer") && v) tokenizer = v, i++;
        else if (!strcmp(a, "--awq")) awq = true;
        else if (!strcmp(a, "--layers")) { if (cli_int("synth", a, v, 1, 1024, &layers)) return 2; i++; }
        else if (!strcmp(a, "--seed")) { if (cli_int("synth", a, v, 0, INT32_MAX, &seed)) return 2; i++; }
        else preset = NULL, out = NULL, i = argc;
    }
    if (!preset || !out) {
        fprintf(stderr, "usage: loom synth --preset NAME [--awq] [--layers N] [--seed S] [--tokenizer FILE] --out DIR\n");
        return 2;
    }
    loom_qwen2_config c;
    if (loom_qwen2_preset(preset, &c)) {
        fprintf(stderr, "loom synth: %s\n", loom_last_error());
        return 2;
    }
    if (layers) c.n_layers = (int32_t)layers;
    if (awq) c.awq = true, c.dtype = LOOM_F16; /* published AWQ checkpoints are f16 outside the int4 layers */
    fprintf(stderr, "loom synth: writing %s (%d layers%s) to %s\n", c.name, c.n_layers, awq ? ", AWQ" : "", out);
    if (loom_qwen2_synth(&c, (uint64_t)seed, out) || (tokenizer && copy_file(tokenizer, out, "tokenizer.json"))) {
        fprintf(stderr, "loom synth: %s\n", loom_last_error());
        return 1;
    }
    return 0;
}

int loom_cmd_logits(int argc, char **argv)
{
    const char *dir = NULL, *tokens = NULL, *out = NULL, *backend = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v) dir = v, i++;
        else if (!strcmp(a, "--tokens") && v) tokens = v, i++;
        else if (!strcmp(a, "--out") && v) out = v, i++;
        else if (!strcmp(a, "--backend") && v) backend = v, i++;
        else dir = NULL, i = argc;
    }
    if (!dir || !tokens || !out) {
        fprintf(stderr, "usage: loom logits -m DIR --tokens 1,2,3 --out FILE [--backend SPEC]\n"
                        "  writes float32 logits [n_tokens][vocab], little-endian, from one prefill\n");
        return 2;
    }
    int32_t *ids = NULL, n = 0, *pos = NULL, *seq = NULL;
    loom_device **devs = NULL;
    int n_devs = 0, rc = 1;
    loom_qwen2_model *m = NULL;
    float *logits = NULL;
    FILE *f = NULL;
    if (cli_tokens("logits", tokens, &ids, &n)) return 2;
    if (cli_select("logits", backend, &devs, &n_devs)) {
        free(ids);
        return 2;
    }
    if (loom_qwen2_model_load(dir, devs, n_devs, n, 1, n, &m)) goto fail;
    const loom_qwen2_config *c = loom_qwen2_model_config(m);
    pos = malloc((size_t)n * sizeof *pos);
    seq = calloc((size_t)n, sizeof *seq);
    logits = malloc((size_t)n * (size_t)c->vocab * sizeof *logits);
    if (!pos || !seq || !logits) {
        loom_error(LOOM_ERR_NOMEM, "out of memory for %d x %d logits", n, c->vocab);
        goto fail;
    }
    for (int32_t t = 0; t < n; t++) pos[t] = t;
    loom_step step = {n, pos, seq};
    if (loom_qwen2_model_step(m, ids, &step, logits)) goto fail;
    if (!(f = fopen(out, "wb")) || fwrite(logits, sizeof *logits, (size_t)n * c->vocab, f) != (size_t)n * c->vocab ||
        fclose(f)) {
        f = NULL;
        loom_error(LOOM_ERR_IO, "%s: cannot write the logits", out);
        goto fail;
    }
    f = NULL;
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "loom logits: %s\n", loom_last_error());
done:
    if (f) fclose(f);
    free(ids), free(pos), free(seq), free(logits);
    loom_qwen2_model_free(m);
    loom_devices_close(devs, n_devs);
    return rc;
}

/* "1.23 GiB", "45.6 MiB" */
static const char *human(double bytes, char *buf, size_t len)
{
    if (bytes >= 1024.0 * 1024 * 1024) snprintf(buf, len, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
    else snprintf(buf, len, "%.1f MiB", bytes / (1024.0 * 1024));
    return buf;
}

/* Provider that hands out one placeholder: info plans memory, reads no weight. */
static const void *no_data(void *ud, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape)
{
    static const uint8_t placeholder[1];
    return placeholder;
}

int loom_cmd_info(int argc, char **argv)
{
    const char *dir = NULL;
    long ctx = 4096, batch = 512;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m") && v) dir = v, i++;
        else if (!strcmp(a, "--ctx")) { if (cli_int("info", a, v, 1, 1 << 22, &ctx)) return 2; i++; }
        else if (!strcmp(a, "--batch")) { if (cli_int("info", a, v, 1, 65536, &batch)) return 2; i++; }
        else dir = NULL, i = argc;
    }
    if (!dir) {
        fprintf(stderr, "usage: loom info -m DIR [--ctx N] [--batch N]\n"
                        "  memory is given for one sequence of --ctx positions (default 4096) and steps of\n"
                        "  up to --batch tokens (default 512)\n");
        return 2;
    }
    loom_qwen2_ckpt *ck;
    if (loom_qwen2_ckpt_open(dir, &ck)) {
        fprintf(stderr, "loom info: %s\n", loom_last_error());
        return 1;
    }
    const loom_qwen2_config *c = loom_qwen2_ckpt_config(ck);
    const loom_st *st = loom_qwen2_ckpt_tensors(ck);
    double params = 0, bytes = 0;
    for (int32_t i = 0; i < loom_st_count(st); i++) {
        const loom_st_tensor *t = loom_st_at(st, i);
        double n = 1;
        for (int32_t d = 0; d < t->ndim; d++) n *= (double)t->shape[d];
        if (strstr(t->name, ".qweight")) n *= 8;  /* eight int4 weights per int32 */
        else if (strstr(t->name, ".qzeros") || strstr(t->name, ".scales")) n = 0;
        params += n;
        bytes += (double)t->nbytes;
    }
    double kv = 2.0 * c->n_layers * c->n_head_kv * c->head_dim * 2.0 * (double)ctx; /* k and v, f16 */
    loom_qwen2_graph qg;
    double act = 0;
    if (!loom_qwen2_build(c, (int32_t)batch, 1, (int32_t)ctx, LOOM_F16, no_data, NULL, NULL, &qg)) {
        act = (double)loom_graph_arena_estimate(qg.g);
        loom_graph_destroy(qg.g);
    }
    printf("model      %s\n", dir);
    printf("layers     %d, hidden %d, heads %d:%d x %d, ffn %d, vocab %d\n", c->n_layers, c->hidden, c->n_head,
           c->n_head_kv, c->head_dim, c->ffn, c->vocab);
    printf("rope       theta %g%s, rms_eps %g, max positions %d\n", c->rope_theta, c->yarn_factor > 1 ? " + YaRN" : "",
           c->rms_eps, c->max_pos);
    printf("weights    %s%s, %s embeddings, %d tensors\n", c->awq ? "AWQ int4 g128 + " : "", loom_dtype_name(c->dtype),
           c->tied ? "tied" : "untied", loom_st_count(st));
    if (params >= 1e9) printf("parameters %.3f B\n", params / 1e9);
    else printf("parameters %.3f M\n", params / 1e6);
    char b1[32], b2[32], b3[32], b4[32];
    printf("memory     weights %s + KV cache %s (%ld positions, f16) + activations %s (%ld-token steps)\n"
           "           = %s on each backend that runs the whole model (the CPU fallback holds only what it runs)\n",
           human(bytes, b1, sizeof b1), human(kv, b2, sizeof b2), ctx, human(act, b3, sizeof b3), batch,
           human(bytes + kv + act, b4, sizeof b4));
    loom_qwen2_ckpt_close(ck);
    return 0;
}
