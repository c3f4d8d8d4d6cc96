/* Crash safety of mnist_gan (issue 7): the program killed or starved of disk while it trains,
 * on a tiny set - 48 images in batches of 16, so an epoch is 3 iterations and a checkpoint is
 * written every 3 - with width / 8 and one thread.
 *
 *   1. SIGKILL at random moments, KILLS times over, each run resuming from what the last one
 *      left: a third of the kills wait until a checkpoint save has begun (its temporary file is
 *      there) and strike 0-3 ms later, a third strike at random within the time a run with
 *      nothing to train takes (startup), the others at random over 1.5 times a whole run of
 *      one epoch (startup, iterations, grid writes and saves). After each kill: the checkpoint
 *      (once there is one) loads with tg_data_load_safetensors and holds the tensors of an
 *      uninterrupted run with their shapes, at an epoch's end, never behind the one before; at
 *      most one temporary file per target is left (data/atomic.c removes a dead writer's
 *      leftovers at the next save of the same file), and none once a run ends cleanly. Then
 *      --resume runs to the end: exit 0, rows 1..N of losses.csv in order with no gap or
 *      duplicate, and the same rows and final checkpoint (bit for bit) as one run that was
 *      never killed.
 *   2. Disk full: --resume with RLIMIT_FSIZE below the checkpoint's size (SIGXFSZ ignored, so
 *      the write fails with EFBIG): exit 1, one line naming the checkpoint and "File too
 *      large", the previous checkpoint byte for byte as it was, no temporary file; a --resume
 *      without the limit then completes the run.
 *   3. The output folder gone mid-run (the tests run as root, which chmod cannot stop): OUT is
 *      a symlink to the real folder, turned into a symlink to a regular file while the run
 *      iterates; the next save fails with exit 1 and one line naming the checkpoint and "Not a
 *      directory"; the real folder keeps its checkpoint intact and no temporary file; with OUT
 *      restored, --resume completes the run.
 *   4. Runs die with the test (issue 18): a stand-in for this test process starts a run and is
 *      killed as meson kills a test that times out (SIGTERM to its process group; the run has
 *      a helper process, which must go too), with SIGKILL alone, or right after its fork -
 *      before the run's prctl (the race gan_run.c's start() guards against) and at random; the
 *      run, now this process's child (it is their subreaper), must end within seconds.
 *
 * Usage: test_gan_crash PATH/TO/mnist_gan (meson passes it). TG_CRASH_SEED=S replays the kill
 * delays of another seed (each run prints its seed); TG_KEEP_TMP=1 keeps the temporary
 * folder. */
#include "gan_run.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KILLS 30
#define PER_EPOCH 3 /* iterations per epoch on the 48-image set */
/* Iterations left to a run that is to be killed: about 20 s of CPU, far beyond its kill (at most
 * 1.5 times the time of a run of one epoch, 3 iterations, or 3 ms into its first save), yet a
 * run that nobody kills (a stuck test) ends by itself. */
#define KILLED_RUN_LEFT 1000
#define CKPT "checkpoint.safetensors"

static const char *data_dir;   /* 48 images: 3 iterations per epoch */
static const char *data10_dir; /* 160 images: 10 iterations per epoch */
static uint64_t rng_state;

/* Uniform in [0, 1) (xorshift64*): the kill delays, replayable from the printed seed. */
static double uniform(void)
{
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545F4914F6CDD1Dull) >> 11) * 0x1.0p-53;
}

static void sleep_for(double secs)
{
    struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    nanosleep(&ts, NULL);
}

/* argv (program first) of a train run on data into out: fresh with the small sizes, or
 * --resume (the checkpoint brings them); a grid and report.html every log_every iterations. */
