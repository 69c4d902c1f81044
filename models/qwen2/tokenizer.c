/*
 * tokenizer.c — byte-level BPE from a Hugging Face tokenizer.json.
 *
 * Load: cJSON parses the file; every vocabulary key is turned from its
 * byte-level spelling (GPT-2 bytes_to_unicode: "Ġthe") into raw bytes
 * (" the"), so encoding works on bytes and never builds byte-level strings.
 *   - pieces: id -> raw bytes (one arena); decoding is a copy per id;
 *   - vocab hash: raw bytes -> id (open addressing, FNV-1a);
 *   - merge hash: (left id, right id) -> (rank, merged id).
 * Encode: added tokens split the raw text; each gap is NFC-normalised
 * (utf8proc), split by the pre-tokenizer regex(es) (PCRE2 JIT), and each piece
 * is merged with a min-heap on (rank, position), the order the reference BPE
 * uses. A per-call cache maps short words to their ids.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <utf8proc.h>

#include "tokenizer.h"

#define MAX_IDS      (1 << 24) /* ids past this are a malformed file */
#define MAX_SPLITS   8
#define CACHE_WORD   64        /* words up to this many bytes are cached */
#define CACHE_SLOTS  (1u << 16)

/* GPT-2's regex, used by a ByteLevel pre-tokenizer with use_regex true. */
static const char gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

enum split_behavior { SPLIT_ISOLATED, SPLIT_REMOVED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT };
enum { ID_PRESENT = 1, ID_ADDED = 2, ID_SPECIAL = 4, ID_BPE = 8 };

typedef struct {
    int32_t id;
    char   *content;
    size_t  len;
    bool    special, normalized, lstrip, rstrip, single_word;
} added_tok;

typedef struct {          /* added tokens matched in one pass, by first byte */
    int32_t *order;       /* indices into tok->added, by first byte then length, longest first */
    int32_t  start[257];  /* order[start[b] .. start[b+1]) begin with byte b */
    int32_t  n;
} added_set;

typedef struct {
    pcre2_code         *re;
    enum split_behavior behavior;
} splitter;

typedef struct {
    uint64_t key;         /* (left << 32) | right; 0 = empty (id 0 pairs use key + 1 below) */
    int32_t  rank, id;
} merge_slot;

struct loom_tokenizer {
    char       *name;
    int32_t     n_ids;
    char       *arena;     /* piece bytes */
    uint32_t   *piece_off, *piece_len;
    uint8_t    *id_flags;
    size_t      max_piece;

    int32_t    *vhash;     /* -1 = empty */
    uint32_t    vmask;
    merge_slot *mhash;
    uint32_t    mmask;
    int32_t     byte_id[256];
    int32_t     unk_id;
    bool        ignore_merges;

    int         norm_options; /* utf8proc options; 0: no normaliser */
    splitter    split[MAX_SPLITS];
    int         n_split;

    added_tok  *added;
    int32_t     n_added;
    added_set   raw_set, norm_set;
};

/* ---- byte-level mapping (GPT-2 bytes_to_unicode) ------------------------- */

/* The byte a byte-level character stands for, or -1. Bytes that are printable
 * in Latin-1 ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for themselves; the other
 * 68 (0..0x20, 0x7F..0xA0, 0xAD) are U+0100.. in byte order. */
static int cp_to_byte(int32_t cp)
{
    if (cp < 0) return -1;
    if (cp < 256) return (cp >= '!' && cp <= '~') || (cp >= 0xA1 && cp <= 0xAC) || cp >= 0xAE ? cp : -1;
    int n = cp - 256;
    if (n < 33) return n;               /* 0x00..0x20 */
    if (n < 67) return 0x7F + (n - 33); /* 0x7F..0xA0 */
    return n == 67 ? 0xAD : -1;
}

/* Byte-level spelling -> raw bytes into out (at least len bytes). False when a
 * character is outside the mapping (such a token cannot come out of BPE). */
static bool bytelevel_decode(const char *s, size_t len, char *out, size_t *out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
        int b = k > 0 ? cp_to_byte(cp) : -1;
        if (b < 0) return false;
        out[o++] = (char)b;
        i += (size_t)k;
    }
    *out_len = o;
    return true;
}

/* ---- UTF-8 ------------------------------------------------------------------ */

bool loom_utf8_valid(const char *str, size_t len, size_t *bad_offset)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t need;
        unsigned lo = 0x80, hi = 0xBF; /* range of the second byte */
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; if (c == 0xE0) lo = 0xA0; if (c == 0xED) hi = 0x9F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; if (c == 0xF0) lo = 0x90; if (c == 0xF4) hi = 0x8F; }
        else break;                                         /* stray continuation, C0, C1, F5.. */
        if (len - i <= need) break;                         /* truncated */
        if (s[i + 1] < lo || s[i + 1] > hi) break;          /* overlong, surrogate, past U+10FFFF */
        if (need >= 2 && (s[i + 2] & 0xC0) != 0x80) break;
        if (need == 3 && (s[i + 3] & 0xC0) != 0x80) break;
        i += need + 1;
    }
    if (i == len) return true;
    if (bad_offset) *bad_offset = i; /* start of the invalid sequence */
    return false;
}

static bool is_unicode_space(uint32_t c) /* Unicode White_Space (Rust char::is_whitespace) */
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

static bool is_word_char(uint32_t c) /* alphanumeric or '_' */
{
    if (c == '_') return true;
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
           (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
}

/* Code point ending at s[end) (valid UTF-8 assumed); its start in *start. */
static uint32_t cp_before(const char *s, size_t end, size_t *start)
{
    size_t i = end - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    utf8proc_int32_t cp = 0;
    utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(end - i), &cp);
    *start = i;
    return (uint32_t)cp;
}

static uint32_t cp_at(const char *s, size_t len, size_t i, size_t *next)
{
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t k = utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(len - i), &cp);
    *next = i + (size_t)(k > 0 ? k : 1);
    return (uint32_t)cp;
}

