/* Threads (issue 19, items 7, 8 and 13): a GEMM inside the user's own OpenMP parallel region,
 * tapes used from a thread that did not begin them, the thread count refused above the CPUs,
 * and the count set once holding for threads started afterwards. */
#include "common.h"
#include "../autograd/internal.h"

#include <dirent.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>

/* ---- helpers ----------------------------------------------------------------------------- */

/* Threads of this process now (/proc/self/task). */
static int process_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* A [rows, cols] tensor of uniform values in [-1, 1). */
static tg_tensor *random_matrix(int64_t rows, int64_t cols, uint64_t seed)
{
    tg_rng rng;
    tg_rng_seed(&rng, seed);
    tg_tensor *t = tg_tensor_new(TG_DIMS(rows, cols));
    assert_non_null(t);
    assert_int_equal(tg_tensor_uniform_(t, &rng, -1.0f, 1.0f), TG_OK);
    return t;
}

/* a @ b in double, [M, K] @ [K, N]. */
static void naive_matmul(const tg_tensor *a, const tg_tensor *b, double *out)
{
    const int64_t M = a->shape[0], K = a->shape[1], N = b->shape[1];
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++)
                s += (double)a->data[i * K + k] * b->data[k * N + j];
            out[i * N + j] = s;
        }
}

/* True when every element of c is within 1e-4 (plus 1e-4 relative) of want. */
static bool close_to(const float *c, const double *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs(c[i] - want[i]) <= 1e-4 + 1e-4 * fabs(want[i])))
            return false;
    return true;
}

/* ---- item 7a: a GEMM inside the user's parallel region ------------------------------------ */

/* tg_matmul and the convolutions' GEMM (tg_sgemm_avx512) at instruction-set level isa, called
 * by every thread of a user's parallel region at once: each result right, no abort. At the
 * baseline and AVX2 levels both go to OpenBLAS, which asserted !omp_in_parallel(). */
static void gemm_in_parallel_region(int isa)
{
    const int saved = tg_isa_level;
    tg_isa_level = isa;
    const int64_t M = 96, K = 80, N = 112;
    tg_tensor *a = random_matrix(M, K, 1), *b = random_matrix(K, N, 2);
    double *want = malloc((size_t)(M * N) * sizeof *want);
    assert_non_null(want);
    naive_matmul(a, b, want);
    int bad = 0;
#pragma omp parallel num_threads(2) reduction(+ : bad)
    {
        tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
        tg_tensor *c = tg_matmul(a, b);
        bad += !c || !close_to(c->data, want, M * N);
        float *c2 = malloc((size_t)(M * N) * sizeof *c2);
        tg_sgemm_avx512(false, false, M, N, K, 1.0f, a->data, K, b->data, N, 0.0f, c2, N);
        bad += !close_to(c2, want, M * N);
        free(c2);
        bad += tg_tape_end(tape) != TG_OK;
    }
    assert_int_equal(bad, 0);
    free(want);
    tg_tensor_release(a);
    tg_tensor_release(b);
    tg_isa_level = saved;
}

static void test_gemm_in_parallel_region_baseline(void **state)
{
    (void)state;
    gemm_in_parallel_region(TG_ISA_BASELINE);
}

/* The AVX-512 level (where the CPU has it) opens no team of its own inside the user's. */
static void test_gemm_in_parallel_region_best(void **state)
{
    (void)state;
    gemm_in_parallel_region(tg_isa_detect());
}

/* ---- item 7b: tapes belong to the thread that began them ---------------------------------- */

typedef struct {
    tg_tape *tape;   /* the owner's open tape */
    tg_tensor *loss; /* recorded on it */
    tg_status backward, backward_grad, tape_end, mul_grad, mul_detached, mul_no_grad;
    char message[512];     /* the backward's error, read on this thread (errors are per-thread) */
    char end_message[512]; /* tg_tape_end's */
} foreign_use;

static void *use_from_other_thread(void *arg)
{
    foreign_use *u = arg;
    u->backward = tg_backward(u->loss);
    snprintf(u->message, sizeof u->message, "%s", tg_last_error());
    tg_tensor *one = tg_tensor_ones(u->loss->ndim, u->loss->shape);
    u->backward_grad = tg_backward_grad(u->loss, one);
    tg_tensor_release(one);
    u->tape_end = tg_tape_end(u->tape);
    snprintf(u->end_message, sizeof u->end_message, "%s", tg_last_error());
    /* The loss as an input on this thread's tapes: refused where it would be recorded, its
     * values usable where nothing is. */
    tg_tape *own = tg_tape_begin(TG_GRAD);
    tg_tensor *y = tg_mul(u->loss, u->loss);
    u->mul_grad = y ? TG_OK : tg_last_status();
    tg_tensor *d = tg_detach(u->loss);
    u->mul_detached = d && tg_mul(d, d) ? TG_OK : tg_last_status();
    tg_tape_end(own);
    own = tg_tape_begin(TG_NO_GRAD);
    y = tg_mul(u->loss, u->loss);
    u->mul_no_grad = y ? TG_OK : tg_last_status();
    tg_tape_end(own);
    tg_clear_error();
    return NULL;
}

/* Before: backward from the other thread returned TG_OK having computed nothing, and the
 * owner's backward then aborted on the gradient it had left behind. */
