/* autograd/ internals: the op descriptor, the node, tg_apply and the gradcheck case table.
 * Never installed. See docs/design.md, section 4, for the shape of an op block. */
#ifndef TAPEGRAD_AUTOGRAD_INTERNAL_H
#define TAPEGRAD_AUTOGRAD_INTERNAL_H

#include "autograd.h"
#include "../tensor/internal.h"

/* Most inputs one op takes (concat is the variadic one). */
#define TG_MAX_INPUTS 16
/* Bytes of op parameters a node holds (a small POD struct, copied). */
#define TG_MAX_PARAMS 128
/* Most inputs a gradcheck case lists. */
#define TG_CASE_INPUTS 4
/* Most tensors a case's init_params makes. */
#define TG_CASE_EXTRAS 4

typedef struct tg_op tg_op;

/* One gradcheck case: input shapes, op parameters, and how to draw the inputs. */
typedef struct tg_case {
    /* Shapes of the inputs; a row ends at its first 0 ({0} alone is a 0-dimensional tensor). */
    int64_t shape[TG_CASE_INPUTS][TG_MAX_DIMS];
    int n_in;           /* for variadic ops; 0 means op->n_in */
    const void *params; /* op parameters (NULL: all zero); set both with TG_CASE_PARAMS */
    size_t params_size;
    float lo, hi;   /* inputs are drawn uniformly from [lo, hi]; both 0 means [-1, 1] */
    float kinks[4]; /* points where the op is not differentiable; inputs keep 4*eps away */
    int n_kinks;
    uint32_t no_grad; /* mask of inputs that are not differentiated (e.g. class labels) */
    /* Optional: fills input i itself (distinct values for max, valid labels, ...). */
    void (*init)(int i, tg_tensor *t, tg_rng *rng);
    /* Optional, for params that point to tensors (batch_norm's running statistics): gets a
     * writable copy of .params (params_size bytes), makes the tensors, points the copy at them
     * and puts them in extra[] (the rest stay NULL). The test runs the case with that copy and
     * releases extra[] after it, so the library holds no tensor for its cases. Returns TG_OK,
     * or the error of an allocation that failed. */
    tg_status (*init_params)(void *params, tg_tensor *extra[TG_CASE_EXTRAS]);
    /* Optional, for index ops (embedding, gather, cross_entropy): a new index (the caller's
     * reference) that the test passes to tg_apply_index; it must fit the case's shapes. */
    tg_index *(*make_index)(tg_rng *rng);
    const char *name; /* optional label for the test name */
} tg_case;

/* In a tg_case initialiser: .params and .params_size from a compound literal, e.g.
 * TG_CASE_PARAMS(sum_params, .axis = 1, .keepdim = true). */
#define TG_CASE_PARAMS(type, ...) .params = &(const type){__VA_ARGS__}, .params_size = sizeof(type)

/* True for the all-zero entry that ends a case table. */
static inline bool tg_case_is_end(const tg_case *c)
{
    return c->shape[0][0] == 0 && !c->init && !c->init_params && !c->make_index && !c->n_in &&
           !c->name && !c->params;
}

/* The descriptor of a differentiable op. */
struct tg_op {
    const char *name; /* "matmul": tests print it; messages say "tg_matmul" */
    int n_in;         /* number of tensor inputs; -1 for variadic */
    /* Validates inputs and params, sets the output's ndim and shape, and n->scratch_bytes when
     * forward needs saved state. The only step that can fail: it sets the error message. */
    tg_status (*check)(tg_node *n, int *ndim, int64_t shape[TG_MAX_DIMS]);
    /* Computes n->out from n->in. Cannot fail; allocates nothing. */
    void (*forward)(tg_node *n);
    /* Accumulates into n->in[i]->grad (allocated, zeroed or holding earlier contributions) for
     * every input with requires_grad, from n->out->grad; with fresh_grads, assigns where
     * tg_grad_fresh says the buffer is new. A pure function of the node. */
    void (*backward)(tg_node *n);
    /* Second order (docs/design.md, section 4b): the gradients of the inputs, computed with
     * recorded ops on the innermost tape so that they have a history (tg_grad with
     * create_graph). gout is the output's gradient (it may have a history itself); for every
     * input i with bit i of need set, sets gin[i] to a tensor of input i's shape, or leaves it
     * NULL for a gradient that is zero. Returns TG_OK or the failing op's error. NULL: the op
     * has no second order and no_graph_reason says why; a graph backward through it fails
     * naming the op, never silently. */
    tg_status (*backward_graph)(tg_node *n, tg_tensor *gout, uint32_t need, tg_tensor **gin);
    const char *no_graph_reason;
    const tg_case *cases;       /* gradcheck cases, ended by an all-zero entry */
    const char *no_case_reason; /* why an op has no case (the suite fails an op with neither) */
    bool view;                  /* the output shares input 0's storage (reshape, flatten) */
    /* backward honours tg_grad_fresh: it assigns (=) every element of a gradient the tape
     * allocated for it uninitialised, instead of zero-filling it first and adding. */
    bool fresh_grads;
    /* With fresh_grads: backward also gives a correct input-0 gradient when that buffer is the
     * output gradient's own (dx = f(dy) element by element, each dy read before the dx of the
     * same index is written, none after). The walk then hands a fresh input-0 gradient the
     * spent output gradient's buffer (tape.c), so a chain of such ops holds one activation
     * gradient where it held two. */
    bool dx_over_dy;
};

