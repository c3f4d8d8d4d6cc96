/* Optimizers: SGD (momentum, dampening, Nesterov, weight decay), Adam and AdamW, with state
 * dicts. Each step is one loop per parameter following PyTorch's reference algorithm; the
 * hyper-parameter scalars (bias corrections) are computed in double and applied in float, as
 * PyTorch's single-tensor path does. */
#include "optim.h"

#include "../tensor/internal.h"
#include "../tensor/parallel.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

typedef enum { OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW } optim_kind;

static const char *const kind_names[] = {"SGD", "Adam", "AdamW"};
/* tg_adam_eps values as the state dict's "eps_style" records them. */
static const char *const eps_style_names[] = {"after_correction", "before_correction"};

/* The hyper-parameters (one struct, so a load can validate a candidate before committing). */
typedef struct {
    float lr;
    float momentum, dampening; /* SGD */
    bool nesterov;             /* SGD */
    float beta1, beta2, eps;   /* Adam, AdamW */
    tg_adam_eps eps_style;     /* Adam, AdamW: where eps enters (optim.h) */
    float weight_decay;
} hyper;

/* Per-parameter state; NULL until the first step that reaches the parameter. */
typedef struct {
    tg_tensor *step;            /* Adam, AdamW: 0-d count of steps taken (float, as PyTorch) */
    tg_tensor *exp_avg;         /* Adam, AdamW: first moment m */
    tg_tensor *exp_avg_sq;      /* Adam, AdamW: second moment v */
    tg_tensor *momentum_buffer; /* SGD with momentum */
} param_state;

struct tg_optim {
    optim_kind kind;
    hyper h;
    int64_t n;
    tg_tensor **params; /* retained */
    param_state *state; /* n entries */
};

/* The state fields each kind keeps, in state-dict order. */
static const char *const adam_fields[] = {"step", "exp_avg", "exp_avg_sq"};
static const char *const sgd_fields[] = {"momentum_buffer"};

static int kind_fields(optim_kind k, const char *const **fields)
{
    if (k == OPTIM_SGD) {
        *fields = sgd_fields;
        return 1;
    }
    *fields = adam_fields;
    return 3;
}

/* The slot of field f in a state. */
static tg_tensor **state_slot(param_state *s, optim_kind k, int f)
{
    if (k == OPTIM_SGD)
        return &s->momentum_buffer;
    return f == 0 ? &s->step : f == 1 ? &s->exp_avg : &s->exp_avg_sq;
}

static void state_clear(param_state *s)
{
    tg_release(s->step);
    tg_release(s->exp_avg);
    tg_release(s->exp_avg_sq);
    tg_release(s->momentum_buffer);
    *s = (param_state){0};
}

/* ---- creation ---------------------------------------------------------------------------- */

/* Checks hyper-parameters the way torch.optim's constructors do; fn names the caller. */
static tg_status hyper_check(const char *fn, optim_kind k, const hyper *h)
{
    if (!(h->lr >= 0.0f && isfinite(h->lr)))
        return tg_set_error(TG_ERR_ARG, "%s: learning rate %g: need a finite lr >= 0", fn, h->lr);
    if (!(h->weight_decay >= 0.0f && isfinite(h->weight_decay)))
        return tg_set_error(TG_ERR_ARG, "%s: weight_decay %g: need a finite value >= 0", fn,
                            h->weight_decay);
    if (k == OPTIM_SGD) {
        if (!(h->momentum >= 0.0f && h->momentum <= 1.0f) ||
            !(h->dampening >= 0.0f && h->dampening <= 1.0f))
            return tg_set_error(TG_ERR_ARG, "%s: momentum %g, dampening %g: both must lie in "
                                "[0, 1]", fn, h->momentum, h->dampening);
        if (h->nesterov && (h->momentum <= 0.0f || h->dampening != 0.0f))
            return tg_set_error(TG_ERR_ARG, "%s: Nesterov momentum needs momentum > 0 and "
                                "dampening 0 (got %g and %g)", fn, h->momentum, h->dampening);
    } else {
        if (!(h->beta1 >= 0.0f && h->beta1 < 1.0f) || !(h->beta2 >= 0.0f && h->beta2 < 1.0f))
            return tg_set_error(TG_ERR_ARG, "%s: betas (%g, %g): each must lie in [0, 1)", fn,
                                h->beta1, h->beta2);
        if (!(h->eps >= 0.0f && isfinite(h->eps)))
            return tg_set_error(TG_ERR_ARG, "%s: eps %g: need a finite eps >= 0", fn, h->eps);
    }
    return TG_OK;
}

