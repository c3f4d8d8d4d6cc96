/* The tape: ownership of op results, recording, and backward.
 *
 * A tape owns every tensor computed while it is the innermost open tape, and (on a grad tape)
 * the node of every op that had an input requiring grad. Nodes are kept in creation order,
 * which is a topological order, so backward is one newest-first walk with no graph search and
 * no recursion. Nested tapes form a thread-local stack: while an inner tape is open nothing is
 * added to the outer ones, so walking the stack innermost-first keeps the order. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static _Thread_local tg_tape *innermost;
/* How many module forwards are running on this thread (tg_tape_module_enter). */
static _Thread_local int module_depth;

tg_tape *tg_tape_innermost(void)
{
    return innermost;
}

/* True when tape is open on this thread. A tape lives on the stack of the thread that began it
 * and nothing else may use it: another thread's backward would walk its own stack, compute
 * nothing and leave the loss's gradient behind, and ending it would corrupt both stacks. Only
 * compares addresses, so a tape that has ended (freed) is safely "not here" too. */
static bool on_this_thread(const tg_tape *tape)
{
    for (const tg_tape *t = innermost; t; t = t->outer)
        if (t == tape)
            return true;
    return false;
}

bool tg_tape_on_this_thread(const tg_tape *tape)
{
    return on_this_thread(tape);
}

/* TG_CHECK_FINITE=1 in the environment: trap the first NaN or Inf an op produces. */
static int check_finite = -1;

bool tg_finite_trap(void)
{
    if (check_finite < 0) {
        const char *v = getenv("TG_CHECK_FINITE");
        check_finite = v && v[0] && strcmp(v, "0") != 0;
    }
    return check_finite;
}

void tg_set_check_finite(bool on)
{
    check_finite = on;
}

/* Index of the first non-finite value of t, or -1. */
int64_t tg_first_non_finite(const tg_tensor *t)
{
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(t->data[i]))
            return i;
    return -1;
}

tg_tape *tg_tape_begin(tg_grad_mode mode)
{
    if (mode != TG_GRAD && mode != TG_NO_GRAD) {
        tg_set_error(TG_ERR_ARG, "tg_tape_begin: mode %d is neither TG_GRAD nor TG_NO_GRAD",
                     (int)mode);
        return NULL;
    }
    tg_tape *t = calloc(1, sizeof *t);
    if (!t) {
        tg_set_error(TG_ERR_NOMEM, "tg_tape_begin: out of memory");
        return NULL;
    }
    t->mode = mode;
    t->outer = innermost;
    innermost = t;
    return t;
}

bool tg_grad_enabled(void)
{
    return innermost && innermost->mode == TG_GRAD;
}

static void node_free(tg_node *n)
{
    for (int i = 0; i < n->n_in; i++)
        tg_unhold(n->in[i]);
    if (n->n_in && n->index)
        tg_index_unhold(n->index); /* held with the inputs */
    tg_free(n->scratch, n->scratch_bytes);
    free(n);
    atomic_fetch_sub(&tg_live_nodes, 1);
}

tg_status tg_tape_end(tg_tape *tape)
{
    if (!tape)
        return tg_set_error(TG_ERR_ARG, "tg_tape_end: tape is NULL");
    if (!on_this_thread(tape))
        return tg_set_error(TG_ERR_STATE,
                            "tg_tape_end: this tape is not open on this thread: it belongs to "
                            "another thread (tapes are per-thread; end it on the thread that "
                            "began it), or it has ended already");
    if (tape != innermost)
        return tg_set_error(TG_ERR_STATE,
                            "tg_tape_end: this tape is not the innermost open "
                            "one; end the tapes in the reverse order of tg_tape_begin");
    /* Nodes first: they borrow their outputs, which the owned list still holds. A result the
     * user retained survives as a plain constant tensor, cut from the freed graph. */
    for (int64_t i = tape->n_nodes - 1; i >= 0; i--) {
        tg_node *n = tape->nodes[i];
        n->out->node = NULL;
        n->out->requires_grad = false;
        tg_tensor_release(n->out->grad);
        n->out->grad = NULL;
        node_free(n);
    }
    for (int64_t i = 0; i < tape->n_owned; i++) {
        tg_unhold(tape->owned[i]);
    }
    for (int64_t i = 0; i < tape->n_owned_idx; i++) {
        tg_index_unhold(tape->owned_idx[i]);
    }
    innermost = tape->outer;
    free(tape->owned_idx);
    free(tape->nodes);
    free(tape->owned);
    free(tape);
    return TG_OK;
}

