/* Gradients with respect to chosen inputs (tg_grad, torch.autograd.grad) and gradients with a
 * history (create_graph), for penalties on gradients (WGAN-GP) and Hessian-vector products.
 *
 * Two walks share the tape's newest-first order (docs/design.md, section 4b):
 * - without create_graph, the first-order walk of tape.c, targeted: a marking pass first sets
 *   each node's need_in (which inputs lead to a requested input), and the walk gives gradients
 *   only to those, so no other leaf's .grad is touched and no unneeded kernel runs;
 * - with create_graph, the graph walk below: each node's op computes its inputs' gradients with
 *   recorded ops (its backward_graph rule) from the output's gradient, which is itself a
 *   tape-owned tensor with a history; contributions from several consumers are summed with
 *   tg_add. The new nodes go to the innermost tape, after every node the walk visits. */
#include "internal.h"

#include <string.h>

/* ---- marking: which nodes lead to a requested input ---------------------------------------- */

static bool is_target(const tg_tensor *x, tg_tensor *const *inputs, int n_inputs)
{
    for (int k = 0; k < n_inputs; k++)
        if (inputs[k] == x)
            return true;
    return false;
}

/* Oldest node first over every open tape (outermost first): an input is needed when it is a
 * requested input or the output of a node that needs one of its own inputs. inputs NULL marks
 * every input that requires grad (a full backward). */
static void mark_tape(tg_tape *t, tg_tensor *const *inputs, int n_inputs)
{
    if (!t)
        return;
    mark_tape(t->outer, inputs, n_inputs); /* outer tapes hold the older nodes */
    for (int64_t i = 0; i < t->n_nodes; i++) {
        tg_node *n = t->nodes[i];
        n->need_in = 0;
        for (int k = 0; k < n->n_in; k++) {
            const tg_tensor *x = n->in[k];
            bool need = inputs ? is_target(x, inputs, n_inputs) || (x->node && x->node->need_in)
                               : x->requires_grad;
            n->need_in |= (uint32_t)(need && x->requires_grad) << k;
        }
    }
}

static void mark_needs(tg_tensor *const *inputs, int n_inputs)
{
    mark_tape(tg_tape_innermost(), inputs, n_inputs);
}

/* ---- the graph walk ------------------------------------------------------------------------ */

/* Gradients of leaves met by the graph walk, in the order met. */
typedef struct {
    tg_tensor **leaf, **grad;
    int64_t n, cap;
} leaf_grads;

static tg_tensor **leaf_slot(leaf_grads *lg, tg_tensor *x, const char *fn)
{
    for (int64_t k = 0; k < lg->n; k++)
        if (lg->leaf[k] == x)
            return &lg->grad[k];
    int64_t cap = lg->cap;
    if (!tg_grow((void **)&lg->leaf, &cap, lg->n + 1, sizeof(tg_tensor *)) ||
        !tg_grow((void **)&lg->grad, &lg->cap, lg->n + 1, sizeof(tg_tensor *))) {
        tg_set_error(TG_ERR_NOMEM, "%s: out of memory", fn);
        return NULL;
    }
    lg->leaf[lg->n] = x;
    lg->grad[lg->n] = NULL;
    return &lg->grad[lg->n++];
}

/* *slot += g, with a recorded add when *slot has a value already. */
static tg_status accumulate(tg_tensor **slot, tg_tensor *g)
{
    tg_tensor *sum = *slot ? tg_add(*slot, g) : g;
    if (!sum)
        return tg_last_status();
    *slot = sum;
    return TG_OK;
}

static tg_status graph_node(tg_node *n, leaf_grads *lg, const char *fn)
{
    if (!n->op->backward_graph)
        return tg_set_error(TG_ERR_STATE,
                            "%s: create_graph: the backward of tg_%s has no second order (%s); "
                            "its gradient cannot be differentiated again",
                            fn, n->op->name,
                            n->op->no_graph_reason ? n->op->no_graph_reason : "not written yet");
    tg_status st = tg_node_versions(n, fn);
    if (st != TG_OK)
        return st;
    tg_tensor *gin[TG_MAX_INPUTS] = {NULL};
    st = n->op->backward_graph(n, n->gout, n->need_in, gin);
    if (st != TG_OK)
        return tg_last_status() != TG_OK
                   ? tg_last_status()
                   : tg_set_error(st, "%s: create_graph: the backward of tg_%s failed", fn,
                                  n->op->name);
    const bool trap = tg_finite_trap();
    for (int i = 0; i < n->n_in; i++) {
        tg_tensor *g = gin[i];
        if (!g || !tg_graph_needs(n->need_in, i))
            continue;
        TG_ASSERT(tg_shape_equal(g, n->in[i]));
        if (trap && (st = tg_finite_grad(fn, n, i, g)) != TG_OK)
            return st;
        tg_tensor *x = n->in[i];
        tg_tensor **slot = x->node ? &x->node->gout : leaf_slot(lg, x, fn);
        if (!slot || (st = accumulate(slot, g)) != TG_OK)
            return tg_last_status();
    }
    return TG_OK;
}

