/* Modules: names and order, counts, add errors, train/eval and its effect, PyTorch's
 * initialisation distributions, a tutorial-style GAN generator and discriminator run forward
 * and backward, custom modules, and state dicts (validation, round trips in memory and on
 * disk). */
#include "common.h"
#include "sequential_check.h"

#include "../autograd/internal.h" /* the graph's nodes: test_backward_frees_internals */

#include "data.h"
#include "nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Fails the test with the library's message when m is NULL. */
static tg_module *must(tg_module *m)
{
    if (!m)
        fail_msg("constructor failed: %s", tg_last_error());
    return m;
}

/* Sequential(Linear(3, 4), BatchNorm1d(4), ReLU(), Sequential(fc=Linear(4, 2, bias=False))),
 * as in PyTorch with an OrderedDict for the inner one. */
static tg_module *small_model(uint64_t seed, tg_rng *rng)
{
    tg_rng_seed(rng, seed);
    tg_module *inner =
        tg_nn_sequential_add(tg_nn_sequential(0), "fc", tg_nn_linear(4, 2, false, rng));
    return must(TG_NN_SEQUENTIAL(tg_nn_linear(3, 4, true, rng), tg_nn_batch_norm1d(4), tg_nn_relu(),
                                 inner));
}

/* The order and names PyTorch gives the same model (named_parameters, state_dict). */
static const char *const small_param_names[] = {"0.weight", "0.bias", "1.weight", "1.bias",
                                                "3.fc.weight"};
static const char *const small_state_names[] = {"D.0.weight",
                                                "D.0.bias",
                                                "D.1.weight",
                                                "D.1.bias",
                                                "D.1.running_mean",
                                                "D.1.running_var",
                                                "D.1.num_batches_tracked",
                                                "D.3.fc.weight"};

static void test_names_order_and_counts(void **state)
{
    (void)state;
    tg_rng rng;
    tg_module *m = small_model(1, &rng);
    assert_string_equal(tg_module_type(m), "Sequential");
    assert_int_equal(tg_module_num_children(m), 4);
    assert_string_equal(tg_module_name(tg_module_child_at(m, 2)), "2");
    assert_string_equal(tg_module_type(tg_module_child_at(m, 2)), "ReLU");
    assert_null(tg_module_child_at(m, 4));

    int64_t n = 0, nn = 0;
    tg_tensor **ps = tg_module_parameters(m, &n);
    char **names = tg_module_parameter_names(m, NULL, &nn);
    assert_int_equal(n, 5);
    assert_int_equal(nn, 5);
    for (int i = 0; i < 5; i++)
        assert_string_equal(names[i], small_param_names[i]);
    /* The same tensors in the same order as the names say. */
    tg_module *lin0 = tg_module_child(m, "0");
    tg_module *fc = tg_module_child(tg_module_child(m, "3"), "fc");
    assert_ptr_equal(ps[0], tg_module_param(lin0, "weight"));
    assert_ptr_equal(ps[1], tg_module_param(lin0, "bias"));
    assert_ptr_equal(ps[4], tg_module_param(fc, "weight"));
    assert_false(tg_module_has_param(fc, "bias"));
    assert_int_equal(tg_last_status(), TG_OK);
    for (int i = 0; i < 5; i++)
        assert_true(ps[i]->requires_grad);
    assert_int_equal(ps[0]->shape[0], 4);
    assert_int_equal(ps[0]->shape[1], 3);
    free(ps);
    free(names);

    names = tg_module_parameter_names(m, "D", &nn);
    assert_string_equal(names[4], "D.3.fc.weight");
    free(names);
    /* 4*3 + 4 + 4 + 4 + 2*4 */
    assert_int_equal(tg_module_num_parameters(m), 32);

    tg_state_dict *sd = tg_state_dict_new();
    assert_int_equal(tg_module_state_dict(m, "D", sd), TG_OK);
    assert_int_equal(tg_state_dict_size(sd), 8);
    for (int i = 0; i < 8; i++)
        assert_string_equal(tg_state_dict_name(sd, i), small_state_names[i]);
    tg_state_dict_free(sd);

    /* A leaf-only module has no parameters: NULL and a count of 0, no error. */
    tg_module *relu = tg_nn_relu();
    assert_null(tg_module_parameters(relu, &n));
    assert_int_equal(n, 0);
    assert_int_equal(tg_last_status(), TG_OK);
    tg_module_free(relu);
    tg_module_free(m);
}

/* y = fc(x) * scale with its own parameter "scale" next to a child: a custom module built on
 * the base, with a forward of its own. */
static tg_tensor *scaled_forward(tg_module *m, tg_tensor *x)
{
    return tg_mul(tg_module_forward(tg_module_child(m, "fc"), x), tg_module_param(m, "scale"));
}

static void test_custom_module(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 2);
    tg_module *m = must(tg_module_new("Scaled", scaled_forward, NULL, 0));
    assert_int_equal(tg_module_add_child(m, "fc", tg_nn_linear(3, 2, true, &rng)), TG_OK);
    assert_int_equal(tg_module_add_param(m, "scale", tg_tensor_full(TG_DIMS(2), 3.0f)), TG_OK);
    /* Own parameters come before the children's, whatever the registration order. */
    int64_t n;
    char **names = tg_module_parameter_names(m, "", &n);
    assert_int_equal(n, 3);
    assert_string_equal(names[0], "scale");
    assert_string_equal(names[1], "fc.weight");
    assert_string_equal(names[2], "fc.bias");
    free(names);

    tg_tensor *x = tg_tensor_from_data(TG_DIMS(1, 3), (const float[]){1, 2, -1});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_module_forward(m, x);
    assert_non_null(y);
    const tg_tensor *w = tg_module_param(tg_module_child(m, "fc"), "weight");
    const tg_tensor *b = tg_module_param(tg_module_child(m, "fc"), "bias");
    for (int o = 0; o < 2; o++) {
        float want = b->data[o] + w->data[o * 3] * 1 + w->data[o * 3 + 1] * 2 - w->data[o * 3 + 2];
        assert_close(y->data[o], 3.0f * want, 1e-5);
    }
    assert_int_equal(tg_backward(tg_sum(y)), TG_OK);
    /* d sum(y) / d scale = fc(x) */
    assert_close(tg_module_param(m, "scale")->grad->data[1], y->data[1] / 3.0f, 1e-5);
    tg_tape_end(tape);
    tg_module_zero_grad(m);
    assert_null(tg_module_param(m, "scale")->grad);
    assert_null(w->grad);
    tg_tensor_release(x);
    tg_module_free(m);
}

