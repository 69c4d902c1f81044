/*
 * test_tokenizer.c — the byte-level BPE tokenizer (models/qwen2/tokenizer.c).
 *
 *   test_tokenizer                    everything; exits 77 (skip) when the Qwen2
 *                                     tokenizer data is absent
 *   test_tokenizer --qwen2            only the tests on the Qwen2 tokenizer.json
 *   test_tokenizer --self-contained   only the tests on small tokenizers built
 *                                     here (never skipped)
 *
 * The Qwen2 data is read from $LOOM_SHARED_DATA, else LOOM_SHARED_DATA_DIR
 * (set by the build to the source tree's ../shared/data), else ../shared/data:
 * DIR/qwen2-tokenizer/{tokenizer.json,vocab-tests.inp,vocab-tests.out}.
 * The project's own fixture, tests/data/tokenizer/tiny.json, is found through
 * $LOOM_TEST_DATA, else LOOM_TEST_DATA_DIR (the source tree's tests/data).
 */
#include <check.h>

#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer.h"

#ifndef LOOM_TEST_DATA_DIR
#define LOOM_TEST_DATA_DIR "tests/data"
#endif
#ifndef LOOM_SHARED_DATA_DIR
#define LOOM_SHARED_DATA_DIR "../shared/data"
#endif

static char qwen_dir[4096];       /* .../qwen2-tokenizer */
static loom_tokenizer *qwen;      /* loaded once, before the tests fork */

static void encode_ok(const loom_tokenizer *t, const char *s, size_t n, int32_t **ids, size_t *n_ids)
{
    loom_status st = loom_tokenize(t, s, n, ids, n_ids);
    ck_assert_msg(st == LOOM_OK, "tokenize failed: %s", loom_last_error());
}

static void assert_roundtrip(const loom_tokenizer *t, const char *s, size_t n)
{
    int32_t *ids;
    size_t n_ids;
    encode_ok(t, s, n, &ids, &n_ids);
    char *back;
    size_t blen;
    loom_status st = loom_detokenize(t, ids, n_ids, 0, &back, &blen);
    ck_assert_msg(st == LOOM_OK, "detokenize failed: %s", loom_last_error());
    ck_assert_msg(blen == n && !memcmp(back, s, n), "round trip differs for %zu bytes \"%.*s\" (got %zu bytes \"%.*s\")",
                  n, (int)(n > 80 ? 80 : n), s, blen, (int)(blen > 80 ? 80 : blen), back);
    free(back);
    free(ids);
}

static void assert_ids(const loom_tokenizer *t, const char *s, const int32_t *want, size_t n_want)
{
    int32_t *ids;
    size_t n;
    encode_ok(t, s, strlen(s), &ids, &n);
    char got[1024] = "";
    for (size_t i = 0, o = 0; i < n && o < sizeof got - 16; i++) o += (size_t)snprintf(got + o, sizeof got - o, " %d", ids[i]);
    ck_assert_msg(n == n_want && (!n || !memcmp(ids, want, n * sizeof *ids)), "\"%s\": got%s", s, got);
    free(ids);
}

/* ---- Qwen2 tokenizer.json ---------------------------------------------------- */

/* vocab-tests.inp: cases, each followed by "\n__ggml_vocab_test__\n";
 * vocab-tests.out: line N = the ids of case N (" 1 2 3", "" for none). */