static const char *const *train_argv(const char *a[24], const char *data, const char *out,
                                     const char *iters, bool resume, const char *log_every)
{
    int k = 0;
    const char *const head[] = {program,   "train", "--data",    data, "--out",       out,
                                "--iters", iters,   "--threads", "1",  "--log-every", log_every};
    for (size_t i = 0; i < sizeof head / sizeof head[0]; i++)
        a[k++] = head[i];
    if (resume) {
        a[k++] = "--resume";
    } else {
        a[k++] = "--width-div", a[k++] = "8", a[k++] = "--batch", a[k++] = "16";
    }
    a[k] = NULL;
    return a;
}

/* Runs train to its end (argv without the program, as gan() takes it). */
static void train_to_end(const char *data, const char *out, int iters, bool resume)
{
    const char *a[24];
    const char *const *argv = train_argv(a, data, out, fmt("%d", iters), resume, "2");
    run_result r = gan(argv + 1);
    assert_ran(&r, cmdline(argv + 1));
    run_free(&r);
}

/* The checkpoint's "iteration". */
static long long ckpt_iteration(const tg_state_dict *sd, const char *path)
{
    const char *v = tg_state_dict_meta(sd, "iteration");
    long long it = 0; /* cmocka's fail_msg is not declared noreturn */
    if (!v || sscanf(v, "%lld", &it) != 1)
        fail_msg("%s: metadata \"iteration\" is %s", path, v ? v : "missing");
    return it;
}

/* path loads and holds ref's tensor names, in order, with ref's shapes; its iteration. */
static long long check_checkpoint(const char *path, const tg_state_dict *ref)
{
    tg_state_dict *sd = ckpt_load(path);
    const char *diff = NULL;
    if (tg_state_dict_size(sd) != tg_state_dict_size(ref))
        diff = fmt("%lld tensors, expected %lld", (long long)tg_state_dict_size(sd),
                   (long long)tg_state_dict_size(ref));
    for (int64_t i = 0; !diff && i < tg_state_dict_size(ref); i++) {
        const tg_tensor *x = tg_state_dict_tensor(sd, i), *y = tg_state_dict_tensor(ref, i);
        if (strcmp(tg_state_dict_name(sd, i), tg_state_dict_name(ref, i)) != 0)
            diff = fmt("tensor %lld is %s, expected %s", (long long)i, tg_state_dict_name(sd, i),
                       tg_state_dict_name(ref, i));
        else if (x->ndim != y->ndim ||
                 memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim) != 0)
            diff = fmt("tensor %s has another shape", tg_state_dict_name(ref, i));
    }
    long long it = diff ? 0 : ckpt_iteration(sd, path);
    tg_state_dict_free(sd);
    if (diff)
        fail_msg("%s: %s", path, diff);
    return it;
}

static bool listed(char **names, const char *name)
{
    for (char **p = names; p && *p; p++)
        if (!strcmp(*p, name))
            return true;
    return false;
}

/* The temporary files in dir; fails when one target has two (leftovers piling up). Those not
 * in before (NULL: none) are new: *new_ckpt counts the checkpoint's, *new_other the others'. */
static int count_temps(const char *dir, char **before, int *new_ckpt, int *new_other)
{
    int n;
    char **names = names_with(dir, ".tmp.", &n);
    *new_ckpt = *new_other = 0;
    for (int i = 0; i < n; i++) {
        size_t target = (size_t)(strstr(names[i], ".tmp.") - names[i]);
        if (i > 0 && !strncmp(names[i - 1], names[i], target + 5)) {
            const char *a = fmt("%s", names[i - 1]), *b = fmt("%s", names[i]);
            free_names(names);
            fail_msg("%s holds two temporary files of one target: %s and %s", dir, a, b);
        }
        if (!listed(before, names[i]))
            ++*(strncmp(names[i], CKPT ".tmp.", strlen(CKPT) + 5) ? new_other : new_ckpt);
    }
    free_names(names);
    return n;
}

