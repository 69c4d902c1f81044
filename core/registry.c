/* registry.c — the backend registry: the built-in CPU backend, plugins found
 * on disk (libloom-<name>.so), and device selection from a spec or
 * LOOM_BACKEND.
 *
 * Plugin search order (the first plugin found for a name wins):
 *   1. each directory of LOOM_PLUGIN_PATH (colon-separated; empty entries ignored)
 *   2. LOOM_BUILD_BACKENDS_DIR/<any>/ when the running executable lives in
 *      that build tree (a developer build)
 *   3. LOOM_PLUGIN_INSTALL_DIR
 * A plugin that fails in any way (dlopen, missing symbol, ABI, name, NULL
 * members, init, no devices) stays listed as unavailable with the reason. */
#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cpu.h"
#include "loom.h"
#include "registry.h"

#ifndef LOOM_BUILD_BACKENDS_DIR
#define LOOM_BUILD_BACKENDS_DIR ""
#endif
#ifndef LOOM_PLUGIN_INSTALL_DIR
#define LOOM_PLUGIN_INSTALL_DIR ""
#endif

#define PLUGIN_PREFIX "libloom-"
#define PLUGIN_SUFFIX ".so"
#define NAME_MAX_LEN  63
#define MAX_DEVICE_INDEX 1000000

struct loom_backend {
    char                 *name;
    char                 *origin;      /* "built-in" or the plugin's path */
    void                 *dl;          /* dlopen handle; NULL for built-ins */
    const loom_backend_i *iface;       /* NULL unless available */
    void                 *bctx;
    bool                  inited;      /* init() succeeded: shutdown() owed */
    bool                  available;
    int                   n_devices;
    int                   host_cpu;    /* every device is the host CPU (ranked after the built-in one); -1: not asked yet */
    int                   best_dev;    /* what the bare name selects (see best_device) */
    char                  reason[768]; /* why unavailable; "" if available */
    int                   n_open;      /* devices opened and not yet closed */
    bool                  orphaned;    /* registry shut down while devices were open */
};

struct loom_device {
    loom_backend         *b;
    const loom_backend_i *iface;
    void                 *dctx;
    int                   index;
    char                  label[NAME_MAX_LEN + 16];
};

