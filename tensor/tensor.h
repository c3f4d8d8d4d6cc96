/* tapegrad — tensors, storage, errors, RNG and threads (the bottom layer).
 *
 * Ownership (the whole list, see docs/guide.md):
 *  1. tg_tensor_* creation functions (*_new, *_zeros, *_ones, *_full, *_from_data, *_arange,
 *     *_clone, *_load), tg_index_new, tg_index_from_tensor and tg_tensor_retain give you one
 *     reference; end it with one tg_tensor_release (tg_index_release).
 *  2. Everything computed inside a tape, and what the bare creation functions (tg_zeros,
 *     tg_randn, tg_indices, ... in autograd.h) make, is owned by the innermost open tape;
 *     releasing the tape's reference is refused.
 *  3. Arguments are borrowed; whatever stores a pointer retains it.
 *  4. Graph edges point backwards only; no cycles.
 *  5. A leaf's grad lives until zeroed or until the leaf is freed.
 *  6. The functions that put a tensor or module into a module (tg_module_add_*,
 *     tg_nn_sequential*, nn.h) take ownership of it, even when they fail. */
#ifndef TAPEGRAD_TENSOR_H
#define TAPEGRAD_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Most dimensions a tensor may have. */
#define TG_MAX_DIMS 6

/* Expands to "ndim, shape" for the creation functions: tg_tensor_zeros(TG_DIMS(2, 3)). */
#define TG_DIMS(...)                                                                               \
    (int)(sizeof((const int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[])             \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }

/* ---- errors ------------------------------------------------------------------------------ */

typedef enum {
    TG_OK = 0,
    TG_ERR_ARG,    /* a bad argument value (NULL, out of range, unknown name) */
    TG_ERR_SHAPE,  /* shapes that do not fit together */
    TG_ERR_STATE,  /* a call at the wrong time (no tape, modified saved input, NaN trap) */
    TG_ERR_NOMEM,  /* an allocation failed */
    TG_ERR_IO,     /* a file could not be opened, read or written */
    TG_ERR_FORMAT, /* a file's contents are malformed */
} tg_status;

/* The message of the latest error on this thread, "" when none. */
const char *tg_last_error(void);
/* The status of the latest error on this thread, TG_OK when none. */
tg_status tg_last_status(void);
/* Forgets the latest error on this thread. */
void tg_clear_error(void);
/* Records an error (printf-style message that names the function); returns status. */
tg_status tg_set_error(tg_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* A short name for a status code ("TG_ERR_SHAPE"). */
const char *tg_status_name(tg_status status);

/* ---- tensors ----------------------------------------------------------------------------- */

typedef struct tg_storage tg_storage;
typedef struct tg_node tg_node;

/* A float32 tensor: contiguous, row-major, reference-counted. Read the fields; change them only
 * through the functions below. */
typedef struct tg_tensor {
    int64_t refcount;
    int ndim; /* 0 for a scalar */
    int64_t shape[TG_MAX_DIMS];
    int64_t numel;
    tg_storage *storage; /* shared by views */
    float *data;         /* first element, inside storage */
    bool requires_grad;
    struct tg_tensor *grad; /* owned; NULL until a backward reaches it (tg_tensor_grad) */
    tg_node *node;          /* the op that produced it; NULL for leaves */
    /* References held by open tapes (every op result, tg_zeros, ...) and by recorded graph
     * nodes (their inputs): tg_tensor_release refuses to end one of those, so the caller can end
     * only the references it took. origin names what made the tensor. */
    int64_t held;
    const char *origin;
} tg_tensor;

/* An uninitialised tensor of the given shape (ndim 0..TG_MAX_DIMS, every size >= 0). */
tg_tensor *tg_tensor_new(int ndim, const int64_t *shape);
/* A tensor filled with 0. */
tg_tensor *tg_tensor_zeros(int ndim, const int64_t *shape);
/* A tensor filled with 1. */
tg_tensor *tg_tensor_ones(int ndim, const int64_t *shape);
/* A tensor filled with value. */
tg_tensor *tg_tensor_full(int ndim, const int64_t *shape, float value);
/* A tensor holding a copy of numel(shape) floats from data. */
tg_tensor *tg_tensor_from_data(int ndim, const int64_t *shape, const float *data);
/* A 0-dimensional tensor holding value. */
tg_tensor *tg_tensor_scalar(float value);
/* The 1-D tensor start, start+step, ... below stop (above it for a negative step). */
tg_tensor *tg_tensor_arange(float start, float stop, float step);
/* A deep copy (new storage) of t's values; no grad, no history. */
tg_tensor *tg_tensor_clone(const tg_tensor *t);
/* Adds one reference to t; returns t. */
tg_tensor *tg_tensor_retain(tg_tensor *t);
/* Ends one reference; frees t (and its grad) at zero. NULL is ignored. */
void tg_tensor_release(tg_tensor *t);

/* ---- absent optional inputs -------------------------------------------------------------- */

/* The explicit "no tensor" for an optional input (a bias, an affine weight, running
 * statistics): tg_linear(x, w, TG_NONE). A NULL is never taken as "absent": it is what a failed
 * call returns, so an op given NULL anywhere fails and keeps that call's error. TG_NONE is not a
 * tensor: an op refuses it where an input is required; tg_tensor_retain and tg_tensor_release ignore it. */
extern tg_tensor tg_none_tensor;
#define TG_NONE (&tg_none_tensor)

/* t's gradient (borrowed), or NULL before a backward has reached t. */
tg_tensor *tg_tensor_grad(const tg_tensor *t);
/* Sets t's gradient to a copy of g's values (g must have t's shape); t must require grad.
 * tg_tensor_zero_grad removes it. For optimizers and gradient surgery of your own. */
tg_status tg_tensor_set_grad(tg_tensor *t, const tg_tensor *g);

/* Marks a leaf as a parameter whose gradient backward computes. */
tg_status tg_tensor_set_requires_grad(tg_tensor *t, bool requires_grad);
/* Frees t's gradient (the next backward starts it at zero). */
void tg_tensor_zero_grad(tg_tensor *t);

/* Fills t with value in place (bumps the version: saved uses of t will refuse backward). */
tg_status tg_tensor_fill_(tg_tensor *t, float value);
/* Copies src's values into dst in place; shapes must hold the same number of elements. */
tg_status tg_tensor_copy_(tg_tensor *dst, const tg_tensor *src);
/* Records that t's values were changed in place by the caller (e.g. an optimizer step). */
void tg_tensor_bump_version(tg_tensor *t);
/* The version counter of t's storage (increases on every in-place change). */
uint64_t tg_tensor_version(const tg_tensor *t);
/* The element at a flat row-major index (NaN and an error when out of range). */
float tg_tensor_item_at(const tg_tensor *t, int64_t index);
/* The only element of a one-element tensor (NaN and an error otherwise). */
float tg_tensor_item(const tg_tensor *t);

/* True when a and b have the same ndim and sizes. */
bool tg_shape_equal(const tg_tensor *a, const tg_tensor *b);
/* Writes "[2, 3, 4]" into buf (size bytes); returns buf. */
char *tg_shape_str(int ndim, const int64_t *shape, char *buf, size_t size);
/* numel of a shape, or -1 when a size is negative or the product of its sizes, counting 0 as
 * 1, exceeds INT64_MAX / sizeof(float): the rule every tensor's shape follows (so no product of
 * some of a tensor's sizes can overflow, even for an empty tensor). */
int64_t tg_shape_numel(int ndim, const int64_t *shape);

/* ---- index tensors -----------------------------------------------------------------------
 * Integer positions: class labels, token ids, gather indices. They are never differentiated and
 * never rounded from floats: an op that takes one (autograd.h: embedding, gather, cross_entropy)
 * checks every value against the size it indexes. Reference-counted like tensors; an op that
 * returns one (argmax, multinomial) gives it to the open tape like any result. */
typedef struct tg_index {
    int64_t refcount;
    int ndim;
    int64_t shape[TG_MAX_DIMS];
    int64_t numel;
    int64_t *data; /* numel values, row-major */
    int64_t held;  /* as tg_tensor's: references of tapes and nodes */
} tg_index;

/* A new index of the given shape holding a copy of values (NULL: zeros); release it with
 * tg_index_release. */
tg_index *tg_index_new(int ndim, const int64_t *shape, const int64_t *values);
/* A new index of t's whole-number values (float labels); a fraction, NaN or a value beyond
 * +-2^53 is an error naming its position. */
tg_index *tg_index_from_tensor(const tg_tensor *t);
/* Adds one reference; returns ix. */
tg_index *tg_index_retain(tg_index *ix);
/* Ends one reference; frees ix at zero. NULL is ignored; a tape's reference is refused. */
void tg_index_release(tg_index *ix);

/* ---- RNG --------------------------------------------------------------------------------- */

/* A xoshiro128** generator: same seed, same numbers, on every machine. The state
 * is plain data: copy it to save it, copy it back to restore. */
typedef struct tg_rng {
    uint32_t s[4];
    /* A cached second normal from Box-Muller: has_spare says whether spare holds one. */
    uint32_t has_spare;
    float spare;
} tg_rng;

/* Seeds rng (every seed, 0 included, gives a good stream). */
void tg_rng_seed(tg_rng *rng, uint64_t seed);
/* The next 32 random bits. */
uint32_t tg_rng_u32(tg_rng *rng);
/* A uniform float in [0, 1). */
float tg_rng_uniform01(tg_rng *rng);
/* A standard normal float. */
float tg_rng_normal01(tg_rng *rng);
/* Fills t with uniform values in [lo, hi). */
tg_status tg_tensor_uniform_(tg_tensor *t, tg_rng *rng, float lo, float hi);
/* Fills t with normal values of the given mean and standard deviation. */
tg_status tg_tensor_normal_(tg_tensor *t, tg_rng *rng, float mean, float std);
/* Writes a uniformly random permutation of 0..n-1 into out. */
void tg_rng_permutation(tg_rng *rng, int64_t n, int64_t *out);

/* ---- threads and diagnostics ------------------------------------------------------------- */

/* Sets the thread count of tapegrad's kernels and of OpenBLAS together, for the whole process:
 * threads started before or after the call use it alike. 1 <= n <= tg_get_num_cpus(), else
 * TG_ERR_ARG (refused, not capped: more threads than CPUs only wait on each other, and each
 * OpenBLAS thread maps a 128 MB buffer, which under an address-space limit made OpenBLAS spin
 * forever). Set it before starting threads that compute. */
tg_status tg_set_num_threads(int n);
/* The thread count in force: tg_set_num_threads' count, or until it is called the calling
 * thread's OpenMP default (OMP_NUM_THREADS, else the CPU count). */
int tg_get_num_threads(void);
/* The CPUs this process may run on: its affinity mask (taskset, cgroup cpusets), or the
 * online count when the mask cannot be read. */
int tg_get_num_cpus(void);
/* The precision of the inputs of tapegrad's own GEMM (matmul, linear, the convolutions'
 * products): TG_MATMUL_FP32 (the default) multiplies floats as given; TG_MATMUL_BF16 rounds
 * both operands to bfloat16 (round to nearest even: 8 significant bits instead of 24) and
 * accumulates the products in FP32: on AMX tiles where the CPU has AMX-BF16 (2.5-3x the FP32
 * GEMM's rate measured on Sapphire Rapids-class cores), else with AVX512_BF16's VDPBF16PS
 * (slower than FP32 on those cores). Only those inputs lose precision: parameters, gradients,
 * optimizer state and every other op stay FP32, and products with one row or one column of
 * the result stay FP32.
 * Where the CPU lacks AVX512_BF16 (or TG_ISA asks for less than avx512) the bf16 request is
 * kept but FP32 runs: see tg_matmul_bf16_active. Process-wide, like tg_set_num_threads: set it
 * before starting threads that compute. The first switch to bf16 on an AMX CPU asks Linux for
 * the tile state (arch_prctl ARCH_REQ_XCOMP_PERM): from then on the process's signal frames
 * are about 8 KB larger, which matters to handlers run on a small sigaltstack. Any other
 * value: TG_ERR_ARG, the setting unchanged. */
typedef enum { TG_MATMUL_FP32 = 0, TG_MATMUL_BF16 = 1 } tg_matmul_precision;
tg_status tg_set_matmul_precision(tg_matmul_precision p);
/* The precision asked for by tg_set_matmul_precision (TG_MATMUL_FP32 until then). */
tg_matmul_precision tg_get_matmul_precision(void);
/* True when GEMMs run with bf16 inputs now: TG_MATMUL_BF16 asked for and the CPU can. */
bool tg_matmul_bf16_active(void);
/* "OpenBLAS 0.3.21, openmp threads, Haswell kernels; tapegrad kernels: avx2": the BLAS build,
 * its threading flavour and the kernels it runs on this CPU, then which copy of tapegrad's own
 * kernels runs (baseline, avx2 or avx512: the best the CPU has, or what TG_ISA asks for). */
const char *tg_blas_info(void);

/* Tensors alive now (created and not yet freed), on all threads. */
int64_t tg_debug_live_tensors(void);
/* Graph nodes alive now. */
int64_t tg_debug_live_nodes(void);
/* Bytes of tensor storage handed out now (not counting the allocator's cache). */
int64_t tg_debug_live_bytes(void);
/* The most tg_debug_live_bytes has been since the last tg_debug_reset_peak_bytes (or the
 * start): what a step really needs at once, without the allocator's cache or the heap's
 * slack that the process's peak RSS also counts. */
int64_t tg_debug_peak_bytes(void);
/* Starts a new peak from the bytes live now. */
void tg_debug_reset_peak_bytes(void);
/* Returns every cached buffer (the process-wide cache) to the system. */
void tg_allocator_trim(void);

/* ---- text from files and command lines --------------------------------------------------
 * One strict parser for numbers written by people or stored in metadata: exactly the decimal
 * form ("-12", "2e-4", "0.5"), no blanks, '+', hex, inf or nan, nothing after the number. A
 * refusal is TG_ERR_FORMAT (not a number of that kind) or TG_ERR_ARG (out of [lo, hi]); the
 * message names the function and the range but not the string, which the caller quotes with
 * its own context (a flag, a file and key). */
tg_status tg_parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out);
/* Unsigned: a '-' is refused (strtoull would wrap "-1" to 2^64-1). */
tg_status tg_parse_uint(const char *s, uint64_t hi, uint64_t *out);
/* Finite real in [lo, hi]; "-0" reads as +0. */
tg_status tg_parse_real(const char *s, double lo, double hi, double *out);
/* The same for exactly the form printf's %a writes ("0x1.a36e2ep-13"), which stores a float
 * without rounding: what a program wrote itself, never a person's decimal. */
tg_status tg_parse_hexreal(const char *s, double lo, double hi, double *out);
/* Copies len bytes of src into dst (n bytes, always terminated) so that the result is one line
 * of printable ASCII: '\\' and '"' get a backslash, every other byte outside 0x20..0x7e becomes
 * \xNN. A cut copy ends in "...". Returns the length written. For anything quoted from a file. */
size_t tg_escape(char *dst, size_t n, const char *src, size_t len);

/* ---- state dicts: named tensors plus string metadata ------------------------------------
 * What a checkpoint holds. Modules and optimizers put their state in (nn.h, optim.h); data.h
 * writes and reads it as safetensors. Names keep insertion order and are unique. */
typedef struct tg_state_dict tg_state_dict;

/* An empty state dict; free it with tg_state_dict_free. */
tg_state_dict *tg_state_dict_new(void);
/* Frees sd and its references to its tensors. NULL is ignored. */
void tg_state_dict_free(tg_state_dict *sd);
/* Adds name -> t, retaining t (the dict shares its values); an existing name is an error. */
tg_status tg_state_dict_put(tg_state_dict *sd, const char *name, tg_tensor *t);
/* The tensor under name (borrowed), or NULL when there is none (no error is set). */
tg_tensor *tg_state_dict_get(const tg_state_dict *sd, const char *name);
/* Number of tensors. */
int64_t tg_state_dict_size(const tg_state_dict *sd);
/* Name and tensor (borrowed) of entry i, in insertion order. */
const char *tg_state_dict_name(const tg_state_dict *sd, int64_t i);
tg_tensor *tg_state_dict_tensor(const tg_state_dict *sd, int64_t i);
/* Sets a metadata string (copied); an existing key is replaced. */
tg_status tg_state_dict_set_meta(tg_state_dict *sd, const char *key, const char *value);
/* The metadata string under key, or NULL. */
const char *tg_state_dict_meta(const tg_state_dict *sd, const char *key);
/* Number of metadata entries, and key/value of entry i. */
int64_t tg_state_dict_meta_size(const tg_state_dict *sd);
const char *tg_state_dict_meta_key(const tg_state_dict *sd, int64_t i);
const char *tg_state_dict_meta_value(const tg_state_dict *sd, int64_t i);

#ifdef __cplusplus
}
#endif
#endif
