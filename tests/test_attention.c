/* MultiheadAttention and TransformerEncoderLayer (nn/attention.c) against PyTorch's modules:
 * golden outputs, attention weights, input and parameter gradients with and without additive
 * masks (tests/golden/gen_attention.py), loaded through PyTorch's state_dict names; PyTorch's
 * parameter layout and initialisation; errors for bad settings, shapes and masks. */
#include "common.h"

#include "golden/attention_golden.h"
#include "nn.h"

#include <stdio.h>
#include <stdlib.h>

static const golden_case *const cases[] = {&mha_self_case, &mha_causal_case, &mha_cross_case,
                                           &enc_gelu_case, &enc_relu_causal_case};

/* The module a case describes, with PyTorch's parameter values loaded by name. */
static tg_module *case_module(const golden_case *g)
{
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    const int64_t d = g->q_shape[2];
    tg_module *m =
        g->mha ? tg_nn_multihead_attention(d, g->heads, g->gelu_or_bias, &rng)
               : tg_nn_transformer_encoder_layer(d, g->heads, g->dim_ff, g->gelu_or_bias, &rng);
    if (!m)
        fail_msg("%s: %s", g->name, tg_last_error());
    /* Same names, same order as PyTorch's named_parameters(). */
    int64_t n;
    char **names = tg_module_parameter_names(m, NULL, &n);
    assert_non_null(names);
    assert_int_equal(n, g->n_params);
    tg_state_dict *sd = tg_state_dict_new();
    for (int i = 0; i < g->n_params; i++) {
        const golden_param *p = &g->params[i];
        if (strcmp(names[i], p->name) != 0)
            fail_msg("%s: parameter %d is \"%s\", PyTorch's is \"%s\"", g->name, i, names[i],
                     p->name);
        tg_tensor *t = tg_tensor_from_data(p->ndim, p->shape, p->value);
        assert_int_equal(tg_state_dict_put(sd, p->name, t), TG_OK);
        tg_tensor_release(t);
    }
    free(names);
    if (tg_module_load_state_dict(m, NULL, sd) != TG_OK)
        fail_msg("%s: %s", g->name, tg_last_error());
    tg_state_dict_free(sd);
    return m;
}

/* Runs one case: forward (with the mask when the case has one), backward of sum(y * dy), and
 * every value against PyTorch's. */
static void run_case(const golden_case *g)
{
    tg_module *m = case_module(g);
    const float *x[3] = {g->q, g->k, g->v};
    const float *dx[3] = {g->dq, g->dk, g->dv};
    tg_tensor *in[4] = {NULL, NULL, NULL, TG_NONE};
    for (int i = 0; i < g->n_in; i++)
        in[i] = test_tensor_of(3, i == 0 ? g->q_shape : g->kv_shape, x[i], true);
    for (int i = g->n_in; i < 3; i++)
        in[i] = in[0]; /* self-attention: one tensor is q, k and v */
    tg_tensor *mask = g->mask ? test_tensor_of(g->mask_ndim, g->mask_shape, g->mask, false) : NULL;
    if (mask)
        in[3] = mask;

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *out[2] = {NULL, NULL};
    tg_status st;
    if (g->mha) {
        st = tg_module_forward_multi(m, 4, in, 2, out);
    } else {
        out[0] = mask ? tg_module_forward2(m, in[0], mask) : tg_module_forward(m, in[0]);
        st = out[0] ? TG_OK : tg_last_status();
    }
    if (st != TG_OK)
        fail_msg("%s: %s", g->name, tg_last_error());
    const int64_t y_shape[3] = {g->q_shape[0], g->q_shape[1], g->q_shape[2]};
    tg_tensor *dy = tg_from_data(3, y_shape, g->dy);
    assert_int_equal(out[0]->ndim, 3);
    assert_memory_equal(out[0]->shape, y_shape, sizeof y_shape);
    if (tg_backward_grad(out[0], dy) != TG_OK)
        fail_msg("%s: %s", g->name, tg_last_error());

    char what[128];
    snprintf(what, sizeof what, "%s y", g->name);
    assert_golden(what, out[0]->data, g->y, out[0]->numel);
    if (g->attn) {
        const int64_t w_shape[4] = {g->q_shape[0], g->heads, g->q_shape[1], g->kv_shape[1]};
        assert_int_equal(out[1]->ndim, 4);
        assert_memory_equal(out[1]->shape, w_shape, sizeof w_shape);
        snprintf(what, sizeof what, "%s attention weights", g->name);
        assert_golden(what, out[1]->data, g->attn, out[1]->numel);
    }
    for (int i = 0; i < g->n_in; i++) {
        snprintf(what, sizeof what, "%s d%s", g->name,
                 g->mha ? (const char *[]){"q", "k", "v"}[i] : "x");
        assert_golden(what, tg_tensor_grad(in[i])->data, dx[i], in[i]->numel);
    }
    int64_t n;
    tg_tensor **ps = tg_module_parameters(m, &n);
    assert_non_null(ps);
    for (int i = 0; i < g->n_params; i++) {
        snprintf(what, sizeof what, "%s d %s", g->name, g->params[i].name);
        assert_non_null(tg_tensor_grad(ps[i]));
        assert_golden(what, tg_tensor_grad(ps[i])->data, g->params[i].grad, ps[i]->numel);
    }
    free(ps);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    for (int i = 0; i < g->n_in; i++)
        tg_tensor_release(in[i]);
    tg_tensor_release(mask);
    tg_module_free(m);
}

