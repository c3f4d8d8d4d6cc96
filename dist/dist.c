/* Data-parallel training over MPI: the context, agreement between ranks, broadcast and
 * bucketed mean of tensors, and the sharded loader (dist.h). */
#include "dist.h"

#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tg_dist {
    MPI_Comm comm; /* our duplicate of MPI_COMM_WORLD, errors returned rather than fatal */
    int rank, size;
    bool owns_mpi;       /* tg_dist_init started MPI, so tg_dist_finalize ends it */
    size_t bucket_elems; /* floats per collective call */
    float *bucket;       /* staging for the contiguous copies, grown on demand */
    size_t bucket_cap;
    /* A failure of the synchronised batch norm's hook, which cannot return one: reported by
     * the next tg_dist_agree (every collective here starts with one). */
    tg_status hook_status;
    char hook_msg[512];
};

/* The tg_dist whose hook synchronises batch norm (tg_dist_sync_batch_norm); NULL: none. The
 * hook is process-wide, as the core's setting is. */
static tg_dist *bn_owner;

/* Records an MPI failure as TG_ERR_STATE naming our function, the MPI call and MPI's own
 * words for the error code. */
static tg_status mpi_error(const char *fn, const char *call, int code)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS)
        len = 0;
    msg[len] = '\0';
    return tg_set_error(TG_ERR_STATE, "%s: %s failed (MPI error %d: %s)", fn, call, code,
                        len ? msg : "no description");
}

static tg_status null_dist(const char *fn)
{
    return tg_set_error(TG_ERR_ARG, "%s: the tg_dist is NULL (tg_dist_init first)", fn);
}

tg_status tg_dist_init(int *argc, char ***argv, tg_dist **out)
{
    const char *fn = "tg_dist_init";
    if (!out)
        return tg_set_error(TG_ERR_ARG, "%s: the output pointer is NULL", fn);
    *out = NULL;
    int started = 0, rc;
    if ((rc = MPI_Initialized(&started)) != MPI_SUCCESS)
        return mpi_error(fn, "MPI_Initialized", rc);
    if (!started) {
        int provided = 0;
        if ((rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided)) != MPI_SUCCESS)
            return mpi_error(fn, "MPI_Init_thread", rc);
        /* Below FUNNELED, MPI would be entitled to fail if OpenMP threads merely exist. */
        if (provided < MPI_THREAD_FUNNELED) {
            MPI_Finalize();
            return tg_set_error(TG_ERR_STATE,
                                "%s: this MPI provides thread level %d, below "
                                "MPI_THREAD_FUNNELED (%d), which OpenMP kernels need",
                                fn, provided, MPI_THREAD_FUNNELED);
        }
    }
    tg_dist *d = calloc(1, sizeof *d);
    if (!d) {
        if (!started)
            MPI_Finalize();
        return tg_set_error(TG_ERR_NOMEM, "%s: out of memory", fn);
    }
    d->owns_mpi = !started;
    d->bucket_elems = TG_DIST_BUCKET_BYTES / sizeof(float);
    const char *call = "MPI_Comm_dup";
    bool dup = false;
    if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &d->comm)) != MPI_SUCCESS || !(dup = true) ||
        (call = "MPI_Comm_set_errhandler",
         rc = MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN)) != MPI_SUCCESS ||
        (call = "MPI_Comm_rank", rc = MPI_Comm_rank(d->comm, &d->rank)) != MPI_SUCCESS ||
        (call = "MPI_Comm_size", rc = MPI_Comm_size(d->comm, &d->size)) != MPI_SUCCESS) {
        tg_status st = mpi_error(fn, call, rc);
        if (dup)
            MPI_Comm_free(&d->comm);
        if (d->owns_mpi)
            MPI_Finalize();
        free(d);
        return st;
    }
    *out = d;
    return TG_OK;
}

