/* idx files, the format of MNIST and Fashion-MNIST: raw or gzip-compressed.
 *
 *   bytes 0-1: 0, 0;  byte 2: element type (0x08 unsigned byte, 0x0D float32);
 *   byte 3: number of dimensions D;  then D big-endian uint32 sizes;  then the elements,
 *   big-endian, row-major.
 *
 * zlib's gzread reads both raw and gzip files. It hands back the data of a truncated .gz without
 * complaint (the damage only shows in gzclose/gzerror), so every read is checked for its length,
 * and the stream for trailing bytes and for its close status. Everything is validated before a
 * tensor is returned: magic, type, dimensions, the exact data length. */
#include "data.h"
#include "../tensor/internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <zlib.h>

/* Most elements an idx file may hold: 2^31 (8 GiB as floats). */
#define IDX_MAX_ELEMS ((int64_t)1 << 31)

/* Reads exactly n bytes, the part of `what` at file offset `offset`, which ends at `end`; false
 * (error set) on a short read or a zlib error. */
static bool gz_read_exact(gzFile f, const char *path, void *buf, int64_t n, int64_t offset,
                          const char *what, int64_t end)
{
    unsigned char *p = buf;
    int64_t done = 0;
    while (done < n) {
        unsigned chunk = (unsigned)(n - done < (1 << 30) ? n - done : (1 << 30));
        int got = gzread(f, p + done, chunk);
        if (got < 0) {
            int zerr;
            const char *msg = gzerror(f, &zerr);
            tg_set_error(TG_ERR_FORMAT, "tg_data_read_idx: %s: reading %s at byte %lld: %s", path,
                         what, (long long)(offset + done), msg);
            return false;
        }
        if (got == 0) {
            tg_set_error(TG_ERR_FORMAT,
                         "tg_data_read_idx: %s: file ends at byte %lld inside "
                         "%s (%lld bytes expected)",
                         path, (long long)(offset + done), what, (long long)end);
            return false;
        }
        done += got;
    }
    return true;
}

/* Reads the n data bytes at file offset `offset` into a new buffer with one spare byte. The
 * buffer grows with the bytes actually read (from 64 KiB, doubling), so a header that announces
 * gigabytes costs that memory only if the file holds them: the size of a .gz's contents is not
 * known before reading it. NULL with the error set. */
static unsigned char *gz_read_data(gzFile f, const char *path, int64_t n, int64_t offset)
{
    int64_t cap = n < ((int64_t)1 << 16) ? n : (int64_t)1 << 16, done = 0;
    unsigned char *buf = malloc((size_t)cap + 1);
    while (buf) {
        if (!gz_read_exact(f, path, buf + done, cap - done, offset + done, "the data",
                           offset + n)) {
            free(buf);
            return NULL;
        }
        if (cap == n)
            return buf;
        done = cap;
        cap = n - cap < cap ? n : 2 * cap;
        unsigned char *grown = realloc(buf, (size_t)cap + 1);
        if (!grown)
            free(buf);
        buf = grown;
    }
    tg_set_error(TG_ERR_NOMEM, "tg_data_read_idx: %s: out of memory for %lld data bytes", path,
                 (long long)n);
    return NULL;
}

