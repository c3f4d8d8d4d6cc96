/* libFuzzer target: tg_data_read_idx on arbitrary bytes.
 *
 * Each input is read twice: as the file itself — zlib's gzopen reads a file as gzip when it
 * starts with the gzip magic and as plain bytes otherwise, so this one file fuzzes the idx
 * parser and, for inputs starting 1f 8b, zlib's gzip header, inflate and trailer handling as the
 * reader drives them — and wrapped in a valid gzip stream, so that arbitrary idx contents
 * also reach the parser through decompression. Errors are the expected outcome; a crash, a
 * sanitizer report, a leak, an exit or output is a finding. */
#include "fuzz.h"

#include "data.h"

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

static void read_idx(const char *path)
{
    fuzz_inside = true;
    tg_tensor *t = tg_data_read_idx(path);
    fuzz_inside = false;
    /* A tensor comes only with no error set, and an error only with a message. */
    if (t ? tg_last_status() != TG_OK : (tg_last_status() == TG_OK || !tg_last_error()[0]))
        fuzz_fail("tg_data_read_idx: result and error status disagree");
    tg_release(t);
    fuzz_check();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_file_write(&raw_file, data, size);
    read_idx(raw_file.path);
    size_t n = gzip_wrap(data, size);
    fuzz_file_write(&gz_file, gz_buf, n);
    read_idx(gz_file.path);
    return 0;
}