/* Visits the nodes that existed when it began (new ones are appended to the innermost tape),
 * newest first, that have an output gradient and need an input. */
static tg_status graph_walk(leaf_grads *lg, const char *fn)
{
    tg_tape *inner = tg_tape_innermost();
    const int64_t inner_end = inner->n_nodes;
    for (tg_tape *t = inner; t; t = t->outer)
        for (int64_t i = (t == inner ? inner_end : t->n_nodes) - 1; i >= 0; i--) {
            tg_node *n = t->nodes[i];
            if (!n->gout || !n->need_in)
                continue;
            tg_status st = graph_node(n, lg, fn);
            if (st != TG_OK)
                return st;
        }
    return TG_OK;
}

static void clear_gouts(void)
{
    for (tg_tape *t = tg_tape_innermost(); t; t = t->outer)
        for (int64_t i = 0; i < t->n_nodes; i++)
            t->nodes[i]->gout = NULL;
}

/* ---- shared checks ------------------------------------------------------------------------- */

/* The gradient that seeds output y: dy, or ones for a one-element y (a new tape-owned tensor),
 * or NULL with the error set. */
static tg_tensor *seed_for(tg_tensor *y, tg_tensor *dy, int k, const char *fn)
{
    char a[160], b[160];
    if (!y) {
        if (tg_last_status() == TG_OK)
            tg_set_error(TG_ERR_ARG, "%s: output %d is NULL", fn, k);
        return NULL;
    }
    if (y == TG_NONE || dy == TG_NONE) {
        tg_none_refused(fn, y == TG_NONE ? "an output" : "a grad_output");
        return NULL;
    }
    if (!y->node) {
        tg_set_error(TG_ERR_STATE,
                     "%s: output %d has no recorded history: no input requires grad, it was "
                     "computed on a TG_NO_GRAD tape, or its tape has ended",
                     fn, k);
        return NULL;
    }
    if (!tg_tape_on_this_thread(y->node->tape)) {
        tg_set_error(TG_ERR_STATE,
                     "%s: output %d was recorded on a tape that belongs to another thread "
                     "(tapes are per-thread)",
                     fn, k);
        return NULL;
    }
    if (!dy) {
        if (y->numel != 1) {
            tg_set_error(TG_ERR_SHAPE,
                         "%s: output %d has shape %s; a gradient can be implied (ones) only for a "
                         "one-element output: pass its grad_output",
                         fn, k, TG_SHAPE_STR(y, a));
            return NULL;
        }
        return tg_ones(y->ndim, y->shape);
    }
    if (!tg_shape_equal(y, dy)) {
        tg_set_error(TG_ERR_SHAPE, "%s: output %d %s and its grad_output %s differ in shape", fn, k,
                     TG_SHAPE_STR(y, a), TG_SHAPE_STR(dy, b));
        return NULL;
    }
    return dy;
}

/* A graph backward records ops: the innermost tape must be a grad tape. */
static tg_status graph_tape_check(const char *fn)
{
    tg_tape *t = tg_tape_innermost();
    if (!t)
        return tg_set_error(TG_ERR_STATE, "%s: no open tape", fn);
    if (t->mode != TG_GRAD)
        return tg_set_error(TG_ERR_STATE,
                            "%s: create_graph records the gradients' ops, but the innermost "
                            "tape is TG_NO_GRAD",
                            fn);
    return TG_OK;
}

/* ---- tg_grad ------------------------------------------------------------------------------ */

