/* idx files, the format of MNIST and Fashion-MNIST: raw or gzip-compressed.
 *
 *   bytes 0-1: 0, 0;  byte 2: element type (0x08 unsigned byte, 0x0D float32);
 *   byte 3: number of dimensions D;  then D big-endian uint32 sizes;  then the elements,
 *   big-endian, row-major.
 *
 * A file starting with the gzip magic 1f 8b is read as gzip, as gzip itself tells; anything
 * else as a raw idx file. The .gz is decompressed here with inflate rather than zlib's gzread,
 * which ignores whatever follows the last gzip member without a word: a .gz may hold several
 * members back to back (RFC 1952; `cat a.gz b.gz` makes one, and gunzip reads it as the two
 * contents joined), but any other byte after a member, zero padding included, is refused, as are
 * a truncated member and one whose CRC or length trailer does not match. The file is opened by
 * tg_open_regular, so a FIFO or a device is refused rather than waited on. Everything is
 * validated before a tensor is returned: magic, type, dimensions, the exact data length, and
 * finite values in a float file (a NaN or an infinity is never data). */
#include "internal.h"
#include "../tensor/internal.h"

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* Most elements an idx file may hold: 2^31 (8 GiB as floats). */
#define IDX_MAX_ELEMS ((int64_t)1 << 31)
/* Bytes read from the file at a time. */
#define IDX_CHUNK (1 << 16)

/* The bytes of an idx file as the parser sees them: the file's own, or what a .gz's members
 * decompress to. z.next_in / z.avail_in hold the bytes read from the file and not yet used, for
 * a raw file too. */
typedef struct {
    int fd;
    const char *path;
    bool gz;          /* the file starts with the gzip magic */
    bool z_ready;     /* inflateInit2 done: inflateEnd is due */
    bool in_member;   /* gz: inside a member whose end inflate has not reached yet */
    bool eof;         /* the file has no more bytes */
    int64_t file_pos; /* bytes read from the file so far */
    z_stream z;
    unsigned char in[IDX_CHUNK];
} idx_src;

/* Reads from the file until `want` unused bytes are buffered or the file ends; false (error
 * set) on a read error. */
static bool src_fill(idx_src *s, unsigned want)
{
    while (s->z.avail_in < want && !s->eof) {
        if (s->z.avail_in && s->z.next_in != s->in)
            memmove(s->in, s->z.next_in, s->z.avail_in);
        s->z.next_in = s->in;
        ssize_t got = read(s->fd, s->in + s->z.avail_in, IDX_CHUNK - s->z.avail_in);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            tg_set_error(TG_ERR_IO, "tg_data_read_idx: %s: reading at file byte %lld: %s", s->path,
                         (long long)s->file_pos, strerror(errno));
            return false;
        }
        s->eof = got == 0;
        s->z.avail_in += (uInt)got;
        s->file_pos += got;
    }
    return true;
}

/* The file offset of the first unused byte. */
static int64_t src_offset(const idx_src *s)
{
    return s->file_pos - s->z.avail_in;
}

/* Up to n bytes of a raw file; fewer only at its end; -1 with the error set. */
static int64_t raw_read(idx_src *s, unsigned char *buf, int64_t n)
{
    int64_t done = 0;
    while (done < n) {
        if (s->z.avail_in == 0 && !src_fill(s, 1))
            return -1;
        if (s->z.avail_in == 0)
            break;
        uInt k = n - done < s->z.avail_in ? (uInt)(n - done) : s->z.avail_in;
        memcpy(buf + done, s->z.next_in, k);
        s->z.next_in += k;
        s->z.avail_in -= k;
        done += k;
    }
    return done;
}

/* Between two gzip members: true with s->in_member set when another member starts here, true
 * with it clear at the end of the file, false (error set) for anything else after a member. */
static bool gz_next_member(idx_src *s)
{
    if (!src_fill(s, 2))
        return false;
    if (s->z.avail_in == 0)
        return true;
    if (s->z.avail_in < 2 || s->z.next_in[0] != 0x1f || s->z.next_in[1] != 0x8b) {
        int64_t at = src_offset(s);
        struct stat st;
        int64_t left = fstat(s->fd, &st) == 0 ? (int64_t)st.st_size - at : -1;
        tg_set_error(TG_ERR_FORMAT,
                     "tg_data_read_idx: %s: %lld trailing bytes after the gzip data at file byte "
                     "%lld (not another gzip member)",
                     s->path, (long long)left, (long long)at);
        return false;
    }
    if (inflateReset(&s->z) != Z_OK) {
        tg_set_error(TG_ERR_FORMAT, "tg_data_read_idx: %s: inflateReset failed", s->path);
        return false;
    }
    s->in_member = true;
    return true;
}