/* Room for one more owned tensor and one more node, taken before an op runs so that handing
 * its result to the tape cannot fail half-way. */
static bool tape_reserve(tg_tape *tape, const char *opname)
{
    if (tg_grow((void **)&tape->owned, &tape->cap_owned, tape->n_owned + 1, sizeof(tg_tensor *)) &&
        tg_grow((void **)&tape->nodes, &tape->cap_nodes, tape->n_nodes + 1, sizeof(tg_node *)))
        return true;
    tg_set_error(TG_ERR_NOMEM, "tg_%s: out of memory growing the tape", opname);
    return false;
}

/* Hands the caller's reference to t to tape (room reserved by tape_reserve): a held one, which
 * tg_tensor_release refuses to end. */
static void tape_own(tg_tape *tape, tg_tensor *t, const char *origin)
{
    tg_hold_adopt(t);
    t->origin = origin;
    tape->owned[tape->n_owned++] = t;
}

/* Common entry checks; returns the innermost tape or NULL with the error set. */
static tg_tape *entry_check(const char *opname, int n_in, tg_tensor *const *in)
{
    for (int i = 0; i < n_in; i++) {
        if (!in[i]) {
            /* A NULL from an earlier failure: keep that error, it names the real cause. */
            if (tg_last_status() == TG_OK)
                tg_set_error(TG_ERR_ARG, "tg_%s: input %d is NULL", opname, i);
            return NULL;
        }
        if (in[i] == TG_NONE) {
            tg_set_error(TG_ERR_ARG,
                         "tg_%s: input %d is TG_NONE, which stands for an absent optional "
                         "input; this one is required",
                         opname, i);
            return NULL;
        }
        if (!in[i]->storage) {
            tg_set_error(TG_ERR_STATE,
                         "tg_%s: input %d was made inside a module's forward and freed by a "
                         "backward that passed it; retain it (tg_tensor_retain) to keep it",
                         opname, i);
            return NULL;
        }
    }
    if (!innermost) {
        tg_set_error(TG_ERR_STATE,
                     "tg_%s: no open tape; wrap the computation in "
                     "tg_tape_begin / tg_tape_end",
                     opname);
        return NULL;
    }
    return tape_reserve(innermost, opname) ? innermost : NULL;
}

/* True (error set) when an input has a history on another thread's tape: recorded, the edge
 * would lead into a graph this thread's backward cannot walk, and that thread's backward would
 * then find gradients left on it. Its values may be used: on a TG_NO_GRAD tape, or detached. */
static bool foreign_input(const char *opname, int n_in, tg_tensor *const *in)
{
    for (int i = 0; i < n_in; i++)
        if (in[i]->node && !on_this_thread(in[i]->node->tape)) {
            tg_set_error(TG_ERR_STATE,
                         "tg_%s: input %d has a history on a tape that belongs to another "
                         "thread (tapes are per-thread); tg_detach it to use its values",
                         opname, i);
            return true;
        }
    return false;
}

tg_tensor *tg_apply(const tg_op *op, const void *params, size_t params_size, int n_in,
                    tg_tensor *const *in)
{
    return tg_apply_index(op, params, params_size, n_in, in, NULL);
}

