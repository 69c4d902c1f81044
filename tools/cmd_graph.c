/* cmd_graph.c — `loom graph-dump`: build a Qwen2.5-shaped graph, place it on
 * the selected devices and print where every node runs. */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "qwen2.h"

/* Every weight reads from one zero-filled block big enough for the largest:
 * the dump shows placement and memory, not numbers. */
typedef struct {
    void  *block;
    size_t size;
} dummy_weights;

static const void *dummy_weight(void *ud, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape)
{
    dummy_weights *w = ud;
    size_t n;
    if (loom_tensor_nbytes(dt, ndim, shape, &n)) return NULL;
    if (n > w->size) {
        free(w->block);
        if (!(w->block = calloc(1, n))) {
            w->size = 0;
            loom_error(LOOM_ERR_NOMEM, "out of memory: %zu bytes for weight %s", n, name);
            return NULL;
        }
        w->size = n;
    }
    return w->block;
}

int loom_cmd_graph_dump(int argc, char **argv)
{
    const char *preset = "qwen2.5-0.5b", *backend = NULL;
    long layers = 2, tokens = 16, ctx = 1024;
    bool awq = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--preset") && v) preset = v, i++;
        else if (!strcmp(a, "--backend") && v) backend = v, i++;
        else if (!strcmp(a, "--awq")) awq = true;
        else if (!strcmp(a, "--layers")) { if (cli_int("graph-dump", a, v, 1, 1024, &layers)) return 2; i++; }
        else if (!strcmp(a, "--tokens")) { if (cli_int("graph-dump", a, v, 1, 65536, &tokens)) return 2; i++; }
        else if (!strcmp(a, "--ctx")) { if (cli_int("graph-dump", a, v, 1, 1 << 20, &ctx)) return 2; i++; }
        else {
            fprintf(stderr, "usage: loom graph-dump [--preset NAME] [--awq] [--layers N] [--tokens N] [--ctx N] [--backend SPEC]\n");
            return 2;
        }
    }
    loom_qwen2_config c;
    if (loom_qwen2_preset(preset, &c)) {
        fprintf(stderr, "loom graph-dump: %s\n", loom_last_error());
        return 2;
    }
    int all_layers = c.n_layers;
    if (layers < c.n_layers) c.n_layers = (int32_t)layers;
    c.awq = awq;
    if (awq) c.dtype = LOOM_F16; /* AWQ checkpoints keep their dense tensors in f16 */

    loom_device **devs = NULL;
    int n_devs = 0, rc = 1;
    dummy_weights w = {0};
    loom_qwen2_graph qg = {0};
    loom_exec *e = NULL;
    if (cli_select("graph-dump", backend, &devs, &n_devs)) return 2;
    if (loom_qwen2_build(&c, (int32_t)tokens, 1, (int32_t)ctx, LOOM_F16, dummy_weight, &w, NULL, &qg) ||
        loom_graph_compile(qg.g, devs, n_devs, 0, &e)) {
        fprintf(stderr, "loom graph-dump: %s\n", loom_last_error());
        goto out;
    }
    printf("%s, %d of %d layers%s, devices:", c.name, c.n_layers, all_layers, awq ? ", AWQ" : "");
    for (int d = 0; d < n_devs; d++) printf(" %s", loom_device_label(devs[d]));
    printf("\n");
    loom_exec_dump(e, stdout);
    rc = 0;
out:
    loom_exec_destroy(e);
    loom_graph_destroy(qg.g);
    loom_devices_close(devs, n_devs);
    free(w.block);
    return rc;
}
