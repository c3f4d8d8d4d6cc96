/* libFuzzer target: the checkpoint path on arbitrary bytes — tg_data_load_safetensors (header
 * length, JSON, entries, dtypes, shapes, offsets, layout, conversion), and whatever loads then
 * goes on into a small model and its Adam state (tg_module_load_state_dict and
 * tg_optim_load_state_dict under the prefixes "m" and "opt"), where wrong names, shapes, step
 * values, state values and hyper-parameters must be refused whole, each refusal one line. The
 * seed corpus holds a valid checkpoint of exactly this model and optimizer (make_corpus.py), so
 * mutations reach the loaders' checks, and near-misses of each class issue 19 found.
 * Errors are the expected outcome; a crash, a sanitizer report, a leak, an exit or output is a
 * finding. */
#include "fuzz.h"

#include "data.h"
#include "nn.h"
#include "optim.h"
#include "autograd.h"

static fuzz_file file;

/* Every refusal is one line that cannot steer a terminal: names, keys and values quoted from
 * the file are escaped (issue 19, item 14), so no control byte may reach the message. */
static void check_message(tg_status st)
{
    if (st == TG_OK)
        return;
    for (const unsigned char *c = (const unsigned char *)tg_last_error(); *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            fuzz_fail("a control byte from the file reached the error message");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    fuzz_file_open(&file, "safetensors");
    return 0;
}

/* m = Sequential(Linear(2, 3), BatchNorm1d(3)) and Adam over its parameters: parameters,
 * buffers and optimizer state, a handful of floats each. Made afresh for every input, so that
 * one input's successful load cannot change what the next one meets. */
static void load_into_model(const tg_state_dict *sd)
{
    tg_rng rng;
    tg_rng_seed(&rng, 1);
    tg_module *m = TG_NN_SEQUENTIAL(tg_nn_linear(2, 3, true, &rng), tg_nn_batch_norm1d(3));
    int64_t n = 0;
    tg_tensor **params = m ? tg_module_parameters(m, &n) : NULL;
    tg_optim *opt = params ? tg_optim_adam(params, n, TG_ADAM_LR, TG_ADAM_BETA1, TG_ADAM_BETA2,
                                           TG_ADAM_EPS, 0.0f)
                           : NULL;
    free(params);
    if (!opt)
        fuzz_fail(tg_last_error());
    fuzz_inside = true;
    tg_status st_m = tg_module_load_state_dict(m, "m", sd);
    check_message(st_m);
    tg_clear_error();
    tg_status st_o = tg_optim_load_state_dict(opt, "opt", sd);
    check_message(st_o);
    tg_clear_error();
    /* Whatever was accepted must then work: a training step reads the loaded weights, running
     * statistics and Adam moments with the shapes the model expects. */
    if (st_m == TG_OK || st_o == TG_OK) {
        const int64_t shape[2] = {4, 2};
        tg_tensor *x = tg_tensor_full(2, shape, 0.5f);
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_backward(tg_mean(tg_square(tg_module_forward(m, x))));
        tg_optim_step(opt);
        tg_optim_zero_grad(opt);
        tg_tape_end(tape);
        tg_tensor_release(x);
        tg_clear_error();
    }
    fuzz_inside = false;
    tg_optim_free(opt);
    tg_module_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_file_write(&file, data, size);
    fuzz_inside = true;
    tg_state_dict *sd = tg_data_load_safetensors(file.path);
    fuzz_inside = false;
    if (sd ? tg_last_status() != TG_OK : (tg_last_status() == TG_OK || !tg_last_error()[0]))
        fuzz_fail("tg_data_load_safetensors: result and error status disagree");
    check_message(tg_last_status());
    if (sd)
        load_into_model(sd);
    tg_state_dict_free(sd);
    fuzz_check();
    return 0;
}