/* losses.csv of dir holds rows for iterations 1..n exactly, each in its epoch and batch. */
static void assert_rows_contiguous(const char *dir, int n, int per_epoch)
{
    const char *path = fmt("%s/losses.csv", dir);
    csv_file c = csv_load(path);
    const char *why = c.n != n ? fmt("%d rows, expected %d", c.n, n) : NULL;
    for (int i = 0; !why && i < c.n; i++) {
        long long it, ep, b;
        if (sscanf(c.rows[i], "%lld,%lld,%lld,", &it, &ep, &b) != 3 || it != i + 1 ||
            ep != i / per_epoch || b != i % per_epoch)
            why = fmt("row %d is \"%s\", expected iteration %d, epoch %d, batch %d", i + 1,
                      c.rows[i], i + 1, i / per_epoch, i % per_epoch);
    }
    csv_free(&c);
    if (why)
        fail_msg("%s: %s", path, why);
}

/* Rows of losses.csv (0 when absent), torn last line included. */
static int count_rows(const char *dir)
{
    char *b = read_file(fmt("%s/losses.csv", dir), NULL);
    int rows = 0;
    for (char *p = b; p && (p = strchr(p, '\n')); p++)
        rows++;
    free(b);
    return rows > 0 ? rows - 1 : 0;
}

/* Sends SIGKILL to the run's process group and reaps it; fails unless the kill ended it.
 * True when the run had begun iterating (it prints its header line just before). */
static bool kill_run(pid_t pid, const char *tag, double t0)
{
    kill(-pid, SIGKILL);
    run_result r = finish(pid, tag, t0, RUN_TIMEOUT, false);
    int status = r.status;
    const char *err = fmt("%s", r.err);
    bool iterating = strstr(r.out, " iterations (") != NULL;
    run_free(&r);
    if (status != 128 + SIGKILL)
        fail_msg("the run to be killed ended by itself with status %d:\n%s", status, err);
    return iterating;
}

/* A kill before the run has opened anything (its child held 0.3 s after the fork): the logs
 * that finish() reads exist all the same, empty, and the run died of the SIGKILL. Kills at
 * random moments of startup (below) struck there under load, and finish() failed on the
 * missing log. */
static void test_kill_before_logs(void **state)
{
    (void)state;
    const char *a[24], *tag;
    start_child_delay = 0.3;
    double s0 = now();
    pid_t pid = start(train_argv(a, data_dir, fmt("%s/early", root), "1", false, "1"), NULL, &tag);
    start_child_delay = 0;
    if (kill_run(pid, tag, s0))
        fail_msg("the run killed before it started says it was iterating");
}

/* ---- 1. SIGKILL at random moments -------------------------------------------------------- */

