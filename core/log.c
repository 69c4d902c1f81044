/* log.c — leveled logging to stderr, filtered by LOOM_LOG. */
#include <stdarg.h>
#include <stdlib.h>
#include <strings.h>

#include "loom.h"

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};
static int level = -1; /* -1: not yet read from LOOM_LOG */

int loom_log_level(void)
{
    if (level < 0) {
        const char *s = getenv("LOOM_LOG");
        level = LOOM_LOG_WARN;
        if (s && *s) {
            int found = 0;
            for (int i = 0; i < 5; i++)
                if (!strcasecmp(s, level_names[i])) level = i, found = 1;
            if (!found)
                fprintf(stderr, "loom: warning: LOOM_LOG=%s is not one of error, warn, info, debug, trace; using warn\n", s);
        }
    }
    return level;
}

void loom_log_set_level(int l)
{
    level = l < LOOM_LOG_ERROR ? LOOM_LOG_ERROR : l > LOOM_LOG_TRACE ? LOOM_LOG_TRACE : l;
}

void loom_log(int l, const char *fmt, ...)
{
    if (l > loom_log_level()) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "loom: %s: %s\n", level_names[l < 0 ? 0 : l > 4 ? 4 : l], msg);
}
