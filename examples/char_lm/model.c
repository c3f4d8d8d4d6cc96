/* char_lm's model (model.h): a GRU cell unrolled over the sequence, as torch_char_lm.py's
 * CharLM. */
#include "model.h"

#include <stdlib.h>

tg_module *charlm_new(int64_t vocab, int64_t embed, int64_t hidden, tg_rng *rng)
{
    tg_module *m = tg_module_new("CharLM", NULL, NULL, 0);
    if (m && (tg_module_add_child(m, "embed", tg_nn_embedding(vocab, embed, -1, rng)) != TG_OK ||
              tg_module_add_child(m, "cell", tg_nn_gru_cell(embed, hidden, true, rng)) != TG_OK ||
              tg_module_add_child(m, "head", tg_nn_linear(hidden, vocab, true, rng)) != TG_OK)) {
        tg_module_free(m);
        return NULL;
    }
    return m;
}

tg_tensor *charlm_forward(tg_module *m, const tg_index *ids, tg_tensor *h, tg_tensor **h_last)
{
    *h_last = NULL;
    if (!ids || ids->ndim != 2) {
        if (ids)
            tg_set_error(TG_ERR_SHAPE, "charlm_forward: ids must be [B, T]");
        return NULL;
    }
    const int64_t B = ids->shape[0], T = ids->shape[1];
    tg_tensor **hs = malloc((size_t)T * sizeof *hs);
    if (!hs) {
        tg_set_error(TG_ERR_NOMEM, "charlm_forward: out of memory");
        return NULL;
    }
    tg_tensor *x = tg_nn_embed(tg_module_child(m, "embed"), ids); /* [B, T, embed] */
    for (int64_t t = 0; t < T; t++) {
        tg_tensor *xt = tg_reshape(tg_slice(x, 1, t, t + 1, 1), TG_DIMS(B, -1)); /* x[:, t] */
        hs[t] = h = tg_module_forward2(tg_module_child(m, "cell"), xt, h);
    }
    *h_last = h;
    tg_tensor *logits = tg_module_forward(tg_module_child(m, "head"), tg_stack(hs, T, 1));
    free(hs);
    return logits;
}

tg_tensor *charlm_loss(tg_module *m, const tg_index *ids, const tg_index *next, tg_tensor *h,
                       tg_tensor **h_last)
{
    tg_tensor *logits = charlm_forward(m, ids, h, h_last);
    if (!logits || !next) {
        if (logits && tg_last_status() == TG_OK)
            tg_set_error(TG_ERR_ARG, "charlm_loss: next is NULL");
        return NULL;
    }
    const int64_t vocab = logits->shape[2];
    /* cross_entropy takes labels [N]: next's values as one row per logits row */
    return tg_cross_entropy(tg_reshape(logits, TG_DIMS(-1, vocab)),
                            tg_indices(TG_DIMS(next->numel), next->data), TG_REDUCE_MEAN);
}