START_TEST(test_vocab_cases)
{
    char path[4200];
    size_t inp_len, out_len;
    snprintf(path, sizeof path, "%s/vocab-tests.inp", qwen_dir);
    char *inp = loom_test_read_file(path, &inp_len);
    snprintf(path, sizeof path, "%s/vocab-tests.out", qwen_dir);
    char *out = loom_test_read_file(path, &out_len);
    ck_assert_msg(inp && out, "cannot read vocab-tests.inp/.out in %s", qwen_dir);

    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t sep_len = sizeof sep - 1;
    char *p = inp, *line = out;
    int cases = 0, failed = 0;
    char first_failure[2048] = "";
    while (p < inp + inp_len) {
        char *end = strstr(p, sep);
        ck_assert_msg(end, "case %d is not terminated by __ggml_vocab_test__", cases + 1);
        char *nl = strchr(line, '\n');
        ck_assert_msg(nl, "vocab-tests.out has no line for case %d", cases + 1);
        *nl = 0;
        int32_t want[4096];
        size_t n_want = 0;
        for (char *q = line, *e; *q; q = e) {
            long v = strtol(q, &e, 10);
            if (e == q) break;
            ck_assert(n_want < 4096);
            want[n_want++] = (int32_t)v;
        }
        int32_t *ids;
        size_t n;
        encode_ok(qwen, p, (size_t)(end - p), &ids, &n);
        cases++;
        if (n != n_want || (n && memcmp(ids, want, n * sizeof *ids))) {
            if (!failed) {
                size_t o = (size_t)snprintf(first_failure, sizeof first_failure, "case %d \"%.*s\": want%s, got", cases,
                                            (int)(end - p > 60 ? 60 : end - p), p, line);
                for (size_t i = 0; i < n && o < sizeof first_failure - 16; i++)
                    o += (size_t)snprintf(first_failure + o, sizeof first_failure - o, " %d", ids[i]);
            }
            failed++;
        }
        /* and back to the same bytes */
        char *back;
        size_t blen;
        ck_assert(loom_detokenize(qwen, ids, n, 0, &back, &blen) == LOOM_OK);
        ck_assert_msg(blen == (size_t)(end - p) && !memcmp(back, p, blen), "case %d does not decode to its text", cases);
        free(back);
        free(ids);
        p = end + sep_len;
        line = nl + 1;
    }
    ck_assert_msg(cases == 46, "expected 46 cases, read %d", cases);
    ck_assert_msg(!failed, "%d of %d cases differ; first: %s", failed, cases, first_failure);
    free(inp);
    free(out);
}
END_TEST

START_TEST(test_special_tokens)
{
    int32_t id;
    ck_assert_int_eq(loom_tokenizer_vocab_size(qwen), 151669);
    ck_assert(loom_tokenizer_token_id(qwen, "<|endoftext|>", &id) == LOOM_OK && id == 151643);
    ck_assert(loom_tokenizer_token_id(qwen, "<|im_start|>", &id) == LOOM_OK && id == 151644);
    ck_assert(loom_tokenizer_token_id(qwen, "<|im_end|>", &id) == LOOM_OK && id == 151645);
    ck_assert(loom_tokenizer_token_id(qwen, "</think>", &id) == LOOM_OK && id == 151668);
    ck_assert(loom_tokenizer_token_id(qwen, " Hello", &id) == LOOM_OK && id == 21927);
    ck_assert(loom_tokenizer_token_id(qwen, "<|no_such_token|>", &id) == LOOM_ERR_NOT_FOUND);
    ck_assert(loom_tokenizer_is_special(qwen, 151645));
    ck_assert(!loom_tokenizer_is_special(qwen, 151667)); /* <think>: added, not special */
    ck_assert(!loom_tokenizer_is_special(qwen, 9707));
    ck_assert(!loom_tokenizer_is_special(qwen, -1));
    ck_assert_int_eq(loom_tokenizer_added_count(qwen), 26);

    /* matched in the raw text, special or not, longest first */
    const int32_t chat[] = {151644, 872, 198, 6023, 151645, 198, 151667, 87, 151668};
    assert_ids(qwen, "<|im_start|>user\nhi<|im_end|>\n<think>x</think>", chat, 9);
    const int32_t glued[] = {9707, 151643, 151643, 0};
    assert_ids(qwen, "Hello<|endoftext|><|endoftext|>!", glued, 4);
    /* not quite a special token: ordinary text */
    int32_t *ids;
    size_t n;
    encode_ok(qwen, "<|im_end|", 9, &ids, &n);
    for (size_t i = 0; i < n; i++) ck_assert_int_lt(ids[i], 151643);
    free(ids);

    /* decode, with and without the special tokens */
    char *text;
    size_t len;
    ck_assert(loom_detokenize(qwen, chat, 9, 0, &text, &len) == LOOM_OK);
    ck_assert_str_eq(text, "<|im_start|>user\nhi<|im_end|>\n<think>x</think>");
    free(text);
    ck_assert(loom_detokenize(qwen, chat, 9, LOOM_TOK_SKIP_SPECIAL, &text, &len) == LOOM_OK);
    ck_assert_str_eq(text, "user\nhi\n<think>x</think>");
    free(text);
}
END_TEST

