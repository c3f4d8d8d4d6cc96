/* The process and file helpers of the mnist_gan end-to-end tests (gan_run.h). */
#include "gan_run.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

char program[PATH_MAX];
char root[PATH_MAX];
const char *cwd_dir;
int n_runs;
double run_seconds;

double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char **strs;
static int n_strs, cap_strs;

const char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = NULL;
    if (vasprintf(&s, f, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s)
        fail_msg("out of memory");
    if (n_strs == cap_strs) {
        cap_strs = cap_strs ? 2 * cap_strs : 64;
        strs = realloc(strs, sizeof *strs * (size_t)cap_strs);
        assert_non_null(strs);
    }
    return strs[n_strs++] = s;
}

/* ---- files ------------------------------------------------------------------------------- */

char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap + 1);
    size_t got;
    while (b && (got = fread(b + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *nb = realloc(b, 2 * cap + 1);
            if (!nb)
                free(b);
            b = nb, cap *= 2;
        }
    }
    fclose(f);
    if (b)
        b[len] = '\0';
    if (n)
        *n = len;
    return b;
}

char *must_read(const char *path, size_t *n)
{
    char *b = read_file(path, n);
    if (!b)
        fail_msg("cannot read %s: %s", path, strerror(errno));
    return b;
}

void write_file(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f) != 0)
        fail_msg("cannot write %s", path);
}

void copy_file(const char *src, const char *dst)
{
    size_t n;
    char *b = must_read(src, &n);
    write_file(dst, b, n);
    free(b);
}

bool same_file(const char *a, const char *b)
{
    size_t na, nb;
    char *x = must_read(a, &na), *y = must_read(b, &nb);
    bool same = na == nb && memcmp(x, y, na) == 0;
    free(x), free(y);
    return same;
}

bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

void make_dir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        fail_msg("mkdir %s: %s", path, strerror(errno));
}

void copy_dir(const char *src, const char *dst)
{
    make_dir(dst);
    DIR *d = opendir(src);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *p = fmt("%s/%s", src, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
            copy_file(p, fmt("%s/%s", dst, e->d_name));
    }
    closedir(d);
}

void remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                char p[PATH_MAX];
                snprintf(p, sizeof p, "%s/%s", path, e->d_name);
                remove_tree(p);
            }
        }
        if (d)
            closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char **names_with(const char *dir, const char *part, int *n)
{
    char **v = calloc(1, sizeof *v);
    int k = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (v && d && (e = readdir(d))) {
        if (!strstr(e->d_name, part))
            continue;
        char **nv = realloc(v, sizeof *v * (size_t)(k + 2));
        if (!nv)
            break;
        v = nv;
        v[k++] = strdup(e->d_name);
        v[k] = NULL;
    }
    if (d)
        closedir(d);
    if (!v)
        fail_msg("out of memory");
    qsort(v, (size_t)k, sizeof *v, name_cmp);
    *n = k;
    return v;
}

void free_names(char **names)
{
    for (char **p = names; p && *p; p++)
        free(*p);
    free(names);
}

/* ---- set-up ------------------------------------------------------------------------------- */

bool run_set_program(int argc, char **argv, const char *usage_tail)
{
    const char *p = argc > 1 ? argv[1] : getenv("MNIST_GAN");
    if (!p || !realpath(p, program)) {
        fprintf(stderr, "usage: %s PATH/TO/mnist_gan%s (%s: %s)\n", argv[0], usage_tail,
                p ? p : "no path", p ? strerror(errno) : "none given");
        return false;
    }
    return true;
}

bool run_make_root(const char *name)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/%s_XXXXXX", tmp && tmp[0] ? tmp : "/tmp", name);
    if (!mkdtemp(root)) {
        print_error("mkdtemp %s: %s\n", root, strerror(errno));
        return false;
    }
    cwd_dir = fmt("%s/cwd", root);
    make_dir(cwd_dir);
    make_dir(fmt("%s/logs", root));
    return true;
}

int run_teardown(void **state)
{
    (void)state;
    const char *keep = getenv("TG_KEEP_TMP");
    if (keep && keep[0] && strcmp(keep, "0"))
        print_message("kept %s\n", root);
    else
        remove_tree(root);
    for (int i = 0; i < n_strs; i++)
        free(strs[i]);
    free(strs);
    strs = NULL, n_strs = cap_strs = 0;
    cwd_dir = NULL;
    return 0;
}