tg_tensor *tg_data_read_idx(const char *path)
{
    if (!path) {
        tg_set_error(TG_ERR_ARG, "tg_data_read_idx: path is NULL");
        return NULL;
    }
    gzFile f = gzopen(path, "rb");
    if (!f) {
        tg_set_error(TG_ERR_IO, "tg_data_read_idx: cannot open %s: %s", path,
                     errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    tg_tensor *t = NULL;
    unsigned char *raw = NULL;
    unsigned char head[4];
    uint32_t dims[TG_MAX_DIMS];
    int64_t shape[TG_MAX_DIMS];
    if (!gz_read_exact(f, path, head, 4, 0, "the header", 4))
        goto fail;
    if (head[0] != 0 || head[1] != 0 || (head[2] != 0x08 && head[2] != 0x0D)) {
        tg_set_error(TG_ERR_FORMAT,
                     "tg_data_read_idx: %s: bad magic %02x %02x %02x %02x (an "
                     "idx file starts 00 00 08 or 00 00 0d: unsigned bytes or float32)",
                     path, head[0], head[1], head[2], head[3]);
        goto fail;
    }
    int ndim = head[3];
    if (ndim < 1 || ndim > TG_MAX_DIMS) {
        tg_set_error(TG_ERR_FORMAT, "tg_data_read_idx: %s: %d dimensions (1 to %d supported)", path,
                     ndim, TG_MAX_DIMS);
        goto fail;
    }
    if (!gz_read_exact(f, path, dims, 4 * ndim, 4, "the dimensions", 4 + 4 * ndim))
        goto fail;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        const unsigned char *b = (const unsigned char *)&dims[i];
        shape[i] = (int64_t)b[0] << 24 | (int64_t)b[1] << 16 | (int64_t)b[2] << 8 | b[3];
        numel *= shape[i] ? shape[i] : 1; /* a product of <= 6 uint32 fits until the check */
        if (numel > IDX_MAX_ELEMS) {
            tg_set_error(TG_ERR_FORMAT,
                         "tg_data_read_idx: %s: dimensions hold more than %lld "
                         "elements",
                         path, (long long)IDX_MAX_ELEMS);
            goto fail;
        }
    }
    numel = tg_shape_numel(ndim, shape);
    int elem = head[2] == 0x08 ? 1 : 4;
    int64_t offset = 4 + 4 * ndim;
    raw = gz_read_data(f, path, numel * elem, offset);
    if (!raw)
        goto fail;
    int extra = gzread(f, raw + numel * elem, 1);
    if (extra != 0) {
        tg_set_error(TG_ERR_FORMAT,
                     "tg_data_read_idx: %s: %s after the %lld data bytes the "
                     "header announces",
                     path, extra > 0 ? "extra bytes" : "a read error", (long long)(numel * elem));
        goto fail;
    }
    t = tg_tensor_new(ndim, shape);
    if (!t)
        goto fail;
    if (elem == 1) {
        for (int64_t i = 0; i < numel; i++)
            t->data[i] = raw[i];
    } else {
        for (int64_t i = 0; i < numel; i++) {
            const unsigned char *b = raw + 4 * i;
            uint32_t u = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
            memcpy(&t->data[i], &u, 4);
        }
    }
    free(raw);
    raw = NULL;
    /* A truncated or corrupt .gz can still have delivered every byte asked for; its CRC and
     * length trailer are only checked at the end of the stream. */
    int zst = gzclose_r(f);
    f = NULL;
    if (zst != Z_OK) {
        tg_set_error(TG_ERR_FORMAT,
                     "tg_data_read_idx: %s: the gzip stream is damaged or "
                     "truncated (zlib status %d)",
                     path, zst);
        goto fail;
    }
    return t;
fail:
    free(raw);
    tg_release(t);
    if (f)
        gzclose_r(f);
    return NULL;
}

tg_status tg_data_write_idx_images(const char *path, const tg_tensor *images)
{
    if (!images)
        return tg_last_status() ? tg_last_status()
                                : tg_set_error(TG_ERR_ARG, "tg_data_write_idx_images: images is "
                                                           "NULL");
    char s[160];
    int nd = images->ndim;
    if (!((nd == 3) || (nd == 4 && images->shape[1] == 1)) || images->numel == 0)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_data_write_idx_images: %s: images %s: need "
                            "[N, H, W] or [N, 1, H, W]",
                            path ? path : "(null)", tg_shape_str(nd, images->shape, s, sizeof s));
    int64_t n = images->shape[0], h = images->shape[nd - 2], w = images->shape[nd - 1];
    if (n > UINT32_MAX || h > UINT32_MAX || w > UINT32_MAX)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_data_write_idx_images: %s: sizes too large for "
                            "idx",
                            path);
    unsigned char head[16] = {0, 0, 0x08, 3};
    uint32_t sz[3] = {(uint32_t)n, (uint32_t)h, (uint32_t)w};
    for (int i = 0; i < 3; i++)
        for (int b = 0; b < 4; b++)
            head[4 + 4 * i + b] = (unsigned char)(sz[i] >> (24 - 8 * b));
    unsigned char *px = malloc((size_t)images->numel);
    if (!px)
        return tg_set_error(TG_ERR_NOMEM, "tg_data_write_idx_images: out of memory");
    /* The inverse of the loader's scaling: [-1, 1] -> 0..255. */
    for (int64_t i = 0; i < images->numel; i++) {
        float v = (images->data[i] + 1.0f) * 127.5f;
        v = isnan(v) ? 0.0f : fminf(fmaxf(v, 0.0f), 255.0f);
        px[i] = (unsigned char)lrintf(v);
    }
    tg_atomic_file *af = tg_atomic_open(path);
    if (!af) {
        free(px);
        return tg_last_status();
    }
    tg_atomic_write(af, head, sizeof head);
    tg_atomic_write(af, px, (size_t)images->numel);
    free(px);
    return tg_atomic_commit(af);
}

tg_status tg_data_write_idx_labels(const char *path, const tg_tensor *labels)
{
    if (!labels)
        return tg_last_status() ? tg_last_status()
                                : tg_set_error(TG_ERR_ARG, "tg_data_write_idx_labels: labels is "
                                                           "NULL");
    char s[160];
    if (labels->ndim != 1 || labels->shape[0] > UINT32_MAX)
        return tg_set_error(TG_ERR_SHAPE, "tg_data_write_idx_labels: %s: labels %s: need [N]",
                            path ? path : "(null)",
                            tg_shape_str(labels->ndim, labels->shape, s, sizeof s));
    int64_t n = labels->shape[0];
    unsigned char head[8] = {0,
                             0,
                             0x08,
                             1,
                             (unsigned char)(n >> 24),
                             (unsigned char)(n >> 16),
                             (unsigned char)(n >> 8),
                             (unsigned char)n};
    unsigned char *b = malloc((size_t)n + 1);
    if (!b)
        return tg_set_error(TG_ERR_NOMEM, "tg_data_write_idx_labels: out of memory");
    for (int64_t i = 0; i < n; i++) {
        float v = labels->data[i];
        if (!(v >= 0 && v <= 255 && v == floorf(v))) {
            free(b);
            return tg_set_error(TG_ERR_ARG,
                                "tg_data_write_idx_labels: %s: label %g at index "
                                "%lld is not a whole number 0..255",
                                path, v, (long long)i);
        }
        b[i] = (unsigned char)v;
    }
    tg_atomic_file *af = tg_atomic_open(path);
    if (!af) {
        free(b);
        return tg_last_status();
    }
    tg_atomic_write(af, head, sizeof head);
    tg_atomic_write(af, b, (size_t)n);
    free(b);
    return tg_atomic_commit(af);
}
