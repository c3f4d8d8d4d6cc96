/* A PNG writer for grayscale image grids, on zlib: signature, IHDR, one IDAT, IEND, each chunk
 * with its CRC; every row starts with filter byte 0 (none). Written atomically. */
#include "data.h"
#include "../tensor/internal.h"

#include <math.h>
#include <string.h>
#include <zlib.h>

/* Gap between grid cells, one pixel of this gray: visible on black and on white digits. */
#define GRID_GAP_VALUE 128

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Writes one chunk: length, type, data, CRC over type and data. */
static tg_status png_chunk(tg_atomic_file *af, const char type[4], const unsigned char *data,
                           uint32_t n)
{
    unsigned char head[8], tail[4];
    put_be32(head, n);
    memcpy(head + 4, type, 4);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (n)
        crc = crc32(crc, data, n);
    put_be32(tail, (uint32_t)crc);
    tg_atomic_write(af, head, 8);
    tg_atomic_write(af, data, n);
    return tg_atomic_write(af, tail, 4);
}

tg_status tg_data_write_png_gray(const char *path, const unsigned char *pixels, int64_t width,
                                 int64_t height)
{
    if (!path || !pixels || width < 1 || height < 1 || width > (1 << 24) || height > (1 << 24))
        return tg_set_error(TG_ERR_ARG, "tg_data_write_png_gray: %s: bad image %lld x %lld",
                            path ? path : "(null)", (long long)width, (long long)height);
    /* Raw scanlines: a filter byte (0) before each row. */
    size_t raw_n = (size_t)height * (size_t)(width + 1);
    unsigned char *raw = malloc(raw_n);
    uLongf z_n = compressBound((uLong)raw_n);
    unsigned char *z = malloc(z_n);
    if (!raw || !z) {
        free(raw), free(z);
        return tg_set_error(TG_ERR_NOMEM, "tg_data_write_png_gray: %s: out of memory", path);
    }
    for (int64_t r = 0; r < height; r++) {
        raw[r * (width + 1)] = 0;
        memcpy(raw + r * (width + 1) + 1, pixels + r * width, (size_t)width);
    }
    int zst = compress2(z, &z_n, raw, (uLong)raw_n, 6);
    free(raw);
    if (zst != Z_OK) {
        free(z);
        return tg_set_error(TG_ERR_NOMEM,
                            "tg_data_write_png_gray: %s: zlib compress failed "
                            "(status %d)",
                            path, zst);
    }
    tg_atomic_file *af = tg_atomic_open(path);
    if (!af) {
        free(z);
        return tg_last_status();
    }
    static const unsigned char signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char ihdr[13];
    put_be32(ihdr, (uint32_t)width);
    put_be32(ihdr + 4, (uint32_t)height);
    ihdr[8] = 8;  /* bit depth */
    ihdr[9] = 0;  /* colour type: grayscale */
    ihdr[10] = 0; /* compression: deflate */
    ihdr[11] = 0; /* filter method 0 */
    ihdr[12] = 0; /* no interlace */
    tg_atomic_write(af, signature, 8);
    png_chunk(af, "IHDR", ihdr, 13);
    png_chunk(af, "IDAT", z, (uint32_t)z_n);
    png_chunk(af, "IEND", NULL, 0);
    free(z);
    return tg_atomic_commit(af);
}

tg_status tg_data_write_png_grid(const char *path, const tg_tensor *images, int64_t cols,
                                 tg_grid_scale scale)
{
    if (!images)
        return tg_last_status()
                   ? tg_last_status()
                   : tg_set_error(TG_ERR_ARG, "tg_data_write_png_grid: images is NULL");
    /* A cast integer is not checked by the compiler: any value but the two would silently
     * draw in the fixed range (issue 19). */
    if (scale != TG_GRID_FIXED && scale != TG_GRID_PER_IMAGE)
        return tg_set_error(TG_ERR_ARG,
                            "tg_data_write_png_grid: %s: scale %d is not TG_GRID_FIXED (%d) or "
                            "TG_GRID_PER_IMAGE (%d)",
                            path ? path : "(null)", (int)scale, (int)TG_GRID_FIXED,
                            (int)TG_GRID_PER_IMAGE);
    char s[160];
    int nd = images->ndim;
    bool ok_shape = (nd == 3) || (nd == 4 && images->shape[1] == 1);
    if (!ok_shape || images->numel == 0 || cols < 1)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_data_write_png_grid: %s: images %s, %lld columns: "
                            "need [N, H, W] or [N, 1, H, W] with N >= 1 and columns >= 1",
                            path ? path : "(null)",
                            tg_shape_str(images->ndim, images->shape, s, sizeof s),
                            (long long)cols);
    int64_t n = images->shape[0], h = images->shape[nd - 2], w = images->shape[nd - 1];
    int64_t c = n < cols ? n : cols, rows = (n + c - 1) / c;
    int64_t W = c * w + (c - 1), H = rows * h + (rows - 1);
    unsigned char *pix = malloc((size_t)(W * H));
    if (!pix)
        return tg_set_error(TG_ERR_NOMEM, "tg_data_write_png_grid: out of memory");
    memset(pix, GRID_GAP_VALUE, (size_t)(W * H));
    for (int64_t i = 0; i < n; i++) {
        const float *img = images->data + i * h * w;
        float lo = -1.0f, hi = 1.0f; /* fixed: the generator's tanh range, -1 black, 1 white */
        if (scale == TG_GRID_PER_IMAGE) {
            lo = INFINITY, hi = -INFINITY;
            for (int64_t k = 0; k < h * w; k++)
                lo = fminf(lo, img[k]), hi = fmaxf(hi, img[k]);
            if (!(hi > lo))
                hi = lo + 1.0f;
        }
        int64_t r0 = (i / c) * (h + 1), c0 = (i % c) * (w + 1);
        for (int64_t y = 0; y < h; y++)
            for (int64_t x = 0; x < w; x++) {
                float v = (img[y * w + x] - lo) / (hi - lo) * 255.0f;
                v = isnan(v) ? 0.0f : fminf(fmaxf(v, 0.0f), 255.0f);
                pix[(r0 + y) * W + c0 + x] = (unsigned char)lrintf(v);
            }
    }
    tg_status st = tg_data_write_png_gray(path, pix, W, H);
    free(pix);
    return st;
}
