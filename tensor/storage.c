/* Storage and the caching allocator.
 *
 * A training loop asks for the same buffer sizes every step. Handing freed buffers back out
 * avoids page-faulting fresh memory each time (glibc returns large blocks to the kernel with
 * munmap). Sizes are rounded up to size classes — four per power of two, so at most 25% is
 * wasted — and each class keeps a free list threaded through the free buffers themselves.
 * One global cache under a mutex: buffers may be freed on another thread than the one that
 * allocated them, and the cache stays reachable, so leak checkers see no false leaks.
 *
 * Large buffers (ARENA_MIN and up: activations, their gradients, weights and Adam's moments)
 * come from the arena instead, a first-fit heap over anonymous mappings that splits and
 * coalesces free ranges. Per-class lists would hold each class's own peak: a training
 * iteration's phases peak in different sizes (D's activations in the discriminator steps, G's
 * in the generator step), and the classes' peaks added up to 85 MiB above the most that was
 * ever live at once in the mnist_gan iteration (459 against 374 MiB). First fit in address
 * order keeps the touched part of the arena close to that most; its free ranges stay resident
 * (touched pages), so a step reuses them without page faults, and tg_allocator_trim hands them
 * back. The arena asks for transparent huge pages (arena_grow). */
#include "internal.h"

#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

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

/* ---- the arena (under cache_lock) ----
 * An arena is one address range reserved at its first request (the machine's RAM: PROT_NONE
 * and unaccounted until used), committed from its start in ARENA_CHUNK steps as it fills; the
 * free ranges of the committed part sorted by address, adjacent ones merged. One range growing
 * upwards makes first fit prefer the pages touched before to fresh ones. A block's size is its
 * request rounded up to ARENA_ROUND, from the nbytes that tg_free is given as well, so blocks
 * need no header. */
#define ARENA_MIN ((size_t)256 << 10) /* smaller requests keep the size classes */
#define ARENA_ROUND ((size_t)4096)
#define ARENA_CHUNK ((size_t)64 << 20) /* committed at once (touched only as used) */

/* Under AddressSanitizer, what the arena does not hand out is poisoned: a kernel that reads or
 * writes past its buffer's request, or into a freed one, is reported as with malloc. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(ARENA_ASAN)
#define ARENA_ASAN 1
#endif
#ifdef ARENA_ASAN
#include <sanitizer/asan_interface.h>
#define ARENA_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define ARENA_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define ARENA_POISON(p, n) ((void)(p), (void)(n))
#define ARENA_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

typedef struct {
    char *start;
    size_t size;
} arena_range;

typedef struct {
    char *base; /* NULL until reserved */
    size_t reserved, committed;
    bool failed;       /* no reservation: the size classes only */
    arena_range *free; /* sorted by start */
    int64_t n_free, cap_free;
    int64_t n_live; /* blocks handed out */
} arena;

/* Blocks of ARENA_HUGE and up have an arena of their own: among smaller ones, the holes their
 * frees leave were often just too small for the next (the mnist_gan iteration's 24.5 MiB weight
 * gradient above a 24 MiB hole), which cost 11 MiB of the convt iteration's peak. */
#define ARENA_HUGE ((size_t)16 << 20)
static arena arenas[2]; /* [0] below ARENA_HUGE, [1] from it on */
int tg_alloc_arena = 1;

static size_t arena_size(size_t nbytes)
{
    return (nbytes + ARENA_ROUND - 1) / ARENA_ROUND * ARENA_ROUND;
}

static arena *arena_for(size_t size)
{
    return &arenas[size >= ARENA_HUGE];
}

static void arena_put(arena *a, char *p, size_t size);

static bool arena_owns(const arena *a, const void *p)
{
    return a->base && (const char *)p >= a->base && (const char *)p < a->base + a->committed;
}

/* Commits at least size more bytes at the end of a's committed part, reserving its range
 * first; false when the reservation or the commit is refused. */
static bool arena_grow(arena *a, size_t size)
{
    if (!a->base && !a->failed) {
        const size_t page = (size_t)sysconf(_SC_PAGESIZE);
        const long pages = sysconf(_SC_PHYS_PAGES);
        size_t len = pages > 0 ? (size_t)pages * page : (size_t)1 << 34;
        void *m = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        a->failed = m == MAP_FAILED;
        if (!a->failed)
            a->base = m, a->reserved = len;
    }
    size_t len =
        size > ARENA_CHUNK ? (size + ARENA_CHUNK - 1) / ARENA_CHUNK * ARENA_CHUNK : ARENA_CHUNK;
    if (!a->base || len > a->reserved - a->committed ||
        mprotect(a->base + a->committed, len, PROT_READ | PROT_WRITE) != 0)
        return false;
#ifdef MADV_HUGEPAGE
    /* Transparent huge pages where the system gives them on request (Debian's default:
     * "madvise"): 2 MB pages for activations and weights that are streamed through, where 4 KB
     * ones cost a TLB miss every page (a linear layer's packing reads each weight row from its
     * own page). The clean step at 1 thread 0.496 -> 0.479 s, the tutorial step 0.426 -> 0.415
     * at 1 thread and 0.229 -> 0.220 at 2 (medians of 5-6 interleaved rounds); peak RSS 1-3 MB
     * more. First touch costs more (the kernel zeroes 2 MB a fault: a 3-iteration mnist_gan
     * run took 2.2-2.7 s against 2.0), which a few tens of iterations repay. A refusal changes
     * nothing. */
    madvise(a->base + a->committed, len, MADV_HUGEPAGE);
#endif
    a->committed += len;
    arena_put(a, a->base + a->committed - len, len);
    return true;
}

