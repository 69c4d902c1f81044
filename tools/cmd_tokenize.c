/* cmd_tokenize.c — `loom tokenize` and `loom detokenize`: stdin to ids and back. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "loom.h"
#include "tokenizer.h"

static void usage(FILE *f, const char *cmd)
{
    if (!strcmp(cmd, "tokenize"))
        fprintf(f, "usage: loom tokenize (--tokenizer FILE | -m DIR) [--time] < text\n"
                   "  Reads all of stdin (UTF-8, bytes as given) and prints its token ids on one line.\n"
                   "  -m DIR           a checkpoint folder: DIR/tokenizer.json\n"
                   "  --tokenizer FILE a Hugging Face tokenizer.json\n"
                   "  --time           print load and encode times to stderr\n");
    else
        fprintf(f, "usage: loom detokenize (--tokenizer FILE | -m DIR) [--skip-special] < ids\n"
                   "  Reads token ids (separated by spaces, newlines or commas) from stdin and writes\n"
                   "  their exact bytes to stdout.\n"
                   "  --skip-special   leave out special tokens (<|im_end|>, ...)\n");
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int read_stdin(const char *cmd, char **data, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (!buf) return fprintf(stderr, "loom %s: out of memory reading stdin\n", cmd), -1;
        n += fread(buf + n, 1, cap - n, stdin);
        if (n < cap) break;
        char *nb = realloc(buf, 2 * cap + 1);
        if (!nb) free(buf);
        buf = nb;
        cap *= 2;
    }
    if (ferror(stdin)) {
        free(buf);
        return fprintf(stderr, "loom %s: cannot read stdin: %s\n", cmd, strerror(errno)), -1;
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

/* Parses the shared options. Returns 0, or the exit code (2 usage, 0 --help). */
static int parse_args(const char *cmd, int argc, char **argv, char *path, size_t path_cap, bool *flag, const char *flag_name)
{
    const char *file = NULL, *dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout, cmd);
            return -1;
        } else if ((!strcmp(a, "--tokenizer") || !strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            if (!strcmp(a, "--tokenizer")) file = argv[++i];
            else dir = argv[++i];
        } else if (flag_name && !strcmp(a, flag_name)) {
            *flag = true;
        } else {
            fprintf(stderr, "loom %s: %s '%s'\n", cmd,
                    (!strcmp(a, "--tokenizer") || !strcmp(a, "-m") || !strcmp(a, "--model")) ? "missing value after" : "unknown argument", a);
            usage(stderr, cmd);
            return 2;
        }
    }
    if (!file == !dir) {
        fprintf(stderr, "loom %s: give exactly one of --tokenizer FILE or -m DIR\n", cmd);
        usage(stderr, cmd);
        return 2;
    }
    int k = file ? snprintf(path, path_cap, "%s", file) : snprintf(path, path_cap, "%s/tokenizer.json", dir);
    if (k < 0 || (size_t)k >= path_cap) {
        fprintf(stderr, "loom %s: path too long\n", cmd);
        return 2;
    }
    return 0;
}

int loom_cmd_tokenize(int argc, char **argv)
{
    char path[4096];
    bool timing = false;
    int rc = parse_args("tokenize", argc, argv, path, sizeof path, &timing, "--time");
    if (rc) return rc < 0 ? 0 : rc;

    double t0 = now_s();
    loom_tokenizer *tok;
    if (loom_tokenizer_load(path, &tok)) {
        fprintf(stderr, "loom tokenize: %s\n", loom_last_error());
        return 1;
    }
    double t1 = now_s();
    char *text;
    size_t len;
    if (read_stdin("tokenize", &text, &len)) {
        loom_tokenizer_free(tok);
        return 1;
    }
    double t2 = now_s();
    int32_t *ids = NULL;
    size_t n = 0;
    if (loom_tokenize(tok, text, len, &ids, &n)) {
        fprintf(stderr, "loom tokenize: %s\n", loom_last_error());
        free(text);
        loom_tokenizer_free(tok);
        return 1;
    }
    double t3 = now_s();
    for (size_t i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
    rc = fflush(stdout) || ferror(stdout) ? 1 : 0;
    if (rc) fprintf(stderr, "loom tokenize: cannot write stdout: %s\n", strerror(errno));
    if (timing)
        fprintf(stderr, "loom tokenize: load %.1f ms (%d ids); encode %zu bytes -> %zu tokens in %.1f ms (%.1f MB/s)\n",
                1e3 * (t1 - t0), loom_tokenizer_vocab_size(tok), len, n, 1e3 * (t3 - t2),
                t3 > t2 ? (double)len / 1e6 / (t3 - t2) : 0.0);
    free(ids);
    free(text);
    loom_tokenizer_free(tok);
    return rc;
}

int loom_cmd_detokenize(int argc, char **argv)
{
    char path[4096];
    bool skip = false;
    int rc = parse_args("detokenize", argc, argv, path, sizeof path, &skip, "--skip-special");
    if (rc) return rc < 0 ? 0 : rc;

    loom_tokenizer *tok;
    if (loom_tokenizer_load(path, &tok)) {
        fprintf(stderr, "loom detokenize: %s\n", loom_last_error());
        return 1;
    }
    char *in;
    size_t len;
    if (read_stdin("detokenize", &in, &len)) {
        loom_tokenizer_free(tok);
        return 1;
    }
    size_t cap = len / 2 + 1, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    rc = ids ? 0 : (fprintf(stderr, "loom detokenize: out of memory\n"), 1);
    for (char *p = in; !rc && *p;) {
        if (strchr(" \t\r\n\v\f,", *p)) { p++; continue; }
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || (*end && !strchr(" \t\r\n\v\f,", *end))) {
            fprintf(stderr, "loom detokenize: '%.*s' (byte %zu of stdin) is not a token id\n",
                    (int)strcspn(p, " \t\r\n\v\f,") > 40 ? 40 : (int)strcspn(p, " \t\r\n\v\f,"), p, (size_t)(p - in));
            rc = 1;
            break;
        }
        if (v < 0 || v >= loom_tokenizer_vocab_size(tok)) {
            fprintf(stderr, "loom detokenize: token id %lld (number %zu) is out of range 0..%d\n", v, n + 1,
                    loom_tokenizer_vocab_size(tok) - 1);
            rc = 1;
            break;
        }
        ids[n++] = (int32_t)v;
        p = end;
    }
    if (memchr(in, 0, len) && !rc) {
        fprintf(stderr, "loom detokenize: stdin has a NUL byte; expected token ids\n");
        rc = 1;
    }
    char *text = NULL;
    size_t tlen = 0;
    if (!rc && loom_detokenize(tok, ids, n, skip ? LOOM_TOK_SKIP_SPECIAL : 0, &text, &tlen)) {
        fprintf(stderr, "loom detokenize: %s\n", loom_last_error());
        rc = 1;
    }
    if (!rc && (fwrite(text, 1, tlen, stdout) != tlen || fflush(stdout))) {
        fprintf(stderr, "loom detokenize: cannot write stdout: %s\n", strerror(errno));
        rc = 1;
    }
    free(text);
    free(ids);
    free(in);
    loom_tokenizer_free(tok);
    return rc;
}