/* The registry: the one piece of global mutable state in loom. */
static struct {
    pthread_mutex_t lock;
    bool            ready;
    loom_backend  **b;
    int             n, cap;
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

static const loom_host_i host = {
    .abi   = LOOM_BACKEND_ABI,
    .log   = loom_log,
    .error = loom_error,
};

/* ---- small helpers -------------------------------------------------------------- */
static char *dupstr(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static bool valid_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

static bool valid_name(const char *s, size_t n)
{
    if (n == 0 || n > NAME_MAX_LEN) return false;
    for (size_t i = 0; i < n; i++)
        if (!valid_name_char(s[i])) return false;
    return true;
}

static void set_reason(loom_backend *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_reason(loom_backend *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->reason, sizeof b->reason, fmt, ap);
    va_end(ap);
    b->available = false;
}

static loom_backend *find_locked(const char *name)
{
    for (int i = 0; i < reg.n; i++)
        if (!strcmp(reg.b[i]->name, name)) return reg.b[i];
    return NULL;
}

static void finalize(loom_backend *b)
{
    if (!b) return;
    if (b->inited && b->iface && b->iface->shutdown) b->iface->shutdown(b->bctx);
    if (b->dl) dlclose(b->dl);
    free(b->name);
    free(b->origin);
    free(b);
}

static loom_backend *new_backend(const char *name, const char *origin)
{
    loom_backend *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->name = dupstr(name);
    b->origin = dupstr(origin);
    if (!b->name || !b->origin) {
        free(b->name);
        free(b->origin);
        free(b);
        return NULL;
    }
    return b;
}

static loom_status push(loom_backend *b)
{
    if (reg.n == reg.cap) {
        int cap = reg.cap ? reg.cap * 2 : 8;
        loom_backend **nb = realloc(reg.b, (size_t)cap * sizeof *nb);
        if (!nb) return loom_error(LOOM_ERR_NOMEM, "out of memory registering backend '%s'", b->name);
        reg.b = nb;
        reg.cap = cap;
    }
    reg.b[reg.n++] = b;
    return LOOM_OK;
}

/* Names of the members loom_backend.h does not mark (optional) that are NULL. */
static void missing_members(const loom_backend_i *i, char *out, size_t cap)
{
    struct { const char *name; bool null; } req[] = {
#define REQ(m) {#m, i->m == NULL}
        REQ(init),         REQ(shutdown),     REQ(device_count), REQ(device_info),
        REQ(device_open),  REQ(device_close), REQ(supports),     REQ(buffer_alloc),
        REQ(buffer_free),  REQ(buffer_write), REQ(buffer_read),  REQ(compile),
        REQ(execute),      REQ(release),      REQ(sync),
#undef REQ
    };
    size_t len = 0;
    out[0] = 0;
    for (size_t k = 0; k < sizeof req / sizeof *req; k++)
        if (req[k].null && len < cap)
            len += (size_t)snprintf(out + len, cap - len, "%s%s", len ? ", " : "", req[k].name);
}

/* Checks the interface an entry point returned, runs init() and counts the
 * devices. On any failure records the reason and leaves iface NULL. */
static void activate(loom_backend *b, const loom_backend_i *i, const char *entry_err)
{
    if (!i) {
        set_reason(b, "%s returned NULL (the plugin declined this host, ABI %d)%s%s",
                   b->dl ? LOOM_BACKEND_ENTRY : "the built-in entry point", LOOM_BACKEND_ABI,
                   entry_err[0] ? ": " : "", entry_err);
        return;
    }
    if (i->abi != LOOM_BACKEND_ABI) {
        set_reason(b, "ABI mismatch: the plugin was built against loom backend ABI %u, this loom has ABI %d "
                      "(rebuild it against this loom's loom_backend.h)",
                   (unsigned)i->abi, LOOM_BACKEND_ABI);
        return;
    }
    if (!i->name || strcmp(i->name, b->name)) {
        set_reason(b, "the interface calls itself '%.64s' but the file is named for '%s' (libloom-%s.so); "
                      "the two must match",
                   i->name ? i->name : "(null)", b->name, b->name);
        return;
    }
    char missing[256];
    missing_members(i, missing, sizeof missing);
    if (missing[0]) {
        set_reason(b, "required interface members are NULL: %s", missing);
        return;
    }
    loom_clear_error();
    void *bctx = NULL;
    loom_status st = i->init(&bctx);
    if (st != LOOM_OK) {
        const char *msg = loom_last_error();
        set_reason(b, "init failed (%s): %s", loom_status_name(st), strcmp(msg, "no error") ? msg : "(no message)");
        return;
    }
    b->inited = true;
    b->bctx = bctx;
    b->iface = i; /* so finalize() calls shutdown() */
    int32_t n = i->device_count(bctx);
    if (n <= 0) {
        i->shutdown(bctx);
        b->inited = false;
        b->bctx = NULL;
        b->iface = NULL;
        set_reason(b, "no devices found");
        return;
    }
    b->n_devices = n;
    b->available = true;
    b->reason[0] = 0;
    b->host_cpu = -1; /* asked only when auto selection needs it: device_info may be costly (a GPU context) */
}

/* The device a bare backend name means: the first that is not the host CPU
 * (an OpenCL platform list may start with PoCL), else device 0. The answer
 * is cached: device_info may be costly (a GPU context). */
static int best_device(loom_backend *b)
{
    if (b->host_cpu < 0) {
        int d = 0;
        while (strcmp(b->name, "cpu") && d < b->n_devices) {
            loom_device_info info;
            memset(&info, 0, sizeof info);
            if (b->iface->device_info(b->bctx, d, &info) != LOOM_OK || !info.host_cpu) break;
            d++;
        }
        b->host_cpu = d > 0 && d == b->n_devices; /* every device is the host CPU */
        b->best_dev = d < b->n_devices ? d : 0;
    }
    return b->best_dev;
}

static bool on_host_cpu(loom_backend *b)
{
    best_device(b);
    return b->host_cpu > 0;
}

static void log_unavailable(const loom_backend *b)
{
    loom_log(LOOM_LOG_INFO, "backend %s (%s) is unavailable: %s", b->name, b->origin, b->reason);
}

/* ---- loading -------------------------------------------------------------------- */
/* Calls an entry point with the host table and activates what it returns. */
static void enter(loom_backend *b, loom_backend_entry_fn entry)
{
    loom_clear_error();
    const loom_backend_i *i = entry(&host);
    char err[512] = "";
    if (!i && strcmp(loom_last_error(), "no error")) snprintf(err, sizeof err, "%s", loom_last_error());
    activate(b, i, err);
}

static loom_status register_builtin(const char *name, loom_backend_entry_fn entry)
{
    loom_backend *b = new_backend(name, "built-in");
    if (!b) return loom_error(LOOM_ERR_NOMEM, "out of memory registering backend '%s'", name);
    enter(b, entry);
    if (!b->available) log_unavailable(b);
    loom_status st = push(b);
    if (st) finalize(b);
    return st;
}

static loom_status load_plugin(const char *name, const char *path)
{
    if (find_locked(name)) {
        loom_log(LOOM_LOG_INFO, "plugin %s ignored: backend '%s' is already registered from %s", path, name,
                 find_locked(name)->origin);
        return LOOM_OK;
    }
    loom_backend *b = new_backend(name, path);
    if (!b) return loom_error(LOOM_ERR_NOMEM, "out of memory registering backend '%s'", name);
    dlerror();
    b->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!b->dl) {
        const char *e = dlerror();
        set_reason(b, "dlopen failed: %s", e ? e : "unknown error");
    } else {
        dlerror();
        void *sym = dlsym(b->dl, LOOM_BACKEND_ENTRY);
        if (!sym) {
            set_reason(b, "no symbol %s (not a loom backend plugin?)", LOOM_BACKEND_ENTRY);
        } else {
            loom_backend_entry_fn entry;
            memcpy(&entry, &sym, sizeof entry); /* object pointer -> function pointer */
            enter(b, entry);
        }
    }
    if (b->available)
        loom_log(LOOM_LOG_DEBUG, "backend %s loaded from %s: %d device(s)", name, path, b->n_devices);
    else
        log_unavailable(b);
    loom_status st = push(b);
    if (st) finalize(b);
    return st;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads every libloom-<name>.so directly in dir, in name order. */
static loom_status scan_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        loom_log(LOOM_LOG_DEBUG, "plugin directory %s: %s", dir, strerror(errno));
        return LOOM_OK;
    }
    char **files = NULL;
    size_t n = 0, cap = 0;
    loom_status st = LOOM_OK;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name), pl = strlen(PLUGIN_PREFIX), sl = strlen(PLUGIN_SUFFIX);
        if (len <= pl + sl || strncmp(e->d_name, PLUGIN_PREFIX, pl) || strcmp(e->d_name + len - sl, PLUGIN_SUFFIX))
            continue;
        if (!valid_name(e->d_name + pl, len - pl - sl)) {
            loom_log(LOOM_LOG_INFO, "plugin %s/%s ignored: a backend name is 1..%d of [A-Za-z0-9_-]", dir, e->d_name,
                     NAME_MAX_LEN);
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            char **nf = realloc(files, cap * sizeof *nf);
            if (!nf) { st = loom_error(LOOM_ERR_NOMEM, "out of memory scanning %s", dir); break; }
            files = nf;
        }
        if (!(files[n] = dupstr(e->d_name))) { st = loom_error(LOOM_ERR_NOMEM, "out of memory scanning %s", dir); break; }
        n++;
    }
    closedir(d);
    if (n) qsort(files, n, sizeof *files, cmp_str);
    for (size_t k = 0; k < n; k++) {
        if (st == LOOM_OK) {
            size_t pl = strlen(PLUGIN_PREFIX), len = strlen(files[k]) - pl - strlen(PLUGIN_SUFFIX);
            char name[NAME_MAX_LEN + 1], path[PATH_MAX], *real;
            memcpy(name, files[k] + pl, len);
            name[len] = 0;
            snprintf(path, sizeof path, "%s/%s", dir, files[k]);
            real = realpath(path, NULL);
            st = load_plugin(name, real ? real : path);
            free(real);
        }
        free(files[k]);
    }
    free(files);
    return st;
}

