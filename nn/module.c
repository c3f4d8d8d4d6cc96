/* The module base: named parameters, buffers and children, qualified names, train/eval,
 * parameter collection, state dicts; and Sequential, the container every model starts from.
 * Module trees are a few levels deep, so walking them recursively is fine. */
#include "internal.h"
#include "../tensor/internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *name;
    tg_tensor *t;
} named_tensor;

struct tg_module {
    char *type;
    char *name; /* "" until a parent adopts it */
    bool training;
    tg_forward_fn forward;             /* one input, one output; or NULL */
    tg_forward_multi_fn forward_multi; /* several inputs or outputs; or NULL */
    void *config;
    named_tensor *params;
    int64_t n_params, cap_params;
    named_tensor *buffers;
    int64_t n_buffers, cap_buffers;
    tg_module **children;
    int64_t n_children, cap_children;
};

/* Sets a "NULL argument" error unless an earlier error explains the NULL; returns the status. */
static tg_status null_arg(const char *fn, const char *what)
{
    if (tg_last_status() != TG_OK)
        return tg_last_status();
    return tg_set_error(TG_ERR_ARG, "%s: %s is NULL", fn, what);
}

static char *str_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

tg_module *tg_module_new(const char *type, tg_forward_fn forward, const void *config,
                         size_t config_size)
{
    if (!type || !type[0]) {
        tg_set_error(TG_ERR_ARG, "tg_module_new: the type name is %s", type ? "empty" : "NULL");
        return NULL;
    }
    tg_module *m = calloc(1, sizeof *m);
    if (m) {
        m->type = str_dup(type);
        m->name = str_dup("");
        if (config_size)
            m->config = calloc(1, config_size);
    }
    if (!m || !m->type || !m->name || (config_size && !m->config)) {
        tg_module_free(m);
        tg_set_error(TG_ERR_NOMEM, "tg_module_new: out of memory for a %s module", type);
        return NULL;
    }
    if (config_size && config)
        memcpy(m->config, config, config_size);
    m->training = true;
    m->forward = forward;
    return m;
}

static void named_free(named_tensor *list, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        free(list[i].name);
        tg_tensor_release(list[i].t);
    }
    free(list);
}

void tg_module_free(tg_module *m)
{
    if (!m)
        return;
    named_free(m->params, m->n_params);
    named_free(m->buffers, m->n_buffers);
    for (int64_t i = 0; i < m->n_children; i++)
        tg_module_free(m->children[i]);
    free(m->children);
    free(m->config);
    free(m->type);
    free(m->name);
    free(m);
}

/* True when name is taken by a parameter, buffer or child of m: they share one namespace, as in
 * PyTorch, because they share the qualified names of a state dict. */
static bool name_taken(const tg_module *m, const char *name)
{
    for (int64_t i = 0; i < m->n_params; i++)
        if (strcmp(m->params[i].name, name) == 0)
            return true;
    for (int64_t i = 0; i < m->n_buffers; i++)
        if (strcmp(m->buffers[i].name, name) == 0)
            return true;
    for (int64_t i = 0; i < m->n_children; i++)
        if (strcmp(m->children[i]->name, name) == 0)
            return true;
    return false;
}

/* Checks the name of a new entry of m; fn names the public function. */
static tg_status name_check(const char *fn, const tg_module *m, const char *name)
{
    if (!name || !name[0] || strchr(name, '.'))
        return tg_set_error(TG_ERR_ARG,
                            "%s: name \"%s\" in a %s module: a name must be "
                            "non-empty and contain no '.'",
                            fn, name ? name : "(null)", m->type);
    if (name_taken(m, name))
        return tg_set_error(TG_ERR_ARG, "%s: a %s module already has an entry named \"%s\"", fn,
                            m->type, name);
    return TG_OK;
}