tg_tensor *tg_apply_index(const tg_op *op, const void *params, size_t params_size, int n_in,
                          tg_tensor *const *in, const tg_index *index)
{
    TG_ASSERT(params_size <= TG_MAX_PARAMS);
    TG_ASSERT(op->n_in < 0 || op->n_in == n_in);
    if (n_in < 1 || n_in > TG_MAX_INPUTS) {
        tg_set_error(TG_ERR_ARG, "tg_%s: %d inputs; it takes 1 to %d", op->name, n_in,
                     TG_MAX_INPUTS);
        return NULL;
    }
    tg_tape *tape = entry_check(op->name, n_in, in);
    if (!tape || (tape->mode == TG_GRAD && foreign_input(op->name, n_in, in)))
        return NULL;

    tg_node *n = malloc(sizeof *n);
    if (!n) {
        tg_set_error(TG_ERR_NOMEM, "tg_%s: out of memory for a node", op->name);
        return NULL;
    }
    atomic_fetch_add(&tg_live_nodes, 1);
    n->op = op;
    n->n_in = n_in;
    memcpy(n->in, in, (size_t)n_in * sizeof(tg_tensor *));
    n->out = NULL;
    n->tape = tape;
    n->scratch = NULL;
    n->scratch_bytes = 0;
    n->grad_fresh = 0;
    n->index = (tg_index *)index; /* retained below only when the node is recorded */
    n->need_in = 0;
    n->internal = module_depth > 0;
    n->released = false;
    n->gout = NULL;
    if (params_size)
        memcpy(n->params, params, params_size);
    memset(n->params + params_size, 0, TG_MAX_PARAMS - params_size);

    int ndim = 0;
    int64_t shape[TG_MAX_DIMS] = {0};
    bool ok = op->check(n, &ndim, shape) == TG_OK;
    if (ok) {
        n->out = op->view ? tg_tensor_wrap(in[0]->storage, in[0]->data, ndim, shape)
                          : tg_tensor_new(ndim, shape);
        ok = n->out != NULL;
    }
    if (ok && n->scratch_bytes) {
        n->scratch = tg_alloc(n->scratch_bytes);
        ok = n->scratch != NULL;
    }
    if (!ok) {
        tg_tensor_release(n->out);
        n->n_in = 0; /* inputs were not retained yet */
        node_free(n);
        return NULL;
    }

    op->forward(n);
    tg_tensor *out = n->out;
    if (tg_finite_trap()) {
        int64_t bad = tg_first_non_finite(out);
        if (bad >= 0) {
            char s[160];
            tg_set_error(TG_ERR_STATE,
                         "tg_%s: TG_CHECK_FINITE: output %s has %g at element "
                         "%lld",
                         op->name, TG_SHAPE_STR(out, s), out->data[bad], (long long)bad);
            tg_tensor_release(out);
            n->n_in = 0;
            node_free(n);
            return NULL;
        }
    }

    bool record = false;
    if (tape->mode == TG_GRAD)
        for (int i = 0; i < n_in; i++)
            record |= in[i]->requires_grad;
    tape_own(tape, out, op->name);
    if (!record) {
        n->n_in = 0;
        node_free(n);
        return out;
    }
    for (int i = 0; i < n_in; i++) {
        tg_hold(in[i]);
        n->in_version[i] = in[i]->storage->version;
    }
    if (n->index)
        tg_index_hold(n->index);
    n->out_version = out->storage->version;
    out->node = n;
    out->requires_grad = true;
    tape->nodes[tape->n_nodes++] = n;
    return out;
}

tg_tensor *tg_apply1(const tg_op *op, const void *params, size_t params_size, tg_tensor *a)
{
    return tg_apply(op, params, params_size, 1, &a);
}

tg_tensor *tg_apply2(const tg_op *op, const void *params, size_t params_size, tg_tensor *a,
                     tg_tensor *b)
{
    tg_tensor *in[2] = {a, b};
    return tg_apply(op, params, params_size, 2, in);
}

tg_tensor *tg_detach(tg_tensor *x)
{
    tg_tape *tape = entry_check("detach", 1, &x);
    if (!tape)
        return NULL;
    tg_tensor *out = tg_tensor_wrap(x->storage, x->data, x->ndim, x->shape);
    if (out)
        tape_own(tape, out, "detach");
    return out;
}