/* Each subdirectory of the build tree's backends/, when this executable was built there. */
static loom_status scan_build_tree(void)
{
    const char *bdir = LOOM_BUILD_BACKENDS_DIR;
    if (!bdir[0]) return LOOM_OK;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return LOOM_OK;
    exe[n] = 0;
    char *backends = realpath(bdir, NULL);
    if (!backends) return LOOM_OK;
    char *slash = strrchr(backends, '/');
    size_t root_len = slash ? (size_t)(slash - backends) : 0; /* the build dir: parent of backends/ */
    bool inside = root_len > 0 && !strncmp(exe, backends, root_len) && exe[root_len] == '/';
    loom_status st = LOOM_OK;
    if (inside) {
        DIR *d = opendir(backends);
        struct dirent *e;
        char **subs = NULL;
        size_t ns = 0, cap = 0;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            if (ns == cap) {
                cap = cap ? cap * 2 : 8;
                char **nsb = realloc(subs, cap * sizeof *nsb);
                if (!nsb) { st = loom_error(LOOM_ERR_NOMEM, "out of memory scanning %s", backends); break; }
                subs = nsb;
            }
            if (!(subs[ns] = dupstr(e->d_name))) { st = loom_error(LOOM_ERR_NOMEM, "out of memory scanning %s", backends); break; }
            ns++;
        }
        if (d) closedir(d);
        if (ns) qsort(subs, ns, sizeof *subs, cmp_str);
        for (size_t k = 0; k < ns; k++) {
            char path[PATH_MAX];
            snprintf(path, sizeof path, "%s/%s", backends, subs[k]);
            DIR *sd = st == LOOM_OK ? opendir(path) : NULL;
            if (sd) {
                closedir(sd);
                st = scan_dir(path);
            }
            free(subs[k]);
        }
        free(subs);
    }
    free(backends);
    return st;
}

