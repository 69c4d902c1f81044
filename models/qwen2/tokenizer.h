/*
 * tokenizer.h — byte-level BPE tokenizer read from a Hugging Face
 * tokenizer.json (the Qwen2 / Qwen2.5 format).
 *
 * Encoding follows the reference tokenizer (tokenizers, encode with
 * add_special_tokens and split_special_tokens at their defaults):
 *   1. added tokens (special or not) are matched in the raw text, longest
 *      first at the leftmost position, honouring single_word/lstrip/rstrip;
 *      those marked "normalized" are matched after normalisation instead;
 *   2. the text between them is normalised (NFC here, via utf8proc);
 *   3. split by the pre-tokenizer's regex (PCRE2, UTF + UCP) as the file says;
 *   4. each piece's bytes go through BPE, merges applied lowest rank first.
 * Input must be valid UTF-8 (else LOOM_ERR_INVALID naming the byte offset).
 *
 * Decoding is exact: each id has a byte string (its "piece"); a token may end
 * inside a multi-byte UTF-8 character, so a streaming helper holds back an
 * incomplete trailing character until the next token completes it.
 *
 * A loaded tokenizer is immutable: any number of threads may encode/decode
 * with it at once.
 */
#ifndef LOOM_TOKENIZER_H
#define LOOM_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "loom.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct loom_tokenizer loom_tokenizer;

/* Reads a tokenizer.json. LOOM_ERR_IO: unreadable; LOOM_ERR_FORMAT: not the
 * expected JSON; LOOM_ERR_UNSUPPORTED: a normalizer, pre-tokenizer, model or
 * decoder this implementation does not do. */
loom_status loom_tokenizer_load(const char *path, loom_tokenizer **out);
/* The same, from a JSON text in memory (len bytes; need not be 0-terminated).
 * `name` is used in error messages. */
loom_status loom_tokenizer_load_json(const char *json, size_t len, const char *name, loom_tokenizer **out);
void        loom_tokenizer_free(loom_tokenizer *tok); /* accepts NULL */

/* Number of ids: highest vocabulary or added-token id + 1 (151669 for Qwen2.5's
 * file; the model's embedding table may be larger). */
int32_t     loom_tokenizer_vocab_size(const loom_tokenizer *tok);
/* Longest piece in bytes: a buffer of this + 4 bytes holds any one
 * loom_tok_stream_put output. */
size_t      loom_tokenizer_max_piece(const loom_tokenizer *tok);

/* Id of the token whose text is exactly `text` (0-terminated): an added token's
 * content ("<|im_end|>") or a vocabulary token's decoded bytes (" the").
 * LOOM_ERR_NOT_FOUND if there is none. */
loom_status loom_tokenizer_token_id(const loom_tokenizer *tok, const char *text, int32_t *id);
/* True for added tokens marked "special" (<|im_end|>, ...); false otherwise,
 * including out-of-range ids. */
bool        loom_tokenizer_is_special(const loom_tokenizer *tok, int32_t id);
/* Added tokens, in the file's order: i in [0, count). */
int32_t     loom_tokenizer_added_count(const loom_tokenizer *tok);
loom_status loom_tokenizer_added_at(const loom_tokenizer *tok, int32_t i, int32_t *id, const char **content, bool *special);

/* Encodes len bytes of text into a malloc'd array of *n ids (the caller frees
 * *ids; NULL with *n == 0 for empty text). */
loom_status loom_tokenize(const loom_tokenizer *tok, const char *text, size_t len, int32_t **ids, size_t *n);

/* Flags for loom_detokenize. */
enum { LOOM_TOK_SKIP_SPECIAL = 1 }; /* leave out added tokens marked special */

/* Decodes ids into a malloc'd buffer of *len bytes (the caller frees *text; it
 * is 0-terminated for convenience, the terminator not counted). An id out of
 * range is LOOM_ERR_INVALID naming the id and its position. */
loom_status loom_detokenize(const loom_tokenizer *tok, const int32_t *ids, size_t n, unsigned flags, char **text, size_t *len);

/* The raw bytes of one token (not 0-terminated; valid until the tokenizer is
 * freed). May be an incomplete UTF-8 sequence. */
loom_status loom_tok_decode_piece(const loom_tokenizer *tok, int32_t id, const char **bytes, size_t *len);

/* Streaming decode: feed tokens one at a time, get complete UTF-8 characters.
 * Bytes that cannot start or continue a valid character are passed through
 * as they are, so the concatenated output always equals loom_detokenize's. */
typedef struct loom_tok_stream {
    unsigned char pend[4]; /* held-back start of an incomplete character */
    int32_t       n_pend;
} loom_tok_stream;

void        loom_tok_stream_init(loom_tok_stream *s);
/* Appends id's bytes: writes what is complete to out (cap bytes, at least
 * loom_tokenizer_max_piece(tok) + 4) and sets *n_out. Special tokens are
 * skipped when flags has LOOM_TOK_SKIP_SPECIAL. */
loom_status loom_tok_stream_put(loom_tok_stream *s, const loom_tokenizer *tok, int32_t id, unsigned flags,
                                char *out, size_t cap, size_t *n_out);
/* The same for arbitrary bytes (cap >= len + 4). */
loom_status loom_utf8_stream_put(loom_tok_stream *s, const char *bytes, size_t len, char *out, size_t cap, size_t *n_out);
/* End of stream: writes the held-back bytes, if any (out holds 4), returns how many. */
size_t      loom_tok_stream_flush(loom_tok_stream *s, char *out);

/* Checks that len bytes are valid UTF-8 (no overlong forms, surrogates or
 * code points past U+10FFFF). On failure *bad_offset is where the first
 * invalid sequence starts, and the result is false. */
bool        loom_utf8_valid(const char *s, size_t len, size_t *bad_offset);

#ifdef __cplusplus
}
#endif
#endif /* LOOM_TOKENIZER_H */