/* ---- tensors and indices made inside a step (tape-owned, never recorded) ------------------ */

tg_tensor *tg_tape_adopt(tg_tensor *t, const char *origin)
{
    if (!t)
        return NULL;
    tg_tape *tape = entry_check(origin, 0, NULL);
    if (!tape) {
        tg_tensor_release(t);
        return NULL;
    }
    tape_own(tape, t, origin);
    return t;
}

tg_index *tg_tape_adopt_index(tg_index *ix, const char *origin)
{
    if (!ix)
        return NULL;
    tg_tape *tape = entry_check(origin, 0, NULL);
    if (!tape || !tg_grow((void **)&tape->owned_idx, &tape->cap_owned_idx, tape->n_owned_idx + 1,
                          sizeof(tg_index *))) {
        if (tape)
            tg_set_error(TG_ERR_NOMEM, "tg_%s: out of memory growing the tape", origin);
        tg_index_release(ix);
        return NULL;
    }
    tg_index_hold_adopt(ix);
    tape->owned_idx[tape->n_owned_idx++] = ix;
    return ix;
}

/* The tape must be open before anything is allocated, so that a missing tape is reported as
 * such (and not as whatever the allocation says). */
static bool tape_open(const char *fn)
{
    if (innermost)
        return true;
    tg_set_error(TG_ERR_STATE,
                 "%s: no open tape; wrap the computation in tg_tape_begin / "
                 "tg_tape_end, or use tg_tensor_* for a tensor you own",
                 fn);
    return false;
}

tg_tensor *tg_zeros(int ndim, const int64_t *shape)
{
    return tape_open("tg_zeros") ? tg_tape_adopt(tg_tensor_zeros(ndim, shape), "zeros") : NULL;
}

tg_tensor *tg_ones(int ndim, const int64_t *shape)
{
    return tape_open("tg_ones") ? tg_tape_adopt(tg_tensor_ones(ndim, shape), "ones") : NULL;
}

tg_tensor *tg_full(int ndim, const int64_t *shape, float value)
{
    return tape_open("tg_full") ? tg_tape_adopt(tg_tensor_full(ndim, shape, value), "full") : NULL;
}

tg_tensor *tg_scalar(float value)
{
    return tape_open("tg_scalar") ? tg_tape_adopt(tg_tensor_scalar(value), "scalar") : NULL;
}

tg_tensor *tg_from_data(int ndim, const int64_t *shape, const float *data)
{
    return tape_open("tg_from_data")
               ? tg_tape_adopt(tg_tensor_from_data(ndim, shape, data), "from_data")
               : NULL;
}

/* tg_rand and tg_randn: a new tensor filled by fill (tg_tensor_uniform_ or _normal_). */
static tg_tensor *random_tensor(const char *origin, int ndim, const int64_t *shape, tg_rng *rng,
                                bool normal)
{
    char fn[32];
    snprintf(fn, sizeof fn, "tg_%s", origin);
    if (!tape_open(fn))
        return NULL;
    if (!rng) {
        tg_set_error(TG_ERR_ARG, "%s: rng is NULL", fn);
        return NULL;
    }
    tg_tensor *t = tg_tensor_new(ndim, shape);
    if (t && (normal ? tg_tensor_normal_(t, rng, 0.0f, 1.0f)
                     : tg_tensor_uniform_(t, rng, 0.0f, 1.0f)) != TG_OK) {
        tg_tensor_release(t);
        t = NULL;
    }
    return tg_tape_adopt(t, origin);
}

tg_tensor *tg_rand(int ndim, const int64_t *shape, tg_rng *rng)
{
    return random_tensor("rand", ndim, shape, rng, false);
}

tg_tensor *tg_randn(int ndim, const int64_t *shape, tg_rng *rng)
{
    return random_tensor("randn", ndim, shape, rng, true);
}

tg_index *tg_indices(int ndim, const int64_t *shape, const int64_t *values)
{
    if (!tape_open("tg_indices"))
        return NULL;
    if (!values && tg_shape_numel(ndim, shape) != 0) {
        tg_set_error(TG_ERR_ARG, "tg_indices: values is NULL");
        return NULL;
    }
    return tg_tape_adopt_index(tg_index_new(ndim, shape, values), "indices");
}