START_TEST(test_nfc)
{
    /* e + COMBINING ACUTE (NFD) tokenizes as precomposed é */
    int32_t *a, *b;
    size_t na, nb;
    encode_ok(qwen, "caf\xc3\xa9", 5, &a, &na);
    encode_ok(qwen, "cafe\xcc\x81", 6, &b, &nb);
    ck_assert(na == nb && !memcmp(a, b, na * sizeof *a));
    free(a);
    free(b);
}
END_TEST

static size_t put_cp(char *out, uint32_t cp)
{
    return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out);
}

static uint32_t rnd(uint64_t *s) /* xorshift64* */
{
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return (uint32_t)((*s * 0x2545F4914F6CDD1Dull) >> 32);
}

/* A random valid UTF-8 string of mixed scripts, emoji, spaces, digits,
 * contractions and special-token text, NFC-normalised (the tokenizer
 * normalises, so only NFC text round-trips byte for byte). */
static char *random_text(uint64_t *seed, size_t *len)
{
    static const char *const words[] = {"<|im_end|>", "<|im_start|>", "<think>", "<|endoftext|>", "'s", "'LL", " 'Re",
                                        "\r\n", "\n\n\n", "   ", "\t", "<|im_", "|>", "3.14159", "don't"};
    char buf[4096];
    size_t n = 0, count = rnd(seed) % 120;
    for (size_t i = 0; i < count && n < sizeof buf - 32; i++) {
        uint32_t kind = rnd(seed) % 10, cp;
        switch (kind) {
        case 0: { const char *w = words[rnd(seed) % (sizeof words / sizeof *words)]; memcpy(buf + n, w, strlen(w)); n += strlen(w); continue; }
        case 1: cp = " \t\n\r\v\f"[rnd(seed) % 6]; break;
        case 2: cp = 0x20 + rnd(seed) % 95; break;                       /* printable ASCII */
        case 3: cp = 0x80 + rnd(seed) % 0x780; break;                    /* 2-byte */
        case 4: cp = 0x4E00 + rnd(seed) % 0x5200; break;                 /* CJK */
        case 5: cp = 0x1F300 + rnd(seed) % 0x700; break;                 /* emoji, 4-byte */
        case 6: cp = 0x10000 + rnd(seed) % 0x100000; break;              /* any 4-byte */
        case 7: do cp = 0x800 + rnd(seed) % 0xF800; while (cp >= 0xD800 && cp < 0xE000); break; /* any 3-byte */
        case 8: cp = '0' + rnd(seed) % 10; break;
        default: cp = (uint32_t)"aeiou AEIOU"[rnd(seed) % 11]; break;
        }
        n += put_cp(buf + n, cp);
    }
    utf8proc_uint8_t *nfc = NULL;
    utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)buf, (utf8proc_ssize_t)n, &nfc, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    ck_assert_msg(k >= 0, "utf8proc_map: %s", utf8proc_errmsg(k));
    *len = (size_t)k;
    return (char *)nfc;
}

START_TEST(test_roundtrip_random)
{
    uint64_t seed = 0x1234567887654321ull;
    for (int i = 0; i < 3000; i++) {
        size_t n;
        char *s = random_text(&seed, &n);
        assert_roundtrip(qwen, s, n);
        free(s);
    }
}
END_TEST

START_TEST(test_long_runs)
{
    /* long runs the regex backtracks over, and one big word for the BPE heap */
    const char fill[] = {' ', '\n', '!', 'a', '3'};
    size_t n = 300000;
    char *s = malloc(n + 2);
    for (size_t f = 0; f < sizeof fill; f++) {
        memset(s, fill[f], n);
        s[n] = 'x';
        assert_roundtrip(qwen, s, n + 1);
    }
    for (size_t i = 0; i < n; i++) s[i] = " \t"[i % 2];
    assert_roundtrip(qwen, s, n);
    free(s);
}
END_TEST

