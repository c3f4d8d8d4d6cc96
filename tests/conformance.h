/* Shared by the tests that compare a whole example model with PyTorch (test_*_conformance.c):
 * reading the fixture a make_fixture.py script wrote, and measuring how far a tensor is from
 * PyTorch's. Every lookup that fails ends the test with a message naming what is missing, so
 * each test reads like its recipe. Include after common.h. */
#ifndef TAPEGRAD_TESTS_CONFORMANCE_H
#define TAPEGRAD_TESTS_CONFORMANCE_H

#include <stdio.h>
#include <stdlib.h>

#include "data.h"

/* The fixture $TG_FIXTURES/<name> (meson test sets it), else the paths from the source root
 * or a build directory inside it. */
static inline tg_state_dict *fixture_load(const char *name)
{
    char path[4096];
    const char *tries[] = {getenv("TG_FIXTURES"), "tests/fixtures", "../tests/fixtures"};
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        if (!tries[i])
            continue;
        snprintf(path, sizeof path, "%s/%s", tries[i], name);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        fclose(f);
        tg_state_dict *sd = tg_data_load_safetensors(path);
        if (!sd)
            fail_msg("%s", tg_last_error());
        return sd;
    }
    fail_msg("%s not found (set TG_FIXTURES to the folder tests/fixtures)", name);
    return NULL;
}

static inline tg_tensor *fixture_entry(const tg_state_dict *fx, const char *name)
{
    tg_tensor *t = tg_state_dict_get(fx, name);
    if (!t)
        fail_msg("the fixture has no tensor \"%s\"", name);
    return t;
}

static inline const char *fixture_meta(const tg_state_dict *fx, const char *key)
{
    const char *v = tg_state_dict_meta(fx, key);
    if (!v)
        fail_msg("the fixture has no metadata \"%s\"", key);
    return v;
}

/* The metadata key as a size (1 .. 2^20). */
static inline int64_t fixture_meta_int(const tg_state_dict *fx, const char *key)
{
    const char *v = tg_state_dict_meta(fx, key);
    int64_t x = 0; /* cmocka's fail_msg is not declared noreturn */
    if (!v || tg_parse_int(v, 1, 1 << 20, &x) != TG_OK)
        fail_msg("the fixture's metadata \"%s\" is %s, not a size", key, v ? v : "missing");
    return x;
}

/* The largest |t[i]|. */
static inline double fixture_max_abs(const tg_tensor *t)
{
    double m = 0.0;
    for (int64_t i = 0; i < t->numel; i++)
        m = fmax(m, fabs((double)t->data[i]));
    return m;
}

/* The largest |a[i] - b[i]| over two tensors of b->numel elements, and where (at may be NULL).
 * A NaN difference counts as the worst, so it never passes a tolerance. */
static inline double fixture_max_diff(const tg_tensor *a, const tg_tensor *b, int64_t *at)
{
    double worst = 0.0;
    int64_t where = 0;
    for (int64_t i = 0; i < b->numel; i++) {
        double d = fabs((double)a->data[i] - (double)b->data[i]);
        if (!(d <= worst)) {
            worst = d;
            where = i;
        }
    }
    if (at)
        *at = where;
    return worst;
}

#endif
