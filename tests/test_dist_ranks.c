/* dist/ under mpirun (tests/test_dist.sh runs it with 2 and 3 ranks): every collective of
 * dist.h against values known in closed form, on every rank.
 *
 *   - tg_dist_allreduce_grads: rank r's gradient (r + 1) * v becomes v (N + 1) / 2 exactly
 *     (small integers times powers of two), with the default bucket and with buckets of 3
 *     floats, which cut every tensor across buckets; a parameter with a gradient on one rank
 *     only gets (its gradient) / N everywhere, one with none anywhere keeps none; a gradient
 *     the test retained keeps its values (the parameter gets a fresh one); different counts
 *     or sizes on the ranks fail on every rank, without a hang;
 *   - tg_dist_allreduce_mean on values, the same rules;
 *   - tg_dist_broadcast_params: modules drawn from a per-rank seed, with BatchNorm buffers set
 *     per rank, all equal rank 0's afterwards; a module of another shape on one rank fails on
 *     every rank and changes nothing;
 *   - tg_dist_check_same and tg_dist_agree: one rank different, or failing, is named on every
 *     rank with the same status;
 *   - the sharded loader: over three epochs the ranks' slices of each epoch are disjoint,
 *     together they are exactly what one loader of the global batch gives in that epoch (the
 *     same images, batch by batch), the loader states agree on every rank, and a batch that does
 *     not divide over the ranks is refused.
 * Exit 0 when every check passed on every rank; otherwise each failure is one line on stderr
 * naming its rank, and exit 1. */
#include "dist.h"
#include "tapegrad.h"

#include <mpi.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int rank, size, failures;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...)
{
    /* The first ten failures of a rank are enough to see what broke. */
    if (ok || failures++ >= 10)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL (rank %d of %d): ", rank, size);
    vfprintf(stderr, fmt, ap);
    if (*tg_last_error())
        fprintf(stderr, " [last error: %s]", tg_last_error());
    fputc('\n', stderr);
    va_end(ap);
}

/* A leaf parameter of n elements whose gradient is (rank + 1) * (i - 3) / 4, or none. */
static tg_tensor *param(int64_t n, bool with_grad)
{
    tg_tensor *p = tg_tensor_zeros(TG_DIMS(n));
    tg_tensor_set_requires_grad(p, true);
    if (with_grad) {
        tg_tensor *g = tg_tensor_new(TG_DIMS(n));
        for (int64_t i = 0; i < n; i++)
            g->data[i] = (float)(rank + 1) * (float)(i - 3) / 4.0f;
        tg_tensor_set_grad(p, g);
        tg_tensor_release(g);
    }
    return p;
}

static void test_allreduce_grads(tg_dist *d, size_t bucket_bytes)
{
    tg_clear_error();
    tg_dist_set_bucket_bytes(d, bucket_bytes);
    /* p[0], p[1]: gradients everywhere (7 and 1 elements), p[2]: only on rank 1, p[3]: on no
     * rank, p[4]: everywhere, its gradient also held by the test. */
    tg_tensor *p[5] = {param(7, true), param(1, true), param(5, rank == 1), param(3, false),
                       param(4, true)};
    tg_tensor *held = tg_tensor_retain(tg_tensor_grad(p[4]));
    const float before = held->data[0];
    tg_status st = tg_dist_allreduce_grads(d, p, 5);
    check(st == TG_OK, "allreduce_grads (bucket %zu bytes): status %d", bucket_bytes, st);
    const float mean_factor = (float)(size + 1) / 2.0f; /* mean of 1 .. size */
    for (int k = 0; k < 5; k++) {
        const tg_tensor *g = tg_tensor_grad(p[k]);
        if (k == 3) {
            check(g == NULL, "allreduce_grads: a parameter without any gradient got one");
            continue;
        }
        if (!g) {
            check(false, "allreduce_grads: parameter %d has no gradient", k);
            continue;
        }
        for (int64_t i = 0; i < g->numel; i++) {
            const float base = (float)(i - 3) / 4.0f;
            const float want = k == 2 ? 2.0f * base / (float)size : mean_factor * base;
            check(g->data[i] == want, "allreduce_grads (bucket %zu): p[%d][%lld] = %g, want %g",
                  bucket_bytes, k, (long long)i, g->data[i], want);
        }
    }
    check(held->data[0] == before && tg_tensor_grad(p[4]) != held,
          "allreduce_grads wrote into a gradient the test retained");
    tg_tensor_release(held);
    /* Different counts: rank 0 passes 4 tensors, the others 5. */
    st = tg_dist_allreduce_grads(d, p, rank == 0 ? 4 : 5);
    check(st == TG_ERR_ARG && strstr(tg_last_error(), "different numbers of tensors"),
          "allreduce_grads with 4 and 5 tensors: status %d", st);
    for (int k = 0; k < 5; k++)
        tg_tensor_release(p[k]);
    tg_dist_set_bucket_bytes(d, TG_DIST_BUCKET_BYTES);
}