/* Adds name -> t to a list of m (params or buffers) after the checks; releases t on failure. */
static tg_status add_tensor(const char *fn, tg_module *m, named_tensor **list, int64_t *n,
                            int64_t *cap, const char *name, tg_tensor *t)
{
    tg_status st;
    if (!m || !t) {
        st = null_arg(fn, m ? "the tensor" : "the module");
        tg_tensor_release(t);
        return st;
    }
    if (t == TG_NONE) /* the shared "absent" marker: never a module's own tensor */
        return tg_set_error(TG_ERR_ARG, "%s: the tensor is TG_NONE", fn);
    if ((st = name_check(fn, m, name)) != TG_OK) {
        tg_tensor_release(t);
        return st;
    }
    if (t->node) {
        tg_tensor_release(t);
        return tg_set_error(TG_ERR_STATE,
                            "%s: \"%s\" is the result of an op, not a leaf; "
                            "give the module a tensor of its own (tg_tensor_clone)",
                            fn, name);
    }
    char *copy = str_dup(name);
    if (!copy || !tg_grow((void **)list, cap, *n + 1, sizeof(named_tensor))) {
        free(copy);
        tg_tensor_release(t);
        return tg_set_error(TG_ERR_NOMEM, "%s: out of memory adding \"%s\"", fn, name);
    }
    (*list)[(*n)++] = (named_tensor){.name = copy, .t = t};
    return TG_OK;
}

tg_status tg_module_add_param(tg_module *m, const char *name, tg_tensor *t)
{
    if (!m || !t)
        return add_tensor("tg_module_add_param", m, NULL, NULL, NULL, name, t);
    tg_status st =
        add_tensor("tg_module_add_param", m, &m->params, &m->n_params, &m->cap_params, name, t);
    if (st == TG_OK)
        st = tg_tensor_set_requires_grad(t, true); /* a leaf (checked above): cannot fail */
    return st;
}

tg_status tg_module_add_buffer(tg_module *m, const char *name, tg_tensor *t)
{
    if (!m || !t)
        return add_tensor("tg_module_add_buffer", m, NULL, NULL, NULL, name, t);
    return add_tensor("tg_module_add_buffer", m, &m->buffers, &m->n_buffers, &m->cap_buffers, name,
                      t);
}

tg_status tg_module_add_child(tg_module *m, const char *name, tg_module *child)
{
    const char *fn = "tg_module_add_child";
    tg_status st;
    if (!m || !child) {
        st = null_arg(fn, m ? "the child" : "the module");
        tg_module_free(child);
        return st;
    }
    if (child->name[0] || child == m) {
        /* Owned elsewhere already: freeing it here would pull it out from under its parent. */
        return tg_set_error(TG_ERR_ARG,
                            "%s: the %s module given as \"%s\" is already a child "
                            "(\"%s\") of another module",
                            fn, child->type, name ? name : "", child->name);
    }
    if ((st = name_check(fn, m, name)) != TG_OK) {
        tg_module_free(child);
        return st;
    }
    char *copy = str_dup(name);
    if (!copy ||
        !tg_grow((void **)&m->children, &m->cap_children, m->n_children + 1, sizeof(tg_module *))) {
        free(copy);
        tg_module_free(child);
        return tg_set_error(TG_ERR_NOMEM, "%s: out of memory adding \"%s\"", fn, name);
    }
    free(child->name);
    child->name = copy;
    m->children[m->n_children++] = child;
    return TG_OK;
}

tg_module *tg_module_new_multi(const char *type, tg_forward_multi_fn forward, const void *config,
                               size_t config_size)
{
    tg_module *m = tg_module_new(type, NULL, config, config_size);
    if (m)
        m->forward_multi = forward;
    return m;
}

/* Checks m and the n inputs of a forward call (fn names it): a NULL input keeps the error of
 * the call that returned it. TG_NONE passes (an absent optional input, such as attention's
 * mask) where the module takes several inputs; a one-input forward has no optional input. */
static tg_status forward_check(const char *fn, const tg_module *m, int64_t n_in,
                               tg_tensor *const *in)
{
    if (!m)
        return null_arg(fn, "the module");
    if (n_in < 1 || !in)
        return tg_set_error(TG_ERR_ARG, "%s: %s module \"%s\": %s", fn, m->type, m->name,
                            in ? "n_in < 1: a forward takes at least one input" : "in is NULL");
    for (int64_t i = 0; i < n_in; i++) {
        if (!in[i]) {
            if (tg_last_status() != TG_OK)
                return tg_last_status();
            return tg_set_error(TG_ERR_ARG, "%s: input %lld of the %s module \"%s\" is NULL", fn,
                                (long long)i, m->type, m->name);
        }
        if (in[i] == TG_NONE && !m->forward_multi)
            return tg_set_error(TG_ERR_ARG,
                                "%s: the input of the %s module \"%s\" is TG_NONE; it takes a "
                                "tensor",
                                fn, m->type, m->name);
    }
    if (!m->forward && !m->forward_multi)
        return tg_set_error(TG_ERR_STATE, "%s: the %s module \"%s\" has no forward", fn, m->type,
                            m->name);
    return TG_OK;
}