static tg_status check_inputs(tg_tensor *const *inputs, int n_inputs, tg_tensor **grads)
{
    if (!inputs || !grads || n_inputs < 1)
        return tg_set_error(TG_ERR_ARG, "tg_grad: %s",
                            !inputs  ? "inputs is NULL"
                            : !grads ? "grads is NULL"
                                     : "n_inputs must be at least 1");
    for (int k = 0; k < n_inputs; k++) /* all of them first: a failure leaves each NULL */
        grads[k] = NULL;
    for (int k = 0; k < n_inputs; k++) {
        if (!inputs[k])
            return tg_last_status() ? tg_last_status()
                                    : tg_set_error(TG_ERR_ARG, "tg_grad: input %d is NULL", k);
        if (inputs[k] == TG_NONE)
            return tg_none_refused("tg_grad", "an input");
        if (!inputs[k]->requires_grad)
            return tg_set_error(TG_ERR_ARG,
                                "tg_grad: input %d does not require grad (make it a leaf with "
                                "tg_tensor_set_requires_grad, or the result of an op on one)",
                                k);
    }
    return TG_OK;
}

/* Gradients without a history: the targeted first-order walk. Leaf inputs lend their .grad
 * slot for the walk (their own gradient is put back untouched); results are copies owned by
 * the tape. */
static tg_status grad_values(tg_tensor *const *outputs, tg_tensor *const *seeds, int n_outputs,
                             tg_tensor *const *inputs, int n_inputs, tg_tensor **grads)
{
    tg_tensor *saved[64];
    TG_ASSERT(n_inputs <= 64);
    for (int k = 0; k < n_inputs; k++) {
        saved[k] = inputs[k]->node ? NULL : inputs[k]->grad;
        if (!inputs[k]->node)
            inputs[k]->grad = NULL;
    }
    tg_status st = TG_OK;
    for (int j = 0; j < n_outputs && st == TG_OK; j++) {
        tg_tensor *y = outputs[j];
        if (!y->grad) {
            y->grad = tg_tensor_clone(seeds[j]);
            if (!y->grad)
                st = tg_last_status();
        } else if (y->grad->numel) {
            for (int64_t e = 0; e < y->numel; e++)
                y->grad->data[e] += seeds[j]->data[e];
        }
    }
    if (st == TG_OK)
        st = tg_backward_walk(true, inputs, n_inputs);
    for (int k = 0; k < n_inputs && st == TG_OK; k++) {
        tg_tensor *g = inputs[k]->grad;
        if (g && !(grads[k] = tg_tape_adopt(tg_tensor_clone(g), "grad")))
            st = tg_last_status();
    }
    /* Newest first: a leaf listed twice saved its own gradient at its first entry. */
    for (int k = n_inputs - 1; k >= 0; k--)
        if (!inputs[k]->node) {
            tg_tensor_release(inputs[k]->grad);
            inputs[k]->grad = saved[k];
        }
    tg_free_intermediate_grads();
    return st;
}

static tg_status grad_graph(tg_tensor *const *outputs, tg_tensor *const *seeds, int n_outputs,
                            tg_tensor *const *inputs, int n_inputs, tg_tensor **grads)
{
    leaf_grads lg = {0};
    tg_status st = graph_tape_check("tg_grad");
    for (int j = 0; j < n_outputs && st == TG_OK; j++)
        st = accumulate(&outputs[j]->node->gout, seeds[j]);
    if (st == TG_OK)
        st = graph_walk(&lg, "tg_grad");
    for (int k = 0; k < n_inputs && st == TG_OK; k++) {
        tg_tensor *x = inputs[k];
        tg_tensor **slot = x->node ? &x->node->gout : leaf_slot(&lg, x, "tg_grad");
        if (!slot)
            st = tg_last_status();
        else
            grads[k] = *slot;
        /* An output that is also an input would hand back the caller's grad_output itself:
         * a recorded copy keeps the promise of a new tape-owned tensor. */
        for (int j = 0; j < n_outputs && grads[k]; j++)
            if (grads[k] == seeds[j] && !(grads[k] = tg_add_scalar(seeds[j], 0.0f)))
                st = tg_last_status();
    }
    clear_gouts();
    free(lg.leaf);
    free(lg.grad);
    return st;
}