tg_status tg_dist_finalize(tg_dist *d)
{
    if (!d)
        return TG_OK;
    if (bn_owner == d) { /* the hook must not outlive its communicator */
        tg_batch_norm_set_reduce(NULL, NULL);
        bn_owner = NULL;
    }
    int rc = MPI_Comm_free(&d->comm);
    tg_status st = rc == MPI_SUCCESS ? TG_OK : mpi_error("tg_dist_finalize", "MPI_Comm_free", rc);
    if (d->owns_mpi && (rc = MPI_Finalize()) != MPI_SUCCESS && st == TG_OK)
        st = mpi_error("tg_dist_finalize", "MPI_Finalize", rc);
    free(d->bucket);
    free(d);
    return st;
}

int tg_dist_rank(const tg_dist *d)
{
    return d ? d->rank : 0;
}

int tg_dist_size(const tg_dist *d)
{
    return d ? d->size : 1;
}

tg_status tg_dist_set_bucket_bytes(tg_dist *d, size_t bytes)
{
    if (!d)
        return null_dist("tg_dist_set_bucket_bytes");
    if (bytes < sizeof(float))
        return tg_set_error(TG_ERR_ARG,
                            "tg_dist_set_bucket_bytes: %zu bytes: need at least %zu (one float)",
                            bytes, sizeof(float));
    /* MPI counts are ints: a bucket past INT_MAX floats could not be sent in one call. */
    size_t elems = bytes / sizeof(float);
    d->bucket_elems = elems > (size_t)INT32_MAX ? (size_t)INT32_MAX : elems;
    return TG_OK;
}

/* ---- agreeing --------------------------------------------------------------------------- */

tg_status tg_dist_agree(tg_dist *d, tg_status local)
{
    const char *fn = "tg_dist_agree";
    if (!d)
        return null_dist(fn);
    if (local == TG_OK && d->hook_status != TG_OK) {
        local = tg_set_error(d->hook_status, "%s", d->hook_msg);
        d->hook_status = TG_OK;
    }
    /* The lowest failing rank speaks for all: its status and message travel to every rank. */
    int mine = local != TG_OK ? d->rank : d->size, first = d->size, rc;
    if ((rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, d->comm)) != MPI_SUCCESS)
        return mpi_error(fn, "MPI_Allreduce", rc);
    if (first == d->size)
        return TG_OK;
    char msg[1024] = "";
    int st = (int)local;
    if (d->rank == first) {
        const char *e = tg_last_error();
        snprintf(msg, sizeof msg, "%s", *e ? e : tg_status_name(local));
    }
    if ((rc = MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, d->comm)) != MPI_SUCCESS ||
        (rc = MPI_Bcast(&st, 1, MPI_INT, first, d->comm)) != MPI_SUCCESS)
        return mpi_error(fn, "MPI_Bcast", rc);
    msg[sizeof msg - 1] = '\0';
    return tg_set_error((tg_status)st, "%s: rank %d of %d: %s", fn, first, d->size, msg);
}

/* FNV-1a, 64-bit: a stable hash of bytes, the same on every machine. */
static uint64_t fnv1a(const void *p, size_t n, uint64_t h)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}
#define FNV_OFFSET 0xcbf29ce484222325ULL

/* Gathers every rank's hash and compares it with rank 0's; the same answer on every rank. */
static tg_status check_hash(tg_dist *d, const char *fn, uint64_t h, const char *what)
{
    uint64_t *all = malloc(sizeof(uint64_t) * (size_t)d->size);
    /* Every rank must reach the collective even when its own allocation failed, or the others
     * wait forever: agree on the failure first. */
    tg_status st = tg_dist_agree(
        d,
        all ? TG_OK : tg_set_error(TG_ERR_NOMEM, "%s: out of memory for %d hashes", fn, d->size));
    if (st != TG_OK) {
        free(all);
        return st;
    }
    int rc = MPI_Allgather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, d->comm);
    if (rc != MPI_SUCCESS) {
        free(all);
        return mpi_error(fn, "MPI_Allgather", rc);
    }
    int first = -1, count = 0;
    for (int r = 1; r < d->size; r++)
        if (all[r] != all[0]) {
            count++;
            if (first < 0)
                first = r;
        }
    free(all);
    if (first < 0)
        return TG_OK;
    return tg_set_error(TG_ERR_ARG,
                        "%s: %s of rank %d differ from rank 0's (%d of %d ranks differ)", fn,
                        what ? what : "the values", first, count, d->size);
}