static tg_optim *optim_new(const char *fn, optim_kind kind, tg_tensor *const *params, int64_t n,
                           const hyper *h)
{
    if (!params || n < 1) {
        tg_set_error(TG_ERR_ARG, "%s: %s: an optimizer needs at least one parameter", fn,
                     params ? "n < 1" : "params is NULL");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        if (!params[i]) {
            tg_set_error(TG_ERR_ARG, "%s: parameter %lld is NULL", fn, (long long)i);
            return NULL;
        }
        if (params[i]->node) {
            tg_set_error(TG_ERR_ARG, "%s: parameter %lld is the result of an op, not a leaf "
                         "tensor; an optimizer can only update leaves", fn, (long long)i);
            return NULL;
        }
        /* A duplicate would be updated twice per step. */
        for (int64_t j = 0; j < i; j++)
            if (params[j] == params[i]) {
                tg_set_error(TG_ERR_ARG, "%s: parameters %lld and %lld are the same tensor", fn,
                             (long long)j, (long long)i);
                return NULL;
            }
    }
    if (hyper_check(fn, kind, h) != TG_OK)
        return NULL;
    tg_optim *o = calloc(1, sizeof *o);
    if (o) {
        o->params = malloc((size_t)n * sizeof *o->params);
        o->state = calloc((size_t)n, sizeof *o->state);
    }
    if (!o || !o->params || !o->state) {
        if (o) {
            free(o->params);
            free(o->state);
        }
        free(o);
        tg_set_error(TG_ERR_NOMEM, "%s: out of memory for %lld parameters", fn, (long long)n);
        return NULL;
    }
    o->kind = kind;
    o->h = *h;
    o->n = n;
    for (int64_t i = 0; i < n; i++)
        o->params[i] = tg_retain(params[i]);
    return o;
}

tg_optim *tg_optim_sgd(tg_tensor *const *params, int64_t n, float lr, float momentum,
                       float dampening, float weight_decay, bool nesterov)
{
    hyper h = {.lr = lr, .momentum = momentum, .dampening = dampening, .nesterov = nesterov,
               .weight_decay = weight_decay};
    return optim_new("tg_optim_sgd", OPTIM_SGD, params, n, &h);
}

tg_optim *tg_optim_adam(tg_tensor *const *params, int64_t n, float lr, float beta1, float beta2,
                        float eps, float weight_decay)
{
    hyper h = {.lr = lr, .beta1 = beta1, .beta2 = beta2, .eps = eps,
               .weight_decay = weight_decay};
    return optim_new("tg_optim_adam", OPTIM_ADAM, params, n, &h);
}

tg_optim *tg_optim_adamw(tg_tensor *const *params, int64_t n, float lr, float beta1,
                         float beta2, float eps, float weight_decay)
{
    hyper h = {.lr = lr, .beta1 = beta1, .beta2 = beta2, .eps = eps,
               .weight_decay = weight_decay};
    return optim_new("tg_optim_adamw", OPTIM_ADAMW, params, n, &h);
}

void tg_optim_free(tg_optim *opt)
{
    if (!opt)
        return;
    for (int64_t i = 0; i < opt->n; i++) {
        state_clear(&opt->state[i]);
        tg_release(opt->params[i]);
    }
    free(opt->state);
    free(opt->params);
    free(opt);
}

