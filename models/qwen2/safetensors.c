/* safetensors.c — mmap + header validation for safetensors files and shards. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "safetensors.h"

#define MAX_HEADER ((size_t)100 << 20) /* the format's own limit is 100 MB */

typedef struct {
    char  *path;
    void  *map;
    size_t size;
} st_file;

struct loom_st {
    st_file        *files;
    int32_t         n_files;
    loom_st_tensor *t;
    int32_t         nt, ct;
    /* open-addressing hash of tensor names -> index */
    int32_t        *hash;
    size_t          hcap;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    while (*s) h = (h ^ (uint8_t)*s++) * 1099511628211ull;
    return h;
}

static loom_status index_names(loom_st *st)
{
    free(st->hash);
    st->hcap = 16;
    while (st->hcap < (size_t)st->nt * 2) st->hcap *= 2;
    if (!(st->hash = malloc(st->hcap * sizeof *st->hash))) return loom_error(LOOM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < st->hcap; i++) st->hash[i] = -1;
    for (int32_t i = 0; i < st->nt; i++) {
        size_t h = hash_str(st->t[i].name) & (st->hcap - 1);
        while (st->hash[h] >= 0) {
            if (!strcmp(st->t[st->hash[h]].name, st->t[i].name))
                return loom_error(LOOM_ERR_FORMAT, "%s: tensor '%s' appears twice (also in %s)", st->t[i].file,
                                  st->t[i].name, st->t[st->hash[h]].file);
            h = (h + 1) & (st->hcap - 1);
        }
        st->hash[h] = i;
    }
    return LOOM_OK;
}

const loom_st_tensor *loom_st_find(const loom_st *st, const char *name)
{
    if (!st->hash) return NULL;
    for (size_t h = hash_str(name) & (st->hcap - 1); st->hash[h] >= 0; h = (h + 1) & (st->hcap - 1))
        if (!strcmp(st->t[st->hash[h]].name, name)) return &st->t[st->hash[h]];
    return NULL;
}

int32_t loom_st_count(const loom_st *st) { return st->nt; }
const loom_st_tensor *loom_st_at(const loom_st *st, int32_t i) { return i >= 0 && i < st->nt ? &st->t[i] : NULL; }

void loom_st_close(loom_st *st)
{
    if (!st) return;
    for (int32_t i = 0; i < st->nt; i++) free((char *)st->t[i].name);
    for (int32_t i = 0; i < st->n_files; i++) {
        if (st->files[i].map) munmap(st->files[i].map, st->files[i].size);
        free(st->files[i].path);
    }
    free(st->files), free(st->t), free(st->hash), free(st);
}

static const struct {
    const char *name;
    size_t      size;
    int         dt; /* loom dtype, or -1 */
} st_dtypes[] = {
    {"F32", 4, LOOM_F32}, {"F16", 2, LOOM_F16}, {"BF16", 2, LOOM_BF16}, {"I32", 4, LOOM_I32},
    {"F64", 8, -1},       {"I64", 8, -1},       {"I16", 2, -1},         {"I8", 1, -1},
    {"U8", 1, -1},        {"BOOL", 1, -1},      {"U16", 2, -1},         {"U32", 4, -1},
    {"U64", 8, -1},       {"F8_E4M3", 1, -1},   {"F8_E5M2", 1, -1},
};

