/*
 * chat.c — the Qwen2.5 chat template and its tool-call parser (see chat.h).
 *
 * JSON is parsed by cJSON. cJSON keeps numbers only as doubles, which loses
 * what json.dumps needs (1 vs 1.0, integers beyond 2^53), so json_parse()
 * first scans the text for number tokens and hangs each token's text on its
 * cJSON node (in valuestring, which cJSON_Delete frees): cJSON builds nodes in
 * document order, so the i-th number node is the i-th number token.
 */
#include "chat.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char DEFAULT_SYSTEM[] =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
static const char TOOLS_HEAD[] =
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
static const char TOOLS_TAIL[] =
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    "{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n";
static const char CALL_OPEN[]  = "<tool_call>";
static const char CALL_CLOSE[] = "</tool_call>";

/* ---- growable string --------------------------------------------------------- */

typedef struct sbuf {
    char  *p;
    size_t n, cap;
    bool   oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (n > SIZE_MAX / 2 - b->n - 1) { b->oom = true; return; }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) { b->oom = true; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* Hands the string to *out (an empty string if nothing was added). */
static loom_status sb_finish(sbuf *b, char **out)
{
    if (!b->oom && !b->p) sb_add(b, "", 0);
    if (b->oom) {
        free(b->p);
        *b = (sbuf){0};
        return loom_error(LOOM_ERR_NOMEM, "chat: out of memory");
    }
    *out = b->p;
    *b = (sbuf){0};
    return LOOM_OK;
}

/* ---- JSON in: cJSON plus the text of every number ----------------------------- */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool valid_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-') i++;
    if (i >= n || !is_digit(s[i])) return false;
    if (s[i] == '0') i++;
    else while (i < n && is_digit(s[i])) i++;
    if (i < n && s[i] == '.') {
        if (++i >= n || !is_digit(s[i])) return false;
        while (i < n && is_digit(s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        if (++i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || !is_digit(s[i])) return false;
        while (i < n && is_digit(s[i])) i++;
    }
    return i == n;
}

typedef struct numtok {
    const char *s;
    size_t      n;
} numtok;

typedef struct numlist {
    numtok *v;
    size_t  n, cap, next;
} numlist;

/* Collects the number tokens of a 0-terminated text; refuses what cJSON would
 * take but Python's json.loads would not (numbers like "01", "1.", "+1";
 * control characters between tokens), and "\u0000" (cJSON cannot hold it). */
static loom_status scan_numbers(const char *t, const char *what, numlist *nl)
{
    size_t i = 0;
    while (t[i]) {
        char c = t[i];
        if (c == '"') {
            for (i++; t[i] && t[i] != '"'; i++) {
                if (t[i] != '\\') continue;
                if (t[i + 1] == 'u' && !strncmp(t + i + 2, "0000", 4))
                    return loom_error(LOOM_ERR_UNSUPPORTED,
                                      "%s: \"\\u0000\" in a string at byte %zu is not supported", what, i);
                if (t[i + 1]) i++;
            }
            if (t[i]) i++;
        } else if (c == '-' || is_digit(c)) {
            size_t j = i;
            while (t[j] && strchr("0123456789+-.eE", t[j])) j++;
            if (!valid_number(t + i, j - i))
                return loom_error(LOOM_ERR_FORMAT, "%s: invalid JSON number \"%.*s\" at byte %zu",
                                  what, (int)(j - i > 40 ? 40 : j - i), t + i, i);
            if (nl->n == nl->cap) {
                size_t cap = nl->cap ? 2 * nl->cap : 16;
                numtok *v = realloc(nl->v, cap * sizeof *v);
                if (!v) return loom_error(LOOM_ERR_NOMEM, "%s: out of memory", what);
                nl->v = v;
                nl->cap = cap;
            }
            nl->v[nl->n++] = (numtok){t + i, j - i};
            i = j;
        } else if ((unsigned char)c < 0x20 && !is_ws(c)) {
            return loom_error(LOOM_ERR_FORMAT, "%s: invalid JSON: control character 0x%02x at byte %zu",
                              what, (unsigned)c, i);
        } else {
            i++;
        }
    }
    return LOOM_OK;
}

/* Pre-order walk: the i-th number node gets the i-th number token's text. */
static bool attach_numbers(cJSON *node, numlist *nl)
{
    for (; node; node = node->next) {
        if (cJSON_IsNumber(node)) {
            if (nl->next >= nl->n) return false;
            numtok tk = nl->v[nl->next++];
            char *s = cJSON_malloc(tk.n + 1);
            if (!s) return false;
            memcpy(s, tk.s, tk.n);
            s[tk.n] = 0;
            node->valuestring = s;
        }
        if (node->child && !attach_numbers(node->child, nl)) return false;
    }
    return true;
}

/* Parses one JSON value (text 0-terminated; nothing but whitespace after it). */
static loom_status json_parse(const char *text, const char *what, cJSON **out)
{
    *out = NULL;
    numlist nl = {0};
    loom_status st = scan_numbers(text, what, &nl);
    if (st != LOOM_OK) { free(nl.v); return st; }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        free(nl.v);
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        return loom_error(LOOM_ERR_FORMAT, "%s: invalid JSON at byte %zu (near \"%.20s\")", what, at, text + at);
    }
    bool ok = attach_numbers(root, &nl) && nl.next == nl.n;
    free(nl.v);
    if (!ok) {
        cJSON_Delete(root);
        return loom_error(LOOM_ERR_INTERNAL, "%s: number tokens and parsed numbers disagree", what);
    }
    *out = root;
    return LOOM_OK;
}

/* The last member named key, as a Python dict built from the pairs keeps. */
static cJSON *member(const cJSON *obj, const char *key)
{
    cJSON *found = NULL;
    for (cJSON *c = obj ? obj->child : NULL; c; c = c->next)
        if (c->string && !strcmp(c->string, key)) found = c;
    return found;
}

/* ---- JSON out: Python's json.dumps(x, ensure_ascii=False) ----------------------- */

static void py_string(sbuf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *esc = NULL;
        char u[7];
        switch (c) {
        case '"':  esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            if (c < 0x20) {
                memcpy(u, "\\u00", 4);
                u[4] = hex[c >> 4];
                u[5] = hex[c & 15];
                u[6] = 0;
                esc = u;
            }
        }
        if (!esc) continue;
        sb_add(b, run, (size_t)(s - run));
        sb_str(b, esc);
        run = s + 1;
    }
    sb_add(b, run, (size_t)(s - run));
}

