/* cli.c — argument helpers shared by the subcommands. */
#include <errno.h>
#include <stdlib.h>

#include "cli.h"

int cli_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "loom %s: %s needs an integer in %ld..%ld, got '%s'\n", cmd, flag, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int cli_tokens(const char *cmd, const char *s, int32_t **ids, int32_t *n)
{
    *ids = NULL;
    *n = 0;
    size_t cap = 1;
    for (const char *p = s; *p; p++) cap += *p == ',' || *p == ' ';
    int32_t *out = malloc(cap * sizeof *out);
    if (!out) return fprintf(stderr, "loom %s: out of memory\n", cmd), -1;
    const char *p = s;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',' && *end != ' ')) {
            fprintf(stderr, "loom %s: --tokens: '%.20s' is not a token id (non-negative integers, comma-separated)\n", cmd, p);
            free(out);
            return -1;
        }
        out[(*n)++] = (int32_t)v;
        p = end;
    }
    if (!*n) {
        fprintf(stderr, "loom %s: --tokens is empty\n", cmd);
        free(out);
        return -1;
    }
    *ids = out;
    return 0;
}

int cli_select(const char *cmd, const char *backend, loom_device ***devs, int *n)
{
    if (loom_select(backend, devs, n)) {
        fprintf(stderr, "loom %s: %s\n", cmd, loom_last_error());
        return -1;
    }
    return 0;
}
