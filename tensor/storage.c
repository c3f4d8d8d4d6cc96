/* Storage and the caching allocator.
 *
 * A training loop asks for the same buffer sizes every step. Handing freed buffers back out
 * avoids page-faulting fresh memory each time (glibc returns large blocks to the kernel with
 * munmap). Sizes are rounded up to size classes — four per power of two, so at most 25% is
 * wasted — and each class keeps a free list threaded through the free buffers themselves.
 * One global cache under a mutex: buffers may be freed on another thread than the one that
 * allocated them, and the cache stays reachable, so leak checkers see no false leaks. */
#include "internal.h"

#include <pthread.h>
#include <string.h>

_Atomic int64_t tg_live_tensors;
_Atomic int64_t tg_live_nodes;
_Atomic int64_t tg_live_bytes;
static _Atomic int64_t peak_bytes; /* the most tg_live_bytes has been since the last reset */

enum { ALIGN = 64, N_CLASSES = 4 * 58 };
/* Beyond this many cached bytes, freed buffers go straight back to the system. */
#define CACHE_LIMIT ((size_t)4 << 30)

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static void *cache_head[N_CLASSES];
static size_t cache_bytes;

/* Size class of n bytes: index and rounded size. Classes are 64, then for each power of two
 * 2^p (p >= 6) the sizes 2^p * (1 + k/4), k = 1..4. */
static int size_class(size_t n, size_t *rounded)
{
    if (n <= ALIGN) {
        *rounded = ALIGN;
        return 0;
    }
    int p = 63 - __builtin_clzll((unsigned long long)(n - 1)); /* 2^p < n <= 2^(p+1) */
    size_t quarter = (size_t)1 << (p - 2);
    size_t k = (n - ((size_t)1 << p) + quarter - 1) / quarter; /* 1..4 */
    *rounded = ((size_t)1 << p) + k * quarter;
    *rounded = (*rounded + ALIGN - 1) / ALIGN * ALIGN;
    return 1 + (p - 6) * 4 + (int)(k - 1);
}

void *tg_alloc(size_t nbytes)
{
    size_t rounded;
    int c = size_class(nbytes, &rounded);
    if (c >= N_CLASSES) {
        tg_set_error(TG_ERR_NOMEM, "tg_alloc: %zu bytes is more than any machine holds", nbytes);
        return NULL;
    }
    void *p = NULL;
    pthread_mutex_lock(&cache_lock);
    if (cache_head[c]) {
        p = cache_head[c];
        memcpy(&cache_head[c], p, sizeof(void *));
        cache_bytes -= rounded;
    }
    pthread_mutex_unlock(&cache_lock);
    if (!p && posix_memalign(&p, ALIGN, rounded) != 0) {
        tg_set_error(TG_ERR_NOMEM, "tg_alloc: out of memory allocating %zu bytes", rounded);
        return NULL;
    }
    int64_t now = atomic_fetch_add(&tg_live_bytes, (int64_t)rounded) + (int64_t)rounded;
    int64_t peak = atomic_load(&peak_bytes);
    while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now))
        ;
    return p;
}

void *tg_alloc_zeroed(size_t nbytes)
{
    void *p = tg_alloc(nbytes);
    if (p)
        memset(p, 0, nbytes);
    return p;
}

void tg_free(void *ptr, size_t nbytes)
{
    if (!ptr)
        return;
    size_t rounded;
    int c = size_class(nbytes, &rounded);
    atomic_fetch_sub(&tg_live_bytes, (int64_t)rounded);
    pthread_mutex_lock(&cache_lock);
    if (cache_bytes + rounded <= CACHE_LIMIT) {
        memcpy(ptr, &cache_head[c], sizeof(void *));
        cache_head[c] = ptr;
        cache_bytes += rounded;
        ptr = NULL;
    }
    pthread_mutex_unlock(&cache_lock);
    free(ptr);
}

void tg_allocator_trim(void)
{
    pthread_mutex_lock(&cache_lock);
    for (int c = 0; c < N_CLASSES; c++) {
        while (cache_head[c]) {
            void *p = cache_head[c];
            memcpy(&cache_head[c], p, sizeof(void *));
            free(p);
        }
    }
    cache_bytes = 0;
    pthread_mutex_unlock(&cache_lock);
}

tg_storage *tg_storage_new(size_t nbytes)
{
    tg_storage *s = malloc(sizeof *s);
    if (!s) {
        tg_set_error(TG_ERR_NOMEM, "tg_storage_new: out of memory");
        return NULL;
    }
    s->data = tg_alloc(nbytes);
    if (!s->data) {
        free(s);
        return NULL;
    }
    s->refcount = 1;
    s->nbytes = nbytes;
    s->version = 0;
    return s;
}

void tg_storage_release(tg_storage *s)
{
    if (!s)
        return;
    TG_ASSERT(s->refcount > 0);
    if (--s->refcount == 0) {
        tg_free(s->data, s->nbytes);
        free(s);
    }
}

int64_t tg_debug_live_tensors(void)
{
    return atomic_load(&tg_live_tensors);
}
int64_t tg_debug_live_nodes(void)
{
    return atomic_load(&tg_live_nodes);
}
int64_t tg_debug_live_bytes(void)
{
    return atomic_load(&tg_live_bytes);
}

int64_t tg_debug_peak_bytes(void)
{
    return atomic_load(&peak_bytes);
}

void tg_debug_reset_peak_bytes(void)
{
    atomic_store(&peak_bytes, atomic_load(&tg_live_bytes));
}