/* ---- hashing ---------------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

static uint32_t hash_pair(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(key >> 32);
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t p = 16;
    while (p < n) p <<= 1;
    return p;
}

static int32_t vocab_find(const loom_tokenizer *t, const char *s, size_t n)
{
    uint32_t i = (uint32_t)hash_bytes(s, n) & t->vmask;
    for (;;) {
        int32_t id = t->vhash[i];
        if (id < 0) return -1;
        if (t->piece_len[id] == n && !memcmp(t->arena + t->piece_off[id], s, n)) return id;
        i = (i + 1) & t->vmask;
    }
}

static const merge_slot *merge_find(const loom_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    uint32_t i = hash_pair(key) & t->mmask;
    for (;;) {
        const merge_slot *m = &t->mhash[i];
        if (m->key == key) return m;
        if (!m->key) return NULL;
        i = (i + 1) & t->mmask;
    }
}

/* ---- loading ---------------------------------------------------------------- */

static const char *json_str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool json_bool(const cJSON *obj, const char *key, bool dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static bool json_is_null(const cJSON *v)
{
    return !v || cJSON_IsNull(v);
}

static bool json_id(const cJSON *v, int32_t *out)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= MAX_IDS || v->valuedouble != (double)(int32_t)v->valuedouble)
        return false;
    *out = (int32_t)v->valuedouble;
    return true;
}

static loom_status load_normalizer(loom_tokenizer *t, const cJSON *n)
{
    if (json_is_null(n)) return LOOM_OK;
    const char *type = json_str(n, "type");
    if (!type) return loom_error(LOOM_ERR_FORMAT, "%s: normalizer has no \"type\"", t->name);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(list)) return loom_error(LOOM_ERR_FORMAT, "%s: normalizer Sequence without a \"normalizers\" list", t->name);
        const cJSON *e;
        cJSON_ArrayForEach(e, list) {
            if (t->norm_options)
                return loom_error(LOOM_ERR_UNSUPPORTED, "%s: normalizer Sequence with more than one step is not supported", t->name);
            loom_status st = load_normalizer(t, e);
            if (st) return st;
        }
        return LOOM_OK;
    }
    int o = UTF8PROC_STABLE;
    if (!strcmp(type, "NFC")) t->norm_options = o | UTF8PROC_COMPOSE;
    else if (!strcmp(type, "NFD")) t->norm_options = o | UTF8PROC_DECOMPOSE;
    else if (!strcmp(type, "NFKC")) t->norm_options = o | UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
    else if (!strcmp(type, "NFKD")) t->norm_options = o | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
    else
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: normalizer \"%s\" is not supported (NFC, NFD, NFKC, NFKD are)", t->name, type);
    return LOOM_OK;
}

static loom_status add_splitter(loom_tokenizer *t, const char *pattern, bool literal, enum split_behavior b)
{
    if (t->n_split == MAX_SPLITS)
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: more than %d Split pre-tokenizers", t->name, MAX_SPLITS);
    int err;
    PCRE2_SIZE off;
    uint32_t opt = literal ? PCRE2_LITERAL | PCRE2_UTF : PCRE2_UTF | PCRE2_UCP;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opt, &err, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: pre-tokenizer regex does not compile at offset %zu: %s",
                          t->name, (size_t)off, (const char *)msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* interpreter if JIT is unavailable */
    t->split[t->n_split].re = re;
    t->split[t->n_split].behavior = b;
    t->n_split++;
    return LOOM_OK;
}

static loom_status load_pretok_step(loom_tokenizer *t, const cJSON *p, bool last, bool *saw_bytelevel)
{
    const char *type = json_str(p, "type");
    if (!type) return loom_error(LOOM_ERR_FORMAT, "%s: pre_tokenizer step has no \"type\"", t->name);
    if (*saw_bytelevel)
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: pre_tokenizer step \"%s\" after ByteLevel is not supported", t->name, type);
    if (!strcmp(type, "ByteLevel")) {
        if (!last) return loom_error(LOOM_ERR_UNSUPPORTED, "%s: ByteLevel must be the last pre_tokenizer step", t->name);
        if (json_bool(p, "add_prefix_space", false))
            return loom_error(LOOM_ERR_UNSUPPORTED, "%s: ByteLevel with add_prefix_space true is not supported", t->name);
        *saw_bytelevel = true;
        if (json_bool(p, "use_regex", true)) return add_splitter(t, gpt2_pattern, false, SPLIT_ISOLATED);
        return LOOM_OK;
    }
    if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const char *re = json_str(pat, "Regex"), *lit = json_str(pat, "String");
        if (!re && !lit) return loom_error(LOOM_ERR_FORMAT, "%s: Split pre-tokenizer without a Regex or String pattern", t->name);
        if (json_bool(p, "invert", false))
            return loom_error(LOOM_ERR_UNSUPPORTED, "%s: Split pre-tokenizer with invert true is not supported", t->name);
        const char *b = json_str(p, "behavior");
        enum split_behavior beh;
        if (!b) return loom_error(LOOM_ERR_FORMAT, "%s: Split pre-tokenizer without \"behavior\"", t->name);
        if (!strcmp(b, "Isolated")) beh = SPLIT_ISOLATED;
        else if (!strcmp(b, "Removed")) beh = SPLIT_REMOVED;
        else if (!strcmp(b, "MergedWithPrevious")) beh = SPLIT_MERGED_PREV;
        else if (!strcmp(b, "MergedWithNext")) beh = SPLIT_MERGED_NEXT;
        else return loom_error(LOOM_ERR_UNSUPPORTED, "%s: Split behavior \"%s\" is not supported", t->name, b);
        return add_splitter(t, re ? re : lit, !re, beh);
    }
    return loom_error(LOOM_ERR_UNSUPPORTED, "%s: pre-tokenizer \"%s\" is not supported (Split and ByteLevel are)", t->name, type);
}

static loom_status load_pretokenizer(loom_tokenizer *t, const cJSON *p)
{
    if (json_is_null(p))
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: no pre_tokenizer; only byte-level BPE is supported", t->name);
    const char *type = json_str(p, "type");
    bool saw = false;
    loom_status st;
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(list)) return loom_error(LOOM_ERR_FORMAT, "%s: pre_tokenizer Sequence without \"pretokenizers\"", t->name);
        const cJSON *e;
        cJSON_ArrayForEach(e, list)
            if ((st = load_pretok_step(t, e, e->next == NULL, &saw))) return st;
    } else if ((st = load_pretok_step(t, p, true, &saw))) {
        return st;
    }
    if (!saw) return loom_error(LOOM_ERR_UNSUPPORTED, "%s: pre_tokenizer has no ByteLevel step; only byte-level BPE is supported", t->name);
    return LOOM_OK;
}