START_TEST(test_invalid_utf8)
{
    static const struct { const char *s; size_t len, off; } cases[] = {
        {"abc\xff", 4, 3},           {"\xc0\x80", 2, 0},            {"a\xed\xa0\x80z", 5, 1}, /* surrogate */
        {"ab\xe2\x82", 4, 2},        {"\xf4\x90\x80\x80", 4, 0},   {"x\x80", 2, 1},
        {"ok \xe0\x80\xaf", 6, 3},   {"\xf0\x9f\xa6", 3, 0},       {"<|im_end|>\xfe", 11, 10},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int32_t *ids = (int32_t *)1;
        size_t n = 1;
        ck_assert_int_eq(loom_tokenize(qwen, cases[i].s, cases[i].len, &ids, &n), LOOM_ERR_INVALID);
        ck_assert(ids == NULL && n == 0);
        char want[64];
        snprintf(want, sizeof want, "offset %zu", cases[i].off);
        ck_assert_msg(strstr(loom_last_error(), want), "case %zu: \"%s\" does not name %s", i, loom_last_error(), want);
    }
}
END_TEST

START_TEST(test_decode_bad_ids)
{
    const int32_t bad[][2] = {{9707, -1}, {9707, 151669}, {9707, 2000000000}};
    for (int i = 0; i < 3; i++) {
        char *text = (char *)1;
        size_t len;
        ck_assert_int_eq(loom_detokenize(qwen, bad[i], 2, 0, &text, &len), LOOM_ERR_INVALID);
        ck_assert(text == NULL);
        char want[32];
        snprintf(want, sizeof want, "%d", bad[i][1]);
        ck_assert_msg(strstr(loom_last_error(), want), "\"%s\" does not name id %s", loom_last_error(), want);
        const char *piece;
        ck_assert_int_eq(loom_tok_decode_piece(qwen, bad[i][1], &piece, &len), LOOM_ERR_INVALID);
    }
    char *text;
    size_t len;
    ck_assert(loom_detokenize(qwen, NULL, 0, 0, &text, &len) == LOOM_OK && len == 0 && text[0] == 0);
    free(text);
}
END_TEST

START_TEST(test_stream_split_char)
{
    /* 🦙 (F0 9F A6 99) is spread over three tokens: " \xF0\x9F"... */
    const char *s = " this is \xf0\x9f\xa6\x99.cpp";
    const int32_t want[] = {419, 374, 11162, 99, 247, 13, 10821};
    assert_ids(qwen, s, want, 7);
    const char *piece;
    size_t plen;
    ck_assert(loom_tok_decode_piece(qwen, 99, &piece, &plen) == LOOM_OK);
    ck_assert_int_eq(plen, 1); /* a lone continuation byte */

    loom_tok_stream st;
    loom_tok_stream_init(&st);
    size_t cap = loom_tokenizer_max_piece(qwen) + 4;
    char *buf = malloc(cap), got[64];
    size_t o = 0, n, held = 0;
    for (int i = 0; i < 7; i++) {
        ck_assert(loom_tok_stream_put(&st, qwen, want[i], 0, buf, cap, &n) == LOOM_OK);
        size_t bad;
        ck_assert_msg(loom_utf8_valid(buf, n, &bad), "token %d: emitted an incomplete character", i);
        if (i == 2) ck_assert(n == 1 && buf[0] == ' ');                       /* " \xF0\x9F": the space only */
        if (i == 3) ck_assert(n == 0);                                        /* "\xA6": still incomplete */
        if (i == 4) ck_assert(n == 4 && !memcmp(buf, "\xf0\x9f\xa6\x99", 4));  /* "\x99" completes it */
        held += st.n_pend > 0;
        memcpy(got + o, buf, n);
        o += n;
    }
    o += loom_tok_stream_flush(&st, got + o);
    ck_assert(held >= 2);
    ck_assert(o == strlen(s) && !memcmp(got, s, o));
    free(buf);
}
END_TEST