static void test_kill_and_resume(void **state)
{
    (void)state;
    double t0 = now();
    const char *dir = fmt("%s/killed", root), *ck = fmt("%s/%s", dir, CKPT);
    /* The layout every checkpoint must have, and the time to startup plus one epoch. */
    const char *probe = fmt("%s/probe", root);
    double p0 = now();
    train_to_end(data_dir, probe, PER_EPOCH, false);
    double epoch_secs = now() - p0;
    p0 = now();
    train_to_end(data_dir, probe, PER_EPOCH, true); /* nothing to train: startup and exit */
    double startup_secs = now() - p0;
    tg_state_dict *layout = ckpt_load(fmt("%s/%s", probe, CKPT));
    const double window = 1.5 * epoch_secs;

    enum { AT_STARTUP, AT_ITERATION, AT_SAVE, AT_OTHER_WRITE, N_AT };
    static const char *const at_names[N_AT] = {"during startup", "between writes",
                                               "in a checkpoint save", "in another file's write"};
    int at[N_AT] = {0}, resumes = 0, max_temps = 0;
    long long last_it = 0;
    for (int k = 0; k < KILLS; k++) {
        bool resume = exists(ck);
        resumes += resume;
        int n_before;
        char **before = names_with(dir, ".tmp.", &n_before); /* earlier kills' leftovers */
        const char *a[24], *tag;
        double s0 = now();
        const char *iters = fmt("%lld", last_it + KILLED_RUN_LEFT);
        pid_t pid = start(train_argv(a, data_dir, dir, iters, resume, "2"), NULL, &tag);
        if (k % 3 == 2) {
            /* Strike inside a save: wait for a new temporary file of the checkpoint (not the
             * leftover of an earlier kill, which the run removes when it saves). */
            bool in_save = false;
            while (!in_save && now() - s0 < RUN_TIMEOUT) {
                if (waitpid(pid, NULL, WNOHANG) == pid)
                    fail_msg("kill %d: the run ended by itself", k + 1);
                int n;
                char **names = names_with(dir, CKPT ".tmp.", &n);
                for (int i = 0; i < n; i++)
                    in_save |= !listed(before, names[i]);
                free_names(names);
                if (!in_save)
                    sleep_for(2e-4);
            }
            sleep_for(3e-3 * uniform());
        } else {
            /* every third kill within the time a run takes to start (load the data and the
             * checkpoint, rewrite losses.csv) */
            sleep_for((k % 3 ? window : startup_secs) * uniform());
        }
        bool iterating = kill_run(pid, tag, s0);

        int new_ckpt, new_other;
        int temps = count_temps(dir, before, &new_ckpt, &new_other);
        free_names(before);
        max_temps = temps > max_temps ? temps : max_temps;
        int where = new_ckpt    ? AT_SAVE
                    : new_other ? AT_OTHER_WRITE
                    : iterating ? AT_ITERATION
                                : AT_STARTUP;
        at[where]++;
        if (exists(ck)) {
            long long it = check_checkpoint(ck, layout);
            if (it % PER_EPOCH != 0 || it < last_it)
                fail_msg("kill %d: the checkpoint is at iteration %lld, the one before at %lld",
                         k + 1, it, last_it);
            last_it = it;
        }
    }
    tg_state_dict_free(layout);

    /* The run to the end: two epochs and a bit more past the last checkpoint. */
    const int total = (int)last_it + 2 * PER_EPOCH + 1;
    train_to_end(data_dir, dir, total, exists(ck));
    int new_ckpt, new_other;
    int left = count_temps(dir, NULL, &new_ckpt, &new_other);
    if (left)
        fail_msg("%d temporary files are left in %s after a clean run", left, dir);
    assert_rows_contiguous(dir, total, PER_EPOCH);
    tg_state_dict *sd = ckpt_load(ck);
    long long end = ckpt_iteration(sd, ck);
    tg_state_dict_free(sd);
    assert_int_equal(end, total);

    /* ... and it is the run that was never killed */
    const char *ref = fmt("%s/unkilled", root);
    train_to_end(data_dir, ref, total, false);
    csv_file x = csv_load(fmt("%s/losses.csv", ref)), y = csv_load(fmt("%s/losses.csv", dir));
    for (int i = 0; i < total; i++)
        if (strcmp(row_key(x.rows[i]), row_key(y.rows[i])) != 0)
            fail_msg("row %d differs:\n  never killed: %s\n  killed %d times: %s", i + 1, x.rows[i],
                     KILLS, y.rows[i]);
    csv_free(&x), csv_free(&y);
    assert_same_checkpoint(fmt("%s/%s", ref, CKPT), ck);

    print_message("%d kills (startup %.2f s, window %.2f s): %d %s, %d %s, %d %s, %d %s; %d "
                  "resumes, at most %d temporary files at once; then to iteration %d: rows "
                  "contiguous, identical to a run never killed (%.1f s)\n",
                  KILLS, startup_secs, window, at[AT_STARTUP], at_names[AT_STARTUP],
                  at[AT_ITERATION], at_names[AT_ITERATION], at[AT_SAVE], at_names[AT_SAVE],
                  at[AT_OTHER_WRITE], at_names[AT_OTHER_WRITE], resumes, max_temps, total,
                  now() - t0);
}