static loom_status check_decoder(loom_tokenizer *t, const cJSON *d, const char *what)
{
    if (json_is_null(d)) return LOOM_OK;
    const char *type = json_str(d, "type");
    if (type && !strcmp(type, "ByteLevel")) return LOOM_OK;
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(d, !strcmp(what, "decoder") ? "decoders" : "processors");
        const cJSON *e;
        cJSON_ArrayForEach(e, list) {
            loom_status st = check_decoder(t, e, what);
            if (st) return st;
        }
        return LOOM_OK;
    }
    return loom_error(LOOM_ERR_UNSUPPORTED, "%s: %s \"%s\" is not supported (ByteLevel is)", t->name, what, type ? type : "?");
}

/* Order within an added-token set: by first byte, then longest first. */
static bool added_before(const added_tok *x, const added_tok *y)
{
    unsigned char bx = (unsigned char)x->content[0], by = (unsigned char)y->content[0];
    if (bx != by) return bx < by;
    if (x->len != y->len) return x->len > y->len;
    return x->id < y->id;
}

static loom_status build_set(loom_tokenizer *t, added_set *s, bool normalized)
{
    s->order = malloc(((size_t)t->n_added + 1) * sizeof *s->order);
    if (!s->order) return loom_error(LOOM_ERR_NOMEM, "%s: out of memory", t->name);
    s->n = 0;
    for (int32_t i = 0; i < t->n_added; i++)
        if (t->added[i].normalized == normalized) s->order[s->n++] = i;
    for (int32_t i = 1; i < s->n; i++) { /* insertion sort: the list is short */
        int32_t v = s->order[i], j = i;
        while (j > 0 && added_before(&t->added[v], &t->added[s->order[j - 1]])) s->order[j] = s->order[j - 1], j--;
        s->order[j] = v;
    }
    int32_t k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < s->n && (unsigned char)t->added[s->order[k]].content[0] < b) k++;
        s->start[b] = k;
    }
    s->start[256] = s->n;
    return LOOM_OK;
}

static loom_status read_file(const char *path, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return loom_error(LOOM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 20, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) { fclose(f); return loom_error(LOOM_ERR_NOMEM, "%s: out of memory reading the file", path); }
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
        if (!nb) free(buf);
        buf = nb;
        cap *= 2;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) { free(buf); return loom_error(LOOM_ERR_IO, "%s: read error", path); }
    *data = buf;
    *len = n;
    return LOOM_OK;
}

loom_status loom_tokenizer_load(const char *path, loom_tokenizer **out)
{
    if (!path || !out) return loom_error(LOOM_ERR_INVALID, "loom_tokenizer_load: NULL argument");
    *out = NULL;
    char *data = NULL;
    size_t len = 0;
    loom_status st = read_file(path, &data, &len);
    if (st) return st;
    st = loom_tokenizer_load_json(data, len, path, out);
    free(data);
    return st;
}

static loom_status load_model(loom_tokenizer *t, const cJSON *root);

loom_status loom_tokenizer_load_json(const char *json, size_t len, const char *name, loom_tokenizer **out)
{
    if (!json || !out) return loom_error(LOOM_ERR_INVALID, "loom_tokenizer_load_json: NULL argument");
    *out = NULL;
    if (!name) name = "tokenizer.json";
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        size_t at = e && e >= json && e <= json + len ? (size_t)(e - json) : 0;
        return loom_error(LOOM_ERR_FORMAT, "%s: not valid JSON (near byte %zu)", name, at);
    }
    loom_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->name = strdup(name))) {
        free(t);
        cJSON_Delete(root);
        return loom_error(LOOM_ERR_NOMEM, "%s: out of memory", name);
    }
    t->unk_id = -1;
    loom_status st;
    if (!cJSON_IsObject(root)) st = loom_error(LOOM_ERR_FORMAT, "%s: the top level is not a JSON object", name);
    else if (!(st = load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"))) &&
             !(st = load_pretokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"))) &&
             !(st = check_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), "decoder")) &&
             !(st = check_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), "post_processor")))
        st = load_model(t, root);
    if (!st && !json_is_null(cJSON_GetObjectItemCaseSensitive(root, "truncation")))
        loom_log(LOOM_LOG_WARN, "%s: \"truncation\" is set and ignored", name);
    cJSON_Delete(root);
    if (st) {
        loom_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LOOM_OK;
}