/* ---- steps ------------------------------------------------------------------------------- */

/* torch.optim.SGD (the algorithm in its documentation):
 *     g = grad + wd * p
 *     b = g on the first step, else b = momentum * b + (1 - dampening) * g
 *     g = nesterov ? g + momentum * b : b          (when momentum != 0)
 *     p = p - lr * g */
static void sgd_update(const hyper *h, tg_tensor *p, param_state *s, bool first)
{
    float *w = p->data;
    const float *grad = p->grad->data;
    float *b = s->momentum_buffer ? s->momentum_buffer->data : NULL;
    const float lr = h->lr, wd = h->weight_decay, mom = h->momentum;
    const float keep = 1.0f - h->dampening;
    const bool nesterov = h->nesterov;
    int64_t n = p->numel;
    TG_PARALLEL_FOR(n)
    for (int64_t j = 0; j < n; j++) {
        float g = grad[j] + wd * w[j];
        if (b) {
            b[j] = first ? g : mom * b[j] + keep * g;
            g = nesterov ? g + mom * b[j] : b[j];
        }
        w[j] -= lr * g;
    }
}

/* torch.optim.Adam / AdamW (Kingma & Ba 2015, Algorithm 1; Loshchilov & Hutter 2019), as
 * PyTorch computes it with step t counted from 1:
 *     AdamW: p = p * (1 - lr * wd)           Adam: g = grad + wd * p
 *     m = beta1 * m + (1 - beta1) * g
 *     v = beta2 * v + (1 - beta2) * g^2
 *     p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * With TG_ADAM_EPS_BEFORE_CORRECTION (PaddlePaddle 1.x's adam_op.h, TensorFlow 1's Adam) the
 * last line is instead, with eps added to sqrt(v) before the bias correction:
 *     p = p - lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)
 * The two differ only while sqrt(v) is comparable to eps: early steps and tiny gradients. */
static void adam_update(optim_kind kind, const hyper *h, tg_tensor *p, param_state *s)
{
    float *w = p->data;
    const float *grad = p->grad->data;
    float *m = s->exp_avg->data, *v = s->exp_avg_sq->data;
    s->step->data[0] += 1.0f;
    double t = s->step->data[0];
    const float beta1 = h->beta1, beta2 = h->beta2, eps = h->eps;
    const float l2 = kind == OPTIM_ADAM ? h->weight_decay : 0.0f;
    const float decay = kind == OPTIM_ADAMW ? (float)(1.0 - (double)h->lr * h->weight_decay)
                                            : 1.0f;
    const bool before = h->eps_style == TG_ADAM_EPS_BEFORE_CORRECTION;
    const float bc2_sqrt = (float)sqrt(1.0 - pow(beta2, t));
    /* Paddle folds the second correction into the step: lr_t = lr * sqrt(1-beta2^t)/(1-beta1^t).
     * Dividing sqrt(v) by 1 instead of bc2_sqrt then gives its update from the same loop. */
    const float step_size = (float)(h->lr * (before ? bc2_sqrt : 1.0) / (1.0 - pow(beta1, t)));
    const float v_scale = before ? 1.0f : bc2_sqrt;
    int64_t n = p->numel;
    TG_PARALLEL_FOR(n)
    for (int64_t j = 0; j < n; j++) {
        w[j] *= decay;
        float g = grad[j] + l2 * w[j];
        m[j] = beta1 * m[j] + (1.0f - beta1) * g;
        v[j] = beta2 * v[j] + (1.0f - beta2) * g * g;
        w[j] -= step_size * m[j] / (sqrtf(v[j]) / v_scale + eps);
    }
}