static void test_allreduce_mean(tg_dist *d)
{
    tg_clear_error();
    tg_tensor *a = tg_tensor_full(TG_DIMS(3, 2), (float)rank);
    tg_tensor *b = tg_tensor_scalar(2.0f * (float)rank);
    tg_tensor *t[2] = {a, b};
    tg_dist_set_bucket_bytes(d, 8);
    check(tg_dist_allreduce_mean(d, t, 2) == TG_OK, "allreduce_mean failed");
    const float want = (float)(size - 1) / 2.0f; /* mean of 0 .. size - 1 */
    for (int64_t i = 0; i < a->numel; i++)
        check(a->data[i] == want, "allreduce_mean: a[%lld] = %g, want %g", (long long)i, a->data[i],
              want);
    check(b->data[0] == 2.0f * want, "allreduce_mean: b = %g, want %g", b->data[0], 2 * want);
    /* Different sizes on the ranks: the same count, another shape on the last rank. */
    tg_tensor *c = rank == size - 1 ? tg_tensor_zeros(TG_DIMS(4)) : tg_tensor_zeros(TG_DIMS(5));
    tg_status st = tg_dist_allreduce_mean(d, &c, 1);
    check(st == TG_ERR_ARG && strstr(tg_last_error(), "different numbers of elements"),
          "allreduce_mean with 4 and 5 elements: status %d", st);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_tensor_release(c);
    tg_dist_set_bucket_bytes(d, TG_DIST_BUCKET_BYTES);
}

static tg_module *model(int64_t hidden, uint64_t seed)
{
    tg_rng r;
    tg_rng_seed(&r, seed);
    return TG_NN_SEQUENTIAL(tg_nn_linear(6, hidden, true, &r), tg_nn_batch_norm1d(hidden),
                            tg_nn_relu(), tg_nn_linear(hidden, 2, true, &r));
}

static void test_broadcast(tg_dist *d)
{
    tg_clear_error();
    tg_module *m = model(5, 100 + (uint64_t)rank), *ref = model(5, 100);
    tg_tensor *rm = tg_module_buffer(tg_module_child(m, "1"), "running_mean");
    tg_tensor_fill_(rm, (float)rank + 0.5f);
    check(tg_dist_broadcast_params(d, m) == TG_OK, "broadcast_params failed");
    tg_tensor_fill_(tg_module_buffer(tg_module_child(ref, "1"), "running_mean"), 0.5f);
    tg_state_dict *a = tg_state_dict_new(), *b = tg_state_dict_new();
    tg_module_state_dict(m, NULL, a);
    tg_module_state_dict(ref, NULL, b);
    for (int64_t i = 0; i < tg_state_dict_size(a); i++) {
        const tg_tensor *ta = tg_state_dict_tensor(a, i), *tb = tg_state_dict_tensor(b, i);
        check(memcmp(ta->data, tb->data, sizeof(float) * (size_t)ta->numel) == 0,
              "broadcast_params: %s differs from rank 0's", tg_state_dict_name(a, i));
    }
    tg_state_dict_free(a);
    tg_state_dict_free(b);
    /* Another width on the last rank: refused everywhere, nothing changed. */
    tg_module *odd = model(rank == size - 1 ? 4 : 5, 7 + (uint64_t)rank);
    tg_tensor *w = tg_module_param(tg_module_child(odd, "0"), "weight");
    const float w0 = w->data[0];
    tg_status st = tg_dist_broadcast_params(d, odd);
    check(st == TG_ERR_ARG && strstr(tg_last_error(), "names and shapes of rank"),
          "broadcast_params with another shape on rank %d: status %d", size - 1, st);
    check(w->data[0] == w0, "a refused broadcast changed a weight");
    tg_module_free(odd);
    tg_module_free(m);
    tg_module_free(ref);
}