tg_status tg_dist_check_same(tg_dist *d, const void *blob, size_t len, const char *what)
{
    const char *fn = "tg_dist_check_same";
    if (!d)
        return null_dist(fn);
    if (!blob && len)
        return tg_set_error(TG_ERR_ARG, "%s: blob is NULL with %zu bytes", fn, len);
    uint64_t n = len;
    return check_hash(d, fn, fnv1a(blob, len, fnv1a(&n, sizeof n, FNV_OFFSET)), what);
}

tg_status tg_dist_local_batch(const tg_dist *d, int64_t global, int64_t *local)
{
    const char *fn = "tg_dist_local_batch";
    if (!d || !local)
        return d ? tg_set_error(TG_ERR_ARG, "%s: the output pointer is NULL", fn) : null_dist(fn);
    if (global < 1 || global % d->size != 0)
        return tg_set_error(TG_ERR_ARG,
                            "%s: global batch %lld does not split over %d ranks (%lld %% %d = "
                            "%lld; need a multiple of %d, at least %d)",
                            fn, (long long)global, d->size, (long long)global, d->size,
                            (long long)(global % d->size), d->size, d->size);
    *local = global / d->size;
    return TG_OK;
}

/* ---- moving floats: one bucketed loop for the mean and the broadcast ---------------------- */

typedef enum { MOVE_MEAN, MOVE_BROADCAST } move_kind;

/* One contiguous run of floats taking part in a collective. */
typedef struct {
    float *p;
    int64_t n;
} span;

/* Streams the spans, as if they were one array, in buckets of at most bucket_elems floats:
 * each bucket is one MPI_Allreduce (sum, then divided by the size) or one MPI_Bcast from rank
 * 0. A bucket that lies inside one span (a large tensor, cut into bucket-sized pieces) is sent
 * where it is; one that gathers several spans is copied into the staging buffer, sent, and
 * copied back. The ranks must pass spans of the same total length: checked by the callers,
 * since a count mismatch inside MPI is undefined behaviour, not an error. */
static tg_status move(tg_dist *d, const char *fn, const span *s, int64_t n, move_kind kind)
{
    int64_t total = 0;
    for (int64_t i = 0; i < n; i++)
        total += s[i].n;
    const int64_t want = total < (int64_t)d->bucket_elems ? total : (int64_t)d->bucket_elems;
    const float size = (float)d->size;
    int64_t si = 0, off = 0; /* where the stream stands: span si, element off */
    while (total > 0) {
        const int64_t fill = total < want ? total : want;
        while (s[si].n == off) /* empty tensors, and the end of the previous span */
            si++, off = 0;
        const bool direct = s[si].n - off >= fill;
        const int64_t ui = si, uoff = off; /* where this bucket's values go back */
        float *buf = s[si].p + off;
        if (direct) {
            off += fill;
        } else {
            if ((size_t)want > d->bucket_cap) {
                float *b = realloc(d->bucket, (size_t)want * sizeof(float));
                if (!b)
                    return tg_set_error(TG_ERR_NOMEM,
                                        "%s: out of memory for a bucket of %lld floats", fn,
                                        (long long)want);
                d->bucket = b;
                d->bucket_cap = (size_t)want;
            }
            buf = d->bucket;
            for (int64_t k = 0; k < fill;) {
                if (off == s[si].n)
                    si++, off = 0;
                int64_t take = s[si].n - off < fill - k ? s[si].n - off : fill - k;
                memcpy(buf + k, s[si].p + off, (size_t)take * sizeof(float));
                k += take, off += take;
            }
        }
        int rc;
        if (kind == MOVE_MEAN)
            rc = MPI_Allreduce(MPI_IN_PLACE, buf, (int)fill, MPI_FLOAT, MPI_SUM, d->comm);
        else
            rc = MPI_Bcast(buf, (int)fill, MPI_FLOAT, 0, d->comm);
        if (rc != MPI_SUCCESS)
            return mpi_error(fn, kind == MOVE_MEAN ? "MPI_Allreduce" : "MPI_Bcast", rc);
        /* Back in place, dividing on the way for the mean: divided rather than multiplied by
         * 1/size, so the mean is the correctly rounded quotient of the sum. */
        for (int64_t k = 0, i = ui, o = uoff; k < fill;) {
            if (o == s[i].n)
                i++, o = 0;
            int64_t take = s[i].n - o < fill - k ? s[i].n - o : fill - k;
            float *dst = s[i].p + o;
            const float *src = buf + k;
            if (kind == MOVE_MEAN)
                for (int64_t j = 0; j < take; j++)
                    dst[j] = src[j] / size;
            else if (!direct)
                memcpy(dst, src, (size_t)take * sizeof(float));
            k += take, o += take;
        }
        total -= fill;
    }
    return TG_OK;
}