/* Sets the error for inflate's status zr, which is neither Z_OK nor Z_STREAM_END. */
static void gz_error(const idx_src *s, int zr)
{
    if (zr == Z_MEM_ERROR)
        tg_set_error(TG_ERR_NOMEM, "tg_data_read_idx: %s: out of memory in inflate", s->path);
    else if (zr == Z_BUF_ERROR) /* no progress: gz_read always gives it input unless at EOF */
        tg_set_error(TG_ERR_FORMAT,
                     "tg_data_read_idx: %s: the gzip data is truncated (the file ends at byte "
                     "%lld inside a member)",
                     s->path, (long long)s->file_pos);
    else
        tg_set_error(TG_ERR_FORMAT,
                     "tg_data_read_idx: %s: the gzip data is damaged near file byte %lld: %s",
                     s->path, (long long)src_offset(s), s->z.msg ? s->z.msg : "bad data");
}

/* Up to n decompressed bytes of a .gz; fewer only at the end of its last member; -1 with the
 * error set for a damaged or truncated member or trailing bytes. */
static int64_t gz_read(idx_src *s, unsigned char *buf, int64_t n)
{
    int64_t done = 0;
    while (done < n) {
        if (!s->in_member) {
            if (!gz_next_member(s))
                return -1;
            if (!s->in_member)
                break; /* the end of the file, right after a member */
        }
        if (s->z.avail_in == 0 && !src_fill(s, 1))
            return -1;
        uInt chunk = n - done < (1 << 30) ? (uInt)(n - done) : 1u << 30;
        s->z.next_out = buf + done;
        s->z.avail_out = chunk;
        int zr = inflate(&s->z, Z_NO_FLUSH);
        done += chunk - s->z.avail_out;
        if (zr == Z_STREAM_END) {
            s->in_member = false; /* its CRC and length matched */
        } else if (zr != Z_OK) {
            gz_error(s, zr);
            return -1;
        }
    }
    return done;
}

/* Up to n bytes of the idx contents; fewer only at their end; -1 with the error set. */
static int64_t src_read(idx_src *s, void *buf, int64_t n)
{
    return s->gz ? gz_read(s, buf, n) : raw_read(s, buf, n);
}

static void src_close(idx_src *s)
{
    if (!s)
        return;
    if (s->z_ready)
        inflateEnd(&s->z);
    close(s->fd);
    free(s);
}

/* Opens path (a regular file only) and tells raw from gzip; NULL with the error set. */
static idx_src *src_open(const char *path)
{
    struct stat st;
    int fd = tg_open_regular("tg_data_read_idx", path, &st);
    if (fd < 0)
        return NULL;
    idx_src *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        tg_set_error(TG_ERR_NOMEM, "tg_data_read_idx: %s: out of memory", path);
        return NULL;
    }
    s->fd = fd;
    s->path = path;
    s->z.next_in = s->in;
    if (!src_fill(s, 2)) {
        src_close(s);
        return NULL;
    }
    s->gz = s->z.avail_in >= 2 && s->in[0] == 0x1f && s->in[1] == 0x8b;
    if (s->gz) {
        /* 16 + MAX_WBITS: gzip members only, with their header, CRC and length checked. */
        if (inflateInit2(&s->z, 16 + MAX_WBITS) != Z_OK) {
            tg_set_error(TG_ERR_NOMEM, "tg_data_read_idx: %s: out of memory for inflate", path);
            src_close(s);
            return NULL;
        }
        s->z_ready = true;
    }
    return s;
}

/* Reads exactly n bytes, the part of `what` at offset `offset` of the contents, which ends at
 * `end`; false (error set) on an early end or a read error. */
static bool read_exact(idx_src *s, void *buf, int64_t n, int64_t offset, const char *what,
                       int64_t end)
{
    int64_t got = src_read(s, buf, n);
    if (got < 0)
        return false;
    if (got < n) {
        tg_set_error(TG_ERR_FORMAT,
                     "tg_data_read_idx: %s: file ends at byte %lld inside "
                     "%s (%lld bytes expected)",
                     s->path, (long long)(offset + got), what, (long long)end);
        return false;
    }
    return true;
}

/* Reads the n data bytes at offset `offset` into a new buffer with one spare byte. The buffer
 * grows with the bytes actually read (from 64 KiB, doubling), so a header that announces
 * gigabytes costs that memory only if the file holds them: the size of a .gz's contents is not
 * known before reading it. NULL with the error set. */