static void test_agree(tg_dist *d)
{
    tg_clear_error();
    char text[32];
    snprintf(text, sizeof text, "flags %d", rank == size - 1 ? 1 : 0);
    check(tg_dist_check_same(d, "flags 0", 7, "the flags") == TG_OK, "check_same: equal blobs");
    tg_status st = tg_dist_check_same(d, text, strlen(text), "the flags");
    char want[96];
    snprintf(want, sizeof want, "the flags of rank %d differ from rank 0's (1 of %d", size - 1,
             size);
    check(st == TG_ERR_ARG && strstr(tg_last_error(), want),
          "check_same with rank %d different: status %d", size - 1, st);
    check(tg_dist_agree(d, TG_OK) == TG_OK, "agree: all OK");
    tg_status local = rank == 1 ? tg_set_error(TG_ERR_IO, "reading: no such file") : TG_OK;
    st = tg_dist_agree(d, local);
    snprintf(want, sizeof want, "tg_dist_agree: rank 1 of %d: reading: no such file", size);
    check(st == TG_ERR_IO && strcmp(tg_last_error(), want) == 0,
          "agree with rank 1 failing: status %d", st);
    int64_t local_batch = 0;
    st = tg_dist_local_batch(d, 6 * size + 1, &local_batch);
    check(st == TG_ERR_ARG && strstr(tg_last_error(), "does not split"),
          "local_batch of 6N+1 accepted");
    check(tg_dist_local_batch(d, 6 * size, &local_batch) == TG_OK && local_batch == 6,
          "local_batch of 6N: %lld", (long long)local_batch);
}