static loom_status scan_plugin_path(void)
{
    const char *env = getenv("LOOM_PLUGIN_PATH");
    if (!env || !*env) return LOOM_OK;
    char *copy = dupstr(env);
    if (!copy) return loom_error(LOOM_ERR_NOMEM, "out of memory reading LOOM_PLUGIN_PATH");
    loom_status st = LOOM_OK;
    char *save = NULL;
    for (char *dir = strtok_r(copy, ":", &save); dir && st == LOOM_OK; dir = strtok_r(NULL, ":", &save))
        if (*dir) st = scan_dir(dir);
    free(copy);
    return st;
}

static void clear_locked(void)
{
    for (int i = 0; i < reg.n; i++) {
        loom_backend *b = reg.b[i];
        if (b->n_open > 0) {
            loom_log(LOOM_LOG_WARN, "registry shut down with %d device(s) of %s still open; "
                                    "it is released when the last one closes", b->n_open, b->name);
            b->orphaned = true;
        } else {
            finalize(b);
        }
    }
    free(reg.b);
    reg.b = NULL;
    reg.n = reg.cap = 0;
    reg.ready = false;
}

/* ---- the registry API ------------------------------------------------------------ */
loom_status loom_registry_init(void)
{
    pthread_mutex_lock(&reg.lock);
    loom_status st = LOOM_OK;
    if (!reg.ready) {
        st = register_builtin("cpu", loom_cpu_backend_entry);
        if (st == LOOM_OK) st = scan_plugin_path();
        if (st == LOOM_OK) st = scan_build_tree();
        if (st == LOOM_OK && LOOM_PLUGIN_INSTALL_DIR[0]) st = scan_dir(LOOM_PLUGIN_INSTALL_DIR);
        if (st == LOOM_OK) {
            reg.ready = true;
        } else {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", loom_last_error());
            clear_locked();
            loom_error(st, "%s", msg);
        }
    }
    pthread_mutex_unlock(&reg.lock);
    return st;
}