static unsigned char *read_data(idx_src *s, int64_t n, int64_t offset)
{
    int64_t cap = n < ((int64_t)1 << 16) ? n : (int64_t)1 << 16, done = 0;
    unsigned char *buf = malloc((size_t)cap + 1);
    while (buf) {
        if (!read_exact(s, buf + done, cap - done, offset + done, "the data", offset + n)) {
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
    tg_set_error(TG_ERR_NOMEM, "tg_data_read_idx: %s: out of memory for %lld data bytes", s->path,
                 (long long)n);
    return NULL;
}

/* "[i, j, k]": the index of element i of t, for messages. */
static const char *index_str(const tg_tensor *t, int64_t i, char *buf, size_t size)
{
    int64_t at[TG_MAX_DIMS];
    for (int d = t->ndim - 1; d >= 0; d--) {
        at[d] = i % t->shape[d]; /* t has element i: no size is 0 */
        i /= t->shape[d];
    }
    return tg_shape_str(t->ndim, at, buf, size);
}

/* v as %g writes it ("3.5", "1e+30"), with more digits when those would not read back as v
 * ("255.00002", not "255", for the float just above 255). */
static const char *float_str(float v, char *buf, size_t size)
{
    for (int digits = 6; digits <= 9; digits++) {
        snprintf(buf, size, "%.*g", digits, v);
        if (strtof(buf, NULL) == v)
            break;
    }
    return buf;
}

tg_status tg_check_values(const char *fn, const char *path, const char *noun, const tg_tensor *t,
                          float lo, float hi, bool integers)
{
    for (int64_t i = 0; i < t->numel; i++) {
        float v = t->data[i];
        if (v >= lo && v <= hi && (!integers || v == floorf(v)))
            continue;
        char at[160], value[32];
        index_str(t, i, at, sizeof at);
        float_str(v, value, sizeof value);
        if (!isfinite(v))
            return tg_set_error(TG_ERR_FORMAT, "%s: %s: %s %s at index %s is not a finite number",
                                fn, path, noun, value, at);
        return tg_set_error(TG_ERR_FORMAT, "%s: %s: %s %s at index %s is %s [%g, %g]", fn, path,
                            noun, value, at,
                            v >= lo && v <= hi ? "not a whole number in" : "outside", lo, hi);
    }
    return TG_OK;
}

tg_status tg_data_check_range(const tg_tensor *t, const char *what, float lo, float hi,
                              bool integers)
{
    if (!t)
        return tg_set_error(TG_ERR_ARG, "tg_data_check_range: %s: tensor is NULL",
                            what ? what : "(null)");
    if (!(lo <= hi))
        return tg_set_error(TG_ERR_ARG, "tg_data_check_range: %s: range [%g, %g] is empty",
                            what ? what : "(null)", lo, hi);
    return tg_check_values("tg_data_check_range", what ? what : "(null)", "value", t, lo, hi,
                           integers);
}

tg_tensor *tg_data_read_idx(const char *path)
{
    if (!path || !path[0]) {
        tg_set_error(TG_ERR_ARG, "tg_data_read_idx: path is %s", path ? "empty" : "NULL");
        return NULL;
    }
    idx_src *f = src_open(path);
    if (!f)
        return NULL;
    tg_tensor *t = NULL;
    unsigned char *raw = NULL;
    unsigned char head[4];
    uint32_t dims[TG_MAX_DIMS];
    int64_t shape[TG_MAX_DIMS];
    if (!read_exact(f, head, 4, 0, "the header", 4))
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
    if (!read_exact(f, dims, 4 * ndim, 4, "the dimensions", 4 + 4 * ndim))
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
    raw = read_data(f, numel * elem, offset);
    if (!raw)
        goto fail;
    /* Nothing may follow the data; for a .gz this also reads on to the end of the last member,
     * where inflate checks its CRC and length, and on to the end of the file. */
    int64_t extra = src_read(f, raw + numel * elem, 1);
    if (extra != 0) {
        if (extra > 0)
            tg_set_error(TG_ERR_FORMAT,
                         "tg_data_read_idx: %s: extra bytes after the %lld data bytes the "
                         "header announces",
                         path, (long long)(numel * elem));
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
        if (tg_check_values("tg_data_read_idx", path, "value", t, -FLT_MAX, FLT_MAX, false) !=
            TG_OK)
            goto fail;
    }
    free(raw);
    src_close(f);
    return t;
fail:
    free(raw);
    tg_tensor_release(t);
    src_close(f);
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