/* Checks that every rank passes n tensors of the same total size, the same answer on every
 * rank: the guard in front of move(). */
static tg_status check_counts(tg_dist *d, const char *fn, int64_t n, int64_t numel)
{
    /* The maxima of (x, -x) give the maximum and the minimum in one call. */
    int64_t v[4] = {n, -n, numel, -numel}, m[4];
    int rc = MPI_Allreduce(v, m, 4, MPI_INT64_T, MPI_MAX, d->comm);
    if (rc != MPI_SUCCESS)
        return mpi_error(fn, "MPI_Allreduce", rc);
    if (m[0] != -m[1])
        return tg_set_error(TG_ERR_ARG,
                            "%s: the ranks pass different numbers of tensors (%lld "
                            "to %lld; this rank %lld)",
                            fn, (long long)-m[1], (long long)m[0], (long long)n);
    if (m[2] != -m[3])
        return tg_set_error(TG_ERR_ARG,
                            "%s: the ranks' %lld tensors hold different numbers of "
                            "elements in all (%lld to %lld; this rank %lld)",
                            fn, (long long)n, (long long)-m[3], (long long)m[2], (long long)numel);
    return TG_OK;
}

/* The shared front of the collectives on tensors: arguments checked on this rank (after the
 * caller's own status, its allocations), then the verdict agreed on by all (so a NULL on one
 * rank stops every rank), then the counts. */
static tg_status check_tensors(tg_dist *d, const char *fn, tg_tensor *const *t, int64_t n,
                               tg_status st, int64_t *numel)
{
    *numel = 0;
    if (n < 0 || n > INT32_MAX || (n > 0 && !t))
        st = tg_set_error(TG_ERR_ARG, "%s: %lld tensors at %p (need 0 .. %d, not NULL)", fn,
                          (long long)n, (void *)t, INT32_MAX);
    for (int64_t i = 0; st == TG_OK && i < n; i++) {
        if (!t[i] || t[i] == TG_NONE)
            st = tg_set_error(TG_ERR_ARG, "%s: tensor %lld of %lld is %s", fn, (long long)i,
                              (long long)n, t[i] ? "TG_NONE" : "NULL");
        else
            *numel += t[i]->numel;
    }
    if ((st = tg_dist_agree(d, st)) != TG_OK)
        return st;
    return check_counts(d, fn, n, *numel);
}

tg_status tg_dist_allreduce_mean(tg_dist *d, tg_tensor *const *tensors, int64_t n)
{
    const char *fn = "tg_dist_allreduce_mean";
    if (!d)
        return null_dist(fn);
    if (d->size == 1)
        return TG_OK;
    int64_t numel;
    span *s = calloc((size_t)(n > 0 ? n : 1), sizeof(span));
    tg_status st = check_tensors(
        d, fn, tensors, n, s ? TG_OK : tg_set_error(TG_ERR_NOMEM, "%s: out of memory", fn), &numel);
    if (st != TG_OK)
        goto done;
    for (int64_t i = 0; i < n; i++)
        s[i] = (span){tensors[i]->data, tensors[i]->numel};
    st = move(d, fn, s, n, MOVE_MEAN);
    for (int64_t i = 0; st == TG_OK && i < n; i++)
        tg_tensor_bump_version(tensors[i]);
done:
    free(s);
    return st;
}