/* ---- self-contained: small tokenizers written here ---------------------------- */

/* GPT-2 bytes_to_unicode, for writing byte-level vocabulary keys. */
static uint32_t byte_cp(unsigned b)
{
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    if (b <= 0x20) return 256 + b;
    if (b < 0xAD) return 256 + 33 + (b - 0x7F);
    return 256 + 67;
}

static size_t key(char *out, const char *bytes) /* byte-level spelling of bytes, JSON-escaped */
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)bytes; *p; p++) {
        uint32_t cp = byte_cp(*p);
        if (cp == '"' || cp == '\\') out[o++] = '\\';
        o += put_cp(out + o, cp);
    }
    out[o] = 0;
    return o;
}

/* A tokenizer: ids 0..255 are the bytes, then "ab" 256, "abc" 257, "bc" 258,
 * " a" 259, "c " 260; merges in the given format; extra JSON for added_tokens etc. */
static loom_status synth(bool pair_merges, const char *normalizer, const char *pretok, const char *added,
                         const char *model_extra, loom_tokenizer **out)
{
    char *js = malloc(1 << 16), k[64];
    size_t o = 0;
    o += (size_t)sprintf(js + o, "{\"version\":\"1.0\",\"normalizer\":%s,\"pre_tokenizer\":%s,"
                                 "\"decoder\":{\"type\":\"ByteLevel\"},\"added_tokens\":%s,"
                                 "\"model\":{\"type\":\"BPE\"%s,\"vocab\":{",
                         normalizer, pretok, added, model_extra);
    for (unsigned b = 0; b < 256; b++) {
        char s[2] = {(char)b, 0};
        if (!b) { o += (size_t)sprintf(js + o, "\"\\u0100\":0,"); continue; } /* byte 0: U+0100 */
        key(k, s);
        o += (size_t)sprintf(js + o, "\"%s\":%u,", k, b);
    }
    const char *more[] = {"ab", "abc", "bc", " a", "c "};
    for (int i = 0; i < 5; i++) o += (size_t)sprintf(js + o, "\"%s\":%d%s", (key(k, more[i]), k), 256 + i, i < 4 ? "," : "");
    o += (size_t)sprintf(js + o, "},\"merges\":[");
    const char *m[][2] = {{"a", "b"}, {"ab", "c"}, {"b", "c"}, {" ", "a"}, {"c", " "}};
    for (int i = 0; i < 5; i++) {
        char ka[16], kb[16];
        key(ka, m[i][0]);
        key(kb, m[i][1]);
        o += (size_t)(pair_merges ? sprintf(js + o, "[\"%s\",\"%s\"]%s", ka, kb, i < 4 ? "," : "")
                                  : sprintf(js + o, "\"%s %s\"%s", ka, kb, i < 4 ? "," : ""));
    }
    o += (size_t)sprintf(js + o, "]}}");
    loom_status st = loom_tokenizer_load_json(js, o, "synthetic.json", out);
    free(js);
    return st;
}

static const char *const split_pretok =
    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\" ?\\\\p{L}+|\\\\p{N}|\\\\s+|[^\\\\s\\\\p{L}\\\\p{N}]+\"},"
    "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}";

START_TEST(test_synth_merge_formats)
{
    for (int pairs = 0; pairs < 2; pairs++) {
        loom_tokenizer *t;
        ck_assert_msg(synth(pairs, "{\"type\":\"NFC\"}", split_pretok, "[]", "", &t) == LOOM_OK, "%s", loom_last_error());
        ck_assert_int_eq(loom_tokenizer_vocab_size(t), 261);
        const int32_t w1[] = {257}, w2[] = {258, 'a'}, w3[] = {' ', 257}, w4[] = {256, 256, 'a'}, w5[] = {259, 'x', '1', '2'};
        assert_ids(t, "abc", w1, 1);
        assert_ids(t, "bca", w2, 2);
        assert_ids(t, " abc", w3, 2);   /* (a,b) ranks before (" ",a) */
        assert_ids(t, "ababa", w4, 3);  /* equal ranks merge left to right */
        assert_ids(t, " ax12", w5, 4);
        assert_roundtrip(t, "abc \xf0\x9f\xa6\x99 \x01\x02", 11);
        loom_tokenizer_free(t);
    }
}
END_TEST