static loom_status load_model(loom_tokenizer *t, const cJSON *root)
{
    const char *name = t->name;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return loom_error(LOOM_ERR_FORMAT, "%s: no \"model\" object", name);
    const char *type = json_str(model, "type");
    if (type && strcmp(type, "BPE"))
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: model type \"%s\" is not supported (BPE is)", name, type);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (!json_is_null(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0))
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: BPE dropout is not supported", name);
    if (json_bool(model, "byte_fallback", false))
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: BPE byte_fallback is not supported", name);
    const char *pre = json_str(model, "continuing_subword_prefix"), *suf = json_str(model, "end_of_word_suffix");
    if ((pre && *pre) || (suf && *suf))
        return loom_error(LOOM_ERR_UNSUPPORTED, "%s: BPE continuing_subword_prefix/end_of_word_suffix are not supported", name);
    t->ignore_merges = json_bool(model, "ignore_merges", false);

    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab)) return loom_error(LOOM_ERR_FORMAT, "%s: model has no \"vocab\" object", name);
    if (!json_is_null(merges) && !cJSON_IsArray(merges)) return loom_error(LOOM_ERR_FORMAT, "%s: model \"merges\" is not a list", name);
    if (!json_is_null(added) && !cJSON_IsArray(added)) return loom_error(LOOM_ERR_FORMAT, "%s: \"added_tokens\" is not a list", name);

    /* sizes */
    int32_t max_id = -1, n_vocab = 0;
    size_t arena = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        int32_t id;
        if (!json_id(e, &id))
            return loom_error(LOOM_ERR_FORMAT, "%s: vocabulary entry \"%.40s\" has no valid id (0..%d)", name, e->string, MAX_IDS - 1);
        if (id > max_id) max_id = id;
        arena += strlen(e->string);
        n_vocab++;
    }
    int32_t n_added = 0;
    cJSON_ArrayForEach(e, added) {
        int32_t id;
        const char *content = json_str(e, "content");
        if (!json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id) || !content || !*content)
            return loom_error(LOOM_ERR_FORMAT, "%s: added_tokens[%d] needs an \"id\" (0..%d) and a non-empty \"content\"", name, n_added, MAX_IDS - 1);
        if (id > max_id) max_id = id;
        arena += strlen(content);
        n_added++;
    }
    if (max_id < 0) return loom_error(LOOM_ERR_FORMAT, "%s: the vocabulary is empty", name);
    if (arena >= UINT32_MAX) return loom_error(LOOM_ERR_FORMAT, "%s: vocabulary too large", name);
    t->n_ids = max_id + 1;
    t->arena = malloc(arena + 1);
    t->piece_off = calloc((size_t)t->n_ids, sizeof *t->piece_off);
    t->piece_len = calloc((size_t)t->n_ids, sizeof *t->piece_len);
    t->id_flags = calloc((size_t)t->n_ids, 1);
    t->vmask = pow2_at_least((uint64_t)n_vocab * 2 + 1) - 1;
    t->vhash = malloc(((size_t)t->vmask + 1) * sizeof *t->vhash);
    t->added = calloc((size_t)n_added + 1, sizeof *t->added);
    if (!t->arena || !t->piece_off || !t->piece_len || !t->id_flags || !t->vhash || !t->added)
        return loom_error(LOOM_ERR_NOMEM, "%s: out of memory for the vocabulary", name);
    memset(t->vhash, 0xff, ((size_t)t->vmask + 1) * sizeof *t->vhash);

    /* vocabulary: raw bytes per id, and the byte -> id hash */
    size_t at = 0;
    cJSON_ArrayForEach(e, vocab) {
        int32_t id = (int32_t)e->valuedouble;
        if (t->id_flags[id] & ID_PRESENT)
            return loom_error(LOOM_ERR_FORMAT, "%s: id %d is used twice in the vocabulary (\"%.40s\")", name, id, e->string);
        size_t klen = strlen(e->string), blen;
        bool bpe = bytelevel_decode(e->string, klen, t->arena + at, &blen);
        if (!bpe) memcpy(t->arena + at, e->string, blen = klen); /* decoded as written, as the reference does */
        t->piece_off[id] = (uint32_t)at;
        t->piece_len[id] = (uint32_t)blen;
        t->id_flags[id] = ID_PRESENT | (bpe ? ID_BPE : 0);
        at += blen;
        if (bpe) {
            uint32_t i = (uint32_t)hash_bytes(t->arena + t->piece_off[id], blen) & t->vmask;
            while (t->vhash[i] >= 0) {
                int32_t o = t->vhash[i];
                if (t->piece_len[o] == blen && !memcmp(t->arena + t->piece_off[o], t->arena + t->piece_off[id], blen))
                    return loom_error(LOOM_ERR_FORMAT, "%s: vocabulary token \"%.40s\" appears twice", name, e->string);
                i = (i + 1) & t->vmask;
            }
            t->vhash[i] = id;
        }
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = vocab_find(t, &c, 1);
    }
    const char *unk = json_str(model, "unk_token");
    if (unk) {
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(vocab, unk);
        if (u) t->unk_id = (int32_t)u->valuedouble;
    }

    /* merges: "a b" strings or ["a", "b"] pairs; rank = position */
    int32_t n_merges = cJSON_GetArraySize(merges);
    t->mmask = pow2_at_least((uint64_t)n_merges * 2 + 1) - 1;
    t->mhash = calloc((size_t)t->mmask + 1, sizeof *t->mhash);
    char *buf = malloc(2 * 1024 + 2);
    if (!t->mhash || !buf) { free(buf); return loom_error(LOOM_ERR_NOMEM, "%s: out of memory for merges", name); }
    int32_t rank = 0;
    loom_status st = LOOM_OK;
    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        size_t alen, blen;
        if (cJSON_IsString(e)) {
            a = e->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp) { st = loom_error(LOOM_ERR_FORMAT, "%s: merge %d (\"%.40s\") is not two tokens separated by a space", name, rank, a); break; }
            alen = (size_t)(sp - a);
            b = sp + 1;
            blen = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) && cJSON_IsString(e->child->next)) {
            a = e->child->valuestring, alen = strlen(a);
            b = e->child->next->valuestring, blen = strlen(b);
        } else {
            st = loom_error(LOOM_ERR_FORMAT, "%s: merge %d is neither \"a b\" nor [\"a\", \"b\"]", name, rank);
            break;
        }
        size_t ra, rb;
        if (alen > 1024 || blen > 1024 || !bytelevel_decode(a, alen, buf, &ra) || !bytelevel_decode(b, blen, buf + ra, &rb)) {
            st = loom_error(LOOM_ERR_FORMAT, "%s: merge %d (\"%.*s\" + \"%.*s\") is not byte-level text", name, rank,
                            (int)(alen > 40 ? 40 : alen), a, (int)(blen > 40 ? 40 : blen), b);
            break;
        }
        int32_t ia = vocab_find(t, buf, ra), ib = vocab_find(t, buf + ra, rb), im = vocab_find(t, buf, ra + rb);
        if (ia < 0 || ib < 0 || im < 0) {
            st = loom_error(LOOM_ERR_FORMAT, "%s: merge %d (\"%.*s\" + \"%.*s\"): %s is not in the vocabulary", name, rank,
                            (int)(alen > 40 ? 40 : alen), a, (int)(blen > 40 ? 40 : blen), b,
                            ia < 0 ? "the left token" : ib < 0 ? "the right token" : "the merged token");
            break;
        }
        uint64_t key = ((uint64_t)(uint32_t)ia << 32 | (uint32_t)ib) + 1;
        uint32_t i = hash_pair(key) & t->mmask;
        while (t->mhash[i].key && t->mhash[i].key != key) i = (i + 1) & t->mmask;
        t->mhash[i] = (merge_slot){key, rank, im}; /* a repeated pair keeps its last rank, as the reference's map does */
        rank++;
    }
    free(buf);
    if (st) return st;

    /* added tokens: their content is their piece. (An added token that reuses a
     * vocabulary id with different text replaces that id's piece; merges were
     * resolved to ids above, so BPE still reaches the id.) */
    cJSON_ArrayForEach(e, added) {
        added_tok *a = &t->added[t->n_added];
        a->id = (int32_t)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
        const char *content = json_str(e, "content");
        a->len = strlen(content);
        if (!loom_utf8_valid(content, a->len, NULL))
            return loom_error(LOOM_ERR_FORMAT, "%s: added token %d is not valid UTF-8", name, a->id);
        if (!(a->content = strdup(content))) return loom_error(LOOM_ERR_NOMEM, "%s: out of memory", name);
        a->special = json_bool(e, "special", false);
        a->normalized = json_bool(e, "normalized", !a->special);
        a->lstrip = json_bool(e, "lstrip", false);
        a->rstrip = json_bool(e, "rstrip", false);
        a->single_word = json_bool(e, "single_word", false);
        t->n_added++;
        memcpy(t->arena + at, content, a->len);
        t->piece_off[a->id] = (uint32_t)at;
        t->piece_len[a->id] = (uint32_t)a->len;
        at += a->len;
        t->id_flags[a->id] = (uint8_t)((t->id_flags[a->id] & ID_BPE) | ID_PRESENT | ID_ADDED | (a->special ? ID_SPECIAL : 0));
    }
    for (int32_t id = 0; id < t->n_ids; id++)
        if (t->piece_len[id] > t->max_piece) t->max_piece = t->piece_len[id];
    if ((st = build_set(t, &t->raw_set, false))) return st;
    if ((st = build_set(t, &t->norm_set, true))) return st;
    loom_log(LOOM_LOG_DEBUG, "%s: %d ids (%d vocabulary, %d added), %d merges, %d split regex(es)",
             name, t->n_ids, n_vocab, t->n_added, rank, t->n_split);
    return LOOM_OK;
}

