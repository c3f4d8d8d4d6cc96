/* Atomic file writes: write a temporary file in the target's folder, flush and fsync it, then
 * rename it over the target and fsync the folder. A crash at any moment leaves either the old
 * file or the new one, never a torn mix; a failed write leaves the old file untouched.
 *
 * Leftovers: a process killed mid-write leaves its temporary file (TARGET.tmp.XXXXXX) behind,
 * and a trainer killed again and again would pile them up until the disk is full. So the
 * writer holds an flock on its temporary file from creation until it is renamed, and every
 * tg_atomic_open of TARGET first removes the TARGET.tmp.* files whose lock it can take: the
 * kernel drops a lock when its process dies, so those have no live writer. Unique names (not
 * one reused TARGET.tmp) keep two processes writing the same target from sharing a file.
 *
 * Only a regular file is replaced. rename() replaces whatever name it is given: as root, a save
 * to /dev/null would replace the device with a file, a save to /dev/stdout or to a symlinked
 * checkpoint would replace the link, a save to a FIFO the FIFO. Writing through such a target
 * instead would not be atomic (a device or FIFO cannot be renamed over, a link's target may be
 * anywhere), so it is refused, before anything is created, and checked again before the rename
 * in case the path changed meanwhile. */
#include "internal.h"
#include "../tensor/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

#define TMP_SUFFIX ".tmp.XXXXXX"

struct tg_atomic_file {
    FILE *fp;
    char *path;
    char *tmp;
    bool failed; /* a write failed: commit will refuse */
};

/* Removes dir/base.tmp.XXXXXX files left by dead writers (see the top). Best effort: whatever
 * cannot be opened, locked or matched is left alone, since it may belong to a live writer. */
static void atomic_sweep(const char *dir, const char *base)
{
    size_t nb = strlen(base), ns = strlen(TMP_SUFFIX);
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strlen(e->d_name) != nb + ns || strncmp(e->d_name, base, nb) != 0 ||
            strncmp(e->d_name + nb, TMP_SUFFIX, ns - 6) != 0)
            continue;
        /* O_NONBLOCK: a FIFO of that name must not hang us; O_NOFOLLOW: a symlink is no
         * temporary file of ours. */
        int fd = openat(dirfd(d), e->d_name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0)
            continue;
        struct stat open_st, name_st;
        /* Locked, and the name still leads to the file locked: a writer that committed has
         * renamed it away before unlocking, so this is a dead writer's file. */
        if (flock(fd, LOCK_EX | LOCK_NB) == 0 && fstat(fd, &open_st) == 0 &&
            S_ISREG(open_st.st_mode) &&
            fstatat(dirfd(d), e->d_name, &name_st, AT_SYMLINK_NOFOLLOW) == 0 &&
            name_st.st_dev == open_st.st_dev && name_st.st_ino == open_st.st_ino)
            unlinkat(dirfd(d), e->d_name, 0);
        close(fd);
    }
    closedir(d);
}

/* TG_OK when path does not exist or is a regular file, else TG_ERR_IO saying what it is (see
 * the top). lstat: a symbolic link is refused itself, not followed. Other lstat failures are
 * left to the calls that create or rename, whose messages give the system's reason. */
static tg_status atomic_check_target(const char *fn, const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0 || S_ISREG(st.st_mode))
        return TG_OK;
    return tg_not_regular(fn, path, st.st_mode, " (a save replaces only regular files)");
}

/* A new temporary file at tmp (a mkstemp template), locked for as long as it is open; -1 with
 * errno on failure. */
static int atomic_create(char *tmp)
{
    size_t n = strlen(tmp);
    for (int attempt = 0; attempt < 16; attempt++) {
        memcpy(tmp + n - 6, "XXXXXX", 6);
        int fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
            return -1;
        /* Another process's sweep may take the lock first (between mkostemp and flock) and
         * remove the new file; then the file has no name left and we make another. */
        struct stat st;
        bool locked = flock(fd, LOCK_EX) == 0;
        if (fstat(fd, &st) == 0 && (st.st_nlink > 0 || !locked))
            return fd; /* where flock is unsupported, no sweep removes anything either */
        close(fd);
    }
    errno = EAGAIN;
    return -1;
}