/* Allocates the state of parameter p (zeros) on its first step; false when out of memory. */
static bool state_init(const tg_optim *o, const tg_tensor *p, param_state *s)
{
    if (o->kind == OPTIM_SGD) {
        if (o->h.momentum != 0.0f && !s->momentum_buffer)
            s->momentum_buffer = tg_tensor_zeros(p->ndim, p->shape);
        return o->h.momentum == 0.0f || s->momentum_buffer;
    }
    if (!s->step) {
        s->step = tg_tensor_scalar(0.0f);
        s->exp_avg = tg_tensor_zeros(p->ndim, p->shape);
        s->exp_avg_sq = tg_tensor_zeros(p->ndim, p->shape);
        if (!s->step || !s->exp_avg || !s->exp_avg_sq) {
            state_clear(s);
            return false;
        }
    }
    return true;
}

tg_status tg_optim_step(tg_optim *opt)
{
    if (!opt)
        return tg_set_error(TG_ERR_ARG, "tg_optim_step: the optimizer is NULL");
    for (int64_t i = 0; i < opt->n; i++) {
        tg_tensor *p = opt->params[i];
        param_state *s = &opt->state[i];
        if (!p->grad)
            continue; /* no gradient reached it: PyTorch skips it too */
        TG_ASSERT(p->grad->numel == p->numel);
        bool first = opt->kind == OPTIM_SGD && !s->momentum_buffer;
        if (!state_init(opt, p, s))
            return tg_set_error(TG_ERR_NOMEM, "tg_optim_step: out of memory for the state of "
                                "parameter %lld", (long long)i);
        if (opt->kind == OPTIM_SGD)
            sgd_update(&opt->h, p, s, first);
        else
            adam_update(opt->kind, &opt->h, p, s);
        tg_tensor_bump_version(p);
    }
    return TG_OK;
}

void tg_optim_zero_grad(tg_optim *opt)
{
    for (int64_t i = 0; opt && i < opt->n; i++)
        tg_tensor_zero_grad(opt->params[i]);
}

tg_status tg_optim_set_adam_eps(tg_optim *opt, tg_adam_eps style)
{
    const char *fn = "tg_optim_set_adam_eps";
    if (!opt)
        return tg_set_error(TG_ERR_ARG, "%s: the optimizer is NULL", fn);
    if (opt->kind == OPTIM_SGD)
        return tg_set_error(TG_ERR_ARG, "%s: this optimizer is SGD; only Adam and AdamW have "
                            "an eps", fn);
    if (style != TG_ADAM_EPS_AFTER_CORRECTION && style != TG_ADAM_EPS_BEFORE_CORRECTION)
        return tg_set_error(TG_ERR_ARG, "%s: style %d is not a tg_adam_eps", fn, (int)style);
    opt->h.eps_style = style;
    return TG_OK;
}

tg_adam_eps tg_optim_adam_eps(const tg_optim *opt)
{
    return opt ? opt->h.eps_style : TG_ADAM_EPS_AFTER_CORRECTION;
}

tg_status tg_optim_set_lr(tg_optim *opt, float lr)
{
    if (!opt)
        return tg_set_error(TG_ERR_ARG, "tg_optim_set_lr: the optimizer is NULL");
    if (!(lr >= 0.0f && isfinite(lr)))
        return tg_set_error(TG_ERR_ARG, "tg_optim_set_lr: learning rate %g: need a finite "
                            "lr >= 0", lr);
    opt->h.lr = lr;
    return TG_OK;
}

float tg_optim_lr(const tg_optim *opt) { return opt ? opt->h.lr : 0.0f; }

int64_t tg_optim_num_params(const tg_optim *opt) { return opt ? opt->n : 0; }

/* ---- state dicts ------------------------------------------------------------------------- */

/* "prefix.rest" (or "rest" for an empty prefix) into buf; false when it does not fit. */
static bool key(char *buf, size_t size, const char *prefix, const char *rest)
{
    int len = snprintf(buf, size, "%s%s%s", prefix, prefix[0] ? "." : "", rest);
    return len >= 0 && (size_t)len < size;
}

static tg_status put_meta(tg_state_dict *sd, const char *prefix, const char *name,
                          const char *value)
{
    char k[512];
    if (!key(k, sizeof k, prefix, name))
        return tg_set_error(TG_ERR_ARG, "tg_optim_state_dict: prefix \"%s\" is too long",
                            prefix);
    return tg_state_dict_set_meta(sd, k, value);
}