static void test_add_errors(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 3);
    tg_module *m = must(tg_module_new("Box", NULL, NULL, 0));
    assert_int_equal(tg_module_add_param(m, "w", tg_tensor_zeros(TG_DIMS(2))), TG_OK);
    /* Duplicates across params, buffers and children (released, so nothing leaks). */
    assert_int_equal(tg_module_add_buffer(m, "w", tg_tensor_zeros(TG_DIMS(2))), TG_ERR_ARG);
    assert_error_contains("tg_module_add_buffer: a Box module already has an entry named \"w\"");
    assert_int_equal(tg_module_add_child(m, "w", tg_nn_relu()), TG_ERR_ARG);
    assert_int_equal(tg_module_add_param(m, "a.b", tg_tensor_zeros(TG_DIMS(2))), TG_ERR_ARG);
    assert_error_contains("name \"a.b\" in a Box module: a name must be non-empty and contain "
                          "no '.'");
    assert_int_equal(tg_module_add_param(m, "", tg_tensor_zeros(TG_DIMS(2))), TG_ERR_ARG);
    /* A NULL from a failed constructor keeps that constructor's message. */
    tg_clear_error();
    assert_int_not_equal(tg_module_add_child(m, "c", tg_nn_linear(0, 3, true, &rng)), TG_OK);
    assert_error_contains("tg_nn_linear: in 0, out 3: both must be at least 1");
    tg_clear_error();
    assert_int_equal(tg_module_add_param(m, "p", NULL), TG_ERR_ARG);
    assert_error_contains("tg_module_add_param: the tensor is NULL");
    /* A child cannot have two parents. */
    tg_module *relu = must(tg_nn_relu());
    assert_int_equal(tg_module_add_child(m, "r", relu), TG_OK);
    tg_module *other = must(tg_nn_sequential(0));
    assert_int_equal(tg_module_add_child(other, "r", relu), TG_ERR_ARG);
    assert_error_contains("already a child (\"r\") of another module");
    tg_module_free(other);
    /* A module without a forward says so. */
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(1, 2));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_null(tg_module_forward(m, x));
    assert_error_contains("tg_module_forward: the Box module \"\" has no forward");
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_module_free(m);
}

/* A NULL anywhere in a Sequential chain frees everything and keeps the first message. */
static void test_sequential_propagates_null(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 4);
    tg_clear_error();
    tg_module *m = TG_NN_SEQUENTIAL(tg_nn_linear(2, 3, true, &rng), tg_nn_dropout(1.5f, &rng),
                                    tg_nn_relu(), tg_nn_conv2d(1, 1, 3, 1, 0, 1, true, &rng));
    assert_null(m);
    assert_error_contains("tg_nn_dropout: p = 1.5");
    /* The builder form. */
    tg_clear_error();
    tg_module *seq = tg_nn_sequential(0);
    seq = tg_nn_sequential_add(seq, NULL, tg_nn_linear(2, 3, true, &rng));
    seq = tg_nn_sequential_add(seq, "act", tg_nn_leaky_relu(NAN));
    seq = tg_nn_sequential_add(seq, NULL, tg_nn_tanh());
    assert_null(seq);
    assert_error_contains("tg_nn_leaky_relu: slope nan is not finite");
    /* Names: explicit where given, the index otherwise. */
    seq = tg_nn_sequential_add(tg_nn_sequential(0), NULL, tg_nn_tanh());
    seq = tg_nn_sequential_add(seq, "act", tg_nn_sigmoid());
    seq = tg_nn_sequential_add(seq, NULL, tg_nn_flatten());
    assert_non_null(seq);
    assert_string_equal(tg_module_name(tg_module_child_at(seq, 0)), "0");
    assert_string_equal(tg_module_name(tg_module_child_at(seq, 1)), "act");
    assert_string_equal(tg_module_name(tg_module_child_at(seq, 2)), "2");
    tg_module_free(seq);
    /* Constructor argument checks. */
    assert_null(tg_nn_conv_transpose2d(4, 2, 4, 2, 1, 2, true, &rng));
    assert_error_contains("0 <= output_padding < stride");
    assert_null(tg_nn_linear(2, 2, true, NULL));
    assert_error_contains("tg_nn_linear: rng is NULL");
    assert_null(tg_nn_reshape(TG_DIMS(-1, 4, -1)));
    assert_error_contains("tg_nn_reshape: shape [-1, 4, -1]: sizes must be >= 0, with at most "
                          "one -1");
    assert_null(tg_nn_max_pool2d(2, 1, 3));
    assert_null(tg_nn_upsample(0, TG_UPSAMPLE_NEAREST));
    assert_null(tg_nn_batch_norm2d(0));
}

/* Sequential runs a BatchNorm and the ReLU, Tanh or LeakyReLU (slope > 0) after it as one op
 * (tg_batch_norm_act): the same bits as the modules one by one (y, x's gradient, the weights'
 * gradients, the running statistics), with one tape node fewer per pair; a LeakyReLU of
 * negative slope and a Sigmoid stay separate. */
static void test_sequential_fuses_batch_norm_act(void **state)
{
    (void)state;
    enum { PAIRS = 5 };
    tg_module *(*acts[PAIRS])(void) = {tg_nn_relu, tg_nn_tanh, NULL, NULL, tg_nn_sigmoid};
    const float slopes[PAIRS] = {0, 0, 0.1f, -0.1f, 0};
    tg_module *seq = tg_nn_sequential(0), *ref = tg_nn_sequential(0);
    tg_rng rng;
    tg_rng_seed(&rng, 8);
    for (int k = 0; k < PAIRS; k++) {
        tg_module *pair[2];
        for (int copy = 0; copy < 2; copy++) { /* one pair for seq, one to run one by one */
            pair[0] = tg_nn_batch_norm2d(3);
            pair[1] = acts[k] ? acts[k]() : tg_nn_leaky_relu(slopes[k]);
            assert_non_null(pair[0]);
            assert_non_null(pair[1]);
            tg_module **to = copy == 0 ? &seq : &ref;
            *to = tg_nn_sequential_add(*to, NULL, pair[0]);
            *to = tg_nn_sequential_add(*to, NULL, pair[1]);
        }
        /* Both BatchNorms get the same weight and bias (not the defaults 1 and 0). */
        const char *names[2] = {"weight", "bias"};
        for (int q = 0; q < 2; q++) {
            tg_tensor *a = tg_module_param(tg_module_child_at(seq, 2 * k), names[q]);
            tg_tensor_uniform_(a, &rng, 0.5f, 1.5f);
            memcpy(tg_module_param(tg_module_child_at(ref, 2 * k), names[q])->data, a->data,
                   3 * sizeof(float));
        }
    }
    assert_non_null(seq);
    assert_non_null(ref);
    tg_tensor *x = tg_tensor_new(TG_DIMS(4, 3, 5, 6)), *dy = tg_tensor_new(TG_DIMS(4, 3, 5, 6));
    tg_tensor_normal_(x, &rng, 0.2f, 1.3f);
    tg_tensor_normal_(dy, &rng, 0.0f, 1.0f);
    assert_int_equal(tg_tensor_set_requires_grad(x, true), TG_OK);
    /* fused: 5 batch norms, the LeakyReLU of slope -0.1 and the Sigmoid */
    tg_tensor *got[3], *want[3];
    sequential_run(seq, false, x, dy, PAIRS + 2, got);
    sequential_run(ref, true, x, dy, 2 * PAIRS, want);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(got[i]->numel, want[i]->numel);
        if (memcmp(got[i]->data, want[i]->data, sizeof(float) * (size_t)got[i]->numel) != 0)
            fail_msg("fused Sequential: output %d differs from the modules run one by one", i);
        tg_tensor_release(got[i]);
        tg_tensor_release(want[i]);
    }
    const char *buffers[3] = {"running_mean", "running_var", "num_batches_tracked"};
    for (int k = 0; k < PAIRS; k++)
        for (int q = 0; q < 3; q++) {
            const tg_tensor *a = tg_module_buffer(tg_module_child_at(seq, 2 * k), buffers[q]);
            const tg_tensor *b = tg_module_buffer(tg_module_child_at(ref, 2 * k), buffers[q]);
            if (memcmp(a->data, b->data, sizeof(float) * (size_t)a->numel) != 0)
                fail_msg("fused Sequential: pair %d's %s differs", k, buffers[q]);
        }
    tg_module_free(seq);
    tg_module_free(ref);
    tg_tensor_release(x);
    tg_tensor_release(dy);
}