void loom_registry_shutdown(void)
{
    pthread_mutex_lock(&reg.lock);
    clear_locked();
    pthread_mutex_unlock(&reg.lock);
}

/* Accessors initialise the registry on first use; a failed init leaves it
 * empty (and loom_last_error() says why). */
static bool ensure(void)
{
    pthread_mutex_lock(&reg.lock);
    bool ready = reg.ready;
    pthread_mutex_unlock(&reg.lock);
    return ready || loom_registry_init() == LOOM_OK;
}

int loom_backend_count(void)
{
    return ensure() ? reg.n : 0;
}

loom_backend *loom_backend_at(int i)
{
    if (!ensure() || i < 0 || i >= reg.n) return NULL;
    return reg.b[i];
}

loom_backend *loom_backend_find(const char *name)
{
    if (!name || !ensure()) return NULL;
    return find_locked(name);
}

const char *loom_backend_name(const loom_backend *b)   { return b ? b->name : ""; }
const char *loom_backend_origin(const loom_backend *b) { return b ? b->origin : ""; }
bool loom_backend_available(const loom_backend *b)     { return b && b->available; }
const char *loom_backend_reason(const loom_backend *b) { return b ? b->reason : "no such backend"; }
int loom_backend_device_count(const loom_backend *b)   { return b && b->available ? b->n_devices : 0; }
const loom_backend_i *loom_backend_iface(const loom_backend *b) { return b && b->available ? b->iface : NULL; }

loom_status loom_backend_device_info(const loom_backend *b, int dev, loom_device_info *info)
{
    if (!b || !info) return loom_error(LOOM_ERR_INVALID, "loom_backend_device_info: NULL argument");
    memset(info, 0, sizeof *info);
    if (!b->available) return loom_error(LOOM_ERR_UNSUPPORTED, "backend %s is unavailable: %s", b->name, b->reason);
    if (dev < 0 || dev >= b->n_devices)
        return loom_error(LOOM_ERR_NOT_FOUND, "backend %s has %d device(s); no device %d", b->name, b->n_devices, dev);
    loom_status st = b->iface->device_info(b->bctx, dev, info);
    info->name[sizeof info->name - 1] = 0;
    info->driver[sizeof info->driver - 1] = 0;
    info->details[sizeof info->details - 1] = 0;
    return st;
}

/* ---- devices ---------------------------------------------------------------------- */
loom_status loom_device_open(loom_backend *b, int dev, loom_device **out)
{
    if (!out) return loom_error(LOOM_ERR_INVALID, "loom_device_open: NULL out");
    *out = NULL;
    if (!b) return loom_error(LOOM_ERR_INVALID, "loom_device_open: NULL backend");
    if (!b->available) return loom_error(LOOM_ERR_UNSUPPORTED, "backend %s is unavailable: %s", b->name, b->reason);
    if (dev < 0 || dev >= b->n_devices)
        return loom_error(LOOM_ERR_NOT_FOUND, "backend %s has %d device(s); no device %d", b->name, b->n_devices, dev);
    loom_device *d = calloc(1, sizeof *d);
    if (!d) return loom_error(LOOM_ERR_NOMEM, "out of memory opening %s:%d", b->name, dev);
    d->b = b;
    d->iface = b->iface;
    d->index = dev;
    snprintf(d->label, sizeof d->label, "%s:%d", b->name, dev);
    loom_clear_error();
    loom_status st = b->iface->device_open(b->bctx, dev, &d->dctx);
    if (st != LOOM_OK) {
        char msg[900];
        snprintf(msg, sizeof msg, "%s", loom_last_error());
        free(d);
        return loom_error(st, "cannot open %s:%d: %s", b->name, dev, msg);
    }
    pthread_mutex_lock(&reg.lock);
    b->n_open++;
    pthread_mutex_unlock(&reg.lock);
    *out = d;
    return LOOM_OK;
}

