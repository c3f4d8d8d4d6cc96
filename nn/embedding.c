/* Embedding: a lookup table of num learned dim-vectors (PyTorch's nn.Embedding), run on an index
 * tensor with tg_nn_embed. Only composes tg_embedding (autograd/index.c), which gives the
 * padding row no gradient: that row starts at zero and stays there, whatever the optimizer. */
#include "internal.h"

#include <string.h>

typedef struct {
    int64_t num, dim, padding_idx; /* padding_idx -1: none */
} embedding_config;

tg_tensor *tg_nn_embed(tg_module *m, const tg_index *idx)
{
    const char *fn = "tg_nn_embed";
    if (!m || !idx) {
        if (tg_last_status() == TG_OK)
            tg_set_error(TG_ERR_ARG, "%s: %s is NULL", fn, m ? "idx" : "the module");
        return NULL;
    }
    if (strcmp(tg_module_type(m), "Embedding") != 0) {
        tg_set_error(TG_ERR_ARG, "%s: module \"%s\" is a %s, not an Embedding", fn,
                     tg_module_name(m), tg_module_type(m));
        return NULL;
    }
    const embedding_config *c = tg_module_config(m);
    return tg_embedding(tg_module_param(m, "weight"), idx, c->padding_idx);
}

/* tg_module_forward on an Embedding (inside a Sequential, say) takes the ids as a float tensor
 * of whole numbers, as the data loader gives labels; tg_labels refuses a fraction. */
static tg_tensor *embedding_forward(tg_module *m, tg_tensor *x)
{
    return tg_nn_embed(m, x ? tg_labels(x) : NULL);
}

tg_module *tg_nn_embedding(int64_t num, int64_t dim, int64_t padding_idx, tg_rng *rng)
{
    const char *fn = "tg_nn_embedding";
    if (num < 1 || dim < 1 || padding_idx < -1 || padding_idx >= num || !rng) {
        tg_set_error(TG_ERR_ARG,
                     "%s: num %lld, dim %lld, padding_idx %lld%s: need num and dim >= 1, "
                     "padding_idx -1 (none) or in [0, num), and an rng",
                     fn, (long long)num, (long long)dim, (long long)padding_idx,
                     rng ? "" : ", rng NULL");
        return NULL;
    }
    embedding_config c = {.num = num, .dim = dim, .padding_idx = padding_idx};
    tg_module *m = tg_module_new("Embedding", embedding_forward, &c, sizeof c);
    tg_tensor *w = m ? tg_tensor_new(TG_DIMS(num, dim)) : NULL;
    /* PyTorch's reset_parameters: normal_(weight), then the padding row filled with 0. */
    if (w && tg_tensor_normal_(w, rng, 0.0f, 1.0f) == TG_OK && padding_idx >= 0)
        memset(w->data + padding_idx * dim, 0, (size_t)dim * sizeof(float));
    if (!m || tg_module_add_param(m, "weight", w) != TG_OK) {
        tg_module_free(m);
        return NULL;
    }
    return m;
}