tg_index *tg_labels(const tg_tensor *t)
{
    return tape_open("tg_labels") ? tg_tape_adopt_index(tg_index_from_tensor(t), "labels") : NULL;
}

/* ---- backward --------------------------------------------------------------------------- */

/* The error of a walk that reaches what an earlier backward freed (release_internal). */
static tg_status released_error(const tg_node *n, const char *fn)
{
    return tg_set_error(TG_ERR_STATE,
                        "%s: the graph through tg_%s, inside a module's forward, was freed by "
                        "an earlier backward through it (a first-order backward frees what "
                        "modules made once it has passed them, as PyTorch does without "
                        "retain_graph); run the forward again, or differentiate with "
                        "tg_grad or tg_backward_ex with create_graph, which keep it",
                        fn, n->op->name);
}

/* Checks that a node's saved tensors are as they were when it ran. */
tg_status tg_node_versions(const tg_node *n, const char *fn)
{
    if (n->released)
        return released_error(n, fn);
    for (int i = 0; i < n->n_in; i++) {
        if (!n->in[i]->storage)
            return released_error(n, fn);
        if (n->in[i]->storage->version != n->in_version[i]) {
            char s[160];
            return tg_set_error(TG_ERR_STATE,
                                "%s: input %d %s of %s was modified in "
                                "place after %s used it (version %llu, now %llu); compute it "
                                "again or clone it before changing it",
                                fn, i, TG_SHAPE_STR(n->in[i], s), n->op->name, n->op->name,
                                (unsigned long long)n->in_version[i],
                                (unsigned long long)n->in[i]->storage->version);
        }
    }
    if (n->out->storage->version != n->out_version) {
        char s[160];
        return tg_set_error(TG_ERR_STATE,
                            "%s: the output %s of %s was modified in "
                            "place before backward",
                            fn, TG_SHAPE_STR(n->out, s), n->op->name);
    }
    return TG_OK;
}

/* True when input i of n is also another of its inputs (tg_mul(x, x)): its gradient gets
 * contributions from both, so it cannot start uninitialised. */
static bool input_repeated(const tg_node *n, int i)
{
    for (int j = 0; j < n->n_in; j++)
        if (j != i && n->in[j] == n->in[i])
            return true;
    return false;
}

/* For an op with dx_over_dy whose output gradient is spent after its backward (spent: not
 * kept by tg_grad, which reads it after the walk): a fresh gradient for input 0 on the output
 * gradient's buffer, when nothing else holds that buffer and the sizes agree; else NULL (also
 * when the tensor struct cannot be had: a buffer of its own then). */
static tg_tensor *grad_over_dy(const tg_node *n, bool spent)
{
    const tg_tensor *x = n->in[0], *g = n->out->grad;
    if (!spent || !n->op->dx_over_dy || !g || g->node || g->refcount != 1 || g->held ||
        g->storage->refcount != 1 || g->numel != x->numel || x == n->out)
        return NULL;
    tg_tensor *dx = tg_tensor_wrap(g->storage, g->data, x->ndim, x->shape);
    if (!dx)
        tg_clear_error();
    return dx;
}

/* Gives every input of n that requires grad a gradient buffer: zeros when new, or, for an op
 * with fresh_grads, an uninitialised one marked fresh (tg_grad_fresh) that its backward
 * overwrites: input 0's on the output gradient's buffer where grad_over_dy allows (spent: the
 * walk frees the output gradient after this backward). */