tg_status tg_optim_state_dict(const tg_optim *opt, const char *prefix, tg_state_dict *sd)
{
    const char *fn = "tg_optim_state_dict";
    if (!opt || !sd)
        return tg_set_error(TG_ERR_ARG, "%s: %s is NULL", fn, opt ? "sd" : "the optimizer");
    if (!prefix)
        prefix = "";
    const hyper *h = &opt->h;
    char v[96];
    tg_status st = put_meta(sd, prefix, "type", kind_names[opt->kind]);
    snprintf(v, sizeof v, "%lld", (long long)opt->n);
    if (st == TG_OK)
        st = put_meta(sd, prefix, "num_params", v);
    /* %.9g prints a float so that reading it back gives the same float. */
    snprintf(v, sizeof v, "%.9g", h->lr);
    if (st == TG_OK)
        st = put_meta(sd, prefix, "lr", v);
    snprintf(v, sizeof v, "%.9g", h->weight_decay);
    if (st == TG_OK)
        st = put_meta(sd, prefix, "weight_decay", v);
    if (opt->kind == OPTIM_SGD) {
        snprintf(v, sizeof v, "%.9g", h->momentum);
        if (st == TG_OK)
            st = put_meta(sd, prefix, "momentum", v);
        snprintf(v, sizeof v, "%.9g", h->dampening);
        if (st == TG_OK)
            st = put_meta(sd, prefix, "dampening", v);
        if (st == TG_OK)
            st = put_meta(sd, prefix, "nesterov", h->nesterov ? "true" : "false");
    } else {
        snprintf(v, sizeof v, "%.9g,%.9g", h->beta1, h->beta2);
        if (st == TG_OK)
            st = put_meta(sd, prefix, "betas", v);
        snprintf(v, sizeof v, "%.9g", h->eps);
        if (st == TG_OK)
            st = put_meta(sd, prefix, "eps", v);
        if (st == TG_OK)
            st = put_meta(sd, prefix, "eps_style", eps_style_names[h->eps_style]);
    }

    const char *const *fields;
    int nf = kind_fields(opt->kind, &fields);
    for (int64_t i = 0; i < opt->n && st == TG_OK; i++) {
        for (int f = 0; f < nf && st == TG_OK; f++) {
            tg_tensor *t = *state_slot(&opt->state[i], opt->kind, f);
            if (!t)
                continue;
            char rest[96], k[512];
            snprintf(rest, sizeof rest, "%lld.%s", (long long)i, fields[f]);
            if (!key(k, sizeof k, prefix, rest))
                st = tg_set_error(TG_ERR_ARG, "%s: prefix \"%s\" is too long", fn, prefix);
            else
                st = tg_state_dict_put(sd, k, t);
        }
    }
    return st;
}

/* Parses a whole string as a float; false when it is not one. */
static bool parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (end == s || *end || errno)
        return false;
    *out = (float)d;
    return true;
}

/* Reads the hyper-parameters present in sd's metadata into *h (others stay); checks the type
 * and parameter count. */
