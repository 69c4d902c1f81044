/* cmd_run.c — `loom run`: generate from a prompt, streaming text, then timings. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "chat.h"
#include "generate.h"

static bool print_text(void *ud, int32_t id, const char *text, size_t len)
{
    bool ids = *(bool *)ud;
    if (ids) {
        if (id >= 0) printf("%d ", id);
    } else {
        fwrite(text, 1, len, stdout);
    }
    fflush(stdout);
    return true;
}

static const char *stop_name(loom_stop_reason r)
{
    switch (r) {
    case LOOM_STOP_EOS: return "end of sequence";
    case LOOM_STOP_STRING: return "stop string";
    case LOOM_STOP_LENGTH: return "token limit";
    case LOOM_STOP_CONTEXT: return "context full";
    case LOOM_STOP_CALLBACK: return "stopped";
    }
    return "?";
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loom run -m DIR (-p PROMPT | --tokens 1,2,3) [options]\n"
            "  -n N               tokens to generate (default 128)\n"
            "  --chat             wrap the prompt in the model's chat template (ChatML)\n"
            "  --system TEXT      system message for --chat\n"
            "  --ids              print token ids instead of text\n"
            "  --temp T           temperature (default 0: greedy)\n"
            "  --top-k K --top-p P --min-p P --repeat-penalty R --presence-penalty P --frequency-penalty P\n"
            "  --seed S           sampling seed (default 0)\n"
            "  --stop TEXT        stop string (repeatable)\n"
            "  --ctx N            context positions (default: prompt + n, at least 512)\n"
            "  --backend SPEC     overrides LOOM_BACKEND\n");
}

static int parse_float(const char *flag, const char *s, float *out)
{
    char *end = NULL;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end) {
        fprintf(stderr, "loom run: %s needs a number, got '%s'\n", flag, s ? s : "");
        return -1;
    }
    *out = (float)v;
    return 0;
}

int loom_cmd_run(int argc, char **argv)
{
    const char *dir = NULL, *prompt = NULL, *tokens = NULL, *backend = NULL, *system = NULL;
    const char *stops[16];
    int n_stop = 0;
    long n_new = 128, seed = 0, ctx = 0, top_k = 0;
    bool chat = false, ids_out = false;
    loom_gen_params gp = {.sampler = loom_sampler_defaults()};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "-m") && v) dir = v, i++;
        else if (!strcmp(a, "-p") && v) prompt = v, i++;
        else if (!strcmp(a, "--tokens") && v) tokens = v, i++;
        else if (!strcmp(a, "--backend") && v) backend = v, i++;
        else if (!strcmp(a, "--system") && v) system = v, i++;
        else if (!strcmp(a, "--chat")) chat = true;
        else if (!strcmp(a, "--ids")) ids_out = true;
        else if (!strcmp(a, "--stop") && v && n_stop < 16) stops[n_stop++] = v, i++;
        else if (!strcmp(a, "-n")) bad = cli_int("run", a, v, 0, 1 << 20, &n_new), i++;
        else if (!strcmp(a, "--seed")) bad = cli_int("run", a, v, 0, INT64_MAX, &seed), i++;
        else if (!strcmp(a, "--ctx")) bad = cli_int("run", a, v, 1, 1 << 22, &ctx), i++;
        else if (!strcmp(a, "--top-k")) bad = cli_int("run", a, v, 0, 1 << 30, &top_k), i++;
        else if (!strcmp(a, "--temp")) bad = parse_float(a, v, &gp.sampler.temperature), i++;
        else if (!strcmp(a, "--top-p")) bad = parse_float(a, v, &gp.sampler.top_p), i++;
        else if (!strcmp(a, "--min-p")) bad = parse_float(a, v, &gp.sampler.min_p), i++;
        else if (!strcmp(a, "--repeat-penalty")) bad = parse_float(a, v, &gp.sampler.repetition_penalty), i++;
        else if (!strcmp(a, "--presence-penalty")) bad = parse_float(a, v, &gp.sampler.presence_penalty), i++;
        else if (!strcmp(a, "--frequency-penalty")) bad = parse_float(a, v, &gp.sampler.frequency_penalty), i++;
        else {
            fprintf(stderr, "loom run: unknown or incomplete option '%s'\n", a);
            usage();
            return 2;
        }
        if (bad) return 2;
    }
    if (!dir || (!prompt == !tokens)) {
        usage();
        return 2;
    }
    gp.max_new = (int32_t)n_new;
    gp.sampler.top_k = (int32_t)top_k;
    gp.sampler.seed = (uint64_t)seed;
    gp.stop = stops;
    gp.n_stop = n_stop;
    if (loom_sampler_check(&gp.sampler)) {
        fprintf(stderr, "loom run: %s\n", loom_last_error());
        return 2;
    }

    int rc = 1;
    loom_tokenizer *tok = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    char *text = NULL;
    loom_device **devs = NULL;
    int n_devs = 0;
    loom_qwen2_model *m = NULL;
    if (prompt || !ids_out) { /* text in or out needs the checkpoint's tokenizer */
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        if (loom_tokenizer_load(path, &tok)) goto fail;
    }
    if (prompt) {
        const char *in = prompt;
        if (chat) {
            loom_chat_msg msgs[2] = {{"system", system, NULL}, {"user", prompt, NULL}};
            int first = system ? 0 : 1;
            if (loom_chat_render(msgs + first, (size_t)(2 - first), NULL, true, &text)) goto fail;
            in = text;
        }
        if (loom_tokenize(tok, in, strlen(in), &ids, &n_ids)) goto fail;
    } else {
        int32_t n;
        if (cli_tokens("run", tokens, &ids, &n)) goto done;
        n_ids = (size_t)n;
    }
    if (!ctx) ctx = (long)n_ids + n_new + 1 > 512 ? (long)n_ids + n_new + 1 : 512;
    if (cli_select("run", backend, &devs, &n_devs)) goto done;
    if (loom_qwen2_model_load(dir, devs, n_devs, n_ids < 512 ? (int32_t)n_ids : 512, 1, (int32_t)ctx, &m)) goto fail;
    loom_gen_stats stats;
    if (loom_generate(m, tok, ids, (int32_t)n_ids, &gp, print_text, &ids_out, NULL, &stats)) {
        printf("\n");
        goto fail;
    }
    printf("\n");
    fflush(stdout);
    fprintf(stderr, "[%s] prompt %d tokens in %.2f s (%.1f tok/s), generated %d tokens in %.2f s (%.1f tok/s), stop: %s\n",
            loom_device_label(devs[0]), stats.n_prompt, stats.prompt_s, stats.n_prompt / (stats.prompt_s > 0 ? stats.prompt_s : 1),
            stats.n_generated, stats.gen_s, stats.n_generated > 1 ? (stats.n_generated - 1) / stats.gen_s : 0.0,
            stop_name(stats.stop));
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "loom run: %s\n", loom_last_error());
done:
    loom_qwen2_model_free(m);
    loom_devices_close(devs, n_devs);
    loom_tokenizer_free(tok);
    free(ids), free(text);
    return rc;
}