/* A conditional model's forward, y = x * scale + c, with c optional (TG_NONE: absent; one
 * input: absent too); a second output, when asked for, is x - c. */
static tg_status cond_forward(tg_module *m, int64_t n_in, tg_tensor *const *in, int64_t n_out,
                              tg_tensor **out)
{
    if (n_in > 2 || n_out > 2)
        return tg_set_error(TG_ERR_ARG, "cond_forward: %lld inputs, %lld outputs", (long long)n_in,
                            (long long)n_out);
    tg_tensor *c = n_in == 2 && in[1] != TG_NONE ? in[1] : NULL;
    tg_tensor *y = tg_mul(in[0], tg_module_param(m, "scale"));
    out[0] = c ? tg_add(y, c) : y;
    if (n_out == 2)
        out[1] = c ? tg_sub(in[0], c) : in[0];
    return out[0] && (n_out == 1 || out[1]) ? TG_OK : tg_last_status();
}

/* A careless forward: no output with one input, an error status without a message with two. */
static tg_status careless_forward(tg_module *m, int64_t n_in, tg_tensor *const *in, int64_t n_out,
                                  tg_tensor **out)
{
    (void)m, (void)in, (void)n_out, (void)out;
    return n_in == 1 ? TG_OK : TG_ERR_SHAPE;
}

/* A multi-input module: forward2, forward_multi with two outputs, tg_module_forward (one
 * input) and inside a Sequential; TG_NONE as an absent optional input; a NULL input keeps the
 * error of the call that produced it; a one-input module refuses two inputs. */
static void test_multi_input_module(void **state)
{
    (void)state;
    tg_module *m = must(tg_module_new_multi("Cond", cond_forward, NULL, 0));
    assert_int_equal(tg_module_add_param(m, "scale", tg_tensor_full(TG_DIMS(2), 3.0f)), TG_OK);
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(1, 2), (const float[]){1, 2});
    tg_tensor *c = tg_tensor_from_data(TG_DIMS(1, 2), (const float[]){10, 20});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_module_forward2(m, x, c);
    assert_non_null(y);
    assert_close(y->data[1], 26.0, 0);
    assert_int_equal(tg_backward(tg_sum(y)), TG_OK);
    assert_close(tg_tensor_grad(tg_module_param(m, "scale"))->data[1], 2.0, 0);

    tg_tensor *outs[2] = {NULL, NULL};
    assert_int_equal(tg_module_forward_multi(m, 2, (tg_tensor *[]){x, c}, 2, outs), TG_OK);
    assert_close(outs[0]->data[0], 13.0, 0);
    assert_close(outs[1]->data[0], -9.0, 0);
    /* TG_NONE: the optional input is absent. */
    y = tg_module_forward2(m, x, TG_NONE);
    assert_non_null(y);
    assert_close(y->data[1], 6.0, 0);
    /* One input through tg_module_forward, alone and as a child of a Sequential. */
    y = tg_module_forward(m, x);
    assert_non_null(y);
    assert_close(y->data[0], 3.0, 0);
    tg_module *seq = must(TG_NN_SEQUENTIAL(tg_nn_relu(), m));
    y = tg_module_forward(seq, x);
    assert_non_null(y);
    assert_close(y->data[1], 6.0, 0);
    /* The forward's own error comes back, and out[] holds NULLs. */
    m = tg_module_child(seq, "1");
    outs[0] = outs[1] = x;
    assert_int_equal(tg_module_forward_multi(m, 3, (tg_tensor *[]){x, c, c}, 1, outs), TG_ERR_ARG);
    assert_error_contains("cond_forward: 3 inputs, 1 outputs");
    assert_null(outs[0]);
    /* A NULL input from a failed op keeps that op's error. */
    tg_clear_error();
    tg_tensor *bad = tg_reshape(c, TG_DIMS(3));
    assert_null(bad);
    char want[256];
    snprintf(want, sizeof want, "%s", tg_last_error());
    assert_null(tg_module_forward2(m, x, bad));
    assert_string_equal(tg_last_error(), want);
    assert_null(tg_module_forward2(m, bad, x));
    assert_string_equal(tg_last_error(), want);
    assert_null(tg_module_forward(m, bad));
    assert_string_equal(tg_last_error(), want);
    /* ... and without an earlier error, the NULL is named. */
    tg_clear_error();
    assert_null(tg_module_forward2(m, x, NULL));
    assert_error_contains("tg_module_forward2: input 1 of the Cond module \"1\" is NULL");
    tg_clear_error();
    assert_int_equal(tg_module_forward_multi(m, 1, (tg_tensor *[]){x}, 0, outs), TG_ERR_ARG);
    assert_error_contains("n_out < 1");
    /* A one-input module refuses two inputs or two outputs, and TG_NONE as its input. */
    tg_module *relu = tg_module_child(seq, "0");
    tg_clear_error();
    assert_null(tg_module_forward2(relu, x, c));
    assert_error_contains("tg_module_forward2: the ReLU module \"0\" takes one input and gives "
                          "one output; called with 2 inputs and 1 outputs");
    assert_int_equal(tg_module_forward_multi(relu, 1, (tg_tensor *[]){x}, 2, outs), TG_ERR_ARG);
    assert_error_contains("called with 1 inputs and 2 outputs");
    assert_null(tg_module_forward(relu, TG_NONE));
    assert_error_contains("tg_module_forward: the input of the ReLU module \"0\" is TG_NONE");
    assert_int_equal(tg_module_forward_multi(relu, 1, (tg_tensor *[]){x}, 1, outs), TG_OK);
    assert_close(outs[0]->data[1], 2.0, 0);
    /* A forward that fails without a message gets one naming the module. */
    tg_module *careless = must(tg_module_new_multi("Careless", careless_forward, NULL, 0));
    tg_clear_error();
    assert_null(tg_module_forward(careless, x));
    assert_int_equal(tg_last_status(), TG_ERR_STATE);
    assert_error_contains("tg_module_forward: the forward of the Careless module \"\" failed "
                          "without setting an error");
    tg_clear_error();
    assert_null(tg_module_forward2(careless, x, c));
    assert_error_contains("tg_module_forward2: the forward of the Careless module");
    tg_module_free(careless);
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_tensor_release(c);
    tg_module_free(seq);
}