bool find_in_path(const char *name, char out[PATH_MAX])
{
    const char *path = getenv("PATH");
    char *dirs = strdup(path ? path : ""), *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, PATH_MAX, "%s/%s", d, name);
        struct stat st; /* a folder of that name (e.g. /usr/lib/x86_64-linux-gnu/valgrind) */
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode) && access(out, X_OK) == 0) {
            free(dirs);
            return true;
        }
    }
    free(dirs);
    out[0] = '\0';
    return false;
}

/* ---- running programs -------------------------------------------------------------------- */

void run_free(run_result *r)
{
    free(r->out), free(r->err);
    r->out = r->err = NULL;
}

/* A run never outlives the test that started it (issue 18: a test that meson timed out left
 * its mnist_gan runs training). Meson starts each test in a session of its own and, on a
 * timeout, sends SIGTERM and then SIGKILL to that process group; but each run has a process
 * group of its own, so that the tests can kill a run and whatever it started (Chromium's
 * helpers) without killing themselves, and meson's kill never reached them. Leaving the runs
 * in the test's group would cover only that one way of dying - not a test killed alone (kill
 * -9 PID, the OOM killer, a crash) - and lose the per-run kill. So, whatever ends the test:
 *   - the child asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), which
 *     holds across exec (mnist_gan, valgrind and Chromium are not set-uid) and cannot be
 *     caught or missed. If the test died between fork() and prctl(), no signal would come: the
 *     child then has another parent (init or a subreaper) and exits at once (125). The signal
 *     is tied to the thread that forked: call start() from the test's main thread only.
 *   - SIGTERM, SIGINT or SIGHUP to the test first kills the process group of every run still
 *     going, so that what a run started itself goes too (the death signal reaches the child
 *     only), then the test dies of the signal.
 * test_gan_crash's test_runs_die_with_test checks both, and the race (start_child_delay). */
double start_child_delay;

#define MAX_LIVE 16
static volatile pid_t live[MAX_LIVE]; /* runs started and not collected by finish() */

static void kill_runs_and_die(int sig)
{
    for (int i = 0; i < MAX_LIVE; i++) {
        pid_t p = live[i];
        /* 0: still running; p: ended, reaped now (its helpers may live on in its group); -1:
         * collected elsewhere, and its group id may be another's by now */
        if (p > 0 && waitpid(p, NULL, WNOHANG) >= 0)
            kill(-p, SIGKILL);
    }
    signal(sig, SIG_DFL);
    raise(sig); /* delivered when the handler returns */
}

static void set_live(pid_t old, pid_t pid)
{
    for (int i = 0; i < MAX_LIVE; i++)
        if (live[i] == old) {
            live[i] = pid;
            return;
        }
}

pid_t start(const char *const argv[], const start_opts *opts, const char **tag)
{
    static bool handlers;
    if (!handlers) {
        const int sigs[] = {SIGTERM, SIGINT, SIGHUP};
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
            struct sigaction sa = {.sa_handler = kill_runs_and_die};
            sigemptyset(&sa.sa_mask);
            sigaction(sigs[i], &sa, NULL);
        }
        handlers = true;
    }
    *tag = fmt("%s/logs/run%03d", root, ++n_runs);
    const char *out = fmt("%s.out", *tag), *err = fmt("%s.err", *tag);
    /* Opened here, not in the child: a run killed right after the fork, before it could open
     * them (test_gan_crash kills at random moments of startup), still leaves the files that
     * finish() reads. CLOEXEC: the run keeps only its copies as stdout and stderr. */
    int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fo < 0 || fe < 0)
        fail_msg("cannot create %s or %s: %s", out, err, strerror(errno));
    fflush(stdout), fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        if (start_child_delay > 0) /* test_gan_crash: the parent dies in the meantime */
            nanosleep(&(struct timespec){0, (long)(start_child_delay * 1e9)}, NULL);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(125);
        setpgid(0, 0);
        int fi = open("/dev/null", O_RDONLY);
        if (fi < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0 || dup2(fi, 0) < 0 || chdir(cwd_dir) != 0)
            _exit(126);
        if (opts && opts->home)
            setenv("HOME", opts->home, 1);
        if (opts && opts->fsize) {
            /* SIGXFSZ at its default, as a shell's `ulimit -f` leaves it: the program must
             * ignore it itself so that the write fails with EFBIG (issue 19); exec keeps the
             * limit. */
            struct rlimit rl = {opts->fsize, opts->fsize};
            if (signal(SIGXFSZ, SIG_DFL) == SIG_ERR || setrlimit(RLIMIT_FSIZE, &rl) != 0)
                _exit(126);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fo), close(fe);
    /* here too, so that a kill(-pid) right after start() cannot come before the child's */
    setpgid(pid, pid);
    set_live(0, pid);
    return pid;
}