static tg_status ensure_input_grads(tg_node *n, bool spent)
{
    n->grad_fresh = 0;
    for (int i = 0; i < n->n_in; i++) {
        tg_tensor *x = n->in[i];
        if (x->requires_grad && x->grad && x->grad->node) {
            /* A gradient left with a history by a create_graph backward: that history's value
             * must not change under it, so this walk accumulates into a copy. */
            tg_tensor *copy = tg_tensor_clone(x->grad);
            if (!copy)
                return tg_last_status();
            tg_tensor_release(x->grad);
            x->grad = copy;
        }
        if (x->requires_grad && !x->grad) {
            const bool fresh = n->op->fresh_grads && !input_repeated(n, i);
            x->grad = fresh && i == 0 ? grad_over_dy(n, spent) : NULL;
            if (!x->grad)
                x->grad =
                    fresh ? tg_tensor_new(x->ndim, x->shape) : tg_tensor_zeros(x->ndim, x->shape);
            if (!x->grad)
                return tg_last_status();
            n->grad_fresh |= (uint32_t)fresh << i;
        }
    }
    return TG_OK;
}

tg_status tg_finite_grad(const char *fn, const tg_node *n, int i, const tg_tensor *g)
{
    int64_t bad = tg_first_non_finite(g);
    if (bad < 0)
        return TG_OK;
    char s[160];
    return tg_set_error(TG_ERR_STATE,
                        "%s: TG_CHECK_FINITE: the backward of %s gave input %d %s the gradient "
                        "%g at element %lld",
                        fn, n->op->name, i, TG_SHAPE_STR(g, s), g->data[bad], (long long)bad);
}

static tg_status finite_grads(const tg_node *n)
{
    for (int i = 0; i < n->n_in; i++) {
        tg_tensor *g = n->in[i]->requires_grad ? n->in[i]->grad : NULL;
        tg_status st = g ? tg_finite_grad("tg_backward", n, i, g) : TG_OK;
        if (st != TG_OK)
            return st;
    }
    return TG_OK;
}

/* Frees the gradients of every non-leaf result on the open tapes. */
void tg_free_intermediate_grads(void)
{
    for (tg_tape *t = innermost; t; t = t->outer)
        for (int64_t i = 0; i < t->n_nodes; i++) {
            tg_tensor_release(t->nodes[i]->out->grad);
            t->nodes[i]->out->grad = NULL;
        }
}

/* Input i of n gets no gradient from this walk: it requires none, or a targeted walk
 * (tg_grad) does not need it. */
static bool input_skipped(const tg_node *n, int i, bool targeted)
{
    return !n->in[i]->requires_grad || (targeted && !((n->need_in >> i) & 1u));
}

/* True when t is one of the n tensors in keep. */
static bool kept(const tg_tensor *t, tg_tensor *const *keep, int n)
{
    for (int k = 0; k < n; k++)
        if (keep[k] == t)
            return true;
    return false;
}

/* After n's backward in a freeing walk, for an internal node: its saved state, and its
 * output's data unless a reference beyond the tape's and the graph's holds the output (the
 * code that made it retained it). A view of the output holds the storage, which then lives on
 * with it. The output's consumers all come later on the tapes, so their backwards have run or
 * do not run in this walk; a later walk through them is refused (tg_node_versions), as is any
 * op given the output (entry_check). */
static void release_internal(tg_node *n)
{
    tg_tensor *out = n->out;
    tg_free(n->scratch, n->scratch_bytes);
    n->scratch = NULL;
    n->scratch_bytes = 0;
    n->released = true;
    if (out->refcount == out->held && out->storage) {
        tg_storage_release(out->storage);
        out->storage = NULL;
        out->data = NULL;
    }
}