/* A recorded application of an op. Holds (retains) its inputs, never its output. */
struct tg_node {
    const tg_op *op;
    int n_in;
    tg_tensor *in[TG_MAX_INPUTS];
    uint64_t in_version[TG_MAX_INPUTS];
    tg_tensor *out; /* borrowed: the tape owns it and outlives the node */
    tg_tape *tape;  /* the tape that recorded it: tape.c refuses another thread's tapes */
    uint64_t out_version;
    void *scratch; /* saved state from forward, n->scratch_bytes long */
    size_t scratch_bytes;
    uint32_t grad_fresh; /* bit i: input i's gradient is fresh (see tg_grad_fresh) */
    /* The index input of an index op (embedding, gather, cross_entropy), or NULL; retained
     * while the node is recorded. Never differentiated. */
    tg_index *index;
    /* Set by a targeted backward (tg_grad) before its walk: bit i when input i's gradient leads
     * to a requested input. A full backward sets every bit. */
    uint32_t need_in;
    /* During a graph backward (create_graph): the output's gradient so far, a tape-owned tensor
     * with history, or NULL. Borrowed; cleared when the walk ends. */
    tg_tensor *gout;
    /* Recorded inside a module's forward, its output not the outermost module's result: the
     * caller never saw it, so a first-order backward frees its data once passed (released). */
    bool internal, released;
    _Alignas(16) unsigned char params[TG_MAX_PARAMS];
};

/* The node's parameters as their struct type. */
#define TG_PARAMS(node, type) ((type *)(void *)(node)->params)

/* Runs op on the inputs: check, allocate, forward, and record on the innermost tape when it
 * is a grad tape and an input requires grad. params (op-specific POD struct of params_size
 * bytes, at most TG_MAX_PARAMS) is copied into the node. */
tg_tensor *tg_apply(const tg_op *op, const void *params, size_t params_size, int n_in,
                    tg_tensor *const *in);
/* tg_apply for an op that also reads an index (n->index in check, forward and backward). */
tg_tensor *tg_apply_index(const tg_op *op, const void *params, size_t params_size, int n_in,
                          tg_tensor *const *in, const tg_index *index);
/* Gives t (a new tensor made outside tg_apply: a one-hot, a mask) to the innermost open tape,
 * with origin ("one_hot") naming it in messages; releases t and returns NULL (error set) when
 * no tape is open or the tape cannot grow. NULL t returns NULL. */
tg_tensor *tg_tape_adopt(tg_tensor *t, const char *origin);
/* The same for an index result (argmax, multinomial). */
tg_index *tg_tape_adopt_index(tg_index *ix, const char *origin);
/* tg_apply for one and two inputs. */
tg_tensor *tg_apply1(const tg_op *op, const void *params, size_t params_size, tg_tensor *a);
tg_tensor *tg_apply2(const tg_op *op, const void *params, size_t params_size, tg_tensor *a,
                     tg_tensor *b);

/* For a wrapper's optional input t named name: true when t is a tensor or TG_NONE. A NULL is
 * what a failed call returns: false, keeping that call's error, or, with none pending, setting
 * "fn: name is NULL (pass TG_NONE for none)". */
