/* cli.h — argument helpers shared by the subcommands. Each prints one clear
 * message ("loom CMD: ...") on bad input and returns non-zero. */
#ifndef LOOM_CLI_H
#define LOOM_CLI_H

#include "loom.h"

int cli_int(const char *cmd, const char *flag, const char *s, long lo, long hi, long *out);
/* "1,2,3" (commas or spaces) -> a malloc'd array. */
int cli_tokens(const char *cmd, const char *s, int32_t **ids, int32_t *n);
/* Devices for --backend (or LOOM_BACKEND), in priority order. */
int cli_select(const char *cmd, const char *backend, loom_device ***devs, int *n);

#endif
