/* generate.c — the sampler and the generation loop. */
#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "generate.h"

#define QWEN_ENDOFTEXT 151643 /* <|endoftext|> */
#define QWEN_IM_END    151645 /* <|im_end|> */

loom_sampler_params loom_sampler_defaults(void)
{
    return (loom_sampler_params){.temperature = 0, .top_k = 0, .top_p = 1, .min_p = 0, .repetition_penalty = 1,
                                 .penalty_last_n = 64, .seed = 0};
}

loom_status loom_sampler_check(const loom_sampler_params *p)
{
    if (!(p->temperature >= 0 && p->temperature <= 100)) return loom_error(LOOM_ERR_INVALID, "temperature %g is outside 0..100", p->temperature);
    if (p->top_k < 0) return loom_error(LOOM_ERR_INVALID, "top_k %d is negative", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1)) return loom_error(LOOM_ERR_INVALID, "top_p %g is outside (0, 1]", p->top_p);
    if (!(p->min_p >= 0 && p->min_p < 1)) return loom_error(LOOM_ERR_INVALID, "min_p %g is outside [0, 1)", p->min_p);
    if (!(p->repetition_penalty > 0 && p->repetition_penalty <= 10))
        return loom_error(LOOM_ERR_INVALID, "repetition penalty %g is outside (0, 10]", p->repetition_penalty);
    if (!(fabsf(p->presence_penalty) <= 2 && fabsf(p->frequency_penalty) <= 2))
        return loom_error(LOOM_ERR_INVALID, "presence/frequency penalties must be within -2..2");
    if (p->penalty_last_n < 0) return loom_error(LOOM_ERR_INVALID, "penalty window %d is negative", p->penalty_last_n);
    return LOOM_OK;
}

typedef struct {
    float   logit;
    int32_t id;
} cand;

struct loom_sampler {
    loom_sampler_params p;
    int32_t             vocab;
    cand               *c;      /* [vocab] */
    int32_t            *count;  /* [vocab] occurrences in the penalty window */
    uint64_t            rng[4]; /* xoshiro256** */
};

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3], s[2] ^= t, s[3] = rotl(s[3], 45);
    return r;
}

loom_status loom_sampler_create(const loom_sampler_params *p, int32_t vocab, loom_sampler **out)
{
    *out = NULL;
    loom_status st = loom_sampler_check(p);
    if (st) return st;
    loom_sampler *s = calloc(1, sizeof *s);
    if (!s || !(s->c = malloc((size_t)vocab * sizeof *s->c)) || !(s->count = calloc((size_t)vocab, sizeof *s->count))) {
        loom_sampler_free(s);
        return loom_error(LOOM_ERR_NOMEM, "out of memory for the sampler");
    }
    s->p = *p;
    s->vocab = vocab;
    uint64_t z = p->seed;
    for (int i = 0; i < 4; i++) { /* splitmix64 seeding */
        z += 0x9e3779b97f4a7c15ull;
        uint64_t x = z;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        s->rng[i] = x ^ (x >> 31);
    }
    *out = s;
    return LOOM_OK;
}

void loom_sampler_free(loom_sampler *s)
{
    if (!s) return;
    free(s->c), free(s->count), free(s);
}

static int by_logit_desc(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return x->logit < y->logit ? 1 : x->logit > y->logit ? -1 : x->id - y->id;
}

static void apply_penalties(loom_sampler *s, float *logits, const int32_t *hist, size_t n)
{
    const loom_sampler_params *p = &s->p;
    if (p->repetition_penalty == 1 && p->presence_penalty == 0 && p->frequency_penalty == 0) return;
    size_t from = p->penalty_last_n && n > (size_t)p->penalty_last_n ? n - (size_t)p->penalty_last_n : 0;
    for (size_t i = from; i < n; i++)
        if (hist[i] >= 0 && hist[i] < s->vocab) s->count[hist[i]]++;
    for (size_t i = from; i < n; i++) {
        int32_t id = hist[i];
        if (id < 0 || id >= s->vocab || !s->count[id]) continue;
        float *l = &logits[id];
        *l = *l > 0 ? *l / p->repetition_penalty : *l * p->repetition_penalty;
        *l -= p->presence_penalty + p->frequency_penalty * (float)s->count[id];
        s->count[id] = 0; /* each distinct token once */
    }
}