/* A forward that failed without saying why (a forward of the caller's that returned NULL, left
 * an output out or returned an error status without setting the error): say so, naming the
 * module. */
static tg_status silent_failure(const char *fn, const tg_module *m)
{
    if (tg_last_status() != TG_OK)
        return tg_last_status();
    return tg_set_error(TG_ERR_STATE,
                        "%s: the forward of the %s module \"%s\" failed without "
                        "setting an error",
                        fn, m->type, m->name);
}

/* tg_module_forward_multi, with fn naming the public function called. */
static tg_status forward_multi(const char *fn, tg_module *m, int64_t n_in, tg_tensor *const *in,
                               int64_t n_out, tg_tensor **out)
{
    if (!out || n_out < 1)
        return m ? tg_set_error(TG_ERR_ARG, "%s: %s module \"%s\": %s", fn, m->type, m->name,
                                out ? "n_out < 1: a forward gives at least one output"
                                    : "out is NULL")
                 : null_arg(fn, "the module");
    for (int64_t i = 0; i < n_out; i++)
        out[i] = NULL;
    tg_status st = forward_check(fn, m, n_in, in);
    if (st != TG_OK)
        return st;
    if (!m->forward_multi) {
        if (n_in != 1 || n_out != 1)
            return tg_set_error(TG_ERR_ARG,
                                "%s: the %s module \"%s\" takes one input and gives one output; "
                                "called with %lld inputs and %lld outputs",
                                fn, m->type, m->name, (long long)n_in, (long long)n_out);
        tg_tape_module_enter();
        out[0] = m->forward(m, in[0]);
        tg_tape_module_leave(out, 1);
        return out[0] ? TG_OK : silent_failure(fn, m);
    }
    tg_tape_module_enter();
    st = m->forward_multi(m, n_in, in, n_out, out);
    tg_tape_module_leave(out, n_out);
    for (int64_t i = 0; st == TG_OK && i < n_out; i++)
        if (!out[i])
            st = silent_failure(fn, m);
    if (st != TG_OK && tg_last_status() == TG_OK)
        silent_failure(fn, m); /* a failure status without a message: give it one */
    if (st != TG_OK)           /* the outputs made are the tape's: nothing to release */
        for (int64_t i = 0; i < n_out; i++)
            out[i] = NULL;
    return st;
}

tg_status tg_module_forward_multi(tg_module *m, int64_t n_in, tg_tensor *const *in, int64_t n_out,
                                  tg_tensor **out)
{
    return forward_multi("tg_module_forward_multi", m, n_in, in, n_out, out);
}

tg_tensor *tg_module_forward(tg_module *m, tg_tensor *x)
{
    tg_tensor *y;
    return forward_multi("tg_module_forward", m, 1, &x, 1, &y) == TG_OK ? y : NULL;
}

tg_tensor *tg_module_forward2(tg_module *m, tg_tensor *a, tg_tensor *b)
{
    tg_tensor *in[2] = {a, b}, *y;
    return forward_multi("tg_module_forward2", m, 2, in, 1, &y) == TG_OK ? y : NULL;
}

/* ---- accessors --------------------------------------------------------------------------- */

tg_forward_fn tg_nn_forward_of(const tg_module *m)
{
    return m ? m->forward : NULL;
}

const char *tg_module_type(const tg_module *m)
{
    return m ? m->type : "";
}

const char *tg_module_name(const tg_module *m)
{
    return m ? m->name : "";
}

void *tg_module_config(const tg_module *m)
{
    return m ? m->config : NULL;
}

bool tg_module_is_training(const tg_module *m)
{
    return m && m->training;
}

void tg_module_train(tg_module *m, bool training)
{
    if (!m)
        return;
    m->training = training;
    for (int64_t i = 0; i < m->n_children; i++)
        tg_module_train(m->children[i], training);
}

