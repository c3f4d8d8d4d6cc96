/* transformer_mnist's model (model.h). */
#include "model.h"

/* The embedded rows: embed(rows) + pos, [N, 28, d]. */
static tg_tensor *embed_rows(tg_module *m, tg_tensor *images)
{
    tg_tensor *rows = tg_reshape(images, TG_DIMS(-1, 28, 28));
    return tg_add(tg_module_forward(tg_module_child(m, "embed"), rows), tg_module_param(m, "pos"));
}

static tg_tensor *forward(tg_module *m, tg_tensor *images)
{
    tg_tensor *h = tg_module_forward(tg_module_child(m, "layers"), embed_rows(m, images));
    return tg_module_forward(tg_module_child(m, "head"), tg_mean_axis(h, 1, false));
}

tg_module *row_transformer(int64_t d, int64_t heads, int64_t ff, int64_t layers, tg_rng *rng)
{
    tg_module *m = tg_module_new("RowTransformer", forward, NULL, 0);
    tg_tensor *pos = tg_tensor_new(TG_DIMS(28, d));
    if (!m || !pos || tg_init_normal_(pos, rng, 0.0f, 0.02f) != TG_OK) {
        tg_tensor_release(pos);
        tg_module_free(m);
        return NULL;
    }
    tg_module *stack = tg_nn_sequential(0);
    for (int64_t i = 0; i < layers; i++)
        stack = tg_nn_sequential_add(stack, NULL,
                                     tg_nn_transformer_encoder_layer(d, heads, ff, true, rng));
    /* Each add takes ownership, also of a NULL that failed, and keeps the first error. */
    tg_status st = tg_module_add_param(m, "pos", pos);
    if (st == TG_OK)
        st = tg_module_add_child(m, "embed", tg_nn_linear(28, d, true, rng));
    if (st == TG_OK)
        st = tg_module_add_child(m, "layers", stack);
    else
        tg_module_free(stack);
    if (st == TG_OK)
        st = tg_module_add_child(m, "head", tg_nn_linear(d, 10, true, rng));
    if (st != TG_OK) {
        tg_module_free(m);
        return NULL;
    }
    return m;
}

tg_tensor *row_transformer_attention(tg_module *model, tg_tensor *images)
{
    tg_tensor *h = embed_rows(model, images), *out[2];
    tg_module *attn =
        tg_module_child(tg_module_child_at(tg_module_child(model, "layers"), 0), "self_attn");
    return tg_module_forward_multi(attn, 1, &h, 2, out) == TG_OK ? out[1] : NULL;
}