static tg_status load_meta(const tg_optim *o, const char *prefix, const tg_state_dict *sd,
                           hyper *h)
{
    const char *fn = "tg_optim_load_state_dict";
    char k[512];
    const char *v;
    if (key(k, sizeof k, prefix, "type") && (v = tg_state_dict_meta(sd, k)) &&
        strcmp(v, kind_names[o->kind]) != 0)
        return tg_set_error(TG_ERR_ARG, "%s: \"%s\" is \"%s\", this optimizer is %s", fn, k, v,
                            kind_names[o->kind]);
    if (key(k, sizeof k, prefix, "num_params") && (v = tg_state_dict_meta(sd, k))) {
        char want[32];
        snprintf(want, sizeof want, "%lld", (long long)o->n);
        if (strcmp(v, want) != 0)
            return tg_set_error(TG_ERR_ARG, "%s: \"%s\" is %s, this optimizer has %lld "
                                "parameters", fn, k, v, (long long)o->n);
    }
    struct {
        const char *name;
        float *dst;
    } floats[] = {{"lr", &h->lr}, {"weight_decay", &h->weight_decay},
                  {"momentum", &h->momentum}, {"dampening", &h->dampening}, {"eps", &h->eps}};
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) {
        if (key(k, sizeof k, prefix, floats[i].name) && (v = tg_state_dict_meta(sd, k)) &&
            !parse_float(v, floats[i].dst))
            return tg_set_error(TG_ERR_FORMAT, "%s: \"%s\" is \"%s\", not a number", fn, k, v);
    }
    if (key(k, sizeof k, prefix, "betas") && (v = tg_state_dict_meta(sd, k))) {
        const char *comma = strchr(v, ',');
        char first[64];
        size_t len = comma ? (size_t)(comma - v) : 0;
        if (!comma || len >= sizeof first)
            return tg_set_error(TG_ERR_FORMAT, "%s: \"%s\" is \"%s\", not \"beta1,beta2\"", fn,
                                k, v);
        memcpy(first, v, len);
        first[len] = '\0';
        if (!parse_float(first, &h->beta1) || !parse_float(comma + 1, &h->beta2))
            return tg_set_error(TG_ERR_FORMAT, "%s: \"%s\" is \"%s\", not \"beta1,beta2\"", fn,
                                k, v);
    }
    if (o->kind != OPTIM_SGD && key(k, sizeof k, prefix, "eps_style") &&
        (v = tg_state_dict_meta(sd, k))) {
        if (strcmp(v, eps_style_names[0]) != 0 && strcmp(v, eps_style_names[1]) != 0)
            return tg_set_error(TG_ERR_FORMAT, "%s: \"%s\" is \"%s\", not %s or %s", fn, k, v,
                                eps_style_names[0], eps_style_names[1]);
        h->eps_style = strcmp(v, eps_style_names[0]) == 0 ? TG_ADAM_EPS_AFTER_CORRECTION
                                                          : TG_ADAM_EPS_BEFORE_CORRECTION;
    }
    if (key(k, sizeof k, prefix, "nesterov") && (v = tg_state_dict_meta(sd, k))) {
        if (strcmp(v, "true") != 0 && strcmp(v, "false") != 0)
            return tg_set_error(TG_ERR_FORMAT, "%s: \"%s\" is \"%s\", not true or false", fn, k,
                                v);
        h->nesterov = strcmp(v, "true") == 0;
    }
    return hyper_check(fn, o->kind, h);
}

/* Splits "i.field" (name after the prefix) into a parameter index < n and a field index;
 * false when it is not one of this optimizer's entries. */
static bool parse_entry(const char *rest, int64_t n, const char *const *fields, int nf,
                        int64_t *index, int *field)
{
    char *end;
    errno = 0;
    long long i = strtoll(rest, &end, 10);
    if (end == rest || *end != '.' || errno || i < 0 || i >= n || rest[0] == '+' ||
        rest[0] == '-' || (rest[0] == '0' && end - rest > 1))
        return false;
    for (int f = 0; f < nf; f++)
        if (strcmp(end + 1, fields[f]) == 0) {
            *index = i;
            *field = f;
            return true;
        }
    return false;
}