static inline bool tg_optional_ok(const char *fn, const char *name, const tg_tensor *t)
{
    if (t)
        return true;
    if (tg_last_status() == TG_OK)
        tg_set_error(TG_ERR_ARG, "%s: %s is NULL (pass TG_NONE for none)", fn, name);
    return false;
}

/* The gradient buffer of input i, or NULL when input i needs no gradient. */
static inline float *tg_grad_of(const tg_node *n, int i)
{
    return n->in[i]->requires_grad && n->in[i]->grad ? n->in[i]->grad->data : NULL;
}

/* True when input i's gradient buffer was just allocated for this backward and left
 * uninitialised (only ever for an op with fresh_grads): the op must then write every element of
 * it (=) instead of adding to it. Saves the zero-fill and the read of the zeros on every large
 * activation gradient; an input that gets its gradient from several ops gets it fresh only in
 * the first backward to reach it. */
static inline bool tg_grad_fresh(const tg_node *n, int i)
{
    return (n->grad_fresh >> i) & 1u;
}

/* Shape of tensor t as "[2, 3]" in a caller's buffer (for messages). */
#define TG_SHAPE_STR(t, buf) tg_shape_str((t)->ndim, (t)->shape, (buf), sizeof(buf))

/* Normalises a possibly negative axis against ndim; -1 when out of range. */
static inline int tg_axis(int axis, int ndim)
{
    if (axis < 0)
        axis += ndim;
    return axis >= 0 && axis < ndim ? axis : -1;
}

/* ---- the tape's internals shared with grad.c ------------------------------------------- */

struct tg_tape {
    tg_grad_mode mode;
    tg_tape *outer;
    tg_tensor **owned; /* results, one reference each */
    int64_t n_owned, cap_owned;
    tg_node **nodes; /* recorded nodes, oldest first */
    int64_t n_nodes, cap_nodes;
    tg_index **owned_idx; /* index results (argmax, tg_indices, ...), one reference each */
    int64_t n_owned_idx, cap_owned_idx;
};

/* The innermost open tape of this thread, or NULL. */
tg_tape *tg_tape_innermost(void);
/* True when tape is open on this thread. */
bool tg_tape_on_this_thread(const tg_tape *tape);
/* TG_OK when n's inputs and output are unchanged since it ran and still exist (not released
 * by a backward); else the error, named for fn. */
tg_status tg_node_versions(const tg_node *n, const char *fn);
/* The first-order walk over every open tape, newest node first, from the gradients already
 * set on outputs (->grad). targeted: only the inputs with their need_in bit set get a
 * gradient (tg_grad), every other input is passed over as if it required none. A node's
 * output gradient is freed as soon as its backward has run, unless the output is one of the
 * n_keep tensors in keep (tg_grad's requested inputs, read after the walk). */
tg_status tg_backward_walk(bool targeted, tg_tensor *const *keep, int n_keep);
/* The same for tg_backward: every node marked internal also has its output's data and its
 * saved state freed once its backward has run (see tg_tape_module_enter). */
tg_status tg_backward_walk_freeing(void);
/* Frees the gradients of every non-leaf result on the open tapes (after a walk). */
void tg_free_intermediate_grads(void);
/* TG_CHECK_FINITE's state, and the index of t's first non-finite value or -1. */
bool tg_finite_trap(void);
int64_t tg_first_non_finite(const tg_tensor *t);
/* TG_OK, or TG_CHECK_FINITE's error (named for fn) when the gradient g that n's backward gave
 * its input i has a NaN or Inf. */
tg_status tg_finite_grad(const char *fn, const tg_node *n, int i, const tg_tensor *g);

/* For a backward_graph rule: g (a gradient of an output that was broadcast from a tensor of
 * the given shape) summed back to that shape, with recorded ops; g itself when the shapes
 * agree. NULL with the error set on failure. */
tg_tensor *tg_graph_sum_to(tg_tensor *g, int ndim, const int64_t *shape);
/* True when bit i of need is set (input i's gradient is wanted). */
static inline bool tg_graph_needs(uint32_t need, int i)
{
    return (need >> i) & 1u;
}

/* The registry: every differentiable op, NULL-terminated (registry.c). */
extern const tg_op *const tg_op_registry[];

#endif