/* Append the tensors of one header; data_base/data_size: the data section. */
static loom_status parse_into(loom_st *st, const char *file, const uint8_t *hdr, size_t hlen, const uint8_t *data_base,
                              size_t data_size)
{
    cJSON *root = cJSON_ParseWithLength((const char *)hdr, hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return loom_error(LOOM_ERR_FORMAT, "%s: safetensors header is not a JSON object", file);
    }
    loom_status rc = LOOM_OK;
    cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        const char *name = e->string;
        if (!name) continue;
        if (!strcmp(name, "__metadata__")) continue;
#define BAD(...) do { rc = loom_error(LOOM_ERR_FORMAT, __VA_ARGS__); goto out; } while (0)
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
            BAD("%s: tensor '%s' needs dtype, shape and data_offsets [begin, end]", file, name);
        loom_st_tensor t = {0};
        size_t esize = 0;
        for (size_t i = 0; i < sizeof st_dtypes / sizeof *st_dtypes; i++)
            if (!strcmp(dt->valuestring, st_dtypes[i].name)) {
                esize = st_dtypes[i].size;
                t.known = st_dtypes[i].dt >= 0;
                t.dt = t.known ? (loom_dtype)st_dtypes[i].dt : LOOM_F32;
            }
        if (!esize) BAD("%s: tensor '%s' has unknown dtype '%.16s'", file, name, dt->valuestring);
        snprintf(t.dtype, sizeof t.dtype, "%s", dt->valuestring);
        int n = cJSON_GetArraySize(shape);
        if (n > LOOM_ST_MAX_DIMS) BAD("%s: tensor '%s' has rank %d (at most %d)", file, name, n, LOOM_ST_MAX_DIMS);
        t.ndim = n;
        size_t numel = 1;
        for (int i = 0; i < n; i++) {
            cJSON *d = cJSON_GetArrayItem(shape, i);
            if (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 9.0e15 || d->valuedouble != (double)(int64_t)d->valuedouble)
                BAD("%s: tensor '%s': dimension %d is not a non-negative integer", file, name, i);
            t.shape[i] = (int64_t)d->valuedouble;
            if (__builtin_mul_overflow(numel, (size_t)t.shape[i], &numel))
                BAD("%s: tensor '%s': shape overflows", file, name);
        }
        double b = cJSON_GetArrayItem(offs, 0)->valuedouble, en = cJSON_GetArrayItem(offs, 1)->valuedouble;
        if (!cJSON_IsNumber(cJSON_GetArrayItem(offs, 0)) || !cJSON_IsNumber(cJSON_GetArrayItem(offs, 1)) || b < 0 ||
            en < b || en > (double)data_size || b != (double)(int64_t)b || en != (double)(int64_t)en)
            BAD("%s: tensor '%s': data_offsets [%.0f, %.0f] are outside the %zu bytes of data", file, name, b, en, data_size);
        size_t nbytes;
        if (__builtin_mul_overflow(numel, esize, &nbytes) || nbytes != (size_t)en - (size_t)b)
            BAD("%s: tensor '%s': %s shape needs %zu bytes but data_offsets span %zu", file, name, t.dtype, nbytes,
                (size_t)en - (size_t)b);
        t.nbytes = nbytes;
        t.data = data_base + (size_t)b;
        t.file = file;
        if (st->nt == st->ct) {
            int32_t c = st->ct ? st->ct * 2 : 256;
            loom_st_tensor *p = realloc(st->t, (size_t)c * sizeof *p);
            if (!p) BAD("%s: out of memory", file);
            st->t = p, st->ct = c;
        }
        if (!(t.name = strdup(name))) BAD("%s: out of memory", file);
        st->t[st->nt++] = t;
#undef BAD
    }
out:
    cJSON_Delete(root);
    return rc;
}