/* Puts [p, p + size) on a's free list, merged with its neighbours. The list has room: free
 * ranges are separated by live blocks, so there are at most live blocks + 1 of them, and
 * arena_take keeps the capacity above that. */
static void arena_put(arena *a, char *p, size_t size)
{
    ARENA_POISON(p, size);
    arena_range *f = a->free;
    int64_t i = 0;
    while (i < a->n_free && f[i].start < p)
        i++;
    const bool prev = i > 0 && f[i - 1].start + f[i - 1].size == p;
    const bool next = i < a->n_free && p + size == f[i].start;
    if (prev && next) {
        f[i - 1].size += size + f[i].size;
        memmove(&f[i], &f[i + 1], (size_t)(a->n_free - i - 1) * sizeof *f);
        a->n_free--;
    } else if (prev) {
        f[i - 1].size += size;
    } else if (next) {
        f[i].start = p;
        f[i].size += size;
    } else {
        TG_ASSERT(a->n_free < a->cap_free);
        memmove(&f[i + 1], &f[i], (size_t)(a->n_free - i) * sizeof *f);
        f[i] = (arena_range){p, size};
        a->n_free++;
    }
}

/* A block of size bytes (ARENA_ROUND multiple) from a, or NULL when a cannot grow (the caller
 * then uses the size classes). First fit: the lowest free range that holds it. */
static void *arena_take(arena *a, size_t size)
{
    if (!tg_grow((void **)&a->free, &a->cap_free, a->n_live + 2, sizeof *a->free))
        return NULL;
    int64_t i = 0;
    while (i < a->n_free && a->free[i].size < size)
        i++;
    if (i == a->n_free) {
        /* the last free range, if it ends the committed part, grows into the new chunk */
        const arena_range *last = a->n_free ? &a->free[a->n_free - 1] : NULL;
        const bool at_end = last && last->start + last->size == a->base + a->committed;
        if (!arena_grow(a, size - (at_end ? last->size : 0)))
            return NULL;
        i = a->n_free - 1; /* the grown last range */
    }
    arena_range *f = &a->free[i];
    char *p = f->start;
    f->start += size;
    f->size -= size;
    if (f->size == 0) {
        memmove(f, f + 1, (size_t)(a->n_free - i - 1) * sizeof *f);
        a->n_free--;
    }
    a->n_live++;
    return p;
}

/* Releases the pages of a's free ranges to the system (they read as zeros after). */
static void arena_trim(arena *a)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    for (int64_t i = 0; i < a->n_free; i++) {
        uintptr_t b = (uintptr_t)a->free[i].start, e = b + a->free[i].size;
        b = (b + page - 1) / page * page;
        e = e / page * page;
        if (e > b)
            madvise((void *)b, e - b, MADV_DONTNEED);
    }
}

/* Counts n more live bytes and moves the peak. */
static void count_live(int64_t n)
{
    int64_t now = atomic_fetch_add(&tg_live_bytes, n) + n;
    int64_t peak = atomic_load(&peak_bytes);
    while (now > peak && !atomic_compare_exchange_weak(&peak_bytes, &peak, now))
        ;
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
    if (tg_alloc_arena && nbytes >= ARENA_MIN &&
        (p = arena_take(arena_for(nbytes), arena_size(nbytes)))) {
        pthread_mutex_unlock(&cache_lock);
        ARENA_UNPOISON(p, nbytes);
        count_live((int64_t)arena_size(nbytes));
        return p;
    }
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
    count_live((int64_t)rounded);
    return p;
}

void *tg_alloc_zeroed(size_t nbytes)
{
    void *p = tg_alloc(nbytes);
    if (p)
        memset(p, 0, nbytes);
    return p;
}

void *tg_try_alloc(size_t nbytes)
{
    const bool error_pending = tg_last_status() != TG_OK;
    void *buf = tg_alloc(nbytes);
    if (!buf && !error_pending)
        tg_clear_error();
    return buf;
}

void tg_free(void *ptr, size_t nbytes)
{
    if (!ptr)
        return;
    size_t rounded;
    int c = size_class(nbytes, &rounded);
    pthread_mutex_lock(&cache_lock);
    arena *a = arena_for(nbytes);
    if (nbytes >= ARENA_MIN && arena_owns(a, ptr)) {
        arena_put(a, ptr, arena_size(nbytes));
        a->n_live--;
        pthread_mutex_unlock(&cache_lock);
        atomic_fetch_sub(&tg_live_bytes, (int64_t)arena_size(nbytes));
        return;
    }
    atomic_fetch_sub(&tg_live_bytes, (int64_t)rounded);
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
    arena_trim(&arenas[0]);
    arena_trim(&arenas[1]);
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
