/* The example programs' shared command line and exits: see args.h. */
#include "args.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *prog = "example"; /* argv[0]'s last component, set by ex_parse */

/* s quoted for a one-line message, in q[64]: a hostile value cannot split the line. */
static const char *quoted(const char *s, char q[64])
{
    tg_escape(q, 64, s, strlen(s));
    return q;
}

_Noreturn void ex_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

_Noreturn void ex_fail(void)
{
    fprintf(stderr, "%s: %s\n", prog, tg_last_error());
    exit(1);
}

static void print_usage(const char *about, const ex_flag *flags, int n_flags)
{
    printf("usage: %s [options]\n%s\noptions:\n", prog, about);
    for (int k = 0; k < n_flags; k++) {
        const ex_flag *f = &flags[k];
        char head[40], def[64] = "";
        const char *meta = f->kind == EX_STRING ? f->meta : f->kind == EX_BOOL ? "" : "N";
        snprintf(head, sizeof head, "%s %s", f->name, f->kind == EX_REAL ? "X" : meta);
        if (f->kind == EX_INT)
            snprintf(def, sizeof def, " (default %lld)", (long long)*(int64_t *)f->value);
        else if (f->kind == EX_REAL)
            snprintf(def, sizeof def, " (default %g)", *(double *)f->value);
        else if (f->kind == EX_STRING && *(const char **)f->value)
            snprintf(def, sizeof def, " (default %s)", *(const char **)f->value);
        printf("  %-20s %s%s\n", head, f->help, def);
    }
}

void ex_parse(int argc, char **argv, const char *about, const ex_flag *flags, int n_flags)
{
    if (argc > 0 && argv[0]) {
        const char *slash = strrchr(argv[0], '/');
        prog = slash ? slash + 1 : argv[0];
    }
    char q[64];
    for (int i = 1; i < argc; i++) {
        const char *name = argv[i];
        if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
            print_usage(about, flags, n_flags);
            exit(0);
        }
        const ex_flag *f = flags;
        while (f < flags + n_flags && strcmp(name, f->name))
            f++;
        if (f == flags + n_flags)
            ex_die("unknown flag '%s' (see --help)", quoted(name, q));
        if (f->kind == EX_BOOL) {
            *(bool *)f->value = true;
            continue;
        }
        const char *v = argv[++i];
        if (!v)
            ex_die("%s needs a value", name);
        if (f->kind == EX_STRING)
            *(const char **)f->value = v;
        else if (f->kind == EX_INT && tg_parse_int(v, f->lo, f->hi, f->value) != TG_OK)
            ex_die("%s: '%s' is not a whole number from %lld to %lld", name, quoted(v, q),
                   (long long)f->lo, (long long)f->hi);
        else if (f->kind == EX_REAL && tg_parse_real(v, f->min, f->max, f->value) != TG_OK)
            ex_die("%s: '%s' is not a number from %g to %g", name, quoted(v, q), f->min, f->max);
    }
}

void ex_threads(int64_t n)
{
    if (n == 0)
        n = tg_get_num_cpus() > 1 ? 2 : 1;
    if (n > INT_MAX || tg_set_num_threads((int)n) != TG_OK)
        ex_die("--threads: %s", tg_last_error());
}

const char *ex_mnist_dir(void)
{
    const char *env = getenv("TG_MNIST_DIR");
    return env && env[0] ? env : "data-cache/mnist";
}

tg_dataset *ex_mnist(const char *dir, bool train, int64_t n)
{
    tg_dataset *ds = tg_data_load_mnist(dir, train, -1);
    if (ds && n > 0 && n < ds->images->shape[0]) {
        tg_dataset part = {tg_tensor_from_data(TG_DIMS(n, 1, 28, 28), ds->images->data),
                           tg_tensor_from_data(TG_DIMS(n), ds->labels->data)};
        tg_tensor_release(ds->images);
        tg_tensor_release(ds->labels);
        *ds = part;
        if (!part.images || !part.labels)
            ex_fail(); /* out of memory, not bad input */
    }
    if (!ds)
        ex_die("%s", tg_last_error());
    return ds;
}

void ex_out_dir(const char *dir, const char *file)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/", dir) >= (int)sizeof path)
        ex_die("--out %s: the path is too long", dir);
    for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) { /* mkdir -p */
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            ex_die("--out %s: cannot create %s: %s", dir, path, strerror(errno));
        *p = '/';
    }
    tg_atomic_file *probe = tg_atomic_open(ex_path(dir, file));
    if (!probe)
        ex_die("--out %s: %s", dir, tg_last_error());
    tg_atomic_abort(probe);
}

const char *ex_path(const char *dir, const char *file)
{
    static char buf[4][PATH_MAX];
    static int next;
    char *p = buf[next++ % 4];
    if (snprintf(p, PATH_MAX, "%s/%s", dir, file) >= PATH_MAX)
        ex_die("%s/%s: the path is too long", dir, file);
    return p;
}

int ex_done(void)
{
    const int64_t live = tg_debug_live_tensors();
    if (live != 0)
        fprintf(stderr, "%s: %lld tensors leaked\n", prog, (long long)live);
    return live != 0;
}

double ex_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