tg_status tg_dist_allreduce_grads(tg_dist *d, tg_tensor *const *params, int64_t n)
{
    const char *fn = "tg_dist_allreduce_grads";
    if (!d)
        return null_dist(fn);
    if (d->size == 1)
        return TG_OK;
    int64_t numel;
    unsigned char *has = calloc((size_t)(n > 0 ? n : 1), 2);
    span *s = calloc((size_t)(n > 0 ? n : 1), sizeof(span));
    tg_status st = check_tensors(
        d, fn, params, n, has && s ? TG_OK : tg_set_error(TG_ERR_NOMEM, "%s: out of memory", fn),
        &numel);
    if (st != TG_OK)
        goto done;
    /* Which parameters have a gradient on any rank: those take part everywhere. */
    unsigned char *any = has + n;
    for (int64_t i = 0; i < n; i++)
        has[i] = params[i]->grad != NULL;
    int rc = MPI_Allreduce(has, any, (int)n, MPI_UNSIGNED_CHAR, MPI_MAX, d->comm);
    if (rc != MPI_SUCCESS) {
        st = mpi_error(fn, "MPI_Allreduce", rc);
        goto done;
    }
    /* Give each of those a gradient this rank may write into: zeros where it has none, a fresh
     * copy where someone else holds it (tg_tensor_set_grad makes a fresh buffer then). */
    int64_t m = 0;
    for (int64_t i = 0; st == TG_OK && i < n; i++) {
        tg_tensor *p = params[i];
        if (!any[i])
            continue;
        if (!p->grad || p->grad->refcount > 1) {
            tg_tensor *g = p->grad ? tg_tensor_clone(p->grad) : tg_tensor_zeros(p->ndim, p->shape);
            st = g ? tg_tensor_set_grad(p, g) : tg_last_status();
            tg_tensor_release(g);
            if (st != TG_OK)
                break;
        }
        s[m++] = (span){p->grad->data, p->grad->numel};
    }
    if ((st = tg_dist_agree(d, st)) != TG_OK)
        goto done;
    if ((st = move(d, fn, s, m, MOVE_MEAN)) != TG_OK)
        goto done;
    for (int64_t i = 0; i < n; i++)
        if (any[i])
            tg_tensor_bump_version(params[i]->grad);
done:
    free(has);
    free(s);
    return st;
}

tg_status tg_dist_broadcast_state_dict(tg_dist *d, tg_state_dict *sd)
{
    const char *fn = "tg_dist_broadcast_state_dict";
    if (!d)
        return null_dist(fn);
    const int64_t n = sd ? tg_state_dict_size(sd) : 0;
    span *s = calloc((size_t)(n > 0 ? n : 1), sizeof(span));
    tg_status st = !sd  ? tg_set_error(TG_ERR_ARG, "%s: the state dict is NULL", fn)
                   : !s ? tg_set_error(TG_ERR_NOMEM, "%s: out of memory", fn)
                        : TG_OK;
    if ((st = tg_dist_agree(d, st)) != TG_OK)
        goto done;
    /* Names and shapes, in order, must be the same on every rank before any value moves. */
    uint64_t h = FNV_OFFSET;
    for (int64_t i = 0; i < n; i++) {
        const char *name = tg_state_dict_name(sd, i);
        const tg_tensor *t = tg_state_dict_tensor(sd, i);
        h = fnv1a(name, strlen(name) + 1, h);
        h = fnv1a(&t->ndim, sizeof t->ndim, h);
        h = fnv1a(t->shape, sizeof(int64_t) * (size_t)t->ndim, h);
        s[i] = (span){t->data, t->numel};
    }
    h = fnv1a(&n, sizeof n, h);
    if ((st = check_hash(d, fn, h, "the tensors' names and shapes")) != TG_OK)
        goto done;
    if ((st = move(d, fn, s, n, MOVE_BROADCAST)) != TG_OK)
        goto done;
    for (int64_t i = 0; i < n; i++)
        tg_tensor_bump_version(tg_state_dict_tensor(sd, i));
done:
    free(s);
    return st;
}

