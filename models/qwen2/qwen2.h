/*
 * qwen2.h — the Qwen2 / Qwen2.5 model family: configuration (built-in presets
 * and, later, config.json) and the one graph builder that serves every size.
 */
#ifndef LOOM_QWEN2_H
#define LOOM_QWEN2_H

#include "graph.h"

typedef struct loom_qwen2_config {
    char       name[48];      /* preset name, e.g. "qwen2.5-0.5b" */
    int32_t    n_layers;      /* transformer blocks */
    int32_t    hidden;        /* model width D */
    int32_t    n_head;        /* query heads Hq */
    int32_t    n_head_kv;     /* key/value heads Hkv */
    int32_t    head_dim;      /* hd = D / Hq */
    int32_t    ffn;           /* SwiGLU width F */
    int32_t    vocab;         /* V (rows of the embedding table) */
    int32_t    max_pos;       /* max_position_embeddings */
    float      rope_theta;
    float      rms_eps;
    bool       tied;          /* lm_head shares the embedding table */
    loom_dtype dtype;         /* dense weights: f32, f16 or bf16 */
    bool       awq;           /* linear layers are AWQ int4 (group 128) */
    float      yarn_factor;   /* rope_scaling: 0 for none */
    float      yarn_orig_ctx;
    float      yarn_beta_fast; /* 0: the default, 32 */
    float      yarn_beta_slow; /* 0: the default, 1 */
} loom_qwen2_config;

/* Built-in presets with the published dimensions. */
int                      loom_qwen2_n_presets(void);
const loom_qwen2_config *loom_qwen2_preset_at(int i);
loom_status              loom_qwen2_preset(const char *name, loom_qwen2_config *out); /* lists names on error */
loom_status              loom_qwen2_validate(const loom_qwen2_config *c);
/* Read DIR/config.json (a Hugging Face Qwen2ForCausalLM config). */
loom_status              loom_qwen2_config_load(const char *dir, loom_qwen2_config *out);

/* Weights come from a provider: given the checkpoint's name for a tensor
 * (e.g. "model.layers.0.self_attn.q_proj.weight"; for AWQ layers the prefix
 * "model.layers.0.self_attn.q_proj" with dtype q4_awq), its dtype and shape,
 * return its bytes (valid until compile) or NULL after loom_error(); or, when
 * the build was given a loader, LOOM_QWEN2_LATER: the weight is checked and the
 * loader makes it when a device needs it (loom_graph_weight_lazy). */
typedef const void *(*loom_qwen2_weight_fn)(void *ud, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape);
#define LOOM_QWEN2_LATER ((const void *)1)

typedef struct loom_qwen2_graph {
    loom_graph *g;
    loom_tid    ids;    /* input [T] i32 */
    loom_tid    logits; /* output [T, V] f32 */
} loom_qwen2_graph;

/* One graph for prefill and decode: up to max_tokens per step, n_slots
 * sequences, n_ctx positions of KV cache each (kv_dtype f16 or f32). later:
 * the loader of the weights the provider answers LOOM_QWEN2_LATER for, or NULL. */
loom_status loom_qwen2_build(const loom_qwen2_config *c, int32_t max_tokens, int32_t n_slots, int32_t n_ctx,
                             loom_dtype kv_dtype, loom_qwen2_weight_fn weight, void *ud, const loom_weight_loader *later,
                             loom_qwen2_graph *out);

#endif