static tg_status backward_walk(bool targeted, tg_tensor *const *keep, int n_keep, bool freeing)
{
    bool trap = tg_finite_trap();
    for (tg_tape *t = innermost; t; t = t->outer) {
        for (int64_t i = t->n_nodes - 1; i >= 0; i--) {
            tg_node *n = t->nodes[i];
            if (!n->out->grad)
                continue; /* not on a path from the loss */
            if (targeted && !n->need_in)
                continue; /* leads to no requested input */
            /* A targeted walk hides the inputs it does not need behind requires_grad for the
             * length of this node's backward: every backward skips an input that requires no
             * gradient, so no other leaf's .grad is touched (torch.autograd.grad). */
            bool hidden[TG_MAX_INPUTS] = {false};
            for (int k = 0; k < n->n_in; k++)
                if (n->in[k]->requires_grad && input_skipped(n, k, targeted)) {
                    hidden[k] = true;
                    n->in[k]->requires_grad = false;
                }
            const bool spent = !kept(n->out, keep, n_keep);
            tg_status st = tg_node_versions(n, "tg_backward");
            if (st == TG_OK)
                st = ensure_input_grads(n, spent);
            if (st == TG_OK) {
                n->op->backward(n);
                if (trap)
                    st = finite_grads(n);
            }
            for (int k = 0; k < n->n_in; k++)
                if (hidden[k])
                    n->in[k]->requires_grad = true;
            if (st != TG_OK)
                return st;
            /* Every consumer of n's output comes later on the tapes, so its gradient is
             * complete and now spent: freed here rather than when the walk ends, a backward
             * holds only the gradients of its frontier, not one per activation (the tutorial
             * iteration's peak fell by a third). */
            if (spent) {
                tg_tensor_release(n->out->grad);
                n->out->grad = NULL;
            }
            if (freeing && n->internal)
                release_internal(n);
        }
    }
    return TG_OK;
}

tg_status tg_backward_walk(bool targeted, tg_tensor *const *keep, int n_keep)
{
    return backward_walk(targeted, keep, n_keep, false);
}

tg_status tg_backward_walk_freeing(void)
{
    return backward_walk(false, NULL, 0, true);
}

void tg_tape_module_enter(void)
{
    module_depth++;
}

void tg_tape_module_leave(tg_tensor *const *out, int64_t n_out)
{
    TG_ASSERT(module_depth > 0);
    if (--module_depth > 0)
        return; /* an inner module's results are the enclosing module's internals */
    for (int64_t i = 0; i < n_out; i++)
        if (out[i] && out[i] != TG_NONE && out[i]->node)
            out[i]->node->internal = false;
}

tg_status tg_backward_grad(tg_tensor *y, const tg_tensor *dy)
{
    if (!y || !dy) {
        if (tg_last_status() != TG_OK)
            return tg_last_status();
        return tg_set_error(TG_ERR_ARG, "tg_backward: %s is NULL", y ? "dy" : "the loss");
    }
    if (!y->node) {
        return tg_set_error(TG_ERR_STATE,
                            "tg_backward: the loss has no recorded history: no "
                            "input requires grad, it was computed on a TG_NO_GRAD tape, or its "
                            "tape has ended");
    }
    if (!on_this_thread(y->node->tape)) {
        return tg_set_error(TG_ERR_STATE,
                            "tg_backward: the loss was recorded on a tape that belongs to "
                            "another thread (tapes are per-thread); call backward on the "
                            "thread that began the tape");
    }
    if (!tg_shape_equal(y, dy)) {
        char a[160], b[160];
        return tg_set_error(TG_ERR_SHAPE, "tg_backward: output %s and its gradient %s differ",
                            TG_SHAPE_STR(y, a), TG_SHAPE_STR(dy, b));
    }
    TG_ASSERT(!y->grad); /* intermediate grads never outlive a backward */
    y->grad = tg_tensor_clone(dy);
    if (!y->grad)
        return tg_last_status();
    tg_status st = tg_backward_walk_freeing();
    tg_free_intermediate_grads();
    return st;
}

tg_status tg_backward(tg_tensor *loss)
{
    if (loss && loss->numel != 1) {
        char s[160];
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_backward: the loss has shape %s (%lld elements); "
                            "backward needs a one-element loss (reduce it with tg_sum or "
                            "tg_mean, or use tg_backward_grad)",
                            TG_SHAPE_STR(loss, s), (long long)loss->numel);
    }
    if (!loss)
        return tg_backward_grad(NULL, NULL);
    tg_tensor *one = tg_tensor_ones(loss->ndim, loss->shape);
    if (!one)
        return tg_last_status();
    tg_status st = tg_backward_grad(loss, one);
    tg_tensor_release(one);
    return st;
}
