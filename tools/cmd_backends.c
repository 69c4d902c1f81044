/* cmd_backends.c — `loom backends [--json] [--backend SPEC]`: every backend
 * the registry knows (built-in and plugins), why an unavailable one is
 * unavailable, each device's facts, and which devices selection would pick. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "commands.h"
#include "loom.h"
#include "registry.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: loom backends [--json] [--backend SPEC]\n"
               "  Lists every backend (built-in and plugins from LOOM_PLUGIN_PATH, the build tree and the\n"
               "  install directory), whether it is available and why not, and each device: name, driver,\n"
               "  memory. Marks the devices selection picks: SPEC, else LOOM_BACKEND, else the best available.\n"
               "  --json          print the same as JSON on stdout\n"
               "  --backend SPEC  show what SPEC (NAME, NAME:N or a list a,b) would select\n");
}

static const char *human(uint64_t bytes, char *buf, size_t cap)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    if (!bytes) return snprintf(buf, cap, "unknown"), buf;
    double v = (double)bytes;
    int u = 0;
    while (v >= 1024 && u < 5) v /= 1024, u++;
    snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
    return buf;
}

/* Index of the pick for (b, dev) in the selection, or -1. */
static int pick_rank(const loom__pick *picks, int n, const loom_backend *b, int dev)
{
    for (int i = 0; i < n; i++)
        if (picks[i].b == b && picks[i].dev == dev) return i;
    return -1;
}

static const char *source_text(loom__select_source src, bool ok)
{
    if (!ok) return src == LOOM__SELECT_SPEC ? "--backend" : "LOOM_BACKEND";
    return src == LOOM__SELECT_SPEC ? "--backend" : src == LOOM__SELECT_ENV ? "LOOM_BACKEND" : "auto";
}

static void print_text(const loom__pick *picks, int n_picks, loom__select_source src, loom_status sel_st,
                       const char *sel_err)
{
    int nb = loom_backend_count();
    for (int i = 0; i < nb; i++) {
        loom_backend *b = loom_backend_at(i);
        bool avail = loom_backend_available(b);
        int nd = loom_backend_device_count(b);
        printf("%s  (%s)\n", loom_backend_name(b), loom_backend_origin(b));
        if (!avail) {
            printf("    status: unavailable: %s\n", loom_backend_reason(b));
            continue;
        }
        printf("    status: available, %d device%s\n", nd, nd == 1 ? "" : "s");
        for (int d = 0; d < nd; d++) {
            loom_device_info info;
            char tot[32], fr[32], mark[48] = "";
            int r = pick_rank(picks, n_picks, b, d);
            if (r == 0)
                snprintf(mark, sizeof mark, "   <- selected (%s)", source_text(src, true));
            else if (r > 0)
                snprintf(mark, sizeof mark, "   <- fallback %d", r);
            if (loom_backend_device_info(b, d, &info)) {
                printf("    %s:%d  (device info failed: %s)%s\n", loom_backend_name(b), d, loom_last_error(), mark);
                continue;
            }
            printf("    %s:%d  %s%s\n", loom_backend_name(b), d, info.name[0] ? info.name : "(unnamed)", mark);
            if (info.driver[0]) printf("        driver:  %s\n", info.driver);
            printf("        memory:  %s total, %s free\n", human(info.mem_total, tot, sizeof tot),
                   human(info.mem_free, fr, sizeof fr));
            if (info.details[0]) printf("        details: %s\n", info.details);
        }
    }
    printf("\n");
    if (sel_st) {
        printf("selection (%s): error: %s\n", source_text(src, false), sel_err);
        return;
    }
    printf("selection (%s):", source_text(src, true));
    for (int i = 0; i < n_picks; i++)
        printf("%s %s:%d", i ? "," : "", loom_backend_name(picks[i].b), picks[i].dev);
    printf("%s\n", n_picks > 1 ? "  (later devices run what earlier ones do not support)" : "");
}