/* Decimal digits and exponent of a "%.*e" rendering, ignoring the (locale's)
 * decimal point: value = 0.DIGITS * 10^decpt. */
static int e_digits(const char *s, char *digits, int *decpt)
{
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (is_digit(*s)) digits[nd++] = *s;
    digits[nd] = 0;
    *decpt = (*s == 'e' ? atoi(s + 1) : 0) + 1;
    return nd;
}

/* strtod of DIGITS * 10^exp, written without a decimal point (locale-free). */
static double digits_value(const char *digits, long exp)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%se%ld", digits, exp);
    return strtod(buf, NULL);
}

/* A JSON float token as Python's repr(float(token)). */
static void py_float(sbuf *b, const char *tok)
{
    /* Value first, without strtod seeing a decimal point. */
    bool neg = tok[0] == '-';
    const char *p = tok + neg;
    char mant[80];
    size_t nm = 0;
    long exp = 0;
    for (; *p && *p != 'e' && *p != 'E'; p++) {
        if (*p == '.') { for (p++; is_digit(*p); p++) { if (nm < sizeof mant - 1) { mant[nm++] = *p; exp--; } } break; }
        if (nm < sizeof mant - 1) mant[nm++] = *p;
        else exp++;
    }
    if (*p == 'e' || *p == 'E') {
        long e = strtol(p + 1, NULL, 10);
        if (e > 100000) e = 100000;
        if (e < -100000) e = -100000;
        exp += e;
    }
    mant[nm] = 0;
    double x = digits_value(mant, exp);

    if (isinf(x)) { sb_str(b, neg ? "-Infinity" : "Infinity"); return; }
    if (neg) sb_str(b, "-");
    x = fabs(x);
    if (x == 0) { sb_str(b, "0.0"); return; }

    /* Shortest digits that read back as x (at most 17). */
    char buf[64], digits[32];
    int nd = 0, decpt = 0;
    for (int prec = 0; prec <= 16; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec, x);
        nd = e_digits(buf, digits, &decpt);
        if (digits_value(digits, (long)decpt - nd) == x) break;
    }
    while (nd > 1 && digits[nd - 1] == '0') digits[--nd] = 0;

    if (decpt <= -4 || decpt > 16) {       /* d[.ddd]e[+-]XX */
        sb_add(b, digits, 1);
        if (nd > 1) { sb_str(b, "."); sb_add(b, digits + 1, (size_t)nd - 1); }
        snprintf(buf, sizeof buf, "e%c%02d", decpt - 1 < 0 ? '-' : '+', abs(decpt - 1));
        sb_str(b, buf);
    } else if (decpt <= 0) {               /* 0.000ddd */
        sb_str(b, "0.");
        for (int i = 0; i < -decpt; i++) sb_str(b, "0");
        sb_add(b, digits, (size_t)nd);
    } else if (decpt < nd) {               /* dd.ddd */
        sb_add(b, digits, (size_t)decpt);
        sb_str(b, ".");
        sb_add(b, digits + decpt, (size_t)(nd - decpt));
    } else {                               /* ddd000.0 */
        sb_add(b, digits, (size_t)nd);
        for (int i = nd; i < decpt; i++) sb_str(b, "0");
        sb_str(b, ".0");
    }
}