tg_status tg_grad(tg_tensor *const *outputs, int n_outputs, tg_tensor *const *inputs, int n_inputs,
                  tg_tensor *const *grad_outputs, bool create_graph, tg_tensor **grads)
{
    if (!outputs || n_outputs < 1 || n_outputs > 64 || n_inputs > 64)
        return tg_set_error(TG_ERR_ARG, "tg_grad: %s (n_outputs %d, n_inputs %d; each 1 to 64)",
                            outputs ? "bad count" : "outputs is NULL", n_outputs, n_inputs);
    tg_status st = check_inputs(inputs, n_inputs, grads);
    if (st != TG_OK)
        return st;
    tg_tensor *seeds[64];
    for (int j = 0; j < n_outputs; j++) {
        seeds[j] = seed_for(outputs[j], grad_outputs ? grad_outputs[j] : NULL, j, "tg_grad");
        if (!seeds[j])
            return tg_last_status();
    }
    mark_needs(inputs, n_inputs);
    st = create_graph ? grad_graph(outputs, seeds, n_outputs, inputs, n_inputs, grads)
                      : grad_values(outputs, seeds, n_outputs, inputs, n_inputs, grads);
    for (int k = 0; k < n_inputs && st == TG_OK; k++)
        if (!grads[k])
            st = tg_set_error(TG_ERR_ARG,
                              "tg_grad: input %d is not used in computing the outputs (its "
                              "gradient would be zero everywhere)",
                              k);
    if (st != TG_OK)
        for (int k = 0; k < n_inputs; k++)
            grads[k] = NULL;
    return st;
}

/* ---- tg_backward_ex ------------------------------------------------------------------------ */

tg_status tg_backward_ex(tg_tensor *y, const tg_tensor *dy, bool create_graph)
{
    if (!create_graph) {
        if (!dy)
            return tg_backward(y);
        return tg_backward_grad(y, dy);
    }
    tg_tensor *seed = seed_for(y, (tg_tensor *)dy, 0, "tg_backward_ex");
    if (!seed)
        return tg_last_status();
    tg_status st = graph_tape_check("tg_backward_ex");
    if (st != TG_OK)
        return st;
    mark_needs(NULL, 0);
    leaf_grads lg = {0};
    st = accumulate(&y->node->gout, seed);
    if (st == TG_OK)
        st = graph_walk(&lg, "tg_backward_ex");
    /* Each leaf's .grad becomes (its gradient so far +) the new one, a tensor with a history
     * that the leaf holds a reference to; a later first-order backward accumulates into a copy
     * (tape.c, ensure_input_grads), never into that history. A gradient without a history is
     * dy itself, handed through by identities (eval-mode dropout): the leaf keeps a copy, so
     * that no backward ever accumulates into the caller's tensor, and a leaf given as its own
     * dy (or two leaves as each other's) does not hold itself, a cycle no tape end breaks. */
    for (int64_t k = 0; k < lg.n && st == TG_OK; k++) {
        tg_tensor *x = lg.leaf[k], *g = lg.grad[k];
        if (x->grad)
            g = tg_tensor_retain(tg_add(x->grad, g));
        else
            g = g->node ? tg_tensor_retain(g) : tg_tensor_clone(g);
        if (!g) {
            st = tg_last_status();
            break;
        }
        tg_tensor_release(x->grad);
        x->grad = g;
    }
    clear_gouts();
    free(lg.leaf);
    free(lg.grad);
    return st;
}

/* ---- helpers for the rules ----------------------------------------------------------------- */

tg_tensor *tg_graph_sum_to(tg_tensor *g, int ndim, const int64_t *shape)
{
    if (!g)
        return NULL;
    if (g->ndim == ndim && !memcmp(g->shape, shape, (size_t)ndim * sizeof(int64_t)))
        return g;
    TG_ASSERT(g->ndim >= ndim);
    const int lead = g->ndim - ndim;
    tg_tensor *s = g;
    /* Axes broadcast from size 1 first (keepdim, so positions stay), then the leading ones. */
    for (int a = 0; a < ndim && s; a++)
        if (shape[a] == 1 && g->shape[lead + a] != 1)
            s = tg_sum_axis(s, lead + a, true);
    for (int a = 0; a < lead && s; a++)
        s = tg_sum_axis(s, 0, false);
    return s && (s->ndim != ndim || memcmp(s->shape, shape, (size_t)ndim * sizeof(int64_t)))
               ? tg_reshape(s, ndim, shape)
               : s;
}