tg_atomic_file *tg_atomic_open(const char *path)
{
    if (!path || !path[0]) {
        tg_set_error(TG_ERR_ARG, "tg_atomic_open: empty path");
        return NULL;
    }
    if (atomic_check_target("tg_atomic_open", path) != TG_OK)
        return NULL;
    tg_atomic_file *af = calloc(1, sizeof *af);
    size_t n = strlen(path);
    size_t tn = n + sizeof TMP_SUFFIX;
    char *tmp = malloc(tn);
    char *copy = malloc(n + 1);
    char *dir = strdup(path), *base = strdup(path);
    if (!af || !tmp || !copy || !dir || !base) {
        free(af), free(tmp), free(copy), free(dir), free(base);
        tg_set_error(TG_ERR_NOMEM, "tg_atomic_open: out of memory");
        return NULL;
    }
    memcpy(copy, path, n + 1);
    snprintf(tmp, tn, "%s" TMP_SUFFIX, path);
    atomic_sweep(dirname(dir), basename(base));
    free(dir), free(base);
    int fd = atomic_create(tmp);
    if (fd < 0) {
        tg_set_error(TG_ERR_IO, "tg_atomic_open: cannot create a temporary file beside %s: %s",
                     path, strerror(errno));
        free(af), free(tmp), free(copy);
        return NULL;
    }
    fchmod(fd, 0644); /* mkstemp makes 0600; a checkpoint or image is an ordinary file */
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        tg_set_error(TG_ERR_IO, "tg_atomic_open: %s: %s", tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        free(af), free(tmp), free(copy);
        return NULL;
    }
    af->path = copy;
    af->tmp = tmp;
    return af;
}

tg_status tg_atomic_write(tg_atomic_file *af, const void *buf, size_t n)
{
    if (af->failed)
        return tg_last_status();
    if (n && fwrite(buf, 1, n, af->fp) != n) {
        af->failed = true;
        return tg_set_error(TG_ERR_IO, "tg_atomic_write: writing %zu bytes for %s: %s", n, af->path,
                            strerror(errno));
    }
    return TG_OK;
}

FILE *tg_atomic_stream(tg_atomic_file *af)
{
    return af->fp;
}

static void atomic_free(tg_atomic_file *af)
{
    free(af->path);
    free(af->tmp);
    free(af);
}

void tg_atomic_abort(tg_atomic_file *af)
{
    if (!af)
        return;
    unlink(af->tmp); /* before the close drops the lock: the name is surely still ours */
    fclose(af->fp);
    atomic_free(af);
}

tg_status tg_atomic_commit(tg_atomic_file *af)
{
    if (!af)
        return tg_set_error(TG_ERR_ARG, "tg_atomic_commit: NULL file");
    if (af->failed || ferror(af->fp)) {
        tg_status st = af->failed ? tg_last_status()
                                  : tg_set_error(TG_ERR_IO,
                                                 "tg_atomic_commit: a write to %s "
                                                 "failed",
                                                 af->path);
        tg_atomic_abort(af);
        return st;
    }
    if (fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0) {
        tg_status st =
            tg_set_error(TG_ERR_IO, "tg_atomic_commit: flushing %s: %s", af->path, strerror(errno));
        tg_atomic_abort(af);
        return st;
    }
    if (atomic_check_target("tg_atomic_commit", af->path) != TG_OK) {
        tg_status st = tg_last_status();
        tg_atomic_abort(af);
        return st;
    }
    /* Renamed while still open, so its lock holds until the file has its final name: a sweep
     * by another writer of this target never sees it unlocked under the temporary name. */
    if (rename(af->tmp, af->path) != 0) {
        tg_status st = tg_set_error(TG_ERR_IO, "tg_atomic_commit: renaming %s to %s: %s", af->tmp,
                                    af->path, strerror(errno));
        tg_atomic_abort(af);
        return st;
    }
    fclose(af->fp); /* flushed and synced above: nothing is left to fail */
    /* The rename is durable only once the folder's entry is on disk. */
    char *dir = strdup(af->path);
    int dfd = dir ? open(dirname(dir), O_RDONLY | O_DIRECTORY) : -1;
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    free(dir);
    atomic_free(af);
    return TG_OK;
}