static tg_tensor *named_get(const named_tensor *list, int64_t n, const char *name)
{
    for (int64_t i = 0; name && i < n; i++)
        if (strcmp(list[i].name, name) == 0)
            return list[i].t;
    return NULL;
}

/* The name of entry i of one of m's lists (what: 'p'arameters, 'b'uffers, 'c'hildren). */
static const char *entry_name(const tg_module *m, char what, int64_t i)
{
    return what == 'p'   ? m->params[i].name
           : what == 'b' ? m->buffers[i].name
                         : m->children[i]->name;
}

/* The error of a lookup that found nothing: names the module, the name asked for and the names
 * m has of that kind, so that a misspelt "bais" reads as a typo and not as "no bias". */
static void not_found(const char *fn, const tg_module *m, char what, const char *name)
{
    const char *kind = what == 'p' ? "parameter" : what == 'b' ? "buffer" : "child";
    if (!m || !name) {
        null_arg(fn, m ? "the name" : "the module");
        return;
    }
    int64_t n = what == 'p' ? m->n_params : what == 'b' ? m->n_buffers : m->n_children;
    char names[400] = "";
    size_t len = 0;
    for (int64_t i = 0; i < n && len < sizeof names; i++) {
        int w = snprintf(names + len, sizeof names - len, "%s%s", i ? ", " : "",
                         entry_name(m, what, i));
        len = w < 0 ? sizeof names : len + (size_t)w;
    }
    if (len >= sizeof names) /* too many to list: end with a visible cut */
        memcpy(names + sizeof names - 5, " ...", 5);
    tg_set_error(TG_ERR_ARG, "%s: %s has no %s \"%s\" (it has%s%s)", fn, m->type, kind, name,
                 n ? ": " : " none", names);
}

tg_tensor *tg_module_param(const tg_module *m, const char *name)
{
    tg_tensor *t = m ? named_get(m->params, m->n_params, name) : NULL;
    if (!t)
        not_found("tg_module_param", m, 'p', name);
    return t;
}

bool tg_module_has_param(const tg_module *m, const char *name)
{
    return m && named_get(m->params, m->n_params, name);
}

tg_tensor *tg_module_buffer(const tg_module *m, const char *name)
{
    tg_tensor *t = m ? named_get(m->buffers, m->n_buffers, name) : NULL;
    if (!t)
        not_found("tg_module_buffer", m, 'b', name);
    return t;
}

tg_module *tg_module_child(const tg_module *m, const char *name)
{
    for (int64_t i = 0; m && name && i < m->n_children; i++)
        if (strcmp(m->children[i]->name, name) == 0)
            return m->children[i];
    not_found("tg_module_child", m, 'c', name);
    return NULL;
}

int64_t tg_module_num_children(const tg_module *m)
{
    return m ? m->n_children : 0;
}

tg_module *tg_module_child_at(const tg_module *m, int64_t i)
{
    return m && i >= 0 && i < m->n_children ? m->children[i] : NULL;
}

/* ---- walking the tree -------------------------------------------------------------------- */

/* Qualified name and tensor of one parameter or buffer. */
typedef struct {
    char *name;
    tg_tensor *t;
} entry;

typedef struct {
    entry *e;
    int64_t n, cap;
} entry_list;

static void entries_free(entry_list *l)
{
    for (int64_t i = 0; i < l->n; i++)
        free(l->e[i].name);
    free(l->e);
    *l = (entry_list){0};
}

/* "path.name", or "name" when path is empty; NULL when out of memory. */
static char *join(const char *path, const char *name)
{
    size_t a = strlen(path), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (!s)
        return NULL;
    if (a) {
        memcpy(s, path, a);
        s[a++] = '.';
    }
    memcpy(s + a, name, b + 1);
    return s;
}

static bool entries_push(entry_list *l, const char *path, const named_tensor *nt)
{
    char *name = join(path, nt->name);
    if (!name || !tg_grow((void **)&l->e, &l->cap, l->n + 1, sizeof(entry))) {
        free(name);
        return false;
    }
    l->e[l->n++] = (entry){.name = name, .t = nt->t};
    return true;
}

/* Appends m's parameters (and buffers, when buffers is true) under path, in state-dict order:
 * a module's own parameters, its own buffers, then each child's. false when out of memory. */