/* A lookup of a missing name sets an error naming the module and what it has (a misspelt
 * "bais" must not read as "no bias"); tg_module_has_param probes without one. */
static void test_lookup_errors(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 9);
    tg_module *lin = must(tg_nn_linear(2, 3, true, &rng));
    tg_module *bn = must(tg_nn_batch_norm1d(3));
    tg_module *seq = must(TG_NN_SEQUENTIAL(tg_nn_relu()));
    tg_clear_error();
    assert_null(tg_module_param(lin, "bais"));
    assert_int_equal(tg_last_status(), TG_ERR_ARG);
    assert_string_equal(tg_last_error(),
                        "tg_module_param: Linear has no parameter \"bais\" (it has: weight, bias)");
    assert_null(tg_module_param(seq, "weight"));
    assert_string_equal(tg_last_error(),
                        "tg_module_param: Sequential has no parameter \"weight\" (it has none)");
    assert_null(tg_module_buffer(bn, "running_mena"));
    assert_string_equal(tg_last_error(), "tg_module_buffer: BatchNorm1d has no buffer "
                                         "\"running_mena\" (it has: running_mean, running_var, "
                                         "num_batches_tracked)");
    assert_null(tg_module_child(seq, "1"));
    assert_string_equal(tg_last_error(),
                        "tg_module_child: Sequential has no child \"1\" (it has: 0)");
    /* A NULL module from a failed lookup keeps that lookup's error. */
    assert_null(tg_module_param(tg_module_child(seq, "fc"), "weight"));
    assert_error_contains("tg_module_child: Sequential has no child \"fc\"");
    tg_clear_error();
    assert_null(tg_module_param(NULL, "weight"));
    assert_error_contains("tg_module_param: the module is NULL");
    tg_clear_error();
    assert_null(tg_module_param(lin, NULL));
    assert_error_contains("tg_module_param: the name is NULL");
    /* Found, and probed: no error either way. */
    tg_clear_error();
    assert_non_null(tg_module_param(lin, "bias"));
    assert_non_null(tg_module_buffer(bn, "running_var"));
    assert_non_null(tg_module_child(seq, "0"));
    assert_true(tg_module_has_param(lin, "bias"));
    assert_false(tg_module_has_param(lin, "bais"));
    assert_false(tg_module_has_param(NULL, "bias"));
    assert_false(tg_module_has_param(lin, NULL));
    assert_int_equal(tg_last_status(), TG_OK);
    /* A module with many entries lists them cut short, never past the message. */
    tg_module *big = must(tg_module_new("Big", NULL, NULL, 0));
    for (int i = 0; i < 100; i++) {
        char name[32];
        snprintf(name, sizeof name, "parameter_number_%d", i);
        assert_int_equal(tg_module_add_param(big, name, tg_tensor_zeros(TG_DIMS(1))), TG_OK);
    }
    assert_null(tg_module_param(big, "x"));
    assert_error_contains("(it has: parameter_number_0, parameter_number_1, ");
    assert_error_contains(" ...)");
    tg_clear_error();
    /* The layers probe their optional bias: running one without a bias sets no error. */
    tg_module *nobias = must(tg_nn_linear(2, 3, false, &rng));
    tg_tensor *x = tg_tensor_zeros(TG_DIMS(1, 2));
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_non_null(tg_module_forward(nobias, x));
    assert_int_equal(tg_last_status(), TG_OK);
    assert_int_equal(tg_nn_init_paddle(nobias, &rng), TG_OK);
    assert_int_equal(tg_last_status(), TG_OK);
    tg_tape_end(tape);
    tg_tensor_release(x);
    tg_module_free(nobias);
    tg_module_free(big);
    tg_module_free(lin);
    tg_module_free(bn);
    tg_module_free(seq);
}

static bool tree_all(const tg_module *m, bool training)
{
    if (tg_module_is_training(m) != training)
        return false;
    for (int64_t i = 0; i < tg_module_num_children(m); i++)
        if (!tree_all(tg_module_child_at(m, i), training))
            return false;
    return true;
}

/* train/eval reaches every module; BatchNorm uses batch statistics in training (and updates
 * its running statistics) and the running ones in eval; Dropout is the identity in eval. */
