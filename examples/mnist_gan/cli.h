/* mnist_gan's command line: every flag, its value's check, and the help text. */
#ifndef MNIST_GAN_CLI_H
#define MNIST_GAN_CLI_H

#include "gan.h"

typedef enum { CMD_TRAIN, CMD_SAMPLE, CMD_HELP, CMD_EVAL } gan_command;

/* The ranges of the flags whose values a checkpoint records: cli.c checks the flags with them,
 * checkpoint.c the values read back from a checkpoint. */
#define GAN_LR_MAX 10.0        /* --lr X: (0, 10] */
#define GAN_BETA1_MAX 0.999999 /* --beta1 X: [0, 0.999999] */
#define GAN_BETA2_MAX 0.999999 /* --beta2 X: [0, 0.999999] */
#define GAN_N_CRITIC_MAX 100   /* --n-critic N: [1, 100] */
#define GAN_LAMBDA_MAX 1000.0  /* --gp-lambda X: [0, 1000] */
#define GAN_BATCH_MIN 2        /* --batch N: [2, 65536] */
#define GAN_BATCH_MAX 65536
#define GAN_WIDTH_DIV_MAX 64          /* --width-div K: [1, 64] */
#define GAN_ITERS_MAX (INT64_MAX / 2) /* --iters N: [1, INT64_MAX / 2] */
#define GAN_PER_CLASS_MAX 100000      /* --train-per-class N: [1, 100000] (0: every image) */
/* sample --label: not given (a conditional model's default is all; an unconditional one's
 * none), all (GAN_LABELS_BALANCED), or a digit 0..9 */
#define GAN_LABEL_UNSET (-2)

typedef struct gan_options {
    gan_command cmd;
    /* train */
    const char *data_dir; /* --data DIR, or the folder --dataset names */
    const char *dataset;  /* mnist | fashion */
    int digit;            /* -1: all */
    gan_generator generator;
    gan_recipe recipe;
    gan_step_mode step;
    gan_init init;
    tg_adam_eps adam_eps;
    int64_t shuffle_block;
    int64_t epochs, iters; /* iters 0: epochs decide */
    int64_t batch;
    float lr, beta1, beta2;
    uint64_t seed;
    int n_critic;    /* wgan-gp: --n-critic */
    float gp_lambda; /* wgan-gp: --gp-lambda */
    gan_critic_norm critic_norm;
    int threads;
    tg_matmul_precision matmul; /* --matmul fp32|bf16: tg_set_matmul_precision for the run */
    int64_t log_every;
    tg_grid_scale grid_scale;
    bool grid_both; /* train --grid-scale both: a per-image grid beside each fixed one */
    const char *out_dir;
    bool resume;
    int width_div;
    int64_t per_class; /* --train-per-class N: tg_dataset_per_class(set, N, seed); 0: all */
    bool sync_bn;      /* --sync-bn on|off (under mpirun; default on) */
    /* sample */
    const char *checkpoint;
    int64_t n;
    const char *png_out;
    const char *idx_prefix;
    int label; /* --label: GAN_LABEL_UNSET, GAN_LABELS_BALANCED (all) or 0..9 */
    /* eval (and train's evaluation) */
    const char *classifier; /* --classifier FILE: mnist_classifier's checkpoint */
    const char *images;     /* eval --images FILE: an idx3 file of images instead of a G */
    const char *json_path;  /* --json FILE; NULL: eval.jsonl beside the checkpoint */
    int64_t eval_every;     /* train: evaluate every N iterations (0: never) */
    int64_t eval_n;         /* train: images per evaluation */
    /* which flags were given (bit per flag index), so --resume can tell a user's choice from a
     * default */
    uint64_t given;
} gan_options;

/* Flags whose value a checkpoint records, and which --resume takes from it. */
enum {
    GIVEN_GENERATOR = 1u << 0,
    GIVEN_RECIPE = 1u << 1,
    GIVEN_STEP = 1u << 2,
    GIVEN_BATCH = 1u << 3,
    GIVEN_LR = 1u << 4,
    GIVEN_BETA1 = 1u << 5,
    GIVEN_SEED = 1u << 6,
    GIVEN_DIGIT = 1u << 7,
    GIVEN_WIDTH = 1u << 8,
    GIVEN_DATASET = 1u << 9,
    GIVEN_INIT = 1u << 10,
    GIVEN_ADAM = 1u << 11,
    GIVEN_SHUFFLE = 1u << 12,
    GIVEN_BETA2 = 1u << 13,
    GIVEN_N_CRITIC = 1u << 14,
    GIVEN_GP_LAMBDA = 1u << 15,
    GIVEN_CRITIC_NORM = 1u << 16,
    GIVEN_PER_CLASS = 1u << 17,
    GIVEN_MATMUL = 1u << 18,
};

/* --matmul's values, as tg_matmul_precision numbers them: "fp32", "bf16". */
extern const char *const gan_matmul_names[];

/* The models-and-updates part of the options. */
gan_config gan_options_config(const gan_options *o);

/* Parses argv into o. On a bad flag or value: false, with one line naming it in err. */
bool gan_parse_args(int argc, char **argv, gan_options *o, char *err, size_t err_size);
/* The flags that belong to one recipe: --step not with wgan-gp, --n-critic, --gp-lambda and
 * --critic-norm only with it (o->recipe: the flag's, or a resumed checkpoint's). False with
 * one line in err. */
bool gan_recipe_flags_check(const gan_options *o, char *err, size_t err_size);
/* The --help text. */
const char *gan_usage(void);

#endif
