/* GRUCell and Embedding (nn/recurrent.c, nn/embedding.c): PyTorch goldens from
 * tests/golden/gen_recurrent.py (outputs and every gradient, one step and two chained steps),
 * PyTorch's parameter names, shapes and initial distributions, the padding row that is never
 * trained, and the errors. */
#include "common.h"

#include "golden/recurrent_golden.h"
#include "nn.h"

#include <stdio.h>
#include <stdlib.h>

/* Copies n golden values into m's parameter name (which must have n elements). */
static void set_param(tg_module *m, const char *name, const float *v, int64_t n)
{
    tg_tensor *p = tg_module_param(m, name);
    assert_non_null(p);
    assert_int_equal(p->numel, n);
    memcpy(p->data, v, (size_t)n * sizeof(float));
    tg_tensor_bump_version(p);
}

/* One GRUCell golden case from recurrent_golden.h: xs[steps] chained from h0. */
typedef struct {
    const char *name;
    int64_t n, in, hidden, steps;
    bool bias;
    const float *x[2], *h0, *dy, *w_ih, *w_hh, *b_ih, *b_hh;
    const float *y, *dx[2], *dh0, *dw_ih, *dw_hh, *db_ih, *db_hh;
} gru_golden;

static void run_gru_golden(const gru_golden *g)
{
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_module *cell = tg_nn_gru_cell(g->in, g->hidden, g->bias, &rng);
    assert_non_null(cell);
    const int64_t H3 = 3 * g->hidden;
    set_param(cell, "weight_ih", g->w_ih, H3 * g->in);
    set_param(cell, "weight_hh", g->w_hh, H3 * g->hidden);
    if (g->bias) {
        set_param(cell, "bias_ih", g->b_ih, H3);
        set_param(cell, "bias_hh", g->b_hh, H3);
    }
    tg_tensor *x[2] = {NULL, NULL};
    for (int64_t k = 0; k < g->steps; k++)
        x[k] = test_tensor_of(TG_DIMS(g->n, g->in), g->x[k], true);
    tg_tensor *h0 = test_tensor_of(TG_DIMS(g->n, g->hidden), g->h0, true);
    tg_tensor *dy = test_tensor_of(TG_DIMS(g->n, g->hidden), g->dy, false);

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *h = h0;
    for (int64_t k = 0; k < g->steps; k++)
        h = tg_module_forward2(cell, x[k], h);
    if (!h)
        fail_msg("%s: %s", g->name, tg_last_error());
    assert_int_equal(tg_backward_grad(h, dy), TG_OK);
    char what[96];
    snprintf(what, sizeof what, "%s h'", g->name);
    assert_golden(what, h->data, g->y, h->numel);
    tg_tape_end(tape);

    for (int64_t k = 0; k < g->steps; k++) {
        snprintf(what, sizeof what, "%s dx%lld", g->name, (long long)k);
        assert_golden(what, tg_tensor_grad(x[k])->data, g->dx[k], x[k]->numel);
    }
    snprintf(what, sizeof what, "%s dh0", g->name);
    assert_golden(what, tg_tensor_grad(h0)->data, g->dh0, h0->numel);
    const char *names[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    const float *want[4] = {g->dw_ih, g->dw_hh, g->db_ih, g->db_hh};
    for (int i = 0; i < (g->bias ? 4 : 2); i++) {
        tg_tensor *p = tg_module_param(cell, names[i]);
        snprintf(what, sizeof what, "%s d%s", g->name, names[i]);
        assert_non_null(tg_tensor_grad(p));
        assert_golden(what, tg_tensor_grad(p)->data, want[i], p->numel);
    }
    for (int64_t k = 0; k < g->steps; k++)
        tg_tensor_release(x[k]);
    tg_tensor_release(h0);
    tg_tensor_release(dy);
    tg_module_free(cell);
}

static void test_gru_golden(void **state)
{
    (void)state;
    const gru_golden cases[] = {
        {"gru",     GRU_N,   GRU_IN,         GRU_HIDDEN,     GRU_STEPS,    true,        {gru_x0},
         gru_h0,    gru_dy,  gru_weight_ih,  gru_weight_hh,  gru_bias_ih,  gru_bias_hh, gru_y,
         {gru_dx0}, gru_dh0, gru_dweight_ih, gru_dweight_hh, gru_dbias_ih, gru_dbias_hh},
        {"gru_nobias",
         GRU_NOBIAS_N,
         GRU_NOBIAS_IN,
         GRU_NOBIAS_HIDDEN,
         GRU_NOBIAS_STEPS,
         false,
         {gru_nobias_x0},
         gru_nobias_h0,
         gru_nobias_dy,
         gru_nobias_weight_ih,
         gru_nobias_weight_hh,
         NULL,
         NULL,
         gru_nobias_y,
         {gru_nobias_dx0},
         gru_nobias_dh0,
         gru_nobias_dweight_ih,
         gru_nobias_dweight_hh,
         NULL,
         NULL},
        {"gru2",
         GRU2_N,
         GRU2_IN,
         GRU2_HIDDEN,
         GRU2_STEPS,
         true,
         {gru2_x0, gru2_x1},
         gru2_h0,
         gru2_dy,
         gru2_weight_ih,
         gru2_weight_hh,
         gru2_bias_ih,
         gru2_bias_hh,
         gru2_y,
         {gru2_dx0, gru2_dx1},
         gru2_dh0,
         gru2_dweight_ih,
         gru2_dweight_hh,
         gru2_dbias_ih,
         gru2_dbias_hh},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        run_gru_golden(&cases[i]);
}

/* PyTorch's names in PyTorch's order, the [3h, ...] layouts, and U(-1/sqrt(h), 1/sqrt(h)). */
static void test_gru_parameters(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 7);
    tg_module *cell = tg_nn_gru_cell(10, 16, true, &rng);
    assert_non_null(cell);
    assert_string_equal(tg_module_type(cell), "GRUCell");
    int64_t n;
    char **names = tg_module_parameter_names(cell, NULL, &n);
    assert_int_equal(n, 4);
    const char *want[4] = {"weight_ih", "weight_hh", "bias_ih", "bias_hh"};
    const int64_t rows = 48, cols[4] = {10, 16, 0, 0};
    for (int i = 0; i < 4; i++) {
        assert_string_equal(names[i], want[i]);
        tg_tensor *p = tg_module_param(cell, want[i]);
        assert_int_equal(p->ndim, cols[i] ? 2 : 1);
        assert_int_equal(p->shape[0], rows);
        if (cols[i])
            assert_int_equal(p->shape[1], cols[i]);
        float lo = 1.0f, hi = -1.0f;
        for (int64_t k = 0; k < p->numel; k++) {
            lo = fminf(lo, p->data[k]);
            hi = fmaxf(hi, p->data[k]);
        }
        /* bound 1/sqrt(16) = 0.25, and 48+ uniform draws come near both ends */
        assert_true(lo >= -0.25f && hi <= 0.25f);
        assert_true(lo < -0.15f && hi > 0.15f);
    }
    free(names);
    assert_int_equal(tg_module_num_parameters(cell), 48 * 10 + 48 * 16 + 2 * 48);
    tg_module_free(cell);

    cell = tg_nn_gru_cell(3, 5, false, &rng);
    assert_non_null(cell);
    assert_int_equal(tg_module_num_parameters(cell), 15 * 3 + 15 * 5);
    assert_false(tg_module_has_param(cell, "bias_ih"));
    tg_module_free(cell);
}

/* h TG_NONE is PyTorch's hx=None: the zero state. */
static void test_gru_zero_state(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_module *cell = tg_nn_gru_cell(3, 4, true, &rng);
    tg_tensor *x = tg_tensor_full(TG_DIMS(2, 3), 0.5f);
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *a = tg_module_forward2(cell, x, TG_NONE);
    tg_tensor *b = tg_module_forward2(cell, x, tg_zeros(TG_DIMS(2, 4)));
    assert_non_null(a);
    assert_non_null(b);
    assert_true(tg_shape_equal(a, b));
    assert_memory_equal(a->data, b->data, (size_t)a->numel * sizeof(float));
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_module_free(cell);
}

static void test_gru_errors(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    assert_null(tg_nn_gru_cell(0, 4, true, &rng));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_nn_gru_cell: in 0, hidden 4");
    assert_null(tg_nn_gru_cell(3, 4, true, NULL));
    assert_error_contains("rng NULL");
    /* 3 * hidden would overflow (it was undefined behaviour): refused, naming the size. */
    assert_null(tg_nn_gru_cell(1, INT64_MAX / 3 + 1, true, &rng));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_error_contains("tg_nn_gru_cell: hidden 3074457345618258603 is too large");

    tg_module *cell = tg_nn_gru_cell(3, 4, true, &rng);
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(2, 3)), *h = tg_tensor_zeros(TG_DIMS(2, 4));
    tg_tensor *bad = tg_tensor_zeros(TG_DIMS(2, 5));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_clear_error();
    assert_null(tg_module_forward2(cell, bad, h));
    assert_int_equal(tg_last_status(), TG_ERR_SHAPE);
    assert_error_contains("GRUCell \"\" (3 -> 4) got x [2, 5] and h [2, 4]");
    tg_clear_error();
    assert_null(tg_module_forward2(cell, x, bad));
    assert_error_contains("got x [2, 3] and h [2, 5]");
    tg_clear_error();
    assert_null(tg_module_forward(cell, x)); /* one input: the cell needs (x, h) */
    assert_error_contains("takes 2 inputs (x, h)");
    tg_clear_error();
    assert_null(tg_module_forward2(cell, TG_NONE, h));
    assert_error_contains("x is TG_NONE");
    /* A NULL from a failed op keeps that op's error. */
    tg_clear_error();
    assert_null(tg_module_forward2(cell, tg_reshape(x, TG_DIMS(7)), h));
    assert_error_contains("tg_reshape");
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(h);
    tg_tensor_release(bad);
    tg_module_free(cell);
}