static void test_mha_golden(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (cases[i]->mha)
            run_case(cases[i]);
}

static void test_encoder_layer_golden(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (!cases[i]->mha)
            run_case(cases[i]);
}

/* PyTorch's layout and initialisation: in_proj_weight [3e, e] Xavier-uniform (bound
 * sqrt(6 / (e + 3e))), in_proj_bias and out_proj.bias 0, out_proj.weight Linear's
 * U(-1/sqrt(e), 1/sqrt(e)); bias = false drops both biases. */
static void test_mha_init(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    const int64_t e = 48;
    tg_module *m = tg_nn_multihead_attention(e, 4, true, &rng);
    assert_non_null(m);
    assert_string_equal(tg_module_type(m), "MultiheadAttention");
    tg_tensor *w = tg_module_param(m, "in_proj_weight"), *b = tg_module_param(m, "in_proj_bias");
    tg_module *proj = tg_module_child(m, "out_proj");
    assert_non_null(w);
    assert_non_null(b);
    assert_non_null(proj);
    assert_true(w->ndim == 2 && w->shape[0] == 3 * e && w->shape[1] == e);
    assert_true(b->ndim == 1 && b->shape[0] == 3 * e);
    const double bound = sqrt(6.0 / (double)(e + 3 * e)), lin = 1.0 / sqrt((double)e);
    double wmax = 0.0, pmax = 0.0;
    for (int64_t i = 0; i < w->numel; i++)
        wmax = fmax(wmax, fabs(w->data[i]));
    tg_tensor *pw = tg_module_param(proj, "weight"), *pb = tg_module_param(proj, "bias");
    for (int64_t i = 0; i < pw->numel; i++)
        pmax = fmax(pmax, fabs(pw->data[i]));
    /* within the bound and filling it (6912 and 2304 draws) */
    assert_true(wmax <= bound && wmax > 0.98 * bound);
    assert_true(pmax <= lin && pmax > 0.95 * lin);
    for (int64_t i = 0; i < b->numel; i++)
        assert_true(b->data[i] == 0.0f);
    for (int64_t i = 0; i < pb->numel; i++)
        assert_true(pb->data[i] == 0.0f);
    assert_int_equal(tg_module_num_parameters(m), 3 * e * e + 3 * e + e * e + e);
    tg_module_free(m);

    m = tg_nn_multihead_attention(e, 4, false, &rng);
    assert_non_null(m);
    int64_t n;
    char **names = tg_module_parameter_names(m, NULL, &n);
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "in_proj_weight");
    assert_string_equal(names[1], "out_proj.weight");
    free(names);
    tg_module_free(m);
}