void loom_device_close(loom_device *d)
{
    if (!d) return;
    d->iface->device_close(d->dctx);
    pthread_mutex_lock(&reg.lock);
    loom_backend *b = d->b;
    bool release = --b->n_open == 0 && b->orphaned;
    if (release) finalize(b);
    pthread_mutex_unlock(&reg.lock);
    free(d);
}

const char *loom_device_label(const loom_device *d)         { return d ? d->label : "(none)"; }
const loom_backend_i *loom_device_iface(const loom_device *d) { return d ? d->iface : NULL; }
void *loom_device_ctx(const loom_device *d)                  { return d ? d->dctx : NULL; }

void loom_devices_close(loom_device **devs, int n_devs)
{
    if (!devs) return;
    for (int i = 0; i < n_devs; i++) loom_device_close(devs[i]);
    free(devs);
}

/* ---- selection -------------------------------------------------------------------- */
typedef struct {
    char name[NAME_MAX_LEN + 1];
    int  index;
    bool any;   /* no ":N" given: the backend's best device */
} sel_entry;

/* "available: cpu, example (unavailable: cuda: reason; ...)", each reason cut
 * to REASON_SHORT characters so that a long list still fits a message. */
#define REASON_SHORT 96
static void available_list(char *out, size_t cap)
{
    size_t len = (size_t)snprintf(out, cap, "available:");
    int k = 0;
    for (int i = 0; i < reg.n && len < cap; i++)
        if (reg.b[i]->available) len += (size_t)snprintf(out + len, cap - len, "%s %s", k++ ? "," : "", reg.b[i]->name);
    if (!k && len < cap) len += (size_t)snprintf(out + len, cap - len, " none");
    k = 0;
    for (int i = 0; i < reg.n && len < cap; i++)
        if (!reg.b[i]->available)
            len += (size_t)snprintf(out + len, cap - len, "%s%s: %.*s%s", k++ ? "; " : " (unavailable: ", reg.b[i]->name,
                                    REASON_SHORT, reg.b[i]->reason, strlen(reg.b[i]->reason) > REASON_SHORT ? "..." : "");
    if (k && len < cap) snprintf(out + len, cap - len, ")");
}