static void py_number(sbuf *b, const cJSON *v)
{
    const char *tok = v->valuestring;
    char tmp[40];
    if (!tok) { /* not from json_parse: write the double as a float token */
        snprintf(tmp, sizeof tmp, "%.17e", v->valuedouble);
        for (char *q = tmp; *q; q++) if (*q == ',') *q = '.';
        tok = tmp;
    }
    if (!strpbrk(tok, ".eE")) sb_str(b, strcmp(tok, "-0") ? tok : "0"); /* a Python int */
    else py_float(b, tok);
}

static void py_dump(sbuf *b, const cJSON *v)
{
    if (cJSON_IsNull(v))        sb_str(b, "null");
    else if (cJSON_IsTrue(v))   sb_str(b, "true");
    else if (cJSON_IsFalse(v))  sb_str(b, "false");
    else if (cJSON_IsNumber(v)) py_number(b, v);
    else if (cJSON_IsString(v)) { sb_str(b, "\""); py_string(b, v->valuestring); sb_str(b, "\""); }
    else if (cJSON_IsArray(v)) {
        sb_str(b, "[");
        for (const cJSON *c = v->child; c; c = c->next) {
            if (c != v->child) sb_str(b, ", ");
            py_dump(b, c);
        }
        sb_str(b, "]");
    } else if (cJSON_IsObject(v)) {
        sb_str(b, "{");
        bool first = true;
        for (const cJSON *c = v->child; c; c = c->next) {
            bool seen = false; /* a repeated key is written once, where it first appears */
            for (const cJSON *e = v->child; e != c && !seen; e = e->next)
                seen = !strcmp(e->string, c->string);
            if (seen) continue;
            if (!first) sb_str(b, ", ");
            first = false;
            sb_str(b, "\"");
            py_string(b, c->string);
            sb_str(b, "\": ");
            py_dump(b, member(v, c->string));
        }
        sb_str(b, "}");
    } else {
        b->oom = true; /* cJSON_Raw and friends never come out of json_parse */
    }
}

loom_status loom_chat_tojson(const char *json, char **out)
{
    if (!json || !out) return loom_error(LOOM_ERR_INVALID, "loom_chat_tojson: NULL argument");
    *out = NULL;
    cJSON *v;
    loom_status st = json_parse(json, "JSON", &v);
    if (st != LOOM_OK) return st;
    sbuf b = {0};
    py_dump(&b, v);
    cJSON_Delete(v);
    return sb_finish(&b, out);
}

/* ---- rendering ------------------------------------------------------------------ */

typedef enum { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL } chat_role;

static bool parse_role(const char *s, chat_role *r)
{
    static const char *const names[] = {"system", "user", "assistant", "tool"};
    for (int i = 0; i < 4; i++)
        if (s && !strcmp(s, names[i])) { *r = (chat_role)i; return true; }
    return false;
}

