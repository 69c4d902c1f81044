/* commands.h — the loom CLI's subcommands; each returns the process exit code. */
#ifndef LOOM_COMMANDS_H
#define LOOM_COMMANDS_H

int loom_cmd_backends(int argc, char **argv);   /* tools/cmd_backends.c */
int loom_cmd_check(int argc, char **argv);      /* tools/cmd_check.c: check ops | model */
int loom_cmd_check_model(int argc, char **argv); /* tools/cmd_check_model.c */
int loom_cmd_run(int argc, char **argv);        /* tools/cmd_run.c */
int loom_cmd_graph_dump(int argc, char **argv); /* tools/cmd_graph.c */
int loom_cmd_bench(int argc, char **argv);      /* bench/bench.c */
int loom_cmd_synth(int argc, char **argv);      /* tools/cmd_model.c */
int loom_cmd_logits(int argc, char **argv);     /* tools/cmd_model.c */
int loom_cmd_info(int argc, char **argv);       /* tools/cmd_model.c */
int loom_cmd_tokenize(int argc, char **argv);   /* tools/cmd_tokenize.c */
int loom_cmd_detokenize(int argc, char **argv); /* tools/cmd_tokenize.c */

#endif