tg_status tg_dist_broadcast_params(tg_dist *d, tg_module *m)
{
    const char *fn = "tg_dist_broadcast_params";
    if (!d)
        return null_dist(fn);
    /* The dict shares the module's tensors, so broadcasting its values sets the module's. */
    tg_state_dict *sd = m ? tg_state_dict_new() : NULL;
    tg_status st = !m    ? tg_set_error(TG_ERR_ARG, "%s: the module is NULL", fn)
                   : !sd ? tg_last_status()
                         : tg_module_state_dict(m, NULL, sd);
    if ((st = tg_dist_agree(d, st)) == TG_OK)
        st = tg_dist_broadcast_state_dict(d, sd);
    tg_state_dict_free(sd);
    return st;
}

/* ---- the sharded loader --------------------------------------------------------------------- */

/* Rows [row0, row0 + rows) of t's first axis as a new tensor. */
static tg_tensor *rows_of(const tg_tensor *t, int64_t row0, int64_t rows)
{
    int64_t shape[TG_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[0] = rows;
    tg_tensor *r = tg_tensor_new(t->ndim, shape);
    if (r) {
        const int64_t per_row = t->shape[0] ? t->numel / t->shape[0] : 0;
        memcpy(r->data, t->data + row0 * per_row, sizeof(float) * (size_t)(rows * per_row));
    }
    return r;
}

tg_status tg_dist_loader_next(const tg_dist *d, tg_loader *l, tg_tensor **images,
                              tg_tensor **labels)
{
    const char *fn = "tg_dist_loader_next";
    if (!d)
        return null_dist(fn);
    if (!l || !images)
        return tg_set_error(TG_ERR_ARG, "%s: the %s is NULL", fn, l ? "images pointer" : "loader");
    tg_tensor *x = NULL, *y = NULL;
    tg_status st = tg_loader_next(l, &x, &y);
    if (st != TG_OK)
        return st;
    int64_t local = 0;
    if (tg_dist_local_batch(d, x->shape[0], &local) != TG_OK) {
        char why[512]; /* a copy: tg_set_error rewrites the buffer tg_last_error points to */
        snprintf(why, sizeof why, "%s", tg_last_error());
        tg_tensor_release(x);
        tg_tensor_release(y);
        return tg_set_error(TG_ERR_ARG, "%s: the loader's batch: %s", fn, why);
    }
    tg_tensor *mx = rows_of(x, d->rank * local, local);
    tg_tensor *my = labels ? rows_of(y, d->rank * local, local) : NULL;
    tg_tensor_release(x);
    tg_tensor_release(y);
    if (!mx || (labels && !my)) {
        tg_tensor_release(mx);
        tg_tensor_release(my);
        return tg_last_status();
    }
    *images = mx;
    if (labels)
        *labels = my;
    return TG_OK;
}

/* ---- synchronised batch norm ---------------------------------------------------------------- */

/* The core's batch-norm hook (tg_batch_norm_set_reduce): the sums over the ranks, in place. A
 * failure leaves this rank's own sums and is kept for the next tg_dist_agree. */
static void bn_allreduce(void *ctx, double *values, int64_t n)
{
    tg_dist *d = ctx;
    int rc = n > INT32_MAX
                 ? MPI_ERR_COUNT
                 : MPI_Allreduce(MPI_IN_PLACE, values, (int)n, MPI_DOUBLE, MPI_SUM, d->comm);
    if (rc == MPI_SUCCESS || d->hook_status != TG_OK)
        return;
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        len = 0;
    msg[len] = '\0';
    d->hook_status = TG_ERR_STATE;
    snprintf(d->hook_msg, sizeof d->hook_msg,
             "tg_dist_sync_batch_norm: MPI_Allreduce of %lld batch-norm sums failed (MPI error "
             "%d: %s)",
             (long long)n, rc, len ? msg : "no description");
}

tg_status tg_dist_sync_batch_norm(tg_dist *d, bool on)
{
    if (!d)
        return null_dist("tg_dist_sync_batch_norm");
    /* One rank: the statistics are already the job's; the kernels' own sums stay bit for bit
     * what they are without MPI. */
    if (on && d->size > 1) {
        tg_batch_norm_set_reduce(bn_allreduce, d);
        bn_owner = d;
    } else if (bn_owner == d || !bn_owner) {
        tg_batch_norm_set_reduce(NULL, NULL);
        bn_owner = NULL;
    }
    return TG_OK;
}
