/* char_lm — a character-level GRU language model: trains on any text file, then samples from it.
 *
 * Embedding(vocab, 64) -> GRUCell(64, 256) unrolled over --seq characters -> Linear(256, vocab)
 * (model.c), trained by truncated backpropagation through time: the text is cut into --batch
 * tracks read side by side; each step reads the next --seq characters of every track and carries
 * the GRU state on to the next step, detached (at the end of the tracks it starts again from
 * zero). Adam, gradients clipped to norm 1. It prints the loss (nats and bits per character),
 * then text sampled at --temperature, and writes OUT/losses.csv and OUT/sample.txt atomically.
 * torch_char_lm.py is the same program in PyTorch. Exit status: 0 done, 2 bad input, 1 other. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "args.h"
#include "model.h"

enum { EMBED = 64, HIDDEN = 256 };

static struct {
    const char *text, *out;
    int64_t steps, batch, seq, seed, threads, sample, log_every;
    double lr, temperature;
} o = {"/usr/share/common-licenses/GPL-3", "out/char_lm", 2000, 32, 64, 1, 0, 600, 100, 2e-3, 0.8};

/* The whole file, or exit 2 with one line. */
static unsigned char *read_text(const char *path, size_t *len)
{
    FILE *f = tg_data_fopen_regular(path, "rb");
    long n = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    unsigned char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!buf || fseek(f, 0, SEEK_SET) != 0 || fread(buf, 1, (size_t)n, f) != (size_t)n)
        ex_die("--text: %s", f ? "cannot read it" : tg_last_error());
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Writes n bytes to o.out/name, atomically. */
static void write_out(const char *name, const void *bytes, size_t n)
{
    tg_atomic_file *af = tg_atomic_open(ex_path(o.out, name));
    CHECK(af);
    CHECK_OK(tg_atomic_write(af, bytes, n));
    CHECK_OK(tg_atomic_commit(af));
}

int main(int argc, char **argv)
{
    const ex_flag flags[] = {
        EX_STRING("--text", &o.text, "FILE", "the text to learn"),
        EX_STRING("--out", &o.out, "DIR", "losses.csv, sample.txt"),
        EX_INT("--steps", &o.steps, 1, 100000000, "training steps"),
        EX_INT("--batch", &o.batch, 1, 4096, "tracks read side by side"),
        EX_INT("--seq", &o.seq, 1, 4096, "characters per track and step"),
        EX_REAL("--lr", &o.lr, 1e-9, 10, "Adam learning rate"),
        EX_INT("--seed", &o.seed, 0, INT64_MAX, "seed of weights, sampling"),
        EX_INT("--threads", &o.threads, 1, 256, "threads (0: 2, or 1 on one CPU)"),
        EX_INT("--sample", &o.sample, 1, 1000000, "characters to sample"),
        EX_REAL("--temperature", &o.temperature, 1e-3, 100, "sampling temperature"),
        EX_INT("--log-every", &o.log_every, 1, 100000000, "print the mean loss every N steps"),
    };
    EX_PARSE(argc, argv, "Trains a character-level GRU language model, then samples from it.",
             flags);
    ex_threads(o.threads);
    size_t len;
    unsigned char *text = read_text(o.text, &len);
    const int64_t B = o.batch, T = o.seq, track = len ? ((int64_t)len - 1) / B : 0;
    if (track < T)
        ex_die("--text: %zu characters are too few for %lld tracks of %lld", len, (long long)B,
               (long long)T);
    ex_out_dir(o.out, "sample.txt");

    /* The vocabulary: the bytes the text uses, in byte order (the twin's sorted(set(text))). */
    int64_t id_of[256] = {0}, V = 0, *data = malloc(len * sizeof *data);
    unsigned char chars[256];
    for (size_t i = 0; i < len; i++)
        id_of[text[i]] = 1;
    for (int c = 0; c < 256; c++)
        if (id_of[c])
            chars[V] = (unsigned char)c, id_of[c] = V++;
    for (size_t i = 0; data && i < len; i++)
        data[i] = id_of[text[i]];

    tg_rng rng;
    tg_rng_seed(&rng, (uint64_t)o.seed);
    tg_module *m = charlm_new(V, EMBED, HIDDEN, &rng);
    tg_optim *opt = tg_optim_adam_module(m, (float)o.lr, 0.9f, 0.999f, 1e-8f, 0.0f);
    tg_tensor *h = tg_tensor_zeros(TG_DIMS(B, HIDDEN)); /* the state carried from step to step */
    int64_t *ids = malloc((size_t)(2 * B * T) * sizeof *ids), *next = ids + B * T;
    char *csv = malloc((size_t)o.steps * 32 + 16), *sample = malloc((size_t)o.sample + 1);
    CHECK(data && m && opt && h && ids && csv && sample);
    printf("char_lm: %s: %zu characters, vocabulary %lld; %lld parameters\n", o.text, len,
           (long long)V, (long long)tg_module_num_parameters(m));
    size_t csv_len = (size_t)sprintf(csv, "step,loss\n");
    double total = 0.0, t0 = ex_seconds();
    for (int64_t step = 1, pos = track; step <= o.steps; step++, pos += T) {
        if (pos + T > track) { /* the tracks are used up: start again, from a zero state */
            CHECK_OK(tg_tensor_fill_(h, 0.0f));
            pos = 0;
        }
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < T; t++) {
                ids[b * T + t] = data[b * track + pos + t];
                next[b * T + t] = data[b * track + pos + t + 1];
            }
        tg_tape *tape = tg_tape_begin(TG_GRAD);
        tg_tensor *h_last, *loss = charlm_loss(m, tg_indices(TG_DIMS(B, T), ids),
                                               tg_indices(TG_DIMS(B, T), next), h, &h_last);
        CHECK_OK(tg_backward(loss));
        CHECK_OK(tg_module_clip_grad_norm_(m, 1.0f, 2.0f, NULL));
        CHECK_OK(tg_optim_step(opt));
        CHECK_OK(tg_tensor_copy_(h, h_last)); /* detached */
        tg_optim_zero_grad(opt);
        total += tg_tensor_item(loss);
        csv_len += (size_t)sprintf(csv + csv_len, "%lld,%.6f\n", (long long)step,
                                   (double)tg_tensor_item(loss));
        tg_tape_end(tape);
        if (step % o.log_every == 0 || step == o.steps) {
            const double n = (double)((step - 1) % o.log_every + 1);
            printf("step %lld/%lld  loss %.4f (%.3f bits/char)  %.1f s\n", (long long)step,
                   (long long)o.steps, total / n, total / n / log(2.0), ex_seconds() - t0);
            fflush(stdout);
            total = 0.0;
        }
    }

    /* Sampling: from the text's first character and a zero state, one character at a time. */
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *state = TG_NONE;
    for (int64_t i = 0, c = data[0]; i < o.sample; i++) {
        sample[i] = (char)chars[c];
        tg_tensor *logits = charlm_forward(m, tg_indices(TG_DIMS(1, 1), &c), state, &state);
        tg_index *drawn = tg_categorical(logits, (float)o.temperature, &rng);
        CHECK(drawn);
        c = drawn->data[0];
    }
    tg_tape_end(tape);
    sample[o.sample] = '\0';
    printf("\n%s\n", sample);
    write_out("losses.csv", csv, csv_len);
    write_out("sample.txt", sample, (size_t)o.sample);
    free(csv);
    free(sample);
    free(ids);
    free(data);
    free(text);
    tg_tensor_release(h);
    tg_optim_free(opt);
    tg_module_free(m);
    return ex_done();
}