static loom_status parse_file(loom_st *st, const char *file, const uint8_t *buf, size_t len, size_t file_size)
{
    if (file_size < 8 || len < 8)
        return loom_error(LOOM_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file", file, file_size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | buf[i];
    if (n < 2 || n > MAX_HEADER || n > file_size - 8)
        return loom_error(LOOM_ERR_FORMAT, "%s: header length %llu does not fit the file (%zu bytes) or the 100 MB limit",
                          file, (unsigned long long)n, file_size);
    if (n > len - 8) return loom_error(LOOM_ERR_FORMAT, "%s: header truncated", file);
    return parse_into(st, file, buf + 8, (size_t)n, buf + 8 + n, file_size - 8 - (size_t)n);
}

loom_status loom_st_parse(const uint8_t *buf, size_t len, size_t file_size, const char *file, loom_st **out)
{
    *out = NULL;
    loom_st *st = calloc(1, sizeof *st);
    if (!st) return loom_error(LOOM_ERR_NOMEM, "out of memory");
    loom_status rc = parse_file(st, file, buf, len, file_size);
    if (!rc) rc = index_names(st);
    if (rc) {
        loom_st_close(st);
        return rc;
    }
    *out = st;
    return LOOM_OK;
}

static loom_status map_file(loom_st *st, const char *path)
{
    st_file *f = realloc(st->files, (size_t)(st->n_files + 1) * sizeof *f);
    if (!f) return loom_error(LOOM_ERR_NOMEM, "out of memory");
    st->files = f;
    f = &st->files[st->n_files];
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return loom_error(LOOM_ERR_NOMEM, "out of memory");
    st->n_files++;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return loom_error(LOOM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return loom_error(LOOM_ERR_IO, "%s: not a regular file", path);
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        close(fd);
        return loom_error(LOOM_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file", path, f->size);
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        return loom_error(LOOM_ERR_IO, "%s: cannot map %zu bytes: %s", path, f->size, strerror(errno));
    }
    return parse_file(st, f->path, f->map, f->size, f->size);
}

loom_status loom_st_open_file(const char *path, loom_st **out)
{
    *out = NULL;
    loom_st *st = calloc(1, sizeof *st);
    if (!st) return loom_error(LOOM_ERR_NOMEM, "out of memory");
    loom_status rc = map_file(st, path);
    if (!rc) rc = index_names(st);
    if (rc) return loom_st_close(st), rc;
    *out = st;
    return LOOM_OK;
}

static char *read_text(const char *path, size_t max, loom_status *rc)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    if (!f) {
        *rc = loom_error(LOOM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (n < 0 || (size_t)n > max) *rc = loom_error(LOOM_ERR_FORMAT, "%s: %ld bytes is too large", path, n);
    else if (!(buf = malloc((size_t)n + 1))) *rc = loom_error(LOOM_ERR_NOMEM, "out of memory");
    else if (fread(buf, 1, (size_t)n, f) != (size_t)n) *rc = loom_error(LOOM_ERR_IO, "%s: read failed", path), free(buf), buf = NULL;
    else buf[n] = 0, *rc = LOOM_OK;
    fclose(f);
    return buf;
}

/* Shards: the distinct file names of the index's weight_map, each checked to
 * be a plain name in the same folder (no '/' or '..': the index is input). */
static loom_status open_index(loom_st *st, const char *dir, const char *index_path)
{
    loom_status rc;
    char *text = read_text(index_path, 64 << 20, &rc);
    if (!text) return rc;
    cJSON *root = cJSON_Parse(text);
    free(text);
    cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!cJSON_IsObject(map)) {
        cJSON_Delete(root);
        return loom_error(LOOM_ERR_FORMAT, "%s: no weight_map object", index_path);
    }
    rc = LOOM_OK;
    cJSON *e;
    cJSON_ArrayForEach(e, map)
    {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || !strcmp(e->valuestring, "..") || !*e->valuestring) {
            rc = loom_error(LOOM_ERR_FORMAT, "%s: weight_map entry '%s' is not a file name in the folder", index_path,
                            e->string ? e->string : "?");
            break;
        }
        bool seen = false;
        for (int32_t i = 0; i < st->n_files && !seen; i++) {
            const char *base = strrchr(st->files[i].path, '/');
            seen = !strcmp(base ? base + 1 : st->files[i].path, e->valuestring);
        }
        if (seen) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->valuestring);
        if ((rc = map_file(st, path))) break;
    }
    /* every tensor the index names must be in the shard it names */
    if (!rc && !(rc = index_names(st))) cJSON_ArrayForEach(e, map)
        {
            const loom_st_tensor *t = loom_st_find(st, e->string);
            const char *base = t ? strrchr(t->file, '/') : NULL;
            if (!t || strcmp(base ? base + 1 : t->file, e->valuestring)) {
                rc = loom_error(LOOM_ERR_FORMAT, "%s: tensor '%s' is not in %s", index_path, e->string, e->valuestring);
                break;
            }
        }
    cJSON_Delete(root);
    return rc;
}