static void test_train_eval(void **state)
{
    (void)state;
    tg_rng rng, drop_rng;
    tg_module *m = small_model(5, &rng);
    assert_true(tree_all(m, true));
    tg_module_train(m, false);
    assert_true(tree_all(m, false));
    tg_module_train(m, true);
    assert_true(tree_all(m, true));
    tg_module_free(m);

    tg_module *bn = must(tg_nn_batch_norm1d(3));
    /* x[4, 3]: channel c holds c + {0, 1, 2, 3} * (c + 1) */
    float xv[12];
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 3; c++)
            xv[r * 3 + c] = (float)c + (float)r * (float)(c + 1);
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(4, 3), xv);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y_train = tg_module_forward(bn, x);
    assert_non_null(y_train);
    for (int c = 0; c < 3; c++) {
        double mean = (double)c + 1.5 * (c + 1), var = 1.25 * (c + 1) * (c + 1);
        for (int r = 0; r < 4; r++)
            assert_close(y_train->data[r * 3 + c], (xv[r * 3 + c] - mean) / sqrt(var + 1e-5), 1e-4);
        /* momentum 0.1: 0.9 * 0 + 0.1 * mean; unbiased variance 4/3 * var */
        assert_close(tg_module_buffer(bn, "running_mean")->data[c], 0.1 * mean, 1e-5);
        assert_close(tg_module_buffer(bn, "running_var")->data[c], 0.9 + 0.1 * var * 4.0 / 3.0,
                     1e-5);
    }
    assert_true(tg_tensor_item(tg_module_buffer(bn, "num_batches_tracked")) == 1.0f);
    tg_module_train(bn, false);
    tg_tensor *y_eval = tg_module_forward(bn, x);
    assert_true(tg_tensor_item(tg_module_buffer(bn, "num_batches_tracked")) == 1.0f);
    const float *rm = tg_module_buffer(bn, "running_mean")->data;
    const float *rv = tg_module_buffer(bn, "running_var")->data;
    for (int i = 0; i < 12; i++)
        assert_close(y_eval->data[i], (xv[i] - rm[i % 3]) / sqrt(rv[i % 3] + 1e-5), 1e-5);
    assert_true(fabsf(y_eval->data[0] - y_train->data[0]) > 0.5f);
    /* BatchNorm1d refuses an image batch, naming the layer. */
    tg_tensor *img = tg_tensor_zeros(TG_DIMS(2, 3, 4, 4));
    assert_null(tg_module_forward(bn, img));
    assert_error_contains("BatchNorm1d \"\" with 3 channels got x [2, 3, 4, 4]; it takes [N, C]");
    tg_tape_end(tape);
    tg_tensor_release(img);
    tg_module_free(bn);

    tg_rng_seed(&drop_rng, 6);
    tg_module *drop = must(tg_nn_dropout(0.5f, &drop_rng));
    tg_tensor *ones = tg_tensor_ones(TG_DIMS(8, 64));
    tape = tg_tape_begin(TG_GRAD);
    tg_tensor *yd = tg_module_forward(drop, ones);
    int zeros = 0;
    for (int64_t i = 0; i < yd->numel; i++) {
        assert_true(yd->data[i] == 0.0f || fabsf(yd->data[i] - 2.0f) < 1e-6f);
        zeros += yd->data[i] == 0.0f;
    }
    assert_in_range(zeros, 200, 312); /* 256 expected of 512 */
    tg_module_train(drop, false);
    yd = tg_module_forward(drop, ones);
    assert_memory_equal(yd->data, ones->data, 512 * sizeof(float));
    tg_tape_end(tape);
    tg_tensor_release(ones);
    tg_tensor_release(x);
    tg_module_free(drop);
}

/* U(-bound, bound): every value inside, the extremes near the bound, mean ~0 and variance
 * ~bound^2/3 (tolerances are > 5 standard errors for n values). */
static void assert_uniform(const char *what, const tg_tensor *t, double bound, bool full_check)
{
    double sum = 0, sum2 = 0, maxabs = 0;
    for (int64_t i = 0; i < t->numel; i++) {
        double v = t->data[i];
        sum += v;
        sum2 += v * v;
        maxabs = fmax(maxabs, fabs(v));
    }
    double n = (double)t->numel, mean = sum / n, var = sum2 / n - mean * mean;
    if (maxabs > bound)
        fail_msg("%s: |value| %.6g beyond the bound %.6g", what, maxabs, bound);
    if (!full_check)
        return;
    double var_want = bound * bound / 3;
    if (maxabs < 0.995 * bound)
        fail_msg("%s: largest |value| %.6g, expected close to the bound %.6g", what, maxabs, bound);
    if (fabs(mean) > 5 * bound / sqrt(3 * n))
        fail_msg("%s: mean %.6g, expected 0 (bound %.6g, n %.0f)", what, mean, bound, n);
    /* var of U^2 is bound^4 (1/5 - 1/9) */
    if (fabs(var - var_want) > 5 * bound * bound * sqrt(4.0 / 45.0 / n))
        fail_msg("%s: variance %.6g, expected %.6g", what, var, var_want);
}

static void test_init_distributions(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 8);
    /* Linear(300, 200): bound 1/sqrt(300) for weight and bias. */
    tg_module *lin = must(tg_nn_linear(300, 200, true, &rng));
    assert_uniform("Linear weight", tg_module_param(lin, "weight"), 1 / sqrt(300.0), true);
    assert_uniform("Linear bias", tg_module_param(lin, "bias"), 1 / sqrt(300.0), true);
    tg_module_free(lin);
    /* Conv2d(16, 32, 3): fan_in = 16 * 3 * 3. */
    tg_module *conv = must(tg_nn_conv2d(16, 32, 3, 1, 1, 1, true, &rng));
    const tg_tensor *w = tg_module_param(conv, "weight");
    assert_int_equal(w->shape[0], 32);
    assert_int_equal(w->shape[1], 16);
    assert_uniform("Conv2d weight", w, 1 / sqrt(144.0), true);
    assert_uniform("Conv2d bias", tg_module_param(conv, "bias"), 1 / sqrt(144.0), false);
    tg_module_free(conv);
    /* ConvTranspose2d(32, 16, 4): weight [32, 16, 4, 4], fan_in from dimension 1 = 16 * 16
     * (not in_ch * k * k = 512, which would give a bound 1.41 times smaller). */
    tg_module *convt = must(tg_nn_conv_transpose2d(32, 16, 4, 2, 1, 0, true, &rng));
    w = tg_module_param(convt, "weight");
    assert_int_equal(w->shape[0], 32);
    assert_int_equal(w->shape[1], 16);
    assert_uniform("ConvTranspose2d weight", w, 1 / 16.0, true);
    assert_uniform("ConvTranspose2d bias", tg_module_param(convt, "bias"), 1 / 16.0, false);
    assert_int_equal(tg_module_param(convt, "bias")->shape[0], 16);
    tg_module_free(convt);
    /* BatchNorm: weight 1, bias 0, running_mean 0, running_var 1. */
    tg_module *bn = must(tg_nn_batch_norm2d(5));
    for (int c = 0; c < 5; c++) {
        assert_true(tg_module_param(bn, "weight")->data[c] == 1.0f);
        assert_true(tg_module_param(bn, "bias")->data[c] == 0.0f);
        assert_true(tg_module_buffer(bn, "running_mean")->data[c] == 0.0f);
        assert_true(tg_module_buffer(bn, "running_var")->data[c] == 1.0f);
    }
    assert_false(tg_module_buffer(bn, "running_var")->requires_grad);
    assert_int_equal(tg_module_buffer(bn, "num_batches_tracked")->ndim, 0);
    assert_true(tg_tensor_item(tg_module_buffer(bn, "num_batches_tracked")) == 0.0f);
    tg_module_free(bn);
}

/* ---- a GAN as in the tutorial ------------------------------------------------------------ */

/* Generator: z[N, nz] -> image [N, 1, 28, 28] in (-1, 1). */
static tg_module *generator(int nz, int w, tg_rng *rng)
{
    return TG_NN_SEQUENTIAL(
        tg_nn_linear(nz, 2 * w * 7 * 7, true, rng), tg_nn_batch_norm1d(2 * w * 7 * 7), tg_nn_relu(),
        tg_nn_reshape(TG_DIMS(-1, 2 * w, 7, 7)),
        tg_nn_conv_transpose2d(2 * w, w, 4, 2, 1, 0, true, rng), tg_nn_batch_norm2d(w),
        tg_nn_relu(), tg_nn_conv_transpose2d(w, 1, 4, 2, 1, 0, true, rng), tg_nn_tanh());
}