/* One assistant message's calls: "\n<tool_call>\n{...}\n</tool_call>" each. */
static loom_status render_calls(sbuf *b, const cJSON *calls, size_t mi)
{
    size_t k = 0;
    for (const cJSON *c = calls->child; c; c = c->next, k++) {
        const cJSON *fn = c;
        if (cJSON_IsObject(c) && member(c, "function")) fn = member(c, "function");
        if (!cJSON_IsObject(fn))
            return loom_error(LOOM_ERR_INVALID, "messages[%zu].tool_calls[%zu]: expected an object "
                              "{\"name\", \"arguments\"} or {\"function\": {...}}", mi, k);
        const cJSON *name = member(fn, "name"), *args = member(fn, "arguments");
        if (!cJSON_IsString(name))
            return loom_error(LOOM_ERR_INVALID, "messages[%zu].tool_calls[%zu]: \"name\" must be a string", mi, k);
        if (!args)
            return loom_error(LOOM_ERR_INVALID, "messages[%zu].tool_calls[%zu]: no \"arguments\"", mi, k);

        sb_str(b, "\n<tool_call>\n{\"name\": \"");
        sb_str(b, name->valuestring); /* as the template does: not escaped */
        sb_str(b, "\", \"arguments\": ");
        cJSON *decoded = NULL;
        if (cJSON_IsString(args) && json_parse(args->valuestring, "arguments", &decoded) == LOOM_OK)
            args = decoded; /* OpenAI's JSON-in-a-string */
        py_dump(b, args);
        cJSON_Delete(decoded);
        sb_str(b, "}\n</tool_call>");
    }
    loom_clear_error(); /* a string argument that was not JSON is not an error */
    return LOOM_OK;
}

/* Parses an optional JSON array ("null" counts as absent). */
static loom_status optional_array(const char *json, const char *what, cJSON **out)
{
    *out = NULL;
    if (!json) return LOOM_OK;
    cJSON *v;
    loom_status st = json_parse(json, what, &v);
    if (st != LOOM_OK) return st;
    if (cJSON_IsNull(v)) { cJSON_Delete(v); return LOOM_OK; }
    if (!cJSON_IsArray(v)) {
        cJSON_Delete(v);
        return loom_error(LOOM_ERR_INVALID, "%s must be a JSON array", what);
    }
    *out = v;
    return LOOM_OK;
}

loom_status loom_chat_render(const loom_chat_msg *msgs, size_t n, const char *tools_json,
                             bool add_generation_prompt, char **out)
{
    if (!out) return loom_error(LOOM_ERR_INVALID, "loom_chat_render: out is NULL");
    *out = NULL;
    if (!msgs || n == 0) return loom_error(LOOM_ERR_INVALID, "chat: no messages");

    chat_role *roles = malloc(n * sizeof *roles);
    if (!roles) return loom_error(LOOM_ERR_NOMEM, "chat: out of memory");
    loom_status st = LOOM_OK;
    for (size_t i = 0; i < n && st == LOOM_OK; i++) {
        if (!parse_role(msgs[i].role, &roles[i]))
            st = loom_error(LOOM_ERR_INVALID, "messages[%zu]: unknown role \"%s\" "
                            "(expected system, user, assistant or tool)", i, msgs[i].role ? msgs[i].role : "(null)");
        else if (msgs[i].tool_calls_json && roles[i] != ROLE_ASSISTANT)
            st = loom_error(LOOM_ERR_INVALID, "messages[%zu]: tool_calls on a %s message "
                            "(only assistant messages carry them)", i, msgs[i].role);
    }
    cJSON *tools = NULL;
    if (st == LOOM_OK) st = optional_array(tools_json, "tools_json", &tools);
    if (st != LOOM_OK) { free(roles); return st; }

    sbuf b = {0};
    const char *sys = roles[0] == ROLE_SYSTEM ? (msgs[0].content ? msgs[0].content : "") : DEFAULT_SYSTEM;
    sb_str(&b, "<|im_start|>system\n");
    sb_str(&b, sys);
    if (tools && tools->child) {
        sb_str(&b, TOOLS_HEAD);
        for (const cJSON *t = tools->child; t; t = t->next) {
            sb_str(&b, "\n");
            py_dump(&b, t);
        }
        sb_str(&b, TOOLS_TAIL);
    } else {
        sb_str(&b, "<|im_end|>\n");
    }
    cJSON_Delete(tools);

    for (size_t i = 0; i < n && st == LOOM_OK; i++) {
        const loom_chat_msg *m = &msgs[i];
        const char *content = m->content ? m->content : "";
        cJSON *calls = NULL;
        if (roles[i] == ROLE_ASSISTANT) {
            char what[64];
            snprintf(what, sizeof what, "messages[%zu].tool_calls_json", i);
            st = optional_array(m->tool_calls_json, what, &calls);
            if (st != LOOM_OK) break;
        }
        bool has_calls = calls && calls->child;
        switch (roles[i]) {
        case ROLE_SYSTEM:
            if (i == 0) break; /* already in the header */
            /* fall through */
        case ROLE_USER:
        case ROLE_ASSISTANT:
            sb_str(&b, "<|im_start|>");
            sb_str(&b, m->role);
            if (!has_calls) {
                sb_str(&b, "\n");
                sb_str(&b, content);
            } else {
                if (*content) { sb_str(&b, "\n"); sb_str(&b, content); }
                st = render_calls(&b, calls, i);
            }
            sb_str(&b, "<|im_end|>\n");
            break;
        case ROLE_TOOL:
            if (i == 0 || roles[i - 1] != ROLE_TOOL) sb_str(&b, "<|im_start|>user");
            sb_str(&b, "\n<tool_response>\n");
            sb_str(&b, content);
            sb_str(&b, "\n</tool_response>");
            if (i + 1 == n || roles[i + 1] != ROLE_TOOL) sb_str(&b, "<|im_end|>\n");
            break;
        }
        cJSON_Delete(calls);
    }
    free(roles);
    if (st != LOOM_OK) { free(b.p); return st; }
    if (add_generation_prompt) sb_str(&b, "<|im_start|>assistant\n");
    return sb_finish(&b, out);
}