int32_t loom_sampler_sample(loom_sampler *s, float *logits, const int32_t *history, size_t n_history)
{
    const loom_sampler_params *p = &s->p;
    apply_penalties(s, logits, history, n_history);
    int32_t V = s->vocab, best = 0;
    for (int32_t i = 1; i < V; i++)
        if (logits[i] > logits[best]) best = i;
    if (p->temperature == 0) return best;

    int32_t n = 0;
    for (int32_t i = 0; i < V; i++)
        if (isfinite(logits[i])) s->c[n++] = (cand){logits[i] / p->temperature, i};
    if (!n) return best;
    qsort(s->c, (size_t)n, sizeof *s->c, by_logit_desc);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;
    double sum = 0, mx = s->c[0].logit;
    for (int32_t i = 0; i < n; i++) sum += exp(s->c[i].logit - mx);
    int32_t keep = n;
    double mass = 0;
    for (int32_t i = 0; i < n; i++) {
        double prob = exp(s->c[i].logit - mx) / sum;
        if (p->min_p > 0 && prob < p->min_p * (1.0 / sum)) { keep = i; break; } /* best's prob is 1/sum */
        mass += prob;
        if (mass >= p->top_p) { keep = i + 1; break; }
    }
    if (keep < 1) keep = 1;
    double total = 0;
    for (int32_t i = 0; i < keep; i++) total += exp(s->c[i].logit - mx);
    double u = (double)(next_u64(s->rng) >> 11) * (1.0 / 9007199254740992.0) * total;
    for (int32_t i = 0; i < keep; i++) {
        u -= exp(s->c[i].logit - mx);
        if (u <= 0) return s->c[i].id;
    }
    return s->c[keep - 1].id;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Text waiting to be emitted: held back while it could still become a stop string. */
typedef struct {
    char  *buf;
    size_t len, cap;
} pending;

static int push(pending *q, const char *s, size_t n)
{
    if (q->len + n + 1 > q->cap) {
        size_t c = (q->len + n + 1) * 2;
        char *b = realloc(q->buf, c);
        if (!b) return -1;
        q->buf = b, q->cap = c;
    }
    memcpy(q->buf + q->len, s, n);
    q->len += n;
    q->buf[q->len] = 0;
    return 0;
}

/* How much of q may go out now: all but a suffix that is a prefix of a stop
 * string. *hit: a stop string occurs; the text before it may go out. */
static size_t releasable(const pending *q, const loom_gen_params *p, bool *hit)
{
    *hit = false;
    size_t first = q->len;
    for (int32_t i = 0; i < p->n_stop; i++) {
        const char *at = strstr(q->buf, p->stop[i]);
        if (at && (size_t)(at - q->buf) < first) first = (size_t)(at - q->buf), *hit = true;
    }
    if (*hit) return first;
    size_t keep = 0;
    for (int32_t i = 0; i < p->n_stop; i++) {
        size_t sl = strlen(p->stop[i]);
        for (size_t k = sl - 1; k > keep && k > 0; k--)
            if (k <= q->len && !memcmp(q->buf + q->len - k, p->stop[i], k)) { keep = k; break; }
    }
    return q->len - keep;
}

loom_status loom_generate(loom_qwen2_model *m, const loom_tokenizer *tok, const int32_t *prompt, int32_t n_prompt,
                          const loom_gen_params *p, loom_token_fn fn, void *ud, int32_t *out_ids, loom_gen_stats *stats)
{
    const loom_qwen2_config *c = loom_qwen2_model_config(m);
    int32_t chunk = loom_qwen2_model_max_tokens(m), n_ctx = loom_qwen2_model_n_ctx(m);
    memset(stats, 0, sizeof *stats);
    if (n_prompt < 1) return loom_error(LOOM_ERR_INVALID, "the prompt is empty");
    if (n_prompt >= n_ctx)
        return loom_error(LOOM_ERR_INVALID, "the prompt has %d tokens; the context holds %d (raise --ctx)", n_prompt, n_ctx);
    if (p->max_new < 0) return loom_error(LOOM_ERR_INVALID, "max new tokens %d is negative", p->max_new);
    int32_t total = n_prompt + p->max_new;
    int32_t *hist = malloc((size_t)total * sizeof *hist), *pos = malloc((size_t)chunk * sizeof *pos);
    int32_t *seq = malloc((size_t)chunk * sizeof *seq);
    float *logits = NULL; /* the last token's, in the model's host buffer (step_view) */
    loom_sampler *smp = NULL;
    pending q = {0};
    loom_tok_stream ts;
    loom_tok_stream_init(&ts);
    loom_status st = LOOM_OK;
    if (!hist || !pos || !seq) st = loom_error(LOOM_ERR_NOMEM, "out of memory for generation");
    if (!st) st = loom_sampler_create(&p->sampler, c->vocab, &smp);
    if (st) goto out;
    memcpy(hist, prompt, (size_t)n_prompt * sizeof *hist);
    for (int32_t i = 0; i < chunk; i++) seq[i] = p->slot;

    /* prefill in chunks of the graph's token capacity; logits of the last token only matter */
    double t0 = now_s();
    for (int32_t done = 0; done < n_prompt && !st;) {
        int32_t n = n_prompt - done < chunk ? n_prompt - done : chunk;
        for (int32_t i = 0; i < n; i++) pos[i] = done + i;
        loom_step step = {n, pos, seq};
        st = done + n == n_prompt ? loom_qwen2_model_step_view(m, prompt + done, &step, &logits)
                                  : loom_qwen2_model_step_last(m, prompt + done, &step, NULL);
        done += n;
    }
    stats->n_prompt = n_prompt;
    stats->prompt_s = now_s() - t0;
    if (st) goto out;

    t0 = now_s();
    int32_t n_hist = n_prompt;
    stats->stop = LOOM_STOP_LENGTH;
    for (int32_t g = 0; g < p->max_new; g++) {
        int32_t id = loom_sampler_sample(smp, logits, hist, (size_t)n_hist);
        hist[n_hist++] = id;
        if (out_ids) out_ids[g] = id;
        stats->n_generated++;
        bool eos = !p->ignore_eos && (id == QWEN_IM_END || id == QWEN_ENDOFTEXT);
        char text[512];
        size_t tl = 0;
        bool hit = false;
        if (tok && !eos) {
            if ((st = loom_tok_stream_put(&ts, tok, id, 0, text, sizeof text, &tl))) break;
            if (push(&q, text, tl)) { st = loom_error(LOOM_ERR_NOMEM, "out of memory"); break; }
            size_t r = releasable(&q, p, &hit);
            if (fn && !fn(ud, id, q.buf, r)) { stats->stop = LOOM_STOP_CALLBACK; break; }
            memmove(q.buf, q.buf + r, q.len - r + 1);
            q.len -= r;
        } else if (fn && !eos && !fn(ud, id, "", 0)) {
            stats->stop = LOOM_STOP_CALLBACK;
            break;
        }
        if (eos) { stats->stop = LOOM_STOP_EOS; break; }
        if (hit) { stats->stop = LOOM_STOP_STRING; break; }
        if (n_hist >= n_ctx) { stats->stop = LOOM_STOP_CONTEXT; break; }
        if (g + 1 == p->max_new) break;
        pos[0] = n_hist - 1;
        loom_step step = {1, pos, seq};
        if ((st = loom_qwen2_model_step_view(m, &id, &step, &logits))) break;
    }
    if (!st && tok && fn && stats->stop != LOOM_STOP_STRING && stats->stop != LOOM_STOP_CALLBACK) {
        char tail[8]; /* what a cut-off UTF-8 sequence or held-back prefix left */
        size_t n = loom_tok_stream_flush(&ts, tail);
        if (!push(&q, tail, n) && q.len) fn(ud, -1, q.buf, q.len);
    }
    stats->gen_s = now_s() - t0;
out:
    free(hist), free(pos), free(seq), free(q.buf);
    loom_sampler_free(smp);
    return st;
}