/* ---- Embedding --------------------------------------------------------------------------- */

static void test_embedding_golden(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_module *emb = tg_nn_embedding(EMB_NUM, EMB_DIM, EMB_PADDING_IDX, &rng);
    assert_non_null(emb);
    set_param(emb, "weight", emb_weight, EMB_NUM * EMB_DIM);
    tg_index *ids = tg_index_new(TG_DIMS(2, 4), emb_ids);
    tg_tensor *dy = test_tensor_of(TG_DIMS(2, 4, EMB_DIM), emb_dy, false);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_nn_embed(emb, ids);
    if (!y)
        fail_msg("%s", tg_last_error());
    assert_int_equal(y->ndim, 3);
    assert_int_equal(y->shape[2], EMB_DIM);
    assert_golden("embedding y", y->data, emb_y, y->numel);
    assert_int_equal(tg_backward_grad(y, dy), TG_OK);
    tg_tape_end(tape);
    tg_tensor *w = tg_module_param(emb, "weight");
    /* PyTorch's gradient: repeated ids add, the padding row stays 0. */
    assert_golden("embedding dweight", tg_tensor_grad(w)->data, emb_dweight, w->numel);
    tg_index_release(ids);
    tg_tensor_release(dy);
    tg_module_free(emb);
}

/* weight ~ N(0, 1); the padding row starts at 0 and stays there through Adam steps, while the
 * other rows the ids reach move. */