/* Parses a spec into entries; on a malformed one fills why and returns false. */
static bool parse_spec(const char *spec, sel_entry **out, int *n_out, char *why, size_t why_cap)
{
    int cap = 1;
    for (const char *p = spec; *p; p++) cap += *p == ',';
    sel_entry *e = calloc((size_t)cap, sizeof *e);
    if (!e) return snprintf(why, why_cap, "out of memory"), false;
    int n = 0;
    const char *p = spec;
    for (;;) {
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        const char *a = p, *b = end;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        int elen = (int)(b - a);
        if (elen == 0) {
            snprintf(why, why_cap, "entry %d is empty", n + 1);
            goto bad;
        }
        const char *colon = memchr(a, ':', (size_t)elen);
        const char *ne = colon ? colon : b;
        if (!valid_name(a, (size_t)(ne - a))) {
            if (ne == a)
                snprintf(why, why_cap, "entry '%.*s' has no backend name", elen, a);
            else
                snprintf(why, why_cap, "'%.*s' is not a backend name (1..%d of letters, digits, '_' and '-')",
                         (int)(ne - a), a, NAME_MAX_LEN);
            goto bad;
        }
        memcpy(e[n].name, a, (size_t)(ne - a));
        e[n].name[ne - a] = 0;
        e[n].index = 0;
        e[n].any = !colon;
        if (colon) {
            const char *d = colon + 1;
            long v = 0;
            if (d == b) {
                snprintf(why, why_cap, "entry '%.*s' has no device index after ':'", elen, a);
                goto bad;
            }
            for (const char *q = d; q < b; q++) {
                if (!isdigit((unsigned char)*q) || v > MAX_DEVICE_INDEX) {
                    snprintf(why, why_cap, "device index '%.*s' in '%.*s' is not a decimal number 0..%d",
                             (int)(b - d), d, elen, a, MAX_DEVICE_INDEX);
                    goto bad;
                }
                v = v * 10 + (*q - '0');
            }
            if (v > MAX_DEVICE_INDEX) {
                snprintf(why, why_cap, "device index '%.*s' in '%.*s' is not a decimal number 0..%d", (int)(b - d), d,
                         elen, a, MAX_DEVICE_INDEX);
                goto bad;
            }
            e[n].index = (int)v;
        }
        for (int k = 0; k < n; k++)
            if (!strcmp(e[k].name, e[n].name) && e[k].index == e[n].index) {
                snprintf(why, why_cap, "%s:%d is listed twice", e[n].name, e[n].index);
                goto bad;
            }
        n++;
        if (!*end) break;
        p = end + 1;
    }
    *out = e;
    *n_out = n;
    return true;
bad:
    free(e);
    return false;
}

/* cuda > vulkan > opencl > other plugins > cpu > backends that drive the host
 * CPU through another API (PoCL, lavapipe): those are slower than the built-in one. */
static int auto_rank(loom_backend *b)
{
    static const char *const order[] = {"cuda", "vulkan", "opencl"};
    if (on_host_cpu(b)) return 5;
    for (int i = 0; i < 3; i++)
        if (!strcmp(b->name, order[i])) return i;
    return strcmp(b->name, "cpu") ? 3 : 4;
}

/* Best available backend by the auto rule, or NULL. Registry lock held. */
static loom_backend *auto_pick_locked(void)
{
    loom_backend *best = NULL;
    for (int i = 0; i < reg.n; i++) {
        loom_backend *b = reg.b[i];
        if (!b->available) continue;
        int r = auto_rank(b), rb = best ? auto_rank(best) : 99;
        if (!best || r < rb || (r == rb && strcmp(b->name, best->name) < 0)) best = b;
    }
    return best;
}

