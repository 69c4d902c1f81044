/* status.c — status names and the per-thread last-error message. */
#include <stdarg.h>
#include <string.h>

#include "loom.h"

static _Thread_local char last_error[1024];

const char *loom_last_error(void)
{
    return last_error[0] ? last_error : "no error";
}

void loom_clear_error(void)
{
    last_error[0] = 0;
}

loom_status loom_error(loom_status st, const char *fmt, ...)
{
    /* Callers often pass loom_last_error() itself as an argument: format
     * into a local buffer first so source and destination never overlap. */
    char msg[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(last_error, msg, sizeof msg);
    loom_log(LOOM_LOG_DEBUG, "error (%s): %s", loom_status_name(st), last_error);
    return st;
}

const char *loom_status_name(loom_status st)
{
    switch (st) {
    case LOOM_OK:              return "ok";
    case LOOM_ERR_INVALID:     return "invalid";
    case LOOM_ERR_NOMEM:       return "out of memory";
    case LOOM_ERR_IO:          return "i/o error";
    case LOOM_ERR_FORMAT:      return "bad format";
    case LOOM_ERR_UNSUPPORTED: return "unsupported";
    case LOOM_ERR_NOT_FOUND:   return "not found";
    case LOOM_ERR_BACKEND:     return "backend error";
    case LOOM_ERR_INTERNAL:    return "internal error";
    }
    return "unknown status";
}