/* ---- parsing model output ---------------------------------------------------------- */

/* Appends text[s, e) to the content with whitespace trimmed on the sides that
 * touch a block; pieces are joined by "\n". */
static void add_piece(sbuf *b, const char *s, const char *e, bool trim_left, bool trim_right)
{
    if (trim_left)  while (s < e && is_ws(*s)) s++;
    if (trim_right) while (e > s && is_ws(e[-1])) e--;
    if (s == e) return;
    if (b->n) sb_str(b, "\n");
    sb_add(b, s, (size_t)(e - s));
}

loom_status loom_chat_parse_tool_calls(const char *text, char **calls_json, char **content)
{
    if (!text || !calls_json || !content)
        return loom_error(LOOM_ERR_INVALID, "loom_chat_parse_tool_calls: NULL argument");
    *calls_json = *content = NULL;

    sbuf calls = {0}, rest = {0};
    loom_status st = LOOM_OK;
    const char *p = text;
    int k = 0;
    sb_str(&calls, "[");
    for (const char *open; st == LOOM_OK && (open = strstr(p, CALL_OPEN)); k++) {
        add_piece(&rest, p, open, k > 0, true);
        const char *body = open + sizeof CALL_OPEN - 1;
        const char *close = strstr(body, CALL_CLOSE);
        const char *body_end = close ? close : body + strlen(body);
        p = close ? close + sizeof CALL_CLOSE - 1 : body_end;

        char *json = malloc((size_t)(body_end - body) + 1);
        if (!json) { st = loom_error(LOOM_ERR_NOMEM, "chat: out of memory"); break; }
        memcpy(json, body, (size_t)(body_end - body));
        json[body_end - body] = 0;
        char what[64];
        snprintf(what, sizeof what, "tool call %d (at byte %zu of the output)", k + 1, (size_t)(open - text));
        cJSON *v = NULL;
        st = json_parse(json, what, &v);
        free(json);
        if (st != LOOM_OK) break;
        const cJSON *name = member(v, "name"), *args = member(v, "arguments");
        if (!cJSON_IsObject(v) || !cJSON_IsString(name)) {
            st = loom_error(LOOM_ERR_FORMAT, "%s: expected a JSON object with a string \"name\"", what);
        } else {
            if (k) sb_str(&calls, ", ");
            sb_str(&calls, "{\"name\": \"");
            py_string(&calls, name->valuestring);
            sb_str(&calls, "\", \"arguments\": ");
            if (args) py_dump(&calls, args);
            else sb_str(&calls, "{}");
            sb_str(&calls, "}");
        }
        cJSON_Delete(v);
    }
    if (st == LOOM_OK) {
        sb_str(&calls, "]");
        if (k == 0) sb_str(&rest, text);
        else add_piece(&rest, p, p + strlen(p), true, false);
        st = sb_finish(&calls, calls_json);
        if (st == LOOM_OK) st = sb_finish(&rest, content);
        if (st == LOOM_OK) return LOOM_OK;
    }
    free(calls.p);
    free(rest.p);
    free(*calls_json);
    *calls_json = NULL;
    *content = NULL;
    return st;
}