/* ---- 2 and 3: a save that fails ------------------------------------------------------------ */

/* r failed as a failed save must: exit 1, one line on stderr naming the checkpoint and the
 * system's reason, nothing on stdout but the run's progress. */
static void assert_save_failed(const run_result *r, const char *ck, const char *reason)
{
    const char *nl = strchr(r->err, '\n');
    const char *why = r->status != 1 ? fmt("exit status %d, expected 1", r->status)
                      : !nl || nl[1] ? "stderr is not exactly one line"
                      : strncmp(r->err, "mnist_gan: ", 11) ? "stderr lacks the program's name"
                      : !strstr(r->err, ck)                ? fmt("stderr does not name %s", ck)
                      : !strstr(r->err, reason) ? fmt("stderr does not say \"%s\"", reason)
                                                : NULL;
    if (why)
        fail_msg("a failed save: %s; stderr:\n%s", why, r->err);
    print_message("failed save: %s", r->err);
}

/* The checkpoint in dir holds exactly the bytes it held, loads, and no temporary file is
 * left beside it. */
static void assert_intact(const char *dir, const char *bytes, size_t n)
{
    size_t m;
    const char *ck = fmt("%s/%s", dir, CKPT);
    char *now_bytes = must_read(ck, &m);
    bool same = m == n && memcmp(now_bytes, bytes, n) == 0;
    free(now_bytes);
    if (!same)
        fail_msg("%s changed in the failed save", ck);
    tg_state_dict_free(ckpt_load(ck));
    int new_ckpt, new_other;
    int temps = count_temps(dir, NULL, &new_ckpt, &new_other);
    if (temps)
        fail_msg("%d temporary files are left in %s", temps, dir);
}

/* Disk full: the resumed run's first save (iteration 6) hits RLIMIT_FSIZE at half the
 * checkpoint's size; the grids and logs it writes before are far smaller. */
static void test_disk_full(void **state)
{
    (void)state;
    double t0 = now();
    const char *dir = fmt("%s/full", root), *ck = fmt("%s/%s", dir, CKPT);
    train_to_end(data_dir, dir, PER_EPOCH, false);
    size_t n;
    char *before = must_read(ck, &n);
    const char *a[24], *tag;
    double s0 = now();
    pid_t pid = start(train_argv(a, data_dir, dir, "9", true, "2"),
                      &(start_opts){.fsize = (rlim_t)n / 2}, &tag);
    run_result r = finish(pid, tag, s0, RUN_TIMEOUT, false);
    assert_save_failed(&r, ck, "File too large");
    run_free(&r);
    assert_intact(dir, before, n);
    free(before);
    train_to_end(data_dir, dir, 9, true);
    assert_rows_contiguous(dir, 9, PER_EPOCH);
    print_message("disk full (a %zu-byte checkpoint, files limited to %zu): exit 1, checkpoint "
                  "intact, resumed to 9 (%.1f s)\n",
                  n, n / 2, now() - t0);
}

/* The output folder taken away mid-run: OUT, a symlink to the real folder, becomes a symlink
 * to a regular file while iterations 11..20 run (epochs of 10 on the 160-image set, no grid
 * before 30); the save at 20 cannot create its temporary file. */
