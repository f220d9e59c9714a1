/* A model's weights as safetensors, under the reference implementation's state-dict names
 * and shapes, plus the LTE buffers model.l1_lambda and model.num_kept [n_lte, H_kv]. */
#ifndef HYLA_MODEL_IO_H
#define HYLA_MODEL_IO_H

#include "worker/model.h"
#include "worker/safetensors.h"

/* dtype: HYLA_ST_F32 or HYLA_ST_BF16. metadata may be NULL. */
int model_save_safetensors(const struct hyla_model *m, const char *path, enum hyla_st_dtype dtype,
                           const struct hyla_st_meta *meta, int num_meta, struct hyla_st_error *err);
/* Every parameter must be present with its shape (lm_head.weight may be absent or present
 * when embeddings are tied); tensors the model does not have are an error that names them. */
int model_load_safetensors(struct hyla_model *m, const char *path, struct hyla_st_error *err);

#endif