START_TEST(test_synth_added_flags)
{
    const char *added =
        "[{\"id\":300,\"content\":\"<x>\",\"lstrip\":true,\"rstrip\":true,\"normalized\":false,\"special\":true},"
        " {\"id\":301,\"content\":\"word\",\"single_word\":true,\"normalized\":false,\"special\":false},"
        " {\"id\":302,\"content\":\"\\u00e9\",\"normalized\":true,\"special\":false},"
        " {\"id\":303,\"content\":\"<x>>\",\"normalized\":false,\"special\":false}]";
    loom_tokenizer *t;
    ck_assert_msg(synth(false, "{\"type\":\"NFC\"}", split_pretok, added, "", &t) == LOOM_OK, "%s", loom_last_error());
    ck_assert_int_eq(loom_tokenizer_vocab_size(t), 304);
    const int32_t a[] = {'a', 300, 'b'};
    assert_ids(t, "a  <x>\t b", a, 3);                           /* lstrip/rstrip eat the spaces */
    const int32_t b[] = {'w', 'o', 'r', 'd', 's', ' ', 301};
    assert_ids(t, "words word", b, 7);                           /* single_word */
    const int32_t c[] = {302, 302};
    assert_ids(t, "e\xcc\x81\xc3\xa9", c, 2);                    /* normalized: matched after NFC */
    const int32_t d[] = {303, 'a'};
    assert_ids(t, "<x>>a", d, 2);                                /* longest first */
    ck_assert(loom_tokenizer_is_special(t, 300) && !loom_tokenizer_is_special(t, 301));
    /* ids between the vocabulary and the added tokens have no token */
    char *text;
    size_t len;
    const int32_t gap[] = {280};
    ck_assert_int_eq(loom_detokenize(t, gap, 1, 0, &text, &len), LOOM_ERR_INVALID);
    ck_assert(strstr(loom_last_error(), "280"));
    loom_tokenizer_free(t);
}
END_TEST

START_TEST(test_synth_pretokenizers)
{
    loom_tokenizer *t;
    /* ByteLevel alone with use_regex: the GPT-2 split */
    ck_assert_msg(synth(false, "null", "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}", "[]", "", &t) == LOOM_OK,
                  "%s", loom_last_error());
    const int32_t a[] = {'x', 'c', ' ', 'x'};
    assert_ids(t, "xc x", a, 4); /* "xc" | " x": the (c, " ") merge cannot cross the split */
    loom_tokenizer_free(t);
    /* no split at all: one word */
    ck_assert(synth(false, "null", "{\"type\":\"ByteLevel\",\"use_regex\":false}", "[]", "", &t) == LOOM_OK);
    const int32_t b[] = {'x', 260, 'x'};
    assert_ids(t, "xc x", b, 3);
    loom_tokenizer_free(t);
    /* Split Removed drops the matches */
    ck_assert(synth(false, "null",
                    "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":\"-\"},\"behavior\":\"Removed\"},"
                    "{\"type\":\"ByteLevel\",\"use_regex\":false}]}", "[]", "", &t) == LOOM_OK);
    const int32_t c[] = {257, 'x'};
    assert_ids(t, "abc--x-", c, 2);
    loom_tokenizer_free(t);
}
END_TEST