/* Discriminator: image [N, 1, 28, 28] -> logit [N, 1]. */
static tg_module *discriminator(int w, tg_rng *rng)
{
    return TG_NN_SEQUENTIAL(tg_nn_conv2d(1, w, 4, 2, 1, 1, true, rng), tg_nn_leaky_relu(0.2f),
                            tg_nn_conv2d(w, 2 * w, 4, 2, 1, 1, true, rng),
                            tg_nn_batch_norm2d(2 * w), tg_nn_leaky_relu(0.2f), tg_nn_flatten(),
                            tg_nn_linear(2 * w * 7 * 7, 1, true, rng));
}

/* Every parameter has a gradient of its own shape with some non-zero entry (or, when want is
 * false, no gradient at all). */
static void assert_grads(const tg_module *m, const char *prefix, bool want)
{
    int64_t n, nn;
    tg_tensor **ps = tg_module_parameters(m, &n);
    char **names = tg_module_parameter_names(m, prefix, &nn);
    for (int64_t i = 0; i < n; i++) {
        if (!want) {
            if (ps[i]->grad)
                fail_msg("%s has a gradient", names[i]);
            continue;
        }
        if (!ps[i]->grad || !tg_shape_equal(ps[i]->grad, ps[i]))
            fail_msg("%s has no gradient of its shape", names[i]);
        double norm = 0;
        for (int64_t j = 0; j < ps[i]->numel; j++)
            norm += fabs(ps[i]->grad->data[j]);
        if (!(norm > 0 && isfinite(norm)))
            fail_msg("%s: gradient norm %g", names[i], norm);
    }
    free(ps);
    free(names);
}

static void test_gan_forward_backward(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 9);
    const int nz = 8, w = 4, batch = 3;
    tg_module *G = generator(nz, w, &rng), *D = discriminator(w, &rng);
    assert_non_null(G);
    assert_non_null(D);
    char **names;
    int64_t n;
    names = tg_module_parameter_names(G, "G", &n);
    assert_int_equal(n, 10);
    assert_string_equal(names[4], "G.4.weight");
    free(names);
    /* Linear nz -> 392 with bias, BN 392, ConvT 8->4 k4, BN 4, ConvT 4->1 k4 */
    assert_int_equal(tg_module_num_parameters(G),
                     nz * 392 + 392 + 2 * 392 + 8 * 4 * 16 + 4 + 2 * 4 + 4 * 16 + 1);

    tg_tensor *z = tg_tensor_new(TG_DIMS(batch, nz));
    tg_tensor_normal_(z, &rng, 0.0f, 1.0f);
    tg_tensor *ones = tg_tensor_ones(TG_DIMS(batch, 1));
    tg_tensor *zeros = tg_tensor_zeros(TG_DIMS(batch, 1));

    /* Generator step: the loss reaches every parameter of both networks. */
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *fake = tg_module_forward(G, z);
    assert_non_null(fake);
    assert_int_equal(fake->ndim, 4);
    assert_int_equal(fake->shape[0], batch);
    assert_int_equal(fake->shape[1], 1);
    assert_int_equal(fake->shape[2], 28);
    assert_int_equal(fake->shape[3], 28);
    for (int64_t i = 0; i < fake->numel; i++)
        assert_true(fake->data[i] > -1.0f && fake->data[i] < 1.0f);
    tg_tensor *logits = tg_module_forward(D, fake);
    assert_non_null(logits);
    assert_int_equal(logits->shape[0], batch);
    assert_int_equal(logits->shape[1], 1);
    if (tg_backward(tg_bce_with_logits(logits, ones, TG_REDUCE_MEAN)) != TG_OK)
        fail_msg("%s", tg_last_error());
    tg_tape_end(tape);
    assert_grads(G, "G", true);
    assert_grads(D, "D", true);
    tg_module_zero_grad(G);
    tg_module_zero_grad(D);

    /* Discriminator step on a detached fake: nothing reaches G. */
    tape = tg_tape_begin(TG_GRAD);
    tg_tensor *loss = tg_bce_with_logits(tg_module_forward(D, tg_detach(tg_module_forward(G, z))),
                                         zeros, TG_REDUCE_MEAN);
    if (tg_backward(loss) != TG_OK)
        fail_msg("%s", tg_last_error());
    tg_tape_end(tape);
    assert_grads(G, "G", false);
    assert_grads(D, "D", true);

    tg_tensor_release(z);
    tg_tensor_release(ones);
    tg_tensor_release(zeros);
    tg_module_free(G);
    tg_module_free(D);
}

/* A first-order backward frees what a module's forward made once the walk has passed it (as
 * PyTorch frees a graph's saved tensors): the data of the results between its layers, not its
 * output, not one that was retained. A second backward through the freed graph and an op on a
 * freed result are refused with the cause; tg_grad and create_graph keep the graph, so a
 * backward after them still runs. */
static void test_backward_frees_internals(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 5);
    tg_module *m = must(TG_NN_SEQUENTIAL(tg_nn_linear(16, 256, true, &rng), tg_nn_tanh(),
                                         tg_nn_linear(256, 1, true, &rng)));
    tg_tensor *x = tg_tensor_new(TG_DIMS(64, 16));
    assert_int_equal(tg_tensor_normal_(x, &rng, 0.0f, 1.0f), TG_OK);

    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_module_forward(m, x), *loss = tg_sum(y);
    assert_non_null(loss);
    tg_tensor *h = y->node->in[0], *pre = h->node->in[0]; /* tanh's and the first linear's */
    assert_non_null(h->data);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_null(h->data);
    assert_null(pre->data);
    assert_non_null(y->data); /* the module's output */
    assert_float_equal(tg_tensor_item(loss), tg_tensor_item(tg_sum(y)), 0.0f);
    tg_tensor *w1 = tg_module_param(tg_module_child(m, "0"), "weight");
    assert_non_null(w1);
    assert_non_null(w1->grad);
    tg_tensor *g1 = tg_tensor_clone(w1->grad);
    tg_module_zero_grad(m);
    assert_int_equal(tg_backward(loss), TG_ERR_STATE);
    assert_error_contains("was freed by an earlier backward through it");
    assert_null(w1->grad); /* nothing reached the parameters */
    assert_null(tg_tanh(h));
    assert_error_contains("input 0 was made inside a module's forward and freed");
    tg_clear_error();
    assert_int_equal(tg_tape_end(tape), TG_OK);

    /* Retained, a result outlives the backward; the gradients are the same. */
    tape = tg_tape_begin(TG_GRAD);
    y = tg_module_forward(m, x);
    h = tg_tensor_retain(y->node->in[0]);
    assert_int_equal(tg_backward(tg_sum(y)), TG_OK);
    assert_non_null(h->data);
    assert_memory_equal(w1->grad->data, g1->data, (size_t)g1->numel * sizeof(float));
    tg_tensor_release(h);
    assert_int_equal(tg_tape_end(tape), TG_OK);
    tg_module_zero_grad(m);

    /* tg_grad, and a create_graph backward, keep the graph for the backward after them. */
    tape = tg_tape_begin(TG_GRAD);
    y = tg_module_forward(m, x);
    loss = tg_sum(y);
    tg_tensor *gx = NULL;
    assert_int_equal(tg_tensor_set_requires_grad(x, true), TG_OK);
    assert_int_equal(tg_grad(&loss, 1, &x, 1, NULL, false, &gx), TG_OK);
    assert_int_equal(tg_backward_ex(loss, NULL, true), TG_OK);
    h = y->node->in[0];
    assert_non_null(h->data);
    assert_int_equal(tg_backward(loss), TG_OK);
    assert_null(h->data);
    for (int64_t i = 0; i < g1->numel; i++) /* two backwards added up */
        assert_float_equal(w1->grad->data[i], 2.0f * g1->data[i], 1e-5f * fabsf(g1->data[i]));
    assert_int_equal(tg_tape_end(tape), TG_OK);

    tg_tensor_release(g1);
    tg_tensor_release(x);
    tg_module_free(m);
}

