/* Shared by the libFuzzer targets: scratch files in memory, and the checks every target
 * makes after each input beyond the sanitizers' own — nothing printed on stdout, no exit, no
 * tensor left alive, no error status that a later call could mistake for its own. A failed
 * check aborts, which libFuzzer reports as a crash with the input that caused it. */
#ifndef TAPEGRAD_FUZZ_H
#define TAPEGRAD_FUZZ_H

#include "tensor.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* True while a target is inside the code under test: an exit() there is a finding. */
static bool fuzz_inside;

static inline void fuzz_fail(const char *what)
{
    fprintf(stderr, "fuzz: %s\n", what);
    abort();
}

static inline void fuzz_on_exit(void)
{
    if (fuzz_inside)
        fuzz_fail("the code under test called exit()");
}

/* Once per process: stdout goes to a scratch file, so that anything the code under test prints
 * (library code never prints) shows as a non-empty file; exit() is caught; one thread, as the
 * inputs are tiny and libFuzzer measures executions. */
static inline void fuzz_init(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/tg_fuzz_stdout.%ld", (long)getpid());
    if (!freopen(path, "w+", stdout))
        fuzz_fail("cannot redirect stdout");
    unlink(path); /* the open stream keeps it alive */
    atexit(fuzz_on_exit);
    tg_set_num_threads(1);
}

/* A scratch file: the readers under test take a path, and an in-memory file (memfd) gives them
 * one, /proc/self/fd/N, without disk writes or files to clean up. */
typedef struct {
    int fd;
    char path[32];
} fuzz_file;

static inline void fuzz_file_open(fuzz_file *f, const char *name)
{
    f->fd = memfd_create(name, 0);
    if (f->fd < 0)
        fuzz_fail("memfd_create failed");
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
}

/* Replaces the file's contents with the given bytes. */
static inline void fuzz_file_write(const fuzz_file *f, const void *data, size_t size)
{
    if (ftruncate(f->fd, 0) != 0 || (size && pwrite(f->fd, data, size, 0) != (ssize_t)size))
        fuzz_fail("cannot write the scratch file");
}

/* After each call into the code under test. */
static inline void fuzz_check(void)
{
    fflush(stdout);
    struct stat st;
    if (fstat(fileno(stdout), &st) != 0 || st.st_size != 0)
        fuzz_fail("the code under test printed on stdout");
    if (tg_debug_live_tensors() != 0 || tg_debug_live_nodes() != 0)
        fuzz_fail("tensors or graph nodes left alive (a reference leak)");
    tg_clear_error();
}

#endif