static void test_embedding_padding_never_trained(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 11);
    const int64_t num = 400, dim = 10, pad = 3;
    tg_module *emb = tg_nn_embedding(num, dim, pad, &rng);
    assert_non_null(emb);
    tg_tensor *w = tg_module_param(emb, "weight");
    double sum = 0.0, sq = 0.0;
    for (int64_t i = 0; i < w->numel; i++) {
        if (i / dim == pad)
            assert_true(w->data[i] == 0.0f);
        sum += w->data[i];
        sq += (double)w->data[i] * w->data[i];
    }
    const double cnt = (double)(w->numel - dim), mean = sum / cnt;
    assert_true(fabs(mean) < 0.06); /* 4000 draws: the mean's sd is 0.016 */
    assert_true(fabs(sq / cnt - mean * mean - 1.0) < 0.1);

    tg_optim *opt = tg_optim_adam_module(emb, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f);
    assert_non_null(opt);
    for (int step = 0; step < 3; step++) {
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *loss = tg_sum(tg_square(tg_add_scalar(
            tg_module_forward(emb, tg_from_data(TG_DIMS(4), (const float[]){pad, 5, pad, 7})),
            1.0f)));
        assert_non_null(loss);
        assert_int_equal(tg_backward(loss), TG_OK);
        assert_int_equal(tg_optim_step(opt), TG_OK);
        tg_optim_zero_grad(opt);
        tg_tape_end(tape);
    }
    for (int64_t j = 0; j < dim; j++)
        assert_true(w->data[pad * dim + j] == 0.0f);
    tg_optim_free(opt);
    tg_module_free(emb);
}

static void test_embedding_errors(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    assert_null(tg_nn_embedding(0, 4, -1, &rng));
    assert_error_contains("tg_nn_embedding: num 0, dim 4, padding_idx -1");
    assert_null(tg_nn_embedding(5, 4, 5, &rng));
    assert_error_contains("padding_idx 5");
    assert_null(tg_nn_embedding(5, 4, -2, &rng));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);

    tg_module *emb = tg_nn_embedding(5, 2, -1, &rng);
    tg_module *lin = tg_nn_linear(2, 2, true, &rng);
    tg_index *ids = tg_index_new(TG_DIMS(3), (const int64_t[]){0, 5, 1});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_clear_error();
    assert_null(tg_nn_embed(emb, ids)); /* id 5 of 5 rows */
    assert_int_not_equal(tg_last_status(), TG_OK);
    assert_error_contains("5");
    tg_clear_error();
    assert_null(tg_nn_embed(lin, ids));
    assert_error_contains("tg_nn_embed: module \"\" is a Linear, not an Embedding");
    tg_clear_error();
    assert_null(tg_nn_embed(emb, NULL));
    assert_error_contains("tg_nn_embed: idx is NULL");
    /* A NULL index from a failed call keeps its error. */
    tg_clear_error();
    assert_null(tg_nn_embed(emb, tg_labels(tg_from_data(TG_DIMS(1), (const float[]){0.5f}))));
    assert_error_contains("is not a whole number");
    tg_tape_end(tape);
    tg_index_release(ids);
    tg_module_free(lin);
    tg_module_free(emb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_gru_golden),       TG_TEST(test_gru_parameters),
        TG_TEST(test_gru_zero_state),   TG_TEST(test_gru_errors),
        TG_TEST(test_embedding_golden), TG_TEST(test_embedding_padding_never_trained),
        TG_TEST(test_embedding_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
