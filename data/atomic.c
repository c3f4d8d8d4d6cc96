/* Atomic file writes: write a temporary file in the target's folder, flush and fsync it, then
 * rename it over the target and fsync the folder. A crash at any moment leaves either the old
 * file or the new one, never a torn mix; a failed write leaves the old file untouched. */
#include "data.h"
#include "../tensor/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>

struct tg_atomic_file {
    FILE *fp;
    char *path;
    char *tmp;
    bool failed; /* a write failed: commit will refuse */
};

tg_atomic_file *tg_atomic_open(const char *path)
{
    if (!path || !path[0]) {
        tg_set_error(TG_ERR_ARG, "tg_atomic_open: empty path");
        return NULL;
    }
    tg_atomic_file *af = calloc(1, sizeof *af);
    size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    char *copy = malloc(n + 1);
    if (!af || !tmp || !copy) {
        free(af), free(tmp), free(copy);
        tg_set_error(TG_ERR_NOMEM, "tg_atomic_open: out of memory");
        return NULL;
    }
    memcpy(copy, path, n + 1);
    snprintf(tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
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
        return tg_set_error(TG_ERR_IO, "tg_atomic_write: writing %zu bytes for %s: %s", n,
                            af->path, strerror(errno));
    }
    return TG_OK;
}

FILE *tg_atomic_stream(tg_atomic_file *af) { return af->fp; }

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
    fclose(af->fp);
    unlink(af->tmp);
    atomic_free(af);
}

tg_status tg_atomic_commit(tg_atomic_file *af)
{
    if (!af)
        return tg_set_error(TG_ERR_ARG, "tg_atomic_commit: NULL file");
    if (af->failed || ferror(af->fp)) {
        tg_status st = af->failed ? tg_last_status()
                                  : tg_set_error(TG_ERR_IO, "tg_atomic_commit: a write to %s "
                                                 "failed", af->path);
        tg_atomic_abort(af);
        return st;
    }
    if (fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0) {
        tg_status st = tg_set_error(TG_ERR_IO, "tg_atomic_commit: flushing %s: %s", af->path,
                                    strerror(errno));
        tg_atomic_abort(af);
        return st;
    }
    if (fclose(af->fp) != 0) {
        tg_status st = tg_set_error(TG_ERR_IO, "tg_atomic_commit: closing %s: %s", af->path,
                                    strerror(errno));
        unlink(af->tmp);
        atomic_free(af);
        return st;
    }
    if (rename(af->tmp, af->path) != 0) {
        tg_status st = tg_set_error(TG_ERR_IO, "tg_atomic_commit: renaming %s to %s: %s",
                                    af->tmp, af->path, strerror(errno));
        unlink(af->tmp);
        atomic_free(af);
        return st;
    }
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