static void test_folder_gone(void **state)
{
    (void)state;
    double t0 = now();
    const char *real = fmt("%s/gone_real", root), *out = fmt("%s/gone", root);
    const char *file = fmt("%s/gone_file", root), *link_tmp = fmt("%s/gone_link", root);
    make_dir(real);
    write_file(file, "x\n", 2);
    if (symlink(real, out) != 0)
        fail_msg("symlink %s: %s", out, strerror(errno));
    train_to_end(data10_dir, out, 10, false);
    size_t n;
    char *before = must_read(fmt("%s/%s", real, CKPT), &n);
    const char *a[24], *tag;
    double s0 = now();
    pid_t pid = start(train_argv(a, data10_dir, out, "30", true, "1000"), NULL, &tag);
    while (count_rows(real) < 12) { /* two iterations in: long after startup's writes */
        if (waitpid(pid, NULL, WNOHANG) == pid)
            fail_msg("the run ended before the folder could be taken away");
        if (now() - s0 > RUN_TIMEOUT) {
            kill_run(pid, tag, s0);
            fail_msg("no iteration 12 after %.0f s", RUN_TIMEOUT);
        }
        sleep_for(1e-3);
    }
    /* atomically, as a folder unmounted or moved away under a running program */
    if (symlink(file, link_tmp) != 0 || rename(link_tmp, out) != 0)
        fail_msg("replacing %s: %s", out, strerror(errno));
    run_result r = finish(pid, tag, s0, RUN_TIMEOUT, false);
    int rows = count_rows(real);
    assert_save_failed(&r, fmt("%s/%s", out, CKPT), "Not a directory");
    run_free(&r);
    if (rows != 20)
        fail_msg("the failed run wrote %d rows, expected 20 (its save at 20 should fail)", rows);
    assert_intact(real, before, n);
    free(before);
    if (symlink(real, link_tmp) != 0 || rename(link_tmp, out) != 0)
        fail_msg("restoring %s: %s", out, strerror(errno));
    train_to_end(data10_dir, out, 30, true);
    assert_rows_contiguous(real, 30, 10);
    print_message("output folder gone at iteration 12: exit 1, checkpoint intact, resumed to 30 "
                  "(%.1f s)\n",
                  now() - t0);
}

/* ---- 4. runs die with the test ---------------------------------------------------------- */

/* The state letter of /proc/PID/stat (0 when there is no such process) and its name. */
static char proc_state(pid_t pid, char comm[32])
{
    char *b = read_file(fmt("/proc/%d/stat", (int)pid), NULL);
    char *open = b ? strchr(b, '(') : NULL, *close = b ? strrchr(b, ')') : NULL;
    char state = open && close && close > open && close[1] ? close[2] : 0;
    if (comm)
        snprintf(comm, 32, "%.*s", state ? (int)(close - open - 1) : 0, state ? open + 1 : "");
    free(b);
    return state;
}

/* Reaps pid, a child of this process, within secs: true with its status (exit code, or 128 +
 * the signal). */
static bool reaped_within(pid_t pid, double secs, int *status)
{
    int ws;
    for (double t0 = now();; sleep_for(1e-3)) {
        pid_t w = waitpid(pid, &ws, WNOHANG);
        if (w == pid) {
            *status = WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
            return true;
        }
        if (w < 0)
            fail_msg("pid %d is not a child of this process: %s", (int)pid, strerror(errno));
        if (now() - t0 > secs)
            return false;
    }
}

/* Kills and reaps what a failed round leaves: the stand-in, the run with its group, the
 * helper (each when > 0 and not reaped yet). */
static void kill_round(pid_t stand_in, pid_t run, pid_t helper)
{
    const pid_t p[] = {stand_in, run, helper};
    for (int i = 0; i < 3; i++)
        if (p[i] > 0 && waitpid(p[i], NULL, WNOHANG) == 0) {
            if (i == 1)
                kill(-p[i], SIGKILL);
            kill(p[i], SIGKILL);
            for (double t0 = now(); now() - t0 < 10 && waitpid(p[i], NULL, WNOHANG) == 0;)
                sleep_for(1e-3);
        }
}

enum { DIE_TERM_GROUP, DIE_KILL, DIE_BEFORE_PRCTL, DIE_AFTER_FORK };
static const char *const die_names[] = {"SIGTERM to its group", "SIGKILL",
                                        "SIGKILL before the run's prctl",
                                        "SIGKILL right after the fork"};

