/* loom.c — the loom command line: dispatches to one subcommand. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "loom.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"backends",   loom_cmd_backends,   "list backends, their devices and status [--json]"},
    {"check",      loom_cmd_check,      "check ops [--backend NAME] [--json FILE]: every op against the float64 reference"},
    {"graph-dump", loom_cmd_graph_dump, "print a placed transformer-block graph [--backend NAME] [--tokens N]"},
    {"bench",      loom_cmd_bench,      "benchmarks: kernels against memcpy and sgemm baselines"},
    {"synth",      loom_cmd_synth,      "--preset NAME [--awq] [--layers N] --out DIR: a random checkpoint, published layout"},
    {"run",        loom_cmd_run,        "-m DIR -p PROMPT [-n N] [--temp T] [--seed S] [--chat]: generate, streaming"},
    {"logits",     loom_cmd_logits,     "-m DIR --tokens 1,2,3 --out FILE: float32 logits of one prefill"},
    {"tokenize",   loom_cmd_tokenize,   "--tokenizer FILE | -m DIR: text on stdin -> token ids on one line"},
    {"detokenize", loom_cmd_detokenize, "--tokenizer FILE | -m DIR: token ids on stdin -> their exact bytes"},
    {"info",       loom_cmd_info,       "-m DIR: config, weight format, parameters, memory"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: loom <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nenvironment: LOOM_BACKEND (cpu|cuda|vulkan|opencl|<plugin>[:N], or a list a,b,c),\n"
               "  LOOM_PLUGIN_PATH (plugin directories, colon-separated), LOOM_LOG (error..trace),\n"
               "  LOOM_THREADS (CPU threads)\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) {
            int rc = commands[i].fn(argc - 1, argv + 1);
            loom_registry_shutdown();
            return rc;
        }
    fprintf(stderr, "loom: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
