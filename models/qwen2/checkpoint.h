/* checkpoint.h — opening a Qwen2 checkpoint folder (config.json + safetensors). */
#ifndef LOOM_QWEN2_CHECKPOINT_H
#define LOOM_QWEN2_CHECKPOINT_H

#include "qwen2.h"
#include "safetensors.h"

typedef struct loom_qwen2_ckpt loom_qwen2_ckpt;

loom_status              loom_qwen2_ckpt_open(const char *dir, loom_qwen2_ckpt **out);
void                     loom_qwen2_ckpt_close(loom_qwen2_ckpt *m); /* accepts NULL */
const loom_qwen2_config *loom_qwen2_ckpt_config(const loom_qwen2_ckpt *m);
const loom_st           *loom_qwen2_ckpt_tensors(const loom_qwen2_ckpt *m);
/* The weight provider for loom_qwen2_build (ud = the checkpoint), and the
 * loader of the AWQ layers it defers (joined per device, freed after upload). */
const void              *loom_qwen2_ckpt_weight(void *ud, const char *name, loom_dtype dt, int32_t ndim, const int64_t *shape);
loom_weight_loader       loom_qwen2_ckpt_loader(loom_qwen2_ckpt *m);

/* Write a checkpoint folder with c's exact shapes and random weights, in the
 * publisher's layout (config.json, model.safetensors; AWQ when c->awq). */
loom_status loom_qwen2_synth(const loom_qwen2_config *c, uint64_t seed, const char *dir);



/* ---- a loaded model: checkpoint + graph compiled onto devices ------------- */
typedef struct loom_qwen2_model loom_qwen2_model;

/* Load DIR onto devs (priority order) for steps of up to max_tokens tokens,
 * n_slots sequences of n_ctx positions each (f16 KV cache). */
loom_status loom_qwen2_model_load(const char *dir, loom_device *const *devs, int32_t n_devs, int32_t max_tokens,
                                  int32_t n_slots, int32_t n_ctx, loom_qwen2_model **out);
void        loom_qwen2_model_free(loom_qwen2_model *m); /* accepts NULL */
const loom_qwen2_config *loom_qwen2_model_config(const loom_qwen2_model *m);
loom_exec  *loom_qwen2_model_exec(const loom_qwen2_model *m);
const loom_graph *loom_qwen2_model_graph(const loom_qwen2_model *m);
int32_t     loom_qwen2_model_max_tokens(const loom_qwen2_model *m); /* tokens per step */
int32_t     loom_qwen2_model_n_ctx(const loom_qwen2_model *m);      /* positions per slot */
/* One step: ids[step->n_tokens] in, logits [n_tokens][vocab] out (NULL: none). */
loom_status loom_qwen2_model_step(loom_qwen2_model *m, const int32_t *ids, const loom_step *step, float *logits);
/* The same, reading back only the last token's logits [vocab] (what sampling needs: a
 * 512-token prompt of a 152K vocabulary would otherwise copy 311 MB to the host). */
loom_status loom_qwen2_model_step_last(loom_qwen2_model *m, const int32_t *ids, const loom_step *step, float *logits);
/* The same, *logits pointed at the last token's row in the model's own host buffer
 * (loom_exec_view: no copy on the host), valid until the next step_view. */
loom_status loom_qwen2_model_step_view(loom_qwen2_model *m, const int32_t *ids, const loom_step *step, float **logits);

#endif