tg_status tg_optim_load_state_dict(tg_optim *opt, const char *prefix, const tg_state_dict *sd)
{
    const char *fn = "tg_optim_load_state_dict";
    if (!opt || !sd)
        return tg_set_error(TG_ERR_ARG, "%s: %s is NULL", fn, opt ? "sd" : "the optimizer");
    if (!prefix)
        prefix = "";
    hyper h = opt->h;
    tg_status st = load_meta(opt, prefix, sd, &h);
    if (st != TG_OK)
        return st;

    const char *const *fields;
    int nf = kind_fields(opt->kind, &fields);
    size_t plen = strlen(prefix);
    /* Borrowed source tensors, [param][field]; validated before anything is allocated. */
    const tg_tensor **src = calloc((size_t)opt->n * (size_t)nf, sizeof *src);
    param_state *fresh = calloc((size_t)opt->n, sizeof *fresh);
    if (!src || !fresh) {
        free(src);
        free(fresh);
        return tg_set_error(TG_ERR_NOMEM, "%s: out of memory", fn);
    }
    for (int64_t e = 0; e < tg_state_dict_size(sd) && st == TG_OK; e++) {
        const char *name = tg_state_dict_name(sd, e);
        if (plen && (strncmp(name, prefix, plen) != 0 || name[plen] != '.'))
            continue; /* someone else's entry */
        const char *rest = plen ? name + plen + 1 : name;
        int64_t i;
        int f;
        if (!parse_entry(rest, opt->n, fields, nf, &i, &f)) {
            st = tg_set_error(TG_ERR_ARG, "%s: unexpected entry \"%s\" for a %s optimizer of "
                              "%lld parameters", fn, name, kind_names[opt->kind],
                              (long long)opt->n);
            break;
        }
        const tg_tensor *t = tg_state_dict_tensor(sd, e), *p = opt->params[i];
        char st_s[160], sp[160];
        bool is_step = opt->kind != OPTIM_SGD && f == 0;
        if (is_step && (t->numel != 1 || !(t->data[0] >= 0.0f) ||
                        t->data[0] != floorf(t->data[0]) || t->data[0] > 16777216.0f))
            st = tg_set_error(TG_ERR_ARG, "%s: \"%s\" %s must hold one whole step count >= 0",
                              fn, name, tg_shape_str(t->ndim, t->shape, st_s, sizeof st_s));
        else if (!is_step && !tg_shape_equal(t, p))
            st = tg_set_error(TG_ERR_SHAPE, "%s: \"%s\" has shape %s; parameter %lld has %s",
                              fn, name, tg_shape_str(t->ndim, t->shape, st_s, sizeof st_s),
                              (long long)i, tg_shape_str(p->ndim, p->shape, sp, sizeof sp));
        src[i * nf + f] = t;
    }
    /* A parameter's state is all of its fields or none. */
    for (int64_t i = 0; i < opt->n && st == TG_OK; i++) {
        int have = 0;
        for (int f = 0; f < nf; f++)
            have += src[i * nf + f] != NULL;
        for (int f = 0; f < nf && have && have < nf; f++)
            if (!src[i * nf + f]) {
                char k[512], rest[96];
                snprintf(rest, sizeof rest, "%lld.%s", (long long)i, fields[f]);
                key(k, sizeof k, prefix, rest);
                st = tg_set_error(TG_ERR_ARG, "%s: the state of parameter %lld is incomplete: "
                                  "\"%s\" is missing", fn, (long long)i, k);
                break;
            }
    }
    /* Copies of the values (the dict's tensors may belong to someone else), made before the
     * old state goes so that running out of memory changes nothing. */
    for (int64_t i = 0; i < opt->n && st == TG_OK; i++) {
        for (int f = 0; f < nf && st == TG_OK; f++) {
            const tg_tensor *t = src[i * nf + f];
            if (!t)
                continue;
            bool is_step = opt->kind != OPTIM_SGD && f == 0;
            tg_tensor *c = is_step ? tg_tensor_scalar(t->data[0]) : tg_tensor_clone(t);
            if (!c)
                st = tg_last_status();
            *state_slot(&fresh[i], opt->kind, f) = c;
        }
    }
    if (st == TG_OK) {
        for (int64_t i = 0; i < opt->n; i++) {
            state_clear(&opt->state[i]);
            opt->state[i] = fresh[i];
        }
        opt->h = h;
    } else {
        for (int64_t i = 0; i < opt->n; i++)
            state_clear(&fresh[i]);
    }
    free(fresh);
    free(src);
    return st;
}