static bool collect(const tg_module *m, const char *path, bool buffers, entry_list *out)
{
    for (int64_t i = 0; i < m->n_params; i++)
        if (!entries_push(out, path, &m->params[i]))
            return false;
    for (int64_t i = 0; buffers && i < m->n_buffers; i++)
        if (!entries_push(out, path, &m->buffers[i]))
            return false;
    for (int64_t i = 0; i < m->n_children; i++) {
        char *child_path = join(path, m->children[i]->name);
        bool ok = child_path && collect(m->children[i], child_path, buffers, out);
        free(child_path);
        if (!ok)
            return false;
    }
    return true;
}

/* Collects with a prefix (NULL or "" for none); false with an error set (fn) on failure. */
static bool collect_all(const char *fn, const tg_module *m, const char *prefix, bool buffers,
                        entry_list *out)
{
    *out = (entry_list){0};
    if (collect(m, prefix ? prefix : "", buffers, out))
        return true;
    entries_free(out);
    tg_set_error(TG_ERR_NOMEM, "%s: out of memory listing the tensors of a %s module", fn, m->type);
    return false;
}

static int64_t count_params(const tg_module *m)
{
    int64_t n = m->n_params;
    for (int64_t i = 0; i < m->n_children; i++)
        n += count_params(m->children[i]);
    return n;
}

static void fill_params(const tg_module *m, tg_tensor **out, int64_t *k)
{
    for (int64_t i = 0; i < m->n_params; i++)
        out[(*k)++] = m->params[i].t;
    for (int64_t i = 0; i < m->n_children; i++)
        fill_params(m->children[i], out, k);
}

tg_tensor **tg_module_parameters(const tg_module *m, int64_t *n)
{
    if (n)
        *n = 0;
    if (!m || !n) {
        null_arg("tg_module_parameters", m ? "n" : "the module");
        return NULL;
    }
    int64_t count = count_params(m), k = 0;
    if (count == 0)
        return NULL;
    tg_tensor **out = malloc((size_t)count * sizeof *out);
    if (!out) {
        tg_set_error(TG_ERR_NOMEM, "tg_module_parameters: out of memory for %lld pointers",
                     (long long)count);
        return NULL;
    }
    fill_params(m, out, &k);
    *n = count;
    return out;
}

char **tg_module_parameter_names(const tg_module *m, const char *prefix, int64_t *n)
{
    const char *fn = "tg_module_parameter_names";
    if (n)
        *n = 0;
    if (!m || !n) {
        null_arg(fn, m ? "n" : "the module");
        return NULL;
    }
    entry_list l;
    if (!collect_all(fn, m, prefix, false, &l))
        return NULL;
    if (l.n == 0) {
        entries_free(&l);
        return NULL;
    }
    /* One block: the pointer array, then the strings it points to. */
    size_t bytes = (size_t)l.n * sizeof(char *);
    for (int64_t i = 0; i < l.n; i++)
        bytes += strlen(l.e[i].name) + 1;
    char **names = malloc(bytes);
    if (!names) {
        entries_free(&l);
        tg_set_error(TG_ERR_NOMEM, "%s: out of memory", fn);
        return NULL;
    }
    char *s = (char *)(names + l.n);
    for (int64_t i = 0; i < l.n; i++) {
        size_t len = strlen(l.e[i].name) + 1;
        memcpy(s, l.e[i].name, len);
        names[i] = s;
        s += len;
    }
    *n = l.n;
    entries_free(&l);
    return names;
}

int64_t tg_module_num_parameters(const tg_module *m)
{
    if (!m)
        return 0;
    int64_t total = 0;
    for (int64_t i = 0; i < m->n_params; i++)
        total += m->params[i].t->numel;
    for (int64_t i = 0; i < m->n_children; i++)
        total += tg_module_num_parameters(m->children[i]);
    return total;
}

void tg_module_zero_grad(tg_module *m)
{
    if (!m)
        return;
    for (int64_t i = 0; i < m->n_params; i++)
        tg_tensor_zero_grad(m->params[i].t);
    for (int64_t i = 0; i < m->n_children; i++)
        tg_module_zero_grad(m->children[i]);
}

/* ---- state dicts ------------------------------------------------------------------------- */

