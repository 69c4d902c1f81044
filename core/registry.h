/* registry.h — internal: selection without opening devices (for `loom
 * backends`, which shows what LOOM_BACKEND would pick). Not installed. */
#ifndef LOOM_REGISTRY_H
#define LOOM_REGISTRY_H

#include "loom.h"

typedef struct loom__pick {
    loom_backend *b;
    int           dev;
} loom__pick;

typedef enum loom__select_source {
    LOOM__SELECT_SPEC, /* the spec argument */
    LOOM__SELECT_ENV,  /* LOOM_BACKEND */
    LOOM__SELECT_AUTO, /* neither: the best available */
} loom__select_source;

/* What loom_select(spec, ...) would open, in order (CPU fallback included):
 * a malloc'd array of *n picks, or the same error loom_select would give.
 * source (may be NULL) says where the choice came from. */
loom_status loom__select_plan(const char *spec, loom__pick **picks, int *n, loom__select_source *source);

#endif