/* The same attention three ways: tg_module_forward(m, x), (x, x, x) and (x, copy, copy) (where
 * k and v are other tensors); and an encoder layer with and without a TG_NONE mask. */
static void test_forms_agree(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_module *m = tg_nn_multihead_attention(8, 2, true, &rng);
    tg_module *layer = tg_nn_transformer_encoder_layer(8, 4, 16, true, &rng);
    assert_non_null(m);
    assert_non_null(layer);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *x = tg_randn(TG_DIMS(3, 5, 8), &rng);
    tg_tensor *c1 = tg_add_scalar(x, 0.0f), *c2 = tg_add_scalar(x, 0.0f);
    tg_tensor *y[3] = {tg_module_forward(m, x), NULL, NULL};
    assert_int_equal(tg_module_forward_multi(m, 3, (tg_tensor *[]){x, x, x}, 1, &y[1]), TG_OK);
    assert_int_equal(tg_module_forward_multi(m, 3, (tg_tensor *[]){x, c1, c2}, 1, &y[2]), TG_OK);
    assert_non_null(y[0]);
    for (int k = 1; k < 3; k++)
        for (int64_t i = 0; i < y[0]->numel; i++)
            assert_close(y[k]->data[i], y[0]->data[i], 1e-5);
    tg_tensor *e0 = tg_module_forward(layer, x), *e1 = tg_module_forward2(layer, x, TG_NONE);
    assert_non_null(e0);
    assert_non_null(e1);
    assert_memory_equal(e0->data, e1->data, (size_t)e0->numel * sizeof(float));
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_module_free(m);
    tg_module_free(layer);
}

/* A key masked with -inf gets exactly zero weight in every row and head; a key-padding mask
 * [N, 1, 1, S] masks per batch entry. */
static void test_mask_zeroes_weights(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_module *m = tg_nn_multihead_attention(8, 2, true, &rng);
    assert_non_null(m);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *x = tg_randn(TG_DIMS(2, 4, 8), &rng);
    /* batch 0 masks key 3, batch 1 keys 0 and 2 */
    tg_tensor *mask = tg_from_data(TG_DIMS(2, 1, 1, 4),
                                   (const float[]){0, 0, 0, -INFINITY, -INFINITY, 0, -INFINITY, 0});
    tg_tensor *out[2];
    assert_int_equal(tg_module_forward_multi(m, 4, (tg_tensor *[]){x, x, x, mask}, 2, out), TG_OK);
    const tg_tensor *w = out[1];
    assert_int_equal(w->ndim, 4);
    for (int64_t n = 0; n < 2; n++)
        for (int64_t r = 0; r < 2 * 4; r++) { /* heads x query rows */
            const float *row = w->data + (n * 8 + r) * 4;
            double sum = 0.0;
            for (int64_t j = 0; j < 4; j++) {
                sum += row[j];
                if (mask->data[n * 4 + j] != 0.0f)
                    assert_true(row[j] == 0.0f);
                else
                    assert_true(row[j] > 0.0f);
            }
            assert_close(sum, 1.0, 1e-6);
        }
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_module_free(m);
}

/* Bad settings, shapes, masks and call forms: NULL or TG_ERR_* with a message naming the
 * problem; a NULL input keeps the error that made it; nothing leaks. */