/* Pooling, upsampling, dropout and flatten modules run, with the shapes their ops give. */
static void test_image_layers(void **state)
{
    (void)state;
    tg_rng rng;
    tg_rng_seed(&rng, 10);
    tg_module *m = must(TG_NN_SEQUENTIAL(
        tg_nn_conv2d(2, 3, 3, 1, 1, 1, false, &rng), tg_nn_max_pool2d(2, 0, 0),
        tg_nn_upsample(2, TG_UPSAMPLE_BILINEAR_HALF_PIXEL), tg_nn_avg_pool2d(3, 2, 1, true),
        tg_nn_sigmoid(), tg_nn_dropout(0.25f, &rng), tg_nn_flatten()));
    tg_tensor *x = tg_tensor_new(TG_DIMS(2, 2, 8, 8));
    tg_tensor_uniform_(x, &rng, -1.0f, 1.0f);
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_module_forward(m, x);
    if (!y)
        fail_msg("%s", tg_last_error());
    /* 8x8 conv(pad 1) 8x8, pool 4x4, up 8x8, avg(3, 2, 1) 4x4: [2, 3 * 16] */
    assert_int_equal(y->ndim, 2);
    assert_int_equal(y->shape[0], 2);
    assert_int_equal(y->shape[1], 48);
    assert_int_equal(tg_backward(tg_mean(y)), TG_OK);
    tg_tape_end(tape);
    assert_grads(m, "", true);
    tg_tensor_release(x);
    tg_module_free(m);
}

/* ---- state dicts ------------------------------------------------------------------------- */

/* Copies of every parameter and buffer value of m, in state-dict order. */
static float *snapshot(const tg_module *m, int64_t *count)
{
    tg_state_dict *sd = tg_state_dict_new();
    assert_int_equal(tg_module_state_dict(m, NULL, sd), TG_OK);
    int64_t total = 0;
    for (int64_t i = 0; i < tg_state_dict_size(sd); i++)
        total += tg_state_dict_tensor(sd, i)->numel;
    float *v = malloc((size_t)total * sizeof(float)), *p = v;
    for (int64_t i = 0; i < tg_state_dict_size(sd); i++) {
        const tg_tensor *t = tg_state_dict_tensor(sd, i);
        memcpy(p, t->data, (size_t)t->numel * sizeof(float));
        p += t->numel;
    }
    tg_state_dict_free(sd);
    *count = total;
    return v;
}

static void test_load_errors_change_nothing(void **state)
{
    (void)state;
    tg_rng rng;
    tg_module *a = small_model(11, &rng), *b = small_model(12, &rng);
    int64_t n_before, n_after;
    float *before = snapshot(b, &n_before);
    struct {
        const char *drop;    /* entry left out */
        const char *extra;   /* entry added (a [2] tensor) */
        const char *reshape; /* entry replaced by a [4, 4] tensor */
        tg_status status;
        const char *message;
    } bad[] = {
        {"D.0.bias", NULL, NULL, TG_ERR_ARG, "1 missing (first \"D.0.bias\")"},
        {"D.1.running_var", NULL, NULL, TG_ERR_ARG, "1 missing (first \"D.1.running_var\")"},
        {NULL, "D.3.fc.bias", NULL, TG_ERR_ARG, "1 unexpected (first \"D.3.fc.bias\")"},
        {NULL, NULL, "D.0.weight", TG_ERR_SHAPE,
         "1 of the wrong shape (first \"D.0.weight\": "
         "[4, 4] in the state dict, [4, 3] in the module)"},
        {"D.0.bias", "D.9.weight", NULL, TG_ERR_ARG, "1 unexpected (first \"D.9.weight\")"},
    };
    tg_tensor *extra = tg_tensor_zeros(TG_DIMS(2)), *wrong = tg_tensor_zeros(TG_DIMS(4, 4));
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        tg_state_dict *full = tg_state_dict_new(), *sd = tg_state_dict_new();
        assert_int_equal(tg_module_state_dict(a, "D", full), TG_OK);
        for (int64_t i = 0; i < tg_state_dict_size(full); i++) {
            const char *name = tg_state_dict_name(full, i);
            if (bad[k].drop && strcmp(name, bad[k].drop) == 0)
                continue;
            tg_tensor *t = bad[k].reshape && strcmp(name, bad[k].reshape) == 0
                               ? wrong
                               : tg_state_dict_tensor(full, i);
            assert_int_equal(tg_state_dict_put(sd, name, t), TG_OK);
        }
        if (bad[k].extra)
            assert_int_equal(tg_state_dict_put(sd, bad[k].extra, extra), TG_OK);
        /* Entries under other prefixes never matter. */
        assert_int_equal(tg_state_dict_put(sd, "opt_d.0.exp_avg", extra), TG_OK);
        assert_int_equal(tg_module_load_state_dict(b, "D", sd), bad[k].status);
        assert_error_contains("tg_module_load_state_dict: the state dict does not fit the "
                              "Sequential module (prefix \"D\"):");
        assert_error_contains(bad[k].message);
        tg_state_dict_free(sd);
        tg_state_dict_free(full);
    }
    /* Values no parameter or buffer can hold (issue 19): an Inf weight trains to NaN, a
     * negative or NaN running variance samples NaN. Refused, naming the entry. */
    struct {
        const char *name;
        float value;
        const char *message;
    } bad_value[] = {
        {"D.0.weight", NAN, "\"D.0.weight\" holds nan at index 0: need a finite value"},
        {"D.0.bias", INFINITY, "\"D.0.bias\" holds inf at index 0: need a finite value"},
        {"D.1.running_var", -1.0f,
         "\"D.1.running_var\" holds -1 at index 0: need a finite "
         "variance >= 0"},
        {"D.1.running_var", NAN, "\"D.1.running_var\" holds nan"},
    };
    for (size_t k = 0; k < sizeof bad_value / sizeof bad_value[0]; k++) {
        tg_state_dict *full = tg_state_dict_new(), *sd = tg_state_dict_new();
        assert_int_equal(tg_module_state_dict(a, "D", full), TG_OK);
        tg_tensor *changed = tg_tensor_clone(tg_state_dict_get(full, bad_value[k].name));
        changed->data[0] = bad_value[k].value;
        for (int64_t i = 0; i < tg_state_dict_size(full); i++) {
            const char *name = tg_state_dict_name(full, i);
            tg_tensor *t =
                strcmp(name, bad_value[k].name) ? tg_state_dict_tensor(full, i) : changed;
            assert_int_equal(tg_state_dict_put(sd, name, t), TG_OK);
        }
        assert_int_equal(tg_module_load_state_dict(b, "D", sd), TG_ERR_ARG);
        assert_error_contains(bad_value[k].message);
        tg_tensor_release(changed);
        tg_state_dict_free(sd);
        tg_state_dict_free(full);
    }
    float *after = snapshot(b, &n_after);
    assert_int_equal(n_before, n_after);
    assert_memory_equal(before, after, (size_t)n_before * sizeof(float));
    /* With no prefix, every entry must be the module's. */
    tg_state_dict *sd = tg_state_dict_new();
    assert_int_equal(tg_module_state_dict(a, NULL, sd), TG_OK);
    assert_int_equal(tg_state_dict_put(sd, "opt_d.0.exp_avg", extra), TG_OK);
    assert_int_equal(tg_module_load_state_dict(b, NULL, sd), TG_ERR_ARG);
    assert_error_contains("1 unexpected (first \"opt_d.0.exp_avg\")");
    tg_state_dict_free(sd);
    free(after);
    after = snapshot(b, &n_after);
    assert_memory_equal(before, after, (size_t)n_before * sizeof(float));

    free(before);
    free(after);
    tg_tensor_release(extra);
    tg_tensor_release(wrong);
    tg_module_free(a);
    tg_module_free(b);
}

