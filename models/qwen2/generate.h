/*
 * generate.h — sampling and the generation loop: prefill the prompt in
 * chunks, then decode token by token through the same compiled graph, streaming
 * each token's text, stopping at EOS, a stop string or the token limit.
 */
#ifndef LOOM_GENERATE_H
#define LOOM_GENERATE_H

#include "checkpoint.h"
#include "tokenizer.h"

typedef struct loom_sampler_params {
    float    temperature;        /* 0: greedy (argmax) */
    int32_t  top_k;              /* keep the k most likely; 0: off */
    float    top_p;              /* nucleus mass; 1: off */
    float    min_p;              /* drop tokens below min_p x the best's probability; 0: off */
    float    repetition_penalty; /* HF-style, on tokens in the window; 1: off */
    float    presence_penalty;   /* OpenAI-style, subtracted once per seen token; 0: off */
    float    frequency_penalty;  /* OpenAI-style, subtracted per occurrence; 0: off */
    int32_t  penalty_last_n;     /* window of recent tokens for penalties; 0: all */
    uint64_t seed;
} loom_sampler_params;

loom_sampler_params loom_sampler_defaults(void); /* greedy, no penalties, seed 0 */
loom_status         loom_sampler_check(const loom_sampler_params *p);

typedef struct loom_sampler loom_sampler;
loom_status loom_sampler_create(const loom_sampler_params *p, int32_t vocab, loom_sampler **out);
void        loom_sampler_free(loom_sampler *s); /* accepts NULL */
/* Pick the next token from logits[vocab] (modified in place) given the
 * tokens so far. Deterministic for a given seed and call sequence. */
int32_t     loom_sampler_sample(loom_sampler *s, float *logits, const int32_t *history, size_t n_history);

typedef struct loom_gen_params {
    int32_t             max_new;    /* tokens to generate at most */
    loom_sampler_params sampler;
    const char *const  *stop;       /* stop strings (not emitted); may be NULL */
    int32_t             n_stop;
    bool                ignore_eos;
    int32_t             slot;       /* KV cache sequence slot */
} loom_gen_params;

typedef enum { LOOM_STOP_EOS, LOOM_STOP_STRING, LOOM_STOP_LENGTH, LOOM_STOP_CONTEXT, LOOM_STOP_CALLBACK } loom_stop_reason;

typedef struct loom_gen_stats {
    int32_t          n_prompt, n_generated;
    double           prompt_s, gen_s;  /* wall time of prefill and of decode */
    loom_stop_reason stop;
} loom_gen_stats;

/* Called per generated token with the text it completes (may be empty while
 * a UTF-8 sequence or a possible stop string is pending); return false to stop. */
typedef bool (*loom_token_fn)(void *ud, int32_t id, const char *text, size_t len);

/* tok may be NULL (ids only: no text, no stop strings; EOS from the model's
 * Qwen ids). Generated ids are also written to out_ids[max_new] if given. */
loom_status loom_generate(loom_qwen2_model *m, const loom_tokenizer *tok, const int32_t *prompt, int32_t n_prompt,
                          const loom_gen_params *p, loom_token_fn fn, void *ud, int32_t *out_ids, loom_gen_stats *stats);

#endif