run_result finish(pid_t pid, const char *tag, double t0, double timeout, bool kill_group)
{
    run_result r = {0};
    int ws = 0;
    for (;;) {
        pid_t w = waitpid(pid, &ws, WNOHANG);
        if (w == pid)
            break;
        if (w < 0)
            fail_msg("waitpid: %s", strerror(errno));
        if (now() - t0 > timeout) {
            kill(-pid, SIGKILL);
            waitpid(pid, &ws, 0);
            set_live(pid, 0);
            fail_msg("%s ran over %.0f s and was killed", tag, timeout);
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    set_live(pid, 0);
    if (kill_group)
        kill(-pid, SIGKILL); /* helpers it left behind (Chromium's) */
    r.seconds = now() - t0;
    r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
    r.out = must_read(fmt("%s.out", tag), NULL);
    r.err = must_read(fmt("%s.err", tag), NULL);
    return r;
}

run_result run_with(const char *const prefix[], const char *const args[])
{
    const char *argv[64];
    int k = 0;
    for (int i = 0; prefix[i]; i++)
        argv[k++] = prefix[i];
    for (int i = 0; args[i]; i++) {
        assert_true(k < 63);
        argv[k++] = args[i];
    }
    argv[k] = NULL;
    const char *tag;
    double t0 = now();
    pid_t pid = start(argv, NULL, &tag);
    run_result r = finish(pid, tag, t0, RUN_TIMEOUT, false);
    run_seconds += r.seconds;
    return r;
}

run_result gan(const char *const args[])
{
    return run_with((const char *const[]){program, NULL}, args);
}

#define GAN(...) gan((const char *const[]){__VA_ARGS__, NULL})

const char *cmdline(const char *const args[])
{
    char b[2048] = "mnist_gan";
    for (int i = 0; args[i]; i++) {
        size_t n = strlen(b);
        snprintf(b + n, sizeof b - n, " %s", args[i]);
    }
    return fmt("%s", b);
}

void assert_ran(const run_result *r, const char *what)
{
    if (r->status != 0)
        fail_msg("%s: exit status %d, stderr:\n%s", what, r->status, r->err);
}

/* n items of the idx file at path (raw or .gz): header bytes, then n records of rec bytes. */
static bool read_idx_prefix(const char *path, uint32_t magic, int hdr, size_t rec, int64_t n,
                            unsigned char *out)
{
    gzFile f = gzopen(path, "rb");
    if (!f)
        f = gzopen(fmt("%s.gz", path), "rb");
    if (!f)
        return false;
    size_t want = (size_t)hdr + rec * (size_t)n;
    bool ok = gzread(f, out, (unsigned)want) == (int)want;
    gzclose(f);
    uint32_t m = (uint32_t)out[0] << 24 | out[1] << 16 | out[2] << 8 | out[3];
    uint32_t count = (uint32_t)out[4] << 24 | out[5] << 16 | out[6] << 8 | out[7];
    return ok && m == magic && count >= (uint32_t)n;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* The synthetic digits: a ring whose size and place follow the label, a bar for odd labels,
 * some noise. */
bool make_dataset(const char *dir, int64_t n)
{
    make_dir(dir);
    size_t ni = 16 + 784 * (size_t)n, nl = 8 + (size_t)n;
    unsigned char *img = malloc(ni), *lab = malloc(nl);
    assert_non_null(img), assert_non_null(lab);
    const char *src = getenv("TG_MNIST_DIR");
    bool real_mnist =
        src && read_idx_prefix(fmt("%s/train-images-idx3-ubyte", src), 0x803, 16, 784, n, img) &&
        read_idx_prefix(fmt("%s/train-labels-idx1-ubyte", src), 0x801, 8, 1, n, lab);
    if (!real_mnist) {
        print_message("no MNIST in TG_MNIST_DIR=%s: a synthetic set of %lld images\n",
                      src ? src : "(unset)", (long long)n);
        uint32_t seed = 12345;
        for (int64_t i = 0; i < n; i++) {
            int label = (int)(i % 10);
            lab[8 + i] = (unsigned char)label;
            unsigned char *p = img + 16 + 784 * i;
            double cx = 14 + (label % 3) - 1, cy = 14 + (label % 2), rad = 5 + label / 3.0;
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++) {
                    seed = seed * 1664525u + 1013904223u;
                    double d = sqrt((x - cx) * (x - cx) + (y - cy) * (y - cy));
                    double v = fmax(0, 1 - fabs(d - rad) / 1.5);
                    if (label % 2 && x >= 13 && x <= 14 && y >= 4 && y <= 23)
                        v = 1;
                    v = fmin(1, v + (seed >> 24) / 255.0 * 0.1);
                    p[y * 28 + x] = (unsigned char)(v * 255);
                }
        }
    }
    put_be32(img, 0x803), put_be32(img + 4, (uint32_t)n), put_be32(img + 8, 28);
    put_be32(img + 12, 28);
    put_be32(lab, 0x801), put_be32(lab + 4, (uint32_t)n);
    write_file(fmt("%s/train-images-idx3-ubyte", dir), img, ni);
    write_file(fmt("%s/train-labels-idx1-ubyte", dir), lab, nl);
    free(img), free(lab);
    return real_mnist;
}

csv_file csv_load(const char *path)
{
    return csv_load_header(path, CSV_HEADER);
}

csv_file csv_load_header(const char *path, const char *header)
{
    csv_file c = {0};
    c.buf = must_read(path, NULL);
    char *nl = strchr(c.buf, '\n');
    if (!nl || (size_t)(nl - c.buf) != strlen(header) ||
        strncmp(c.buf, header, strlen(header)) != 0)
        fail_msg("%s: header is not \"%s\"", path, header);
    for (char *p = nl + 1; *p;) {
        char *e = strchr(p, '\n');
        if (!e)
            fail_msg("%s: last line \"%s\" has no newline (torn)", path, p);
        *e = '\0';
        c.rows = realloc(c.rows, sizeof *c.rows * (size_t)(c.n + 1));
        c.rows[c.n++] = p;
        p = e + 1;
    }
    return c;
}

void csv_free(csv_file *c)
{
    free(c->rows), free(c->buf);
    *c = (csv_file){0};
}

const char *row_key(const char *row)
{
    const char *c = strrchr(row, ',');
    return fmt("%.*s", c ? (int)(c - row) : (int)strlen(row), row);
}

tg_state_dict *ckpt_load(const char *path)
{
    tg_state_dict *sd = tg_data_load_safetensors(path);
    if (!sd)
        fail_msg("%s", tg_last_error());
    return sd;
}

void assert_same_checkpoint(const char *pa, const char *pb)
{
    tg_state_dict *a = ckpt_load(pa), *b = ckpt_load(pb);
    const char *diff = NULL;
    if (tg_state_dict_size(a) != tg_state_dict_size(b))
        diff = fmt("%lld against %lld tensors", (long long)tg_state_dict_size(a),
                   (long long)tg_state_dict_size(b));
    for (int64_t i = 0; !diff && i < tg_state_dict_size(a); i++) {
        const char *name = tg_state_dict_name(a, i);
        const tg_tensor *x = tg_state_dict_tensor(a, i), *y = tg_state_dict_get(b, name);
        if (!y || strcmp(tg_state_dict_name(b, i), name) != 0)
            diff = fmt("tensor %s is not in the same place", name);
        else if (x->ndim != y->ndim || x->numel != y->numel ||
                 memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim) != 0)
            diff = fmt("tensor %s has another shape", name);
        else
            for (int64_t k = 0; k < x->numel && !diff; k++)
                if (memcmp(&x->data[k], &y->data[k], sizeof(float)) != 0)
                    diff = fmt("%s[%lld] is %.9g against %.9g", name, (long long)k, x->data[k],
                               y->data[k]);
    }
    if (!diff && tg_state_dict_meta_size(a) != tg_state_dict_meta_size(b))
        diff = "not the same metadata keys";
    for (int64_t i = 0; !diff && i < tg_state_dict_meta_size(a); i++) {
        const char *key = tg_state_dict_meta_key(a, i), *v = tg_state_dict_meta_value(a, i);
        const char *w = tg_state_dict_meta(b, key);
        if (strcmp(key, "seconds") != 0 && (!w || strcmp(v, w) != 0))
            diff = fmt("metadata %s is \"%s\" against \"%s\"", key, v, w ? w : "(missing)");
    }
    tg_state_dict_free(a);
    tg_state_dict_free(b);
    if (diff)
        fail_msg("%s and %s differ: %s", pa, pb, diff);
}