loom_status loom__select_plan(const char *spec, loom__pick **picks_out, int *n_out, loom__select_source *source)
{
    if (!picks_out || !n_out) return loom_error(LOOM_ERR_INVALID, "loom__select_plan: NULL output");
    *picks_out = NULL;
    *n_out = 0;
    loom_status st = loom_registry_init();
    if (st) return st;

    loom__select_source src = LOOM__SELECT_SPEC;
    if (!spec || !*spec) {
        spec = getenv("LOOM_BACKEND");
        src = LOOM__SELECT_ENV;
    }
    bool blank = true;
    for (const char *p = spec ? spec : ""; *p; p++)
        if (!isspace((unsigned char)*p)) blank = false;
    if (blank && src == LOOM__SELECT_ENV) src = LOOM__SELECT_AUTO;
    if (source) *source = src;

    char where[320], avail[1024], why[256];
    snprintf(where, sizeof where, src == LOOM__SELECT_SPEC ? "backend list '%.256s'" : "LOOM_BACKEND='%.256s'",
             spec ? spec : "");

    sel_entry *e = NULL;
    int n = 0;
    pthread_mutex_lock(&reg.lock);
    available_list(avail, sizeof avail);
    if (blank) {
        loom_backend *best = auto_pick_locked();
        if (!best) {
            pthread_mutex_unlock(&reg.lock);
            return loom_error(LOOM_ERR_UNSUPPORTED, "no backend is available; %s", avail);
        }
        if (!(e = calloc(1, sizeof *e))) {
            pthread_mutex_unlock(&reg.lock);
            return loom_error(LOOM_ERR_NOMEM, "out of memory selecting a backend");
        }
        snprintf(e[0].name, sizeof e[0].name, "%s", best->name);
        e[0].any = true;
        n = 1;
    } else if (!parse_spec(spec, &e, &n, why, sizeof why)) {
        pthread_mutex_unlock(&reg.lock);
        return loom_error(LOOM_ERR_INVALID, "%s is malformed: %s; expected NAME, NAME:N or a comma-separated list "
                                            "such as 'cuda:0,cpu'", where, why);
    }

    loom__pick *picks = calloc((size_t)n + 1, sizeof *picks);
    bool has_cpu = false;
    st = picks ? LOOM_OK : loom_error(LOOM_ERR_NOMEM, "out of memory selecting a backend");
    for (int i = 0; i < n && st == LOOM_OK; i++) {
        loom_backend *b = find_locked(e[i].name);
        if (!b) {
            st = loom_error(LOOM_ERR_NOT_FOUND, "unknown backend '%s' in %s; %s", e[i].name, where, avail);
        } else if (!b->available) {
            st = loom_error(LOOM_ERR_UNSUPPORTED, "backend '%s' in %s is unavailable: %s; %s", e[i].name, where,
                            b->reason, avail);
        } else if (e[i].index >= b->n_devices) {
            char range[32] = "";
            if (b->n_devices > 1) snprintf(range, sizeof range, "..%d", b->n_devices - 1);
            st = loom_error(LOOM_ERR_NOT_FOUND, "no device %s:%d in %s: backend '%s' has %d device%s (%s:0%s)",
                            e[i].name, e[i].index, where, e[i].name, b->n_devices, b->n_devices == 1 ? "" : "s",
                            e[i].name, range);
        } else {
            picks[i] = (loom__pick){b, e[i].any ? best_device(b) : e[i].index};
            has_cpu |= !strcmp(b->name, "cpu");
        }
    }
    int total = n;
    if (st == LOOM_OK && !has_cpu) { /* the CPU: fallback for what the others reject */
        loom_backend *cpu = find_locked("cpu");
        if (cpu && cpu->available)
            picks[total++] = (loom__pick){cpu, 0};
        else
            loom_log(LOOM_LOG_WARN, "the CPU backend is unavailable (%s): no fallback device",
                     cpu ? cpu->reason : "absent");
    }
    pthread_mutex_unlock(&reg.lock);
    free(e);
    if (st) {
        free(picks);
        return st;
    }
    *picks_out = picks;
    *n_out = total;
    return LOOM_OK;
}

loom_status loom_select(const char *spec, loom_device ***devs_out, int *n_out)
{
    if (!devs_out || !n_out) return loom_error(LOOM_ERR_INVALID, "loom_select: NULL output");
    *devs_out = NULL;
    *n_out = 0;
    loom__pick *picks;
    int n;
    loom_status st = loom__select_plan(spec, &picks, &n, NULL);
    if (st) return st;
    loom_device **devs = calloc((size_t)n, sizeof *devs);
    if (!devs) {
        free(picks);
        return loom_error(LOOM_ERR_NOMEM, "out of memory selecting a backend");
    }
    int opened = 0;
    for (; opened < n; opened++)
        if ((st = loom_device_open(picks[opened].b, picks[opened].dev, &devs[opened]))) break;
    free(picks);
    if (st) { /* close what was opened */
        loom_devices_close(devs, opened);
        return st;
    }
    for (int i = 0; i < n; i++) loom_log(LOOM_LOG_DEBUG, "selected device %d: %s", i, devs[i]->label);
    *devs_out = devs;
    *n_out = n;
    return LOOM_OK;
}