void loom_tokenizer_free(loom_tokenizer *t)
{
    if (!t) return;
    for (int i = 0; i < t->n_split; i++) pcre2_code_free(t->split[i].re);
    for (int32_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    free(t->raw_set.order);
    free(t->norm_set.order);
    free(t->arena);
    free(t->piece_off);
    free(t->piece_len);
    free(t->id_flags);
    free(t->vhash);
    free(t->mhash);
    free(t->name);
    free(t);
}

/* ---- queries ---------------------------------------------------------------- */

int32_t loom_tokenizer_vocab_size(const loom_tokenizer *t)
{
    return t ? t->n_ids : 0;
}

size_t loom_tokenizer_max_piece(const loom_tokenizer *t)
{
    return t ? t->max_piece : 0;
}

loom_status loom_tokenizer_token_id(const loom_tokenizer *t, const char *text, int32_t *id)
{
    if (!t || !text || !id) return loom_error(LOOM_ERR_INVALID, "loom_tokenizer_token_id: NULL argument");
    size_t n = strlen(text);
    for (int32_t i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && !memcmp(t->added[i].content, text, n)) return *id = t->added[i].id, LOOM_OK;
    int32_t v = vocab_find(t, text, n);
    if (v >= 0) return *id = v, LOOM_OK;
    return loom_error(LOOM_ERR_NOT_FOUND, "%s: no token is \"%.60s\"", t->name, text);
}

bool loom_tokenizer_is_special(const loom_tokenizer *t, int32_t id)
{
    return t && id >= 0 && id < t->n_ids && (t->id_flags[id] & ID_SPECIAL);
}

int32_t loom_tokenizer_added_count(const loom_tokenizer *t)
{
    return t ? t->n_added : 0;
}

loom_status loom_tokenizer_added_at(const loom_tokenizer *t, int32_t i, int32_t *id, const char **content, bool *special)
{
    if (!t || i < 0 || i >= t->n_added)
        return loom_error(LOOM_ERR_INVALID, "added token index %d out of range (0..%d)", i, t ? t->n_added - 1 : -1);
    if (id) *id = t->added[i].id;
    if (content) *content = t->added[i].content;
    if (special) *special = t->added[i].special;
    return LOOM_OK;
}

/* ---- encoding --------------------------------------------------------------- */

typedef struct { int32_t rank, pos, right, lid, rid, id; } heap_ent;

typedef struct {
    uint64_t hash;
    uint32_t key_off, ids_off;
    uint16_t key_len, n_ids;
} cache_slot;

typedef struct {                      /* per-call state */
    const loom_tokenizer *t;
    int32_t   *ids;   size_t n, cap;  /* output */
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    /* BPE scratch */
    int32_t   *sym, *prev, *next;  size_t sym_cap;
    heap_ent  *heap;  size_t heap_n, heap_cap;
    /* word cache */
    cache_slot *slots;  uint32_t n_cached, cmask;
    char      *ckeys;  size_t ckeys_n, ckeys_cap;
    int32_t   *cids;   size_t cids_n, cids_cap;
} enc;

static bool grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *np = realloc(*p, c * elem);
    if (!np) return false;
    *p = np;
    *cap = c;
    return true;
}

static loom_status emit(enc *e, int32_t id)
{
    if (e->n == e->cap && !grow((void **)&e->ids, &e->cap, e->n + 1, sizeof *e->ids))
        return loom_error(LOOM_ERR_NOMEM, "tokenize: out of memory");
    e->ids[e->n++] = id;
    return LOOM_OK;
}

static bool heap_less(const heap_ent *a, const heap_ent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(enc *e, heap_ent v)
{
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&v, &e->heap[p])) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = v;
}