loom_status loom_st_open_dir(const char *dir, loom_st **out)
{
    *out = NULL;
    char path[4096];
    struct stat sb;
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (!stat(path, &sb)) {
        loom_st *st = calloc(1, sizeof *st);
        if (!st) return loom_error(LOOM_ERR_NOMEM, "out of memory");
        loom_status rc = open_index(st, dir, path);
        if (rc) return loom_st_close(st), rc;
        *out = st;
        return LOOM_OK;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!stat(path, &sb)) return loom_st_open_file(path, out);
    DIR *d = opendir(dir);
    if (!d) return loom_error(LOOM_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    char found[1024] = "";
    int n = 0;
    for (struct dirent *de; (de = readdir(d));) {
        size_t l = strlen(de->d_name);
        if (l > 12 && !strcmp(de->d_name + l - 12, ".safetensors")) n++, snprintf(found, sizeof found, "%s", de->d_name);
    }
    closedir(d);
    if (n != 1)
        return loom_error(LOOM_ERR_NOT_FOUND, "%s: %s", dir,
                          n ? "several .safetensors files but no model.safetensors.index.json" : "no .safetensors file");
    snprintf(path, sizeof path, "%s/%s", dir, found);
    return loom_st_open_file(path, out);
}

loom_status loom_st_get(const loom_st *st, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape,
                        const loom_st_tensor **out)
{
    *out = NULL;
    const loom_st_tensor *t = loom_st_find(st, name);
    if (!t) return loom_error(LOOM_ERR_NOT_FOUND, "%s: tensor '%s' is missing", st->n_files ? st->files[0].path : "checkpoint", name);
    bool ok = t->known && t->dt == dt && t->ndim == ndim;
    for (int32_t i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char want[96] = "", got[96] = "";
        for (int32_t i = 0, k = 0; i < ndim; i++) k += snprintf(want + k, sizeof want - k, "%s%lld", i ? "," : "", (long long)shape[i]);
        for (int32_t i = 0, k = 0; i < t->ndim; i++) k += snprintf(got + k, sizeof got - k, "%s%lld", i ? "," : "", (long long)t->shape[i]);
        return loom_error(LOOM_ERR_FORMAT, "%s: tensor '%s' is %s [%s], expected %s [%s]", t->file, name, t->dtype, got,
                          loom_dtype_name(dt), want);
    }
    *out = t;
    return LOOM_OK;
}

static size_t dtype_bytes(const char *dtype)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof *st_dtypes; i++)
        if (!strcmp(dtype, st_dtypes[i].name)) return st_dtypes[i].size;
    return 0;
}

static size_t entry_bytes(const loom_st_entry *e)
{
    size_t n = dtype_bytes(e->dtype);
    for (int32_t d = 0; d < e->ndim; d++) n *= (size_t)e->shape[d];
    return n;
}

loom_status loom_st_write(const char *path, const loom_st_entry *entries, int32_t n, loom_st_fill_fn fill, void *ud)
{
    /* The data section may have no holes, so alignment comes from order:
     * widest element first keeps every tensor aligned to its element size. */
    int32_t *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order), k = 0;
    if (!order) return loom_error(LOOM_ERR_NOMEM, "out of memory");
    for (size_t w = 8; w >= 1; w /= 2)
        for (int32_t i = 0; i < n; i++)
            if (dtype_bytes(entries[i].dtype) == w) order[k++] = i;
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    size_t off = 0, biggest = 0;
    for (int32_t j = 0; j < n; j++) {
        int32_t i = order[j];
        size_t nb = entry_bytes(&entries[i]);
        if (!nb || j >= k) {
            cJSON_Delete(root);
            free(order);
            return loom_error(LOOM_ERR_INVALID, "%s: tensor '%s' has unknown dtype '%s' or an empty shape", path,
                              entries[i].name, entries[i].dtype);
        }
        cJSON *t = cJSON_AddObjectToObject(root, entries[i].name);
        cJSON_AddStringToObject(t, "dtype", entries[i].dtype);
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int32_t d = 0; d < entries[i].ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)entries[i].shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
        if (nb > biggest) biggest = nb;
    }
    char *hdr = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!hdr) return free(order), loom_error(LOOM_ERR_NOMEM, "out of memory");
    size_t hlen = strlen(hdr), padded = (hlen + 7) / 8 * 8; /* data starts 8-aligned */
    loom_status rc = LOOM_OK;
    void *buf = malloc(biggest ? biggest : 1);
    FILE *f = fopen(path, "wb");
    if (!buf) rc = loom_error(LOOM_ERR_NOMEM, "out of memory: %zu bytes", biggest);
    else if (!f) rc = loom_error(LOOM_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    if (!rc) {
        uint8_t len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
        bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
        for (size_t i = hlen; i < padded && ok; i++) ok = fputc(' ', f) != EOF;
        for (int32_t j = 0; j < n && ok && !rc; j++) {
            size_t nb = entry_bytes(&entries[order[j]]);
            if (!(rc = fill(ud, order[j], buf, nb))) ok = fwrite(buf, 1, nb, f) == nb;
        }
        if (!ok && !rc) rc = loom_error(LOOM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    }
    if (f && fclose(f) && !rc) rc = loom_error(LOOM_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    free(buf);
    free(hdr);
    free(order);
    return rc;
}
