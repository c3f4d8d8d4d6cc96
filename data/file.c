/* Opening the files data/ reads, and naming what a path is when it is not a regular file.
 *
 * A plain open() of a FIFO waits for a writer, forever if none comes, before any check on the
 * file can run; a terminal or a tape drive can do things when opened. So a reader opens with
 * O_NONBLOCK (a FIFO then opens at once), checks with fstat that it holds a regular file, and
 * only then clears O_NONBLOCK. O_NOCTTY: a terminal given as a file never becomes the
 * process's controlling terminal. */
#include "internal.h"
#include "../tensor/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static const char *file_kind(mode_t mode)
{
    if (S_ISREG(mode))
        return "a regular file";
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISLNK(mode))
        return "a symbolic link";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    if (S_ISSOCK(mode))
        return "a socket";
    return "a file of an unknown type";
}

tg_status tg_not_regular(const char *fn, const char *path, mode_t mode, const char *tail)
{
    return tg_set_error(TG_ERR_IO, "%s: %s: is %s, not a regular file%s", fn, path, file_kind(mode),
                        tail);
}

/* Opens path with flags (O_RDONLY, or a write mode's: O_CREAT makes a new file with 0666 less
 * the umask) and fills *st, never blocking on a FIFO: see the top. A descriptor, or -1 with
 * TG_ERR_IO naming fn and path. */
static int open_regular(const char *fn, const char *path, int flags, struct stat *st)
{
    int fd = open(path, flags | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, 0666);
    /* A FIFO without a reader refuses a non-blocking writer (ENXIO) before fstat can name it:
     * stat names it instead. */
    if (fd < 0 && errno == ENXIO && stat(path, st) == 0 && !S_ISREG(st->st_mode)) {
        tg_not_regular(fn, path, st->st_mode, "");
        return -1;
    }
    if (fd < 0) {
        tg_set_error(TG_ERR_IO, "%s: %s: cannot open: %s", fn, path, strerror(errno));
        return -1;
    }
    if (fstat(fd, st) != 0) {
        tg_set_error(TG_ERR_IO, "%s: %s: cannot stat: %s", fn, path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st->st_mode)) {
        tg_not_regular(fn, path, st->st_mode, "");
        close(fd);
        return -1;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
        tg_set_error(TG_ERR_IO, "%s: %s: cannot clear O_NONBLOCK: %s", fn, path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int tg_open_regular(const char *fn, const char *path, struct stat *st)
{
    return open_regular(fn, path, O_RDONLY, st);
}

/* The open() flags of an fopen mode ("r", "w", "a", each with an optional "b" and "+" in
 * either order); false when mode is none of those. */
static bool mode_flags(const char *mode, int *flags)
{
    static const struct {
        char c;
        int flags;
    } kinds[] = {{'r', 0}, {'w', O_CREAT | O_TRUNC}, {'a', O_CREAT | O_APPEND}};
    bool plus = false, binary = false;
    for (const char *p = mode + (mode[0] ? 1 : 0); *p; p++) {
        bool *seen = *p == '+' ? &plus : *p == 'b' ? &binary : NULL;
        if (!seen || *seen)
            return false;
        *seen = true;
    }
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        if (mode[0] == kinds[k].c) {
            *flags = kinds[k].flags | (plus ? O_RDWR : k == 0 ? O_RDONLY : O_WRONLY);
            return true;
        }
    return false;
}

FILE *tg_data_fopen_regular(const char *path, const char *mode)
{
    static const char fn[] = "tg_data_fopen_regular";
    int flags;
    struct stat st;
    if (!path || !mode) {
        tg_set_error(TG_ERR_ARG, "%s: NULL %s", fn, !path ? "path" : "mode");
        return NULL;
    }
    if (!mode_flags(mode, &flags)) {
        char shown[32];
        tg_escape(shown, sizeof shown, mode, strnlen(mode, 8));
        tg_set_error(TG_ERR_ARG, "%s: %s: mode \"%s\" is not r, w or a (with b or +)", fn, path,
                     shown);
        return NULL;
    }
    int fd = open_regular(fn, path, flags, &st);
    if (fd < 0)
        return NULL;
    FILE *f = fdopen(fd, mode);
    if (!f) {
        tg_set_error(errno == ENOMEM ? TG_ERR_NOMEM : TG_ERR_IO, "%s: %s: %s", fn, path,
                     strerror(errno));
        close(fd);
    }
    return f;
}