/* One round: a stand-in for this test process (forked, in a process group of its own as meson
 * puts a test) starts a train run with gan_run.c's start() and waits. Once the run trains, this
 * process kills the stand-in the way how says, or the stand-in kills itself right after start()
 * returns: DIE_BEFORE_PRCTL with the child of start() held for 0.5 s first (start_child_delay),
 * so that it finds its parent gone (status 125), DIE_AFTER_FORK at once, before or after the
 * child's prctl. Then the run - now this process's child, as the subreaper - has 10 s to end;
 * with_helper, the run is a shell that starts a helper (sleep) and execs mnist_gan, and the
 * helper must end too. Returns the run's status; fails if it is still there. */
static int orphan_round(int how, int round, bool with_helper)
{
    const char *out = fmt("%s/orphan%d", root, round);
    const char *helper_file = fmt("%s/orphan%d.helper", root, round);
    const char *a[32], *iters = fmt("%d", KILLED_RUN_LEFT); /* a[1..4]: room for the shell */
    const char *const *argv = train_argv(a + 5, data_dir, out, iters, false, "2");
    if (with_helper) {
        const char *const sh[] = {"/bin/sh", "-c", "sleep 300 & echo $! > \"$0\"; exec \"$@\"",
                                  helper_file};
        memcpy(a + 1, sh, sizeof sh);
        argv = a + 1;
    }
    int fds[2];
    if (pipe(fds) != 0)
        fail_msg("pipe: %s", strerror(errno));
    fflush(stdout), fflush(stderr);
    pid_t stand_in = fork();
    if (stand_in < 0)
        fail_msg("fork: %s", strerror(errno));
    if (stand_in == 0) { /* never back into cmocka: it dies of a signal */
        setpgid(0, 0);
        close(fds[0]);
        const char *tag;
        start_child_delay = how == DIE_BEFORE_PRCTL ? 0.5 : 0;
        pid_t run = start(argv, NULL, &tag);
        if (write(fds[1], &run, sizeof run) != (ssize_t)sizeof run)
            _exit(1);
        if (how >= DIE_BEFORE_PRCTL)
            raise(SIGKILL);
        for (;;)
            pause();
    }
    n_runs++; /* the stand-in's start() took that log number */
    close(fds[1]);
    pid_t run = 0, helper = 0;
    ssize_t got = read(fds[0], &run, sizeof run);
    close(fds[0]);
    if (got != (ssize_t)sizeof run) {
        kill_round(stand_in, 0, 0);
        fail_msg("round %d: the stand-in test process did not start a run", round);
    }
    char comm[32] = "";
    if (how < DIE_BEFORE_PRCTL) {
        double t0 = now(); /* until it trains: a row in losses.csv, from mnist_gan */
        while (count_rows(out) < 1) {
            char st = proc_state(run, comm);
            if (!st || st == 'Z' || now() - t0 > RUN_TIMEOUT) {
                kill_round(stand_in, run, 0);
                fail_msg("round %d: the run %s before its first iteration", round,
                         st && st != 'Z' ? "took too long" : "ended");
            }
            sleep_for(1e-3);
        }
        proc_state(run, comm);
        char *h = with_helper ? read_file(helper_file, NULL) : NULL;
        helper = h ? (pid_t)atoi(h) : 0;
        free(h);
        if (strcmp(comm, "mnist_gan") != 0 || (with_helper && helper <= 0)) {
            kill_round(stand_in, run, helper);
            fail_msg("round %d: pid %d is \"%s\", not mnist_gan, or no helper pid in %s", round,
                     (int)run, comm, helper_file);
        }
        kill(how == DIE_TERM_GROUP ? -stand_in : stand_in,
             how == DIE_TERM_GROUP ? SIGTERM : SIGKILL);
    }
    int status;
    if (!reaped_within(stand_in, 10, &status) ||
        status != 128 + (how == DIE_TERM_GROUP ? SIGTERM : SIGKILL)) {
        kill_round(stand_in, run, helper);
        fail_msg("round %d: the stand-in test process did not die of %s", round, die_names[how]);
    }
    /* The run, and then its helper, are this process's children now: they must end. */
    const pid_t p[] = {run, helper};
    int run_status = 0;
    for (int i = 0; i < 2 && p[i] > 0; i++) {
        if (!reaped_within(p[i], 10, &status)) {
            proc_state(p[i], comm);
            kill_round(0, run, helper);
            fail_msg("round %d: %s (pid %d, %s) still ran 10 s after its test process died of "
                     "%s; killed it now",
                     round, comm, (int)p[i], i ? "the run's helper" : "the run", die_names[how]);
        }
        /* SIGKILL, from its death signal or the group kill; 125: start()'s getppid check */
        int want = i == 0 && how == DIE_BEFORE_PRCTL ? 125 : 128 + SIGKILL;
        if (status != want && !(i == 0 && how == DIE_AFTER_FORK && status == 125))
            fail_msg("round %d: %s ended with status %d after its test process died of %s", round,
                     i ? "the run's helper" : "the run", status, die_names[how]);
        if (proc_state(p[i], NULL)) /* and by its pid, it is gone */
            fail_msg("round %d: pid %d is still there", round, (int)p[i]);
        if (i == 0)
            run_status = status;
    }
    return run_status;
}