static void test_errors(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 9);
    assert_null(tg_nn_multihead_attention(10, 3, true, &rng));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("embed_dim 10, heads 3");
    assert_null(tg_nn_multihead_attention(8, 0, true, &rng));
    assert_error_contains("heads 0");
    assert_null(tg_nn_multihead_attention(8, 2, true, NULL));
    assert_error_contains("rng NULL");
    assert_null(tg_nn_transformer_encoder_layer(8, 2, 0, true, &rng));
    assert_error_contains("dim_ff 0");
    assert_null(tg_nn_transformer_encoder_layer(8, 3, 16, true, &rng));
    assert_error_contains("embed_dim 8, heads 3");
    /* 3 * embed_dim would overflow (it was undefined behaviour): refused, naming the size,
     * also through the encoder layer. */
    assert_null(tg_nn_multihead_attention(INT64_MAX / 3 + 1, 1, true, &rng));
    assert_error_contains("tg_nn_multihead_attention: embed_dim 3074457345618258603 is too large");
    tg_clear_error();
    assert_null(tg_nn_transformer_encoder_layer(INT64_MAX, 1, 16, true, &rng));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("embed_dim 9223372036854775807 is too large");

    tg_module *m = tg_nn_multihead_attention(8, 2, true, &rng);
    tg_module *layer = tg_nn_transformer_encoder_layer(8, 2, 16, false, &rng);
    assert_non_null(m);
    assert_non_null(layer);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *q = tg_randn(TG_DIMS(2, 3, 8), &rng), *kv = tg_randn(TG_DIMS(2, 5, 8), &rng);
    tg_tensor *y;

    tg_clear_error();
    assert_null(tg_module_forward(m, tg_randn(TG_DIMS(2, 3, 6), &rng)));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("embed_dim 8) got q [2, 3, 6]");
    assert_null(tg_module_forward(m, tg_randn(TG_DIMS(3, 8), &rng)));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    tg_clear_error();
    assert_int_equal(tg_module_forward_multi(m, 3, (tg_tensor *[]){q, kv, q}, 1, &y), TG_ERR_SHAPE);
    assert_error_contains("k [2, 5, 8], v [2, 3, 8]");
    /* a mask for the wrong S, and one with an extra axis */
    tg_tensor *bad_masks[2] = {tg_zeros(TG_DIMS(3, 4)), tg_zeros(TG_DIMS(2, 2, 2, 3, 5))};
    for (int i = 0; i < 2; i++) {
        tg_clear_error();
        assert_int_equal(
            tg_module_forward_multi(m, 4, (tg_tensor *[]){q, kv, kv, bad_masks[i]}, 1, &y),
            TG_ERR_SHAPE);
        assert_error_contains("does not broadcast to [N, heads, L, S] = [2, 2, 3, 5]");
    }
    tg_clear_error();
    assert_int_equal(tg_module_forward_multi(m, 2, (tg_tensor *[]){q, kv}, 1, &y), TG_ERR_ARG);
    assert_error_contains("called with 2 inputs");
    tg_clear_error();
    assert_int_equal(tg_module_forward_multi(m, 3, (tg_tensor *[]){TG_NONE, kv, kv}, 1, &y),
                     TG_ERR_ARG);
    assert_error_contains("TG_NONE");
    tg_clear_error();
    tg_tensor *out3[3];
    assert_int_equal(tg_module_forward_multi(m, 1, &q, 3, out3), TG_ERR_ARG);
    assert_error_contains("3 outputs");
    tg_clear_error();
    assert_int_equal(tg_module_forward_multi(layer, 3, (tg_tensor *[]){q, q, q}, 1, &y),
                     TG_ERR_ARG);
    assert_error_contains("TransformerEncoderLayer");

    /* A NULL from a failed op keeps that op's error: no "is NULL" message over it. */
    tg_clear_error();
    tg_tensor *bad = tg_reshape(q, TG_DIMS(7, 7));
    assert_null(bad);
    char first[512];
    snprintf(first, sizeof first, "%s", tg_last_error());
    assert_null(tg_module_forward(m, bad));
    assert_string_equal(tg_last_error(), first);
    assert_int_equal(tg_module_forward_multi(m, 4, (tg_tensor *[]){q, q, q, bad}, 1, &y),
                     tg_last_status());
    assert_string_equal(tg_last_error(), first);
    assert_null(tg_module_forward2(layer, q, bad));
    assert_string_equal(tg_last_error(), first);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_module_free(m);
    tg_module_free(layer);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_mha_golden),  TG_TEST(test_encoder_layer_golden), TG_TEST(test_mha_init),
        TG_TEST(test_forms_agree), TG_TEST(test_mask_zeroes_weights),  TG_TEST(test_errors),
    };
    return cmocka_run_group_tests_name("attention", tests, NULL, NULL);
}