/* Model a's values (after a training-mode forward moved its running statistics) loaded into
 * b: equal values, equal eval outputs, and b's tensors stay b's own. */
static void round_trip_check(tg_module *a, tg_module *b)
{
    int64_t na, nb;
    float *va = snapshot(a, &na), *vb = snapshot(b, &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(va, vb, (size_t)na * sizeof(float));
    free(va);
    free(vb);
    tg_module_train(a, false);
    tg_module_train(b, false);
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(2, 3), (const float[]){1, -2, 3, 0.5f, 0, -1});
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *ya = tg_module_forward(a, x), *yb = tg_module_forward(b, x);
    assert_non_null(ya);
    assert_non_null(yb);
    assert_memory_equal(ya->data, yb->data, (size_t)ya->numel * sizeof(float));
    tg_tape_end(tape);
    tg_tensor_release(x);
}

static void train_forward(tg_module *m)
{
    tg_tensor *x = tg_tensor_from_data(TG_DIMS(3, 3), (const float[]){1, 2, 3, -1, 0, 4, 2, 2, 2});
    tg_tape *tape = tg_tape_begin(TG_GRAD);
    assert_non_null(tg_module_forward(m, x));
    tg_tape_end(tape);
    tg_tensor_release(x);
}

static void test_state_dict_round_trip(void **state)
{
    (void)state;
    tg_rng rng;
    tg_module *a = small_model(13, &rng), *b = small_model(14, &rng);
    train_forward(a); /* running statistics away from their initial values */
    tg_state_dict *sd = tg_state_dict_new();
    assert_int_equal(tg_module_state_dict(a, "G", sd), TG_OK);
    assert_int_equal(tg_module_load_state_dict(b, "G", sd), TG_OK);
    tg_state_dict_free(sd);
    assert_ptr_not_equal(tg_module_param(tg_module_child(b, "0"), "weight"),
                         tg_module_param(tg_module_child(a, "0"), "weight"));
    round_trip_check(a, b);
    tg_module_free(a);
    tg_module_free(b);
}

/* Through a safetensors file: two models under their prefixes in one checkpoint. */
static void test_state_dict_file_round_trip(void **state)
{
    (void)state;
    tg_rng rng;
    tg_module *g = small_model(15, &rng), *d = small_model(16, &rng);
    tg_module *g2 = small_model(17, &rng), *d2 = small_model(18, &rng);
    train_forward(g);
    train_forward(d);
    char path[] = "/tmp/tg_test_nn_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    tg_state_dict *sd = tg_state_dict_new();
    assert_int_equal(tg_module_state_dict(g, "G", sd), TG_OK);
    assert_int_equal(tg_module_state_dict(d, "D", sd), TG_OK);
    if (tg_data_save_safetensors(path, sd) != TG_OK)
        fail_msg("%s", tg_last_error());
    tg_state_dict_free(sd);
    sd = tg_data_load_safetensors(path);
    unlink(path);
    if (!sd)
        fail_msg("%s", tg_last_error());
    assert_int_equal(tg_module_load_state_dict(g2, "G", sd), TG_OK);
    assert_int_equal(tg_module_load_state_dict(d2, "D", sd), TG_OK);
    tg_state_dict_free(sd);
    round_trip_check(g, g2);
    round_trip_check(d, d2);
    tg_module_free(g);
    tg_module_free(d);
    tg_module_free(g2);
    tg_module_free(d2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        TG_TEST(test_names_order_and_counts),
        TG_TEST(test_custom_module),
        TG_TEST(test_add_errors),
        TG_TEST(test_sequential_propagates_null),
        TG_TEST(test_sequential_fuses_batch_norm_act),
        TG_TEST(test_multi_input_module),
        TG_TEST(test_lookup_errors),
        TG_TEST(test_train_eval),
        TG_TEST(test_init_distributions),
        TG_TEST(test_gan_forward_backward),
        TG_TEST(test_backward_frees_internals),
        TG_TEST(test_image_layers),
        TG_TEST(test_load_errors_change_nothing),
        TG_TEST(test_state_dict_round_trip),
        TG_TEST(test_state_dict_file_round_trip),
    };
    return cmocka_run_group_tests_name("nn", tests, NULL, NULL);
}
