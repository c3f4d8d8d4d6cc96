/* Shared by the cmocka suites: every test's teardown checks that nothing leaked. */
#ifndef TAPEGRAD_TESTS_COMMON_H
#define TAPEGRAD_TESTS_COMMON_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "autograd.h"

/* Live counters when the current test started. They are zero unless an earlier test failed
 * half-way (a failed assertion leaves its tensors behind); comparing against them reports a
 * leak in the test that made it, instead of in every test after a failure. */
static int64_t tg_test_tensors0, tg_test_nodes0;

static inline int tg_test_setup(void **state)
{
    (void)state;
    tg_clear_error();
    tg_test_tensors0 = tg_debug_live_tensors();
    tg_test_nodes0 = tg_debug_live_nodes();
    return 0;
}

/* Teardown for every test: live tensors and nodes are back where they were (zero when every
 * test before passed), the error is cleared. */
static inline int tg_test_teardown(void **state)
{
    (void)state;
    int64_t tensors = tg_debug_live_tensors() - tg_test_tensors0;
    int64_t nodes = tg_debug_live_nodes() - tg_test_nodes0;
    if (tensors != 0 || nodes != 0) {
        print_error("leak: %lld live tensors, %lld live nodes left by the test\n",
                    (long long)tensors, (long long)nodes);
        return -1;
    }
    tg_clear_error();
    return 0;
}

/* A test with the leak-checking setup and teardown. */
#define TG_TEST(f) cmocka_unit_test_setup_teardown(f, tg_test_setup, tg_test_teardown)

/* Asserts that the latest error message contains the given fragment. */
#define assert_error_contains(fragment)                                                            \
    do {                                                                                           \
        if (!strstr(tg_last_error(), (fragment)))                                                  \
            fail_msg("error \"%s\" does not contain \"%s\"", tg_last_error(), (fragment));         \
    } while (0)

/* Asserts |a - b| <= tol. */
#define assert_close(a, b, tol)                                                                    \
    do {                                                                                           \
        double a_ = (a), b_ = (b);                                                                 \
        if (!(fabs(a_ - b_) <= (tol)))                                                             \
            fail_msg("%s = %.7g, expected %.7g (tolerance %g)", #a, a_, b_, (double)(tol));        \
    } while (0)

/* Every element within 1e-4 relative of a PyTorch reference, with a 1e-5 floor near zero. */
static inline void assert_golden(const char *what, const float *got, const float *want, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double tol = 1e-5 + 1e-4 * fabs((double)want[i]);
        if (!(fabs((double)got[i] - want[i]) <= tol))
            fail_msg("%s[%lld] = %.9g, PyTorch gives %.9g", what, (long long)i, (double)got[i],
                     (double)want[i]);
    }
}

/* A tensor holding a copy of v, marked as a parameter when grad. */
static inline tg_tensor *test_tensor_of(int ndim, const int64_t *shape, const float *v, bool grad)
{
    tg_tensor *t = tg_tensor_from_data(ndim, shape, v);
    assert_non_null(t);
    if (grad)
        assert_int_equal(tg_tensor_set_requires_grad(t, true), TG_OK);
    return t;
}

/* Leaves NaN-filled buffers of shape [ndim, shape] at the head of the allocator's cache, so that
 * a fresh gradient (tg_grad_fresh) an op leaves partly unwritten shows up as NaN. */
#define TEST_POISON_COPIES 8
static inline void test_poison_cache(int ndim, const int64_t *shape)
{
    tg_tensor *p[TEST_POISON_COPIES];
    for (int k = 0; k < TEST_POISON_COPIES; k++)
        assert_non_null(p[k] = tg_tensor_full(ndim, shape, NAN));
    for (int k = 0; k < TEST_POISON_COPIES; k++)
        tg_tensor_release(p[k]);
}

#endif