static heap_ent heap_pop(enc *e)
{
    heap_ent top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && heap_less(&e->heap[c + 1], &e->heap[c])) c++;
        if (!heap_less(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = last;
    return top;
}

static void push_pair(enc *e, int32_t l, int32_t r)
{
    if (l < 0 || r < 0 || e->sym[l] < 0 || e->sym[r] < 0) return;
    const merge_slot *m = merge_find(e->t, e->sym[l], e->sym[r]);
    if (m) heap_push(e, (heap_ent){m->rank, l, r, e->sym[l], e->sym[r], m->id});
}

/* BPE of one pre-token's bytes; appends ids. */
static loom_status bpe_word(enc *e, const char *w, size_t n)
{
    const loom_tokenizer *t = e->t;
    if (n == 1) {
        int32_t id = t->byte_id[(unsigned char)w[0]];
        if (id < 0) id = t->unk_id;
        return id < 0 ? LOOM_OK : emit(e, id);
    }
    if (t->ignore_merges) {
        int32_t id = vocab_find(t, w, n);
        if (id >= 0) return emit(e, id);
    }
    /* cache */
    uint64_t h = 0;
    uint32_t slot = 0;
    if (n <= CACHE_WORD) {
        h = hash_bytes(w, n) | 1;
        slot = (uint32_t)h & e->cmask;
        for (;;) {
            cache_slot *c = &e->slots[slot];
            if (!c->hash) break;
            if (c->hash == h && c->key_len == n && !memcmp(e->ckeys + c->key_off, w, n)) {
                if (!grow((void **)&e->ids, &e->cap, e->n + c->n_ids, sizeof *e->ids))
                    return loom_error(LOOM_ERR_NOMEM, "tokenize: out of memory");
                if (c->n_ids) memcpy(e->ids + e->n, e->cids + c->ids_off, c->n_ids * sizeof *e->ids);
                e->n += c->n_ids;
                return LOOM_OK;
            }
            slot = (slot + 1) & e->cmask;
        }
    }
    if (n > e->sym_cap) {
        size_t c = e->sym_cap;
        if (!grow((void **)&e->sym, &c, n, sizeof *e->sym)) return loom_error(LOOM_ERR_NOMEM, "tokenize: out of memory");
        c = e->sym_cap;
        if (!grow((void **)&e->prev, &c, n, sizeof *e->prev)) return loom_error(LOOM_ERR_NOMEM, "tokenize: out of memory");
        c = e->sym_cap;
        if (!grow((void **)&e->next, &c, n, sizeof *e->next)) return loom_error(LOOM_ERR_NOMEM, "tokenize: out of memory");
        e->sym_cap = c;
    }
    if (!grow((void **)&e->heap, &e->heap_cap, 3 * n, sizeof *e->heap)) return loom_error(LOOM_ERR_NOMEM, "tokenize: out of memory");
    int32_t *sym = e->sym, *prev = e->prev, *next = e->next;
    int32_t len = (int32_t)n;
    for (int32_t i = 0; i < len; i++) {
        sym[i] = t->byte_id[(unsigned char)w[i]];
        if (sym[i] < 0) sym[i] = t->unk_id; /* -1 when there is none: dropped, as the reference does */
        prev[i] = i - 1;
        next[i] = i + 1 < len ? i + 1 : -1;
    }
    e->heap_n = 0;
    for (int32_t i = 0; i + 1 < len; i++) push_pair(e, i, i + 1);
    while (e->heap_n) {
        heap_ent m = heap_pop(e);
        /* stale if either side was merged away or changed since the push */
        if (sym[m.pos] != m.lid || next[m.pos] != m.right || sym[m.right] != m.rid) continue;
        sym[m.pos] = m.id;
        sym[m.right] = -2; /* gone */
        next[m.pos] = next[m.right];
        if (next[m.pos] >= 0) prev[next[m.pos]] = m.pos;
        push_pair(e, prev[m.pos], m.pos);
        push_pair(e, m.pos, next[m.pos]);
    }
    size_t first = e->n;
    for (int32_t i = 0; i >= 0; i = next[i]) {
        if (sym[i] < 0) continue;
        loom_status st = emit(e, sym[i]);
        if (st) return st;
    }
    /* remember it */
    size_t k = e->n - first;
    if (n <= CACHE_WORD && k <= UINT16_MAX) {
        if (e->n_cached >= (e->cmask + 1) / 2) { /* full: start over */
            memset(e->slots, 0, ((size_t)e->cmask + 1) * sizeof *e->slots);
            e->n_cached = 0;
            e->ckeys_n = e->cids_n = 0;
            slot = (uint32_t)h & e->cmask;
        }
        if (grow((void **)&e->ckeys, &e->ckeys_cap, e->ckeys_n + n, 1) &&
            grow((void **)&e->cids, &e->cids_cap, e->cids_n + k, sizeof *e->cids)) {
            while (e->slots[slot].hash) slot = (slot + 1) & e->cmask;
            memcpy(e->ckeys + e->ckeys_n, w, n);
            if (k) memcpy(e->cids + e->cids_n, e->ids + first, k * sizeof *e->cids);
            e->slots[slot] = (cache_slot){h, (uint32_t)e->ckeys_n, (uint32_t)e->cids_n, (uint16_t)n, (uint16_t)k};
            e->ckeys_n += n;
            e->cids_n += k;
            e->n_cached++;
        }
    }
    return LOOM_OK;
}

static loom_status pretokenize(enc *e, int level, const char *s, size_t n);

static loom_status piece(enc *e, int level, const char *s, size_t a, size_t b)
{
    if (b <= a) return LOOM_OK;
    return level + 1 < e->t->n_split ? pretokenize(e, level + 1, s + a, b - a) : bpe_word(e, s + a, b - a);
}

static loom_status regex_match(enc *e, pcre2_code *re, const char *s, size_t n, size_t start, size_t *ms, size_t *me)
{
    for (;;) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, e->md, e->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) return LOOM_ERR_NOT_FOUND;
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !e->jit) {
            /* a long run the default 32 KiB JIT stack cannot backtrack over */
            loom_log(LOOM_LOG_DEBUG, "tokenize: regex needs a larger JIT stack at byte %zu", start);
            e->jit = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL);
            e->mctx = pcre2_match_context_create(NULL);
            if (!e->jit || !e->mctx) return loom_error(LOOM_ERR_NOMEM, "tokenize: out of memory for the regex stack");
            pcre2_jit_stack_assign(e->mctx, NULL, e->jit);
            continue;
        }
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return loom_error(LOOM_ERR_INTERNAL, "tokenize: pre-tokenizer regex failed at byte %zu: %s", start, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        *ms = ov[0];
        *me = ov[1];
        return LOOM_OK;
    }
}