START_TEST(test_synth_errors)
{
    loom_tokenizer *t = (loom_tokenizer *)1;
    ck_assert_int_eq(synth(false, "{\"type\":\"Lowercase\"}", split_pretok, "[]", "", &t), LOOM_ERR_UNSUPPORTED);
    ck_assert(t == NULL && strstr(loom_last_error(), "Lowercase"));
    ck_assert_int_eq(synth(false, "null", "{\"type\":\"Whitespace\"}", "[]", "", &t), LOOM_ERR_UNSUPPORTED);
    ck_assert(strstr(loom_last_error(), "Whitespace"));
    ck_assert_int_eq(synth(false, "null", "{\"type\":\"ByteLevel\",\"add_prefix_space\":true}", "[]", "", &t), LOOM_ERR_UNSUPPORTED);
    ck_assert_int_eq(synth(false, "null",
                           "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"},"
                           "{\"type\":\"ByteLevel\"}]}", "[]", "", &t), LOOM_ERR_UNSUPPORTED);
    ck_assert(strstr(loom_last_error(), "regex"));
    ck_assert_int_eq(synth(false, "null", split_pretok, "[]", ",\"byte_fallback\":true", &t), LOOM_ERR_UNSUPPORTED);
    ck_assert_int_eq(synth(false, "null", split_pretok, "[{\"id\":-4,\"content\":\"x\"}]", "", &t), LOOM_ERR_FORMAT);
    ck_assert_int_eq(loom_tokenizer_load_json("{\"model\":", 9, "cut.json", &t), LOOM_ERR_FORMAT);
    ck_assert(strstr(loom_last_error(), "cut.json"));
    const char *bad_merge = "{\"pre_tokenizer\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}";
    ck_assert_int_eq(loom_tokenizer_load_json(bad_merge, strlen(bad_merge), "m.json", &t), LOOM_ERR_FORMAT);
    ck_assert_msg(strstr(loom_last_error(), "merged token"), "%s", loom_last_error());
    ck_assert_int_eq(loom_tokenizer_load("/nonexistent/tokenizer.json", &t), LOOM_ERR_IO);
    ck_assert(strstr(loom_last_error(), "/nonexistent/tokenizer.json"));
    loom_tokenizer_free(NULL);
}
END_TEST

/* tests/data/tokenizer/tiny.json (also the fuzz seed): loaded from a file */
START_TEST(test_tiny_file)
{
    char path[4200];
    const char *dir = getenv("LOOM_TEST_DATA");
    snprintf(path, sizeof path, "%s/tokenizer/tiny.json", dir && *dir ? dir : LOOM_TEST_DATA_DIR);
    loom_tokenizer *t;
    ck_assert_msg(loom_tokenizer_load(path, &t) == LOOM_OK, "%s", loom_last_error());
    const int32_t want[] = {264, 32, 257, 301, 264, 300}; /* hello, " ", abc, <think> (eats spaces), hello, <|im_end|> */
    assert_ids(t, "hello abc <think> hello<|im_end|>", want, 6);
    int32_t id;
    ck_assert(loom_tokenizer_token_id(t, " hello", &id) == LOOM_OK && id == 265);
    const char *text = "hello\n\n  abc 123 \xc3\xa9\xf0\x9f\xa6\x99<|im_end|>";
    assert_roundtrip(t, text, strlen(text));
    loom_tokenizer_free(t);
}
END_TEST

START_TEST(test_utf8_stream)
{
    /* byte by byte, in random chunks, including invalid bytes: the output is
     * the input, and only ever holds back a possible character start */
    uint64_t seed = 42;
    for (int iter = 0; iter < 500; iter++) {
        char in[256], outb[512], buf[300];
        size_t n = rnd(&seed) % 200, o = 0;
        for (size_t i = 0; i < n;) {
            if (rnd(&seed) % 8 == 0) { in[i++] = (char)(rnd(&seed) & 0xFF); continue; }
            char c[4];
            size_t k = put_cp(c, 0x20 + rnd(&seed) % 0x1FFF0);
            if ((uint32_t)((unsigned char)c[0]) == 0xED) continue;    /* skip surrogates */
            if (i + k > n) break;
            memcpy(in + i, c, k);
            i += k;
        }
        loom_tok_stream s;
        loom_tok_stream_init(&s);
        for (size_t i = 0; i < n;) {
            size_t k = 1 + rnd(&seed) % 5, w;
            if (k > n - i) k = n - i;
            ck_assert(loom_utf8_stream_put(&s, in + i, k, buf, sizeof buf, &w) == LOOM_OK);
            memcpy(outb + o, buf, w);
            o += w;
            i += k;
        }
        o += loom_tok_stream_flush(&s, outb + o);
        ck_assert(o == n && !memcmp(outb, in, n));
    }
    /* a 3-byte character one byte at a time: nothing, nothing, all */
    loom_tok_stream s;
    loom_tok_stream_init(&s);
    char buf[8];
    size_t w;
    ck_assert(loom_utf8_stream_put(&s, "\xe2", 1, buf, 8, &w) == LOOM_OK && w == 0);
    ck_assert(loom_utf8_stream_put(&s, "\x82", 1, buf, 8, &w) == LOOM_OK && w == 0);
    ck_assert(loom_utf8_stream_put(&s, "\xac", 1, buf, 8, &w) == LOOM_OK && w == 3 && !memcmp(buf, "\xe2\x82\xac", 3));
    ck_assert(loom_tok_stream_flush(&s, buf) == 0);
}
END_TEST