static void test_tape_of_another_thread(void **state)
{
    (void)state;
    const float v[3] = {1.0f, -2.0f, 3.0f};
    tg_tensor *x = test_tensor_of(1, (int64_t[]){3}, v, true);
    foreign_use u = {.tape = tg_tape_begin(TG_GRAD)};
    u.loss = tg_sum(tg_mul(x, x));
    assert_non_null(u.loss);
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, use_from_other_thread, &u), 0);
    assert_int_equal(pthread_join(tid, NULL), 0);
    assert_int_equal(u.backward, TG_ERR_STATE);
    if (!strstr(u.message, "tg_backward") || !strstr(u.message, "another thread"))
        fail_msg("unexpected message \"%s\"", u.message);
    assert_int_equal(u.backward_grad, TG_ERR_STATE);
    assert_int_equal(u.tape_end, TG_ERR_STATE);
    if (!strstr(u.end_message, "tg_tape_end") || !strstr(u.end_message, "another thread"))
        fail_msg("unexpected message \"%s\"", u.end_message);
    assert_int_equal(u.mul_grad, TG_ERR_STATE);
    assert_int_equal(u.mul_detached, TG_OK);
    assert_int_equal(u.mul_no_grad, TG_OK);
    assert_null(x->grad);
    /* The owner's tape is intact: its backward works and gives d(sum x^2)/dx = 2x. */
    assert_int_equal(tg_backward(u.loss), TG_OK);
    for (int i = 0; i < 3; i++)
        assert_close(x->grad->data[i], 2.0 * v[i], 0);
    assert_int_equal(tg_tape_end(u.tape), TG_OK);
    tg_tensor_release(x);
}

/* ---- item 8: the thread count against the machine ----------------------------------------- */

/* Before: any count was taken, and OpenBLAS mapped a 128 MB buffer for each thread (spinning
 * forever when that failed). */
static void test_threads_above_cpus_refused(void **state)
{
    (void)state;
    const int cpus = tg_get_num_cpus(), before = tg_get_num_threads();
    assert_true(cpus >= 1);
    assert_int_equal(tg_set_num_threads(cpus + 1), TG_ERR_ARG);
    char want[64];
    snprintf(want, sizeof want, "tg_set_num_threads: %d threads", cpus + 1);
    assert_error_contains(want);
    snprintf(want, sizeof want, "only %d CPU", cpus);
    assert_error_contains(want);
    assert_int_equal(tg_get_num_threads(), before); /* unchanged */
    assert_int_equal(tg_set_num_threads(0), TG_ERR_ARG);
    assert_int_equal(tg_set_num_threads(cpus), TG_OK);
    assert_int_equal(tg_get_num_threads(), cpus);
    tg_clear_error();
}

/* ---- item 13: the count is process-wide ----------------------------------------------------- */

/* What a thread started after tg_set_num_threads sees: the count, and how many threads the
 * process gained while it ran a parallel op (OpenMP keeps a thread's team workers alive until
 * that thread exits, so a team of 2 shows as one more thread). */
typedef struct {
    int count, gained;
} region_probe;

static void *probe_regions(void *arg)
{
    region_probe *p = arg;
    p->count = tg_get_num_threads();
    tg_tensor *a = random_matrix(1024, 1024, 3), *b = random_matrix(1024, 64, 4);
    const int before = process_threads();
    tg_tape *tape = tg_tape_begin(TG_NO_GRAD);
    tg_tensor *y = tg_sum(tg_mul(a, a)); /* elementwise and reduction regions */
    tg_tensor *m = tg_matmul(a, b);      /* the GEMM (OpenBLAS at the baseline level) */
    p->gained = y && m ? process_threads() - before : -1;
    tg_tape_end(tape);
    tg_tensor_release(a);
    tg_tensor_release(b);
    return NULL;
}

static region_probe probe_in_new_thread(void)
{
    region_probe p = {0};
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, probe_regions, &p), 0);
    assert_int_equal(pthread_join(tid, NULL), 0);
    return p;
}

/* Before: tg_set_num_threads(1) set OpenMP's count of the calling thread only, so a pthread
 * started afterwards ran its regions on OMP_NUM_THREADS threads while the count said 1. */
static void test_count_holds_in_new_threads(void **state)
{
    (void)state;
    const int saved_isa = tg_isa_level, saved = tg_get_num_threads();
    tg_isa_level = TG_ISA_BASELINE; /* the GEMM on OpenBLAS, with its own OpenMP team */
    assert_int_equal(tg_set_num_threads(1), TG_OK);
    region_probe p = probe_in_new_thread();
    assert_int_equal(p.count, 1);
    assert_int_equal(p.gained, 0);
    /* The observable is not vacuous: with 2 threads the same work gains a worker. */
    if (tg_get_num_cpus() >= 2) {
        assert_int_equal(tg_set_num_threads(2), TG_OK);
        p = probe_in_new_thread();
        assert_int_equal(p.count, 2);
        assert_int_equal(p.gained, 1);
    }
    tg_isa_level = saved_isa;
    if (saved <= tg_get_num_cpus())
        assert_int_equal(tg_set_num_threads(saved), TG_OK);
}

/* An argument runs the tests whose names match it (cmocka's pattern, e.g. "*tape*"). */
int main(int argc, char **argv)
{
    if (argc > 1)
        cmocka_set_test_filter(argv[1]);
    const struct CMUnitTest tests[] = {
        TG_TEST(test_gemm_in_parallel_region_baseline), TG_TEST(test_gemm_in_parallel_region_best),
        TG_TEST(test_tape_of_another_thread),           TG_TEST(test_threads_above_cpus_refused),
        TG_TEST(test_count_holds_in_new_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