#define AFTER_FORK_ROUNDS 4

static void test_runs_die_with_test(void **state)
{
    (void)state;
    double t0 = now();
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        fail_msg("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    orphan_round(DIE_TERM_GROUP, 1, true);
    orphan_round(DIE_KILL, 2, false);
    orphan_round(DIE_BEFORE_PRCTL, 3, false);
    int guarded = 0; /* the stand-in died before the run's prctl: start()'s getppid check */
    for (int i = 0; i < AFTER_FORK_ROUNDS; i++)
        guarded += orphan_round(DIE_AFTER_FORK, 4 + i, false) == 125;
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    print_message("runs die with their test: SIGTERM to its group (a helper of the run too), "
                  "SIGKILL, SIGKILL before the run's prctl, and %d SIGKILLs right after the fork "
                  "(%d of them before the run's prctl) (%.1f s)\n",
                  AFTER_FORK_ROUNDS, guarded, now() - t0);
}

/* ---- main ---------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (!run_make_root("tg_gan_crash"))
        return -1;
    data_dir = fmt("%s/data", root);
    data10_dir = fmt("%s/data10", root);
    bool real = make_dataset(data_dir, 48);
    make_dataset(data10_dir, 160);
    print_message("%s MNIST; kill seed %" PRIu64 " (TG_CRASH_SEED replays it)\n",
                  real ? "real" : "synthetic", rng_state);
    return 0;
}

int main(int argc, char **argv)
{
    if (!run_set_program(argc, argv, ""))
        return 2;
    const char *seed = getenv("TG_CRASH_SEED");
    rng_state = seed && seed[0] ? strtoull(seed, NULL, 0) : 1;
    rng_state += !rng_state; /* xorshift's one forbidden state */
    const char *filter = getenv("TG_TEST_FILTER");
    if (filter && filter[0])
        cmocka_set_test_filter(filter);
    const struct CMUnitTest tests[] = {
        TG_TEST(test_runs_die_with_test), TG_TEST(test_kill_before_logs),
        TG_TEST(test_kill_and_resume),    TG_TEST(test_disk_full),
        TG_TEST(test_folder_gone),
    };
    double t0 = now();
    int failed =
        cmocka_run_group_tests_name("mnist_gan crash safety", tests, group_setup, run_teardown);
    printf("mnist_gan crash safety: %.1f s in all, %d program runs\n", now() - t0, n_runs);
    return failed;
}