START_TEST(test_utf8_valid)
{
    size_t off;
    ck_assert(loom_utf8_valid("", 0, &off));
    ck_assert(loom_utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\xa6\x99\xf4\x8f\xbf\xbf", 14, &off));
    ck_assert(!loom_utf8_valid("a\xc3", 2, &off) && off == 1);
    ck_assert(!loom_utf8_valid("\xc1\xbf", 2, &off) && off == 0);
    ck_assert(!loom_utf8_valid("ab\xf0\x8f\xbf\xbf", 6, &off) && off == 2); /* overlong 4-byte */
    ck_assert(!loom_utf8_valid("\xe2\x28\xa1", 3, &off) && off == 0);
}
END_TEST

/* ---- main ---------------------------------------------------------------------- */

static bool find_data(void)
{
    const char *dir = getenv("LOOM_SHARED_DATA");
    if (!dir || !*dir) dir = LOOM_SHARED_DATA_DIR;
    snprintf(qwen_dir, sizeof qwen_dir, "%s/qwen2-tokenizer", dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", qwen_dir);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    fclose(f);
    return true;
}

int main(int argc, char **argv)
{
    bool want_self = true, want_qwen = true;
    if (argc > 1 && !strcmp(argv[1], "--self-contained")) want_qwen = false;
    else if (argc > 1 && !strcmp(argv[1], "--qwen2")) want_self = false;
    else if (argc > 1) {
        fprintf(stderr, "usage: %s [--self-contained | --qwen2]\n", argv[0]);
        return 2;
    }

    if (want_qwen) {
        if (!find_data()) {
            fprintf(stderr, "test_tokenizer: SKIP: %s/tokenizer.json not found (the project's ../shared/data; "
                            "set LOOM_SHARED_DATA to its path). --self-contained runs the tests that need no data.\n", qwen_dir);
            return 77;
        }
        char path[4200];
        snprintf(path, sizeof path, "%s/tokenizer.json", qwen_dir);
        if (loom_tokenizer_load(path, &qwen)) {
            fprintf(stderr, "test_tokenizer: %s\n", loom_last_error());
            return 1;
        }
    }
    Suite *s = suite_create("tokenizer");
    if (want_self) {
        TCase *tc = tcase_create("self-contained");
        tcase_add_test(tc, test_synth_merge_formats);
        tcase_add_test(tc, test_synth_added_flags);
        tcase_add_test(tc, test_synth_pretokenizers);
        tcase_add_test(tc, test_synth_errors);
        tcase_add_test(tc, test_tiny_file);
        tcase_add_test(tc, test_utf8_stream);
        tcase_add_test(tc, test_utf8_valid);
        suite_add_tcase(s, tc);
    }
    if (want_qwen) {
        TCase *tc = tcase_create("qwen2");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_vocab_cases);
        tcase_add_test(tc, test_special_tokens);
        tcase_add_test(tc, test_nfc);
        tcase_add_test(tc, test_roundtrip_random);
        tcase_add_test(tc, test_long_runs);
        tcase_add_test(tc, test_invalid_utf8);
        tcase_add_test(tc, test_decode_bad_ids);
        tcase_add_test(tc, test_stream_split_char);
        suite_add_tcase(s, tc);
    }
    int rc = loom_test_run(s);
    loom_tokenizer_free(qwen);
    return rc;
}