/* Split s by regex `level` as its behavior says; pieces go to the next level. */
static loom_status pretokenize(enc *e, int level, const char *s, size_t n)
{
    const splitter *sp = &e->t->split[level];
    size_t pos = 0, cut = 0; /* search position; start of the piece being built */
    loom_status st;
    while (pos < n) {
        size_t ms, me;
        st = regex_match(e, sp->re, s, n, pos, &ms, &me);
        if (st == LOOM_ERR_NOT_FOUND) break;
        if (st) return st;
        if (me == ms) { /* empty match: no piece; step over one character */
            cp_at(s, n, ms, &pos);
            continue;
        }
        switch (sp->behavior) {
        case SPLIT_ISOLATED:
            if ((st = piece(e, level, s, cut, ms)) || (st = piece(e, level, s, ms, me))) return st;
            cut = me;
            break;
        case SPLIT_REMOVED:
            if ((st = piece(e, level, s, cut, ms))) return st;
            cut = me;
            break;
        case SPLIT_MERGED_PREV:
            if ((st = piece(e, level, s, cut, me))) return st;
            cut = me;
            break;
        case SPLIT_MERGED_NEXT:
            if ((st = piece(e, level, s, cut, ms))) return st;
            cut = ms;
            break;
        }
        pos = me;
    }
    return piece(e, level, s, cut, n);
}

/* Normalised text (no added tokens in it) -> ids. */
static loom_status encode_plain(enc *e, const char *s, size_t n)
{
    if (!n) return LOOM_OK;
    return e->t->n_split ? pretokenize(e, 0, s, n) : bpe_word(e, s, n);
}

/* The longest added token of set matching at s[i] (valid UTF-8, s[lo..n)
 * searchable), with its span widened by lstrip/rstrip. -1 if none. */
static int32_t added_match(const loom_tokenizer *t, const added_set *set, const char *s, size_t lo, size_t n,
                           size_t i, size_t *start, size_t *end)
{
    unsigned char b = (unsigned char)s[i];
    for (int32_t k = set->start[b]; k < set->start[b + 1]; k++) {
        const added_tok *a = &t->added[set->order[k]];
        if (a->len > n - i || memcmp(s + i, a->content, a->len)) continue;
        size_t st = i, en = i + a->len, p;
        if (a->single_word) {
            if (st > lo && is_word_char(cp_before(s, st, &p))) continue;
            if (en < n && is_word_char(cp_at(s, n, en, &p))) continue;
        }
        if (a->lstrip)
            while (st > lo) {
                uint32_t c = cp_before(s, st, &p);
                if (!is_unicode_space(c)) break;
                st = p;
            }
        if (a->rstrip)
            while (en < n) {
                uint32_t c = cp_at(s, n, en, &p);
                if (!is_unicode_space(c)) break;
                en = p;
            }
        *start = st;
        *end = en;
        return a->id;
    }
    return -1;
}

static loom_status encode_normalized(enc *e, const char *s, size_t n)
{
    const added_set *set = &e->t->norm_set;
    if (!set->n) return encode_plain(e, s, n);
    size_t seg = 0;
    for (size_t i = 0; i < n; i++) {
        size_t ms, me;
        int32_t id = added_match(e->t, set, s, seg, n, i, &ms, &me);
        if (id < 0) continue;
        loom_status st = encode_plain(e, s + seg, ms - seg);
        if (st || (st = emit(e, id))) return st;
        seg = me;
        i = me - 1;
    }
    return encode_plain(e, s + seg, n - seg);
}

/* Raw text between raw-matched added tokens: normalise, then go on. */
static loom_status encode_segment(enc *e, const char *s, size_t n)
{
    if (!n) return LOOM_OK;
    bool ascii = true;
    for (size_t i = 0; i < n && ascii; i++) ascii = (unsigned char)s[i] < 0x80;
    if (!e->t->norm_options || ascii) return encode_normalized(e, s, n); /* ASCII is invariant under every form */
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &dst, (utf8proc_option_t)e->t->norm_options);
    if (k < 0) return loom_error(LOOM_ERR_INVALID, "tokenize: normalisation failed: %s", utf8proc_errmsg(k));
    loom_status st = encode_normalized(e, (const char *)dst, (size_t)k);
    free(dst);
    return st;
}

loom_status loom_tokenize(const loom_tokenizer *t, const char *text, size_t len, int32_t **ids, size_t *n)
{
    if (!t || !ids || !n || (!text && len)) return loom_error(LOOM_ERR_INVALID, "loom_tokenize: NULL argument");
    *ids = NULL;
    *n = 0;
    size_t bad;
    if (!loom_utf8_valid(text, len, &bad))
        return loom_error(LOOM_ERR_INVALID, "text is not valid UTF-8 at byte offset %zu (byte 0x%02x)",
                          bad, bad < len ? (unsigned char)text[bad] : 0);
    if (!len) return LOOM_OK;
    enc e = {.t = t};
    loom_status st = LOOM_OK;
    /* a word takes at least 2 bytes of text: size the cache for the text */
    e.cmask = (len / 2 < CACHE_SLOTS / 2 ? pow2_at_least(len) : CACHE_SLOTS) - 1;
    e.slots = calloc((size_t)e.cmask + 1, sizeof *e.slots);
    e.md = t->n_split ? pcre2_match_data_create(4, NULL) : NULL;
    if (!e.slots || (t->n_split && !e.md)) st = loom_error(LOOM_ERR_NOMEM, "tokenize: out of memory");
    if (!st) {
        grow((void **)&e.ids, &e.cap, len / 3 + 16, sizeof *e.ids);
        const added_set *set = &t->raw_set;
        size_t seg = 0;
        bool first_byte[256] = {false};
        for (int32_t k = 0; k < set->n; k++) first_byte[(unsigned char)t->added[set->order[k]].content[0]] = true;
        for (size_t i = 0; i < len && !st; i++) {
            if (!first_byte[(unsigned char)text[i]]) continue;
            size_t ms, me;
            int32_t id = added_match(t, set, text, seg, len, i, &ms, &me);
            if (id < 0) continue;
            if (!(st = encode_segment(&e, text + seg, ms - seg))) st = emit(&e, id);
            seg = me;
            i = me - 1;
        }
        if (!st) st = encode_segment(&e, text + seg, len - seg);
    }
    free(e.slots);
    free(e.ckeys);
    free(e.cids);
    free(e.sym);
    free(e.prev);
    free(e.next);
    free(e.heap);
    pcre2_match_data_free(e.md);
    pcre2_match_context_free(e.mctx);
    pcre2_jit_stack_free(e.jit);
    if (st) {
        free(e.ids);
        return st;
    }
    *ids = e.ids;
    *n = e.n;
    return LOOM_OK;
}