static int print_json(const loom__pick *picks, int n_picks, loom__select_source src, const char *spec,
                      loom_status sel_st, const char *sel_err)
{
    cJSON *root = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(root, "backends");
    if (!root || !arr) goto oom;
    int nb = loom_backend_count();
    for (int i = 0; i < nb; i++) {
        loom_backend *b = loom_backend_at(i);
        bool avail = loom_backend_available(b);
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o)) goto oom;
        cJSON_AddStringToObject(o, "name", loom_backend_name(b));
        cJSON_AddStringToObject(o, "origin", loom_backend_origin(b));
        cJSON_AddBoolToObject(o, "builtin", !strcmp(loom_backend_origin(b), "built-in"));
        cJSON_AddBoolToObject(o, "available", avail);
        cJSON_AddStringToObject(o, "reason", loom_backend_reason(b));
        cJSON *devs = cJSON_AddArrayToObject(o, "devices");
        if (!devs) goto oom;
        for (int d = 0; d < loom_backend_device_count(b); d++) {
            loom_device_info info;
            char label[96];
            cJSON *dv = cJSON_CreateObject();
            if (!dv || !cJSON_AddItemToArray(devs, dv)) goto oom;
            snprintf(label, sizeof label, "%s:%d", loom_backend_name(b), d);
            cJSON_AddNumberToObject(dv, "index", d);
            cJSON_AddStringToObject(dv, "label", label);
            if (loom_backend_device_info(b, d, &info)) {
                cJSON_AddStringToObject(dv, "error", loom_last_error());
            } else {
                cJSON_AddStringToObject(dv, "name", info.name);
                cJSON_AddStringToObject(dv, "driver", info.driver);
                cJSON_AddNumberToObject(dv, "mem_total", (double)info.mem_total);
                cJSON_AddNumberToObject(dv, "mem_free", (double)info.mem_free);
                cJSON_AddStringToObject(dv, "details", info.details);
            }
            int r = sel_st ? -1 : pick_rank(picks, n_picks, b, d);
            cJSON_AddBoolToObject(dv, "selected", r == 0);
            if (r >= 0) cJSON_AddNumberToObject(dv, "selection_rank", r);
        }
    }
    cJSON *sel = cJSON_AddObjectToObject(root, "selection");
    if (!sel) goto oom;
    cJSON_AddStringToObject(sel, "source", source_text(src, sel_st == LOOM_OK));
    if (spec && *spec) cJSON_AddStringToObject(sel, "spec", spec);
    cJSON_AddBoolToObject(sel, "ok", sel_st == LOOM_OK);
    if (sel_st) {
        cJSON_AddStringToObject(sel, "error", sel_err);
    } else {
        cJSON *list = cJSON_AddArrayToObject(sel, "devices");
        if (!list) goto oom;
        for (int i = 0; i < n_picks; i++) {
            char label[96];
            snprintf(label, sizeof label, "%s:%d", loom_backend_name(picks[i].b), picks[i].dev);
            cJSON_AddItemToArray(list, cJSON_CreateString(label));
        }
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    if (!text) goto oom_nofree;
    puts(text);
    free(text);
    return 0;
oom:
    cJSON_Delete(root);
oom_nofree:
    fprintf(stderr, "loom backends: out of memory building the JSON\n");
    return 1;
}

int loom_cmd_backends(int argc, char **argv)
{
    bool json = false;
    const char *spec = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = true;
        } else if (!strcmp(argv[i], "--backend")) {
            if (i + 1 >= argc || !*argv[i + 1]) {
                fprintf(stderr, "loom backends: --backend needs a value (NAME, NAME:N or a list a,b)\n");
                return 2;
            }
            spec = argv[++i];
        } else if (!strncmp(argv[i], "--backend=", 10)) {
            spec = argv[i] + 10;
            if (!*spec) {
                fprintf(stderr, "loom backends: --backend needs a value (NAME, NAME:N or a list a,b)\n");
                return 2;
            }
        } else {
            fprintf(stderr, "loom backends: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (loom_registry_init()) {
        fprintf(stderr, "loom backends: %s\n", loom_last_error());
        return 1;
    }
    loom__pick *picks = NULL;
    int n_picks = 0;
    loom__select_source src = spec ? LOOM__SELECT_SPEC : LOOM__SELECT_ENV;
    loom_status sel_st = loom__select_plan(spec, &picks, &n_picks, &src);
    char sel_err[1024] = "";
    if (sel_st) snprintf(sel_err, sizeof sel_err, "%s", loom_last_error());
    if (!spec) spec = getenv("LOOM_BACKEND");
    int rc = 0;
    if (json)
        rc = print_json(picks, n_picks, src, spec, sel_st, sel_err);
    else
        print_text(picks, n_picks, src, sel_st, sel_err);
    free(picks);
    /* A selection that fails (a bad LOOM_BACKEND) is worth a non-zero exit. */
    if (!rc && sel_st) {
        if (json) fprintf(stderr, "loom backends: %s\n", sel_err);
        rc = 1;
    }
    return rc;
}
