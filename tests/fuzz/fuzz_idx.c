/* libFuzzer target: tg_data_read_idx on arbitrary bytes.
 *
 * Each input is read three ways: as the file itself — the reader takes a file starting with the
 * gzip magic 1f 8b as gzip and any other as plain bytes, so this one file fuzzes the idx parser
 * and, for inputs starting 1f 8b, the reader's gzip member, inflate and trailer handling —;
 * wrapped in a valid gzip member, so that arbitrary idx contents also reach the parser through
 * decompression, and must give exactly what the plain file gives; and as that member followed
 * by the input again, which must be refused whatever the input: bytes after a member are either
 * another member (an input starting 1f 8b, whose contents then follow the first member's, which
 * start 1f 8b too: no idx magic) or trailing garbage. Float inputs reach the check that refuses
 * NaN and infinities. Errors are the expected outcome; a crash, a sanitizer report, a leak, an
 * exit, output, or a broken invariant above is a finding. */
#include "fuzz.h"

#include "data.h"

#include <math.h>
#include <zlib.h>

static fuzz_file raw_file, gz_file;
static z_stream gz; /* set up once: deflateInit's allocations would dominate each run */
static unsigned char *gz_buf;
static size_t gz_cap;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_init();
    fuzz_file_open(&raw_file, "idx");
    fuzz_file_open(&gz_file, "idx.gz");
    /* 9 + 16: a gzip header and trailer rather than zlib's, with the smallest window; level 1
     * and memLevel 1: a valid stream is all that is needed, and quickly. */
    if (deflateInit2(&gz, 1, Z_DEFLATED, 9 + 16, 1, Z_DEFAULT_STRATEGY) != Z_OK)
        fuzz_fail("deflateInit2 failed");
    return 0;
}

/* Compresses data as one gzip member into gz_buf (grown as needed); returns its length. */
static size_t gzip_wrap(const uint8_t *data, size_t size)
{
    if (deflateReset(&gz) != Z_OK)
        fuzz_fail("deflateReset failed");
    size_t need = deflateBound(&gz, (uLong)size);
    if (need > gz_cap) {
        free(gz_buf);
        gz_buf = malloc(need);
        gz_cap = need;
        if (!gz_buf)
            fuzz_fail("out of memory");
    }
    gz.next_in = (unsigned char *)(uintptr_t)data; /* zlib's API is not const; it only reads */
    gz.avail_in = (uInt)size;
    gz.next_out = gz_buf;
    gz.avail_out = (uInt)need;
    if (deflate(&gz, Z_FINISH) != Z_STREAM_END)
        fuzz_fail("deflate did not finish");
    return gz.total_out;
}

/* Reads path; returns the tensor (NULL on an error) after the invariants every read keeps. */
static tg_tensor *read_idx(const char *path)
{
    fuzz_inside = true;
    tg_tensor *t = tg_data_read_idx(path);
    fuzz_inside = false;
    /* A tensor comes only with no error set, and an error only with a message. */
    if (t ? tg_last_status() != TG_OK : (tg_last_status() == TG_OK || !tg_last_error()[0]))
        fuzz_fail("tg_data_read_idx: result and error status disagree");
    for (int64_t i = 0; t && i < t->numel; i++)
        if (!isfinite(t->data[i]))
            fuzz_fail("tg_data_read_idx: returned a value that is not finite");
    tg_clear_error();
    return t;
}

/* True when both reads failed, or both gave the same shape and values. */
static bool same_result(const tg_tensor *a, const tg_tensor *b)
{
    if (!a || !b)
        return !a && !b;
    return a->ndim == b->ndim && !memcmp(a->shape, b->shape, sizeof a->shape) &&
           !memcmp(a->data, b->data, (size_t)a->numel * sizeof(float));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_file_write(&raw_file, data, size);
    tg_tensor *plain = read_idx(raw_file.path);
    size_t n = gzip_wrap(data, size);
    fuzz_file_write(&gz_file, gz_buf, n);
    tg_tensor *unzipped = read_idx(gz_file.path);
    bool gzip_magic = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
    if (!gzip_magic && !same_result(plain, unzipped))
        fuzz_fail("tg_data_read_idx: a file and the same bytes gzip-compressed read differently");
    tg_tensor_release(plain);
    tg_tensor_release(unzipped);
    if (size && pwrite(gz_file.fd, data, size, (off_t)n) != (ssize_t)size)
        fuzz_fail("cannot write the scratch file");
    tg_tensor *trailing = read_idx(gz_file.path);
    if (trailing)
        fuzz_fail("tg_data_read_idx: accepted bytes after the gzip member");
    fuzz_check();
    return 0;
}