/* 53 images, image i holding the value i in every pixel: each batch's images name themselves. */
static void test_loader(tg_dist *d)
{
    tg_clear_error();
    const int64_t n = 53, global = 4 * size, per_epoch = n / global;
    tg_dataset ds = {tg_tensor_new(TG_DIMS(n, 1, 2, 2)), tg_tensor_new(TG_DIMS(n))};
    for (int64_t i = 0; i < n; i++) {
        for (int k = 0; k < 4; k++)
            ds.images->data[i * 4 + k] = (float)i;
        ds.labels->data[i] = (float)(i % 10);
    }
    tg_loader *mine = tg_loader_new(&ds, global, 42), *whole = tg_loader_new(&ds, global, 42);
    tg_loader_set_shuffle_block(mine, 20); /* any order the loader draws shards the same way */
    tg_loader_set_shuffle_block(whole, 20);
    int *ids = malloc(sizeof(int) * (size_t)(per_epoch * 4)),
        *all = malloc(sizeof(int) * (size_t)(per_epoch * global));
    for (int epoch = 0; epoch < 3; epoch++) {
        for (int64_t b = 0; b < per_epoch; b++) {
            tg_tensor *x = NULL, *y = NULL;
            check(tg_dist_loader_next(d, mine, &x, &y) == TG_OK && x->shape[0] == 4 &&
                      y->numel == 4,
                  "loader_next: a slice of 4");
            for (int k = 0; x && k < 4; k++) {
                ids[b * 4 + k] = (int)x->data[k * 4];
                check(y->data[k] == (float)(ids[b * 4 + k] % 10), "loader_next: label");
            }
            tg_tensor_release(x);
            tg_tensor_release(y);
        }
        MPI_Allgather(ids, (int)(per_epoch * 4), MPI_INT, all, (int)(per_epoch * 4), MPI_INT,
                      MPI_COMM_WORLD);
        /* Disjoint: no image twice within the epoch. */
        int seen[53] = {0};
        for (int64_t i = 0; i < per_epoch * global; i++)
            check(all[i] >= 0 && all[i] < n && seen[all[i]]++ == 0,
                  "epoch %d: image %d twice or out of range", epoch, all[i]);
        /* Exactly the global batches: batch b of rank r is rows [4r, 4r + 4) of batch b. */
        for (int64_t b = 0; b < per_epoch; b++) {
            tg_tensor *x = NULL;
            tg_loader_next(whole, &x, NULL);
            for (int r = 0; r < size; r++)
                for (int k = 0; k < 4; k++)
                    check(all[r * per_epoch * 4 + b * 4 + k] == (int)x->data[(r * 4 + k) * 4],
                          "epoch %d, batch %lld: rank %d's row %d is not the global batch's", epoch,
                          (long long)b, r, k);
            tg_tensor_release(x);
        }
        tg_loader_state st = tg_loader_get_state(mine);
        check(tg_dist_check_same(d, &st, sizeof st, "the loader state") == TG_OK,
              "loader states differ between ranks after epoch %d", epoch);
    }
    free(ids);
    free(all);
    tg_loader_free(mine);
    tg_loader_free(whole);
    /* A global batch that does not divide: refused, nothing handed out. */
    tg_loader *odd = tg_loader_new(&ds, 4 * size + 1, 42);
    tg_tensor *x = NULL;
    check(tg_dist_loader_next(d, odd, &x, NULL) == TG_ERR_ARG && x == NULL &&
              strstr(tg_last_error(), "does not split"),
          "loader_next with a batch of 4N+1 accepted");
    tg_loader_free(odd);
    tg_tensor_release(ds.images);
    tg_tensor_release(ds.labels);
}

/* The test starts MPI itself, as a program with MPI traffic of its own would: tg_dist_init
 * wraps it, and tg_dist_finalize leaves it running (dist_mlp covers the other way, where
 * tg_dist_init starts MPI and tg_dist_finalize ends it). */
int main(int argc, char **argv)
{
    int provided = 0;
    if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return 1;
    tg_dist *d = NULL;
    if (tg_dist_init(&argc, &argv, &d) != TG_OK) {
        fprintf(stderr, "test_dist_ranks: %s\n", tg_last_error());
        return 1;
    }
    rank = tg_dist_rank(d);
    size = tg_dist_size(d);
    if (size < 2) {
        if (rank == 0)
            fprintf(stderr, "test_dist_ranks: run it with at least 2 ranks (mpirun -np 2)\n");
        tg_dist_finalize(d);
        MPI_Finalize();
        return 2;
    }
    tg_set_num_threads(1);
    test_allreduce_grads(d, TG_DIST_BUCKET_BYTES);
    test_allreduce_grads(d, 12); /* 3 floats a bucket: every tensor cut across buckets */
    test_allreduce_mean(d);
    test_broadcast(d);
    test_agree(d);
    test_loader(d);
    check(tg_debug_live_tensors() == 0, "%lld tensors left alive",
          (long long)tg_debug_live_tensors());
    check(tg_dist_finalize(d) == TG_OK, "tg_dist_finalize failed");
    int finalized = 1;
    MPI_Finalized(&finalized);
    check(!finalized, "tg_dist_finalize ended an MPI the test had started");
    int total = 0;
    MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Finalize();
    if (rank == 0)
        printf("test_dist_ranks: %d ranks, %s\n", size,
               total ? "checks FAILED (above)" : "every check passed");
    return total ? 1 : 0;
}