tg_status tg_module_state_dict(const tg_module *m, const char *prefix, tg_state_dict *sd)
{
    const char *fn = "tg_module_state_dict";
    if (!m || !sd)
        return null_arg(fn, m ? "the state dict" : "the module");
    entry_list l;
    if (!collect_all(fn, m, prefix, true, &l))
        return tg_last_status();
    tg_status st = TG_OK;
    for (int64_t i = 0; i < l.n && st == TG_OK; i++)
        st = tg_state_dict_put(sd, l.e[i].name, l.e[i].t);
    entries_free(&l);
    return st;
}

/* True when name lies under prefix: "prefix.<rest>", or anything for an empty prefix. */
static bool under_prefix(const char *name, const char *prefix)
{
    size_t n = strlen(prefix);
    return n == 0 || (strncmp(name, prefix, n) == 0 && name[n] == '.');
}

/* Every value is finite (an Inf weight trains to NaN); BatchNorm's buffers, by the names
 * layers.c gives them, have their own ranges: a variance >= 0 (a negative or NaN one normalises
 * to NaN), a count that is a whole number >= 0, exact in a float up to 2^24. */
int64_t tg_module_bad_value(const char *name, const tg_tensor *src, const char **need)
{
    const char *last = strrchr(name, '.');
    last = last ? last + 1 : name;
    const bool var = strcmp(last, "running_var") == 0;
    const bool count = strcmp(last, "num_batches_tracked") == 0;
    *need = count ? "a whole number >= 0" : var ? "a finite variance >= 0" : "a finite value";
    for (int64_t j = 0; j < src->numel; j++) {
        const float x = src->data[j];
        if (count ? !(x >= 0.0f && x <= 16777216.0f && x == floorf(x))
                  : !isfinite(x) || (var && x < 0.0f))
            return j;
    }
    return -1;
}

tg_status tg_module_load_state_dict(tg_module *m, const char *prefix, const tg_state_dict *sd)
{
    const char *fn = "tg_module_load_state_dict";
    if (!m || !sd)
        return null_arg(fn, m ? "the state dict" : "the module");
    if (!prefix)
        prefix = "";
    entry_list l;
    if (!collect_all(fn, m, prefix, true, &l))
        return tg_last_status();

    /* Validate everything first, remembering the first problem of each kind. */
    int64_t n_missing = 0, n_unexpected = 0, n_shape = 0, bad_at = -1;
    const char *missing = NULL, *unexpected = NULL, *bad_shape = NULL, *bad = NULL, *need = "";
    float bad_x = 0.0f;
    char s_sd[160] = "", s_mod[160] = "";
    for (int64_t i = 0; i < l.n; i++) {
        const tg_tensor *src = tg_state_dict_get(sd, l.e[i].name);
        if (!src) {
            if (!n_missing++)
                missing = l.e[i].name;
        } else if (!tg_shape_equal(src, l.e[i].t)) {
            if (!n_shape++) {
                bad_shape = l.e[i].name;
                tg_shape_str(src->ndim, src->shape, s_sd, sizeof s_sd);
                tg_shape_str(l.e[i].t->ndim, l.e[i].t->shape, s_mod, sizeof s_mod);
            }
        } else if (!bad && (bad_at = tg_module_bad_value(l.e[i].name, src, &need)) >= 0) {
            bad = l.e[i].name;
            bad_x = src->data[bad_at];
        }
    }
    for (int64_t j = 0; j < tg_state_dict_size(sd); j++) {
        const char *name = tg_state_dict_name(sd, j);
        if (!under_prefix(name, prefix))
            continue;
        bool known = false;
        for (int64_t i = 0; i < l.n && !known; i++)
            known = strcmp(l.e[i].name, name) == 0;
        if (!known && !n_unexpected++)
            unexpected = name;
    }

    tg_status st = TG_OK;
    if (n_missing || n_unexpected || n_shape) {
        char msg[900];
        int len = snprintf(msg, sizeof msg,
                           "%s: the state dict does not fit the %s module "
                           "(prefix \"%s\"):",
                           fn, m->type, prefix);
        if (n_missing && len > 0 && (size_t)len < sizeof msg)
            len += snprintf(msg + len, sizeof msg - (size_t)len, " %lld missing (first \"%s\");",
                            (long long)n_missing, missing);
        if (n_unexpected && len > 0 && (size_t)len < sizeof msg)
            len += snprintf(msg + len, sizeof msg - (size_t)len,
                            " %lld unexpected (first "
                            "\"%s\");",
                            (long long)n_unexpected, unexpected);
        if (n_shape && len > 0 && (size_t)len < sizeof msg)
            snprintf(msg + len, sizeof msg - (size_t)len,
                     " %lld of the wrong shape (first "
                     "\"%s\": %s in the state dict, %s in the module);",
                     (long long)n_shape, bad_shape, s_sd, s_mod);
        st = tg_set_error(n_missing || n_unexpected ? TG_ERR_ARG : TG_ERR_SHAPE, "%s", msg);
    } else if (bad) {
        st = tg_set_error(TG_ERR_ARG, "%s: \"%s\" holds %g at index %lld: need %s", fn, bad,
                          (double)bad_x, (long long)bad_at, need);
    } else {
        /* Every copy now has a matching source of the same numel, so none can fail. */
        for (int64_t i = 0; i < l.n; i++)
            tg_tensor_copy_(l.e[i].t, tg_state_dict_get(sd, l.e[i].name));
    }
    entries_free(&l);
    return st;
}

