/* fuzz_tokenizer.c — libFuzzer target for the byte-level BPE tokenizer.
 *
 * With LOOM_FUZZ_TOKENIZER=path/to/tokenizer.json (loaded once): any bytes as
 * text. Invalid UTF-8 must fail with LOOM_ERR_INVALID; valid text must encode,
 * decode back to its bytes when it is already NFC, and stream-decode to the
 * same bytes as loom_detokenize. The input read as int32 ids exercises decoding
 * of out-of-range ids.
 * Without it: any bytes as a tokenizer.json (the loader must fail cleanly or
 * give a tokenizer that can encode). Seed: tests/data/tokenizer/tiny.json.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tokenizer.h"

static loom_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    const char *path = getenv("LOOM_FUZZ_TOKENIZER");
    if (path && *path) {
        if (loom_tokenizer_load(path, &tok)) {
            fprintf(stderr, "fuzz_tokenizer: %s\n", loom_last_error());
            exit(1);
        }
    } else {
        fprintf(stderr, "fuzz_tokenizer: LOOM_FUZZ_TOKENIZER is not set: fuzzing the tokenizer.json loader instead\n");
    }
    return 0;
}

static void fuzz_loader(const uint8_t *data, size_t size)
{
    loom_tokenizer *t = NULL;
    if (loom_tokenizer_load_json((const char *)data, size, "fuzz.json", &t) != LOOM_OK) {
        if (t) abort();
        return;
    }
    static const char text[] = "Hello, y'all! \xf0\x9f\xa6\x99 3333 \r\n\t <|im_end|>";
    int32_t *ids = NULL;
    size_t n = 0;
    if (loom_tokenize(t, text, sizeof text - 1, &ids, &n) == LOOM_OK) {
        char *back = NULL;
        size_t len = 0;
        if (loom_detokenize(t, ids, n, 0, &back, &len) != LOOM_OK) abort(); /* encode gave these ids */
        free(back);
    }
    free(ids);
    loom_tokenizer_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tok) {
        fuzz_loader(data, size);
        return 0;
    }
    /* a private copy, so reads past the end hit ASan's redzone */
    char *text = malloc(size ? size : 1);
    if (!text) return 0;
    memcpy(text, data, size);
    int32_t *ids = NULL;
    size_t n = 0;
    loom_status st = loom_tokenize(tok, text, size, &ids, &n);
    size_t bad;
    bool valid = loom_utf8_valid(text, size, &bad);
    if (!valid) {
        if (st != LOOM_ERR_INVALID || ids || n) abort();
    } else {
        if (st != LOOM_OK) abort();
        char *back = NULL;
        size_t len = 0;
        if (loom_detokenize(tok, ids, n, 0, &back, &len) != LOOM_OK) abort();
        /* NFC text comes back byte for byte */
        utf8proc_uint8_t *nfc = NULL;
        utf8proc_ssize_t k = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)size, &nfc,
                                          UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (k >= 0 && (size_t)k == size && !memcmp(nfc, text, size) && (len != size || memcmp(back, text, size))) abort();
        free(nfc);
        /* streaming gives the same bytes */
        loom_tok_stream s;
        loom_tok_stream_init(&s);
        size_t cap = loom_tokenizer_max_piece(tok) + 4, o = 0, w;
        char *buf = malloc(cap), *cat = malloc(len + 4);
        if (!buf || !cat) abort();
        for (size_t i = 0; i < n; i++) {
            if (loom_tok_stream_put(&s, tok, ids[i], 0, buf, cap, &w) != LOOM_OK || o + w > len) abort();
            memcpy(cat + o, buf, w);
            o += w;
        }
        o += loom_tok_stream_flush(&s, cat + o);
        if (o != len || memcmp(cat, back, len)) abort();
        free(buf);
        free(cat);
        free(back);
    }
    free(ids);

    /* the input as ids: decoding either works or names a bad id */
    size_t n_ids = size / 4;
    int32_t *raw = malloc((n_ids ? n_ids : 1) * sizeof *raw);
    if (!raw) abort();
    memcpy(raw, data, n_ids * sizeof *raw);
    for (size_t i = 0; i < n_ids; i++)
        if (i % 2) raw[i] = (int32_t)((uint32_t)raw[i] % (uint32_t)(loom_tokenizer_vocab_size(tok) + 2)) - 1;
    char *out = NULL;
    size_t len = 0;
    st = loom_detokenize(tok, raw, n_ids, (unsigned)size & LOOM_TOK_SKIP_SPECIAL, &out, &len);
    if (st != LOOM_OK && (st != LOOM_ERR_INVALID || out)) abort();
    free(out);
    free(raw);
    free(text);
    return 0;
}