/* ---- decoding --------------------------------------------------------------- */

static loom_status check_id(const loom_tokenizer *t, int32_t id, size_t at)
{
    if (id < 0 || id >= t->n_ids)
        return loom_error(LOOM_ERR_INVALID, "token id %d (position %zu) is out of range 0..%d", id, at, t->n_ids - 1);
    if (!(t->id_flags[id] & ID_PRESENT))
        return loom_error(LOOM_ERR_INVALID, "token id %d (position %zu) has no token in %s", id, at, t->name);
    return LOOM_OK;
}

loom_status loom_tok_decode_piece(const loom_tokenizer *t, int32_t id, const char **bytes, size_t *len)
{
    if (!t || !bytes || !len) return loom_error(LOOM_ERR_INVALID, "loom_tok_decode_piece: NULL argument");
    loom_status st = check_id(t, id, 0);
    if (st) return st;
    *bytes = t->arena + t->piece_off[id];
    *len = t->piece_len[id];
    return LOOM_OK;
}

loom_status loom_detokenize(const loom_tokenizer *t, const int32_t *ids, size_t n, unsigned flags, char **text, size_t *len)
{
    if (!t || !text || !len || (!ids && n)) return loom_error(LOOM_ERR_INVALID, "loom_detokenize: NULL argument");
    *text = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        loom_status st = check_id(t, ids[i], i);
        if (st) return st;
        if (!((flags & LOOM_TOK_SKIP_SPECIAL) && (t->id_flags[ids[i]] & ID_SPECIAL))) total += t->piece_len[ids[i]];
    }
    char *out = malloc(total + 1);
    if (!out) return loom_error(LOOM_ERR_NOMEM, "detokenize: out of memory for %zu bytes", total);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if ((flags & LOOM_TOK_SKIP_SPECIAL) && (t->id_flags[ids[i]] & ID_SPECIAL)) continue;
        memcpy(out + o, t->arena + t->piece_off[ids[i]], t->piece_len[ids[i]]);
        o += t->piece_len[ids[i]];
    }
    out[o] = 0;
    *text = out;
    *len = o;
    return LOOM_OK;
}

void loom_tok_stream_init(loom_tok_stream *s)
{
    if (s) memset(s, 0, sizeof *s);
}

loom_status loom_utf8_stream_put(loom_tok_stream *s, const char *bytes, size_t len, char *out, size_t cap, size_t *n_out)
{
    if (!s || !out || !n_out || (!bytes && len)) return loom_error(LOOM_ERR_INVALID, "loom_utf8_stream_put: NULL argument");
    *n_out = 0;
    size_t np = s->n_pend > 0 && s->n_pend <= 3 ? (size_t)s->n_pend : 0;
    if (cap < np + len) return loom_error(LOOM_ERR_INVALID, "utf8 stream: output buffer of %zu bytes, need %zu", cap, np + len);
    memcpy(out, s->pend, np);
    if (len) memcpy(out + np, bytes, len);
    size_t n = np + len;
    s->n_pend = 0;
    /* hold back a trailing lead byte (+ continuations) that still misses bytes */
    const unsigned char *u = (const unsigned char *)out;
    size_t k = n;
    while (k > 0 && n - k < 4 && (u[k - 1] & 0xC0) == 0x80) k--;
    if (k > 0 && n - k < 4) {
        size_t lead = k - 1, have = n - lead, need = 0;
        unsigned c = u[lead];
        if (c >= 0xC2 && c <= 0xDF) need = 2;
        else if (c >= 0xE0 && c <= 0xEF) need = 3;
        else if (c >= 0xF0 && c <= 0xF4) need = 4;
        bool ok = need > have;
        if (ok && have >= 2) { /* the second byte must be able to continue this lead */
            unsigned d = u[lead + 1];
            ok = !((c == 0xE0 && d < 0xA0) || (c == 0xED && d > 0x9F) || (c == 0xF0 && d < 0x90) || (c == 0xF4 && d > 0x8F));
        }
        if (ok) {
            memcpy(s->pend, out + lead, have);
            s->n_pend = (int32_t)have;
            n = lead;
        }
    }
    *n_out = n;
    return LOOM_OK;
}

loom_status loom_tok_stream_put(loom_tok_stream *s, const loom_tokenizer *t, int32_t id, unsigned flags,
                                char *out, size_t cap, size_t *n_out)
{
    if (!t || !n_out) return loom_error(LOOM_ERR_INVALID, "loom_tok_stream_put: NULL argument");
    *n_out = 0;
    loom_status st = check_id(t, id, 0);
    if (st) return st;
    if ((flags & LOOM_TOK_SKIP_SPECIAL) && (t->id_flags[id] & ID_SPECIAL)) return LOOM_OK;
    return loom_utf8_stream_put(s, t->arena + t->piece_off[id], t->piece_len[id], out, cap, n_out);
}

size_t loom_tok_stream_flush(loom_tok_stream *s, char *out)
{
    if (!s || !out) return 0;
    size_t n = s->n_pend > 0 && s->n_pend <= 3 ? (size_t)s->n_pend : 0;
    memcpy(out, s->pend, n);
    s->n_pend = 0;
    return n;
}