/* ---- initialisation helper for the layers ------------------------------------------------ */

tg_tensor *tg_nn_uniform_param(const char *fn, int ndim, const int64_t *shape, float bound,
                               tg_rng *rng)
{
    if (!rng) {
        tg_set_error(TG_ERR_ARG, "%s: rng is NULL; layers draw their initial weights from it", fn);
        return NULL;
    }
    tg_tensor *t = tg_tensor_new(ndim, shape);
    if (t)
        tg_tensor_uniform_(t, rng, -bound, bound);
    return t;
}

tg_tensor *tg_nn_optional_param(const tg_module *m, const char *name)
{
    return tg_module_has_param(m, name) ? tg_module_param(m, name) : TG_NONE;
}

/* ---- Sequential -------------------------------------------------------------------------- */

static tg_tensor *sequential_forward(tg_module *m, tg_tensor *x)
{
    /* A failure returns NULL, which every later forward passes on with the first error. A
     * BatchNorm followed by ReLU, Tanh or LeakyReLU runs as one op, and with a MaxPool2d(2, 2)
     * after those as one op too (the same bits, one or two tensors less kept for the backward:
     * tg_batch_norm_act, tg_batch_norm_act_pool2d). */
    for (int64_t i = 0; i < m->n_children; i++) {
        int used = 0;
        tg_tensor *y = tg_nn_batch_norm_act_forward(m->children + i, m->n_children - i, x, &used);
        x = used ? y : tg_module_forward(m->children[i], x);
        i += used ? used - 1 : 0;
    }
    return x;
}

static tg_module *sequential_empty(void)
{
    return tg_module_new("Sequential", sequential_forward, NULL, 0);
}

tg_module *tg_nn_sequential_add(tg_module *seq, const char *name, tg_module *module)
{
    const char *fn = "tg_nn_sequential_add";
    if (!seq || !module) {
        null_arg(fn, seq ? "the module" : "the Sequential");
        tg_module_free(seq);
        tg_module_free(module);
        return NULL;
    }
    if (seq->forward != sequential_forward) {
        tg_set_error(TG_ERR_ARG, "%s: the container is a %s module, not a Sequential", fn,
                     seq->type);
        tg_module_free(seq);
        tg_module_free(module);
        return NULL;
    }
    char index[32];
    if (!name) {
        snprintf(index, sizeof index, "%lld", (long long)seq->n_children);
        name = index;
    }
    if (tg_module_add_child(seq, name, module) != TG_OK) {
        tg_module_free(seq);
        return NULL;
    }
    return seq;
}

tg_module *tg_nn_sequential(int64_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    tg_module *seq = n >= 0 ? sequential_empty() : NULL;
    if (n < 0)
        tg_set_error(TG_ERR_ARG, "tg_nn_sequential: n = %lld modules", (long long)n);
    for (int64_t i = 0; i < n; i++)
        seq = tg_nn_sequential_add(seq, NULL, va_arg(ap, tg_module *));
    va_end(ap);
    return seq;
}
