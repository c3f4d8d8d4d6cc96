/* A seeded RNG with explicit state: xoshiro128** (Blackman and Vigna), seeded through
 * splitmix64. Integer arithmetic only up to the final float conversion, so a seed gives the
 * same numbers on every machine; fills run on one thread so the thread count cannot change
 * them. The fills' lo + (hi - lo) * u and mean + std * z are one fused multiply-add on CPUs
 * with FMA (the AVX2 and AVX-512 levels of isa.h, and any -march=native build there) and two
 * roundings on the others, so tensors filled on a CPU without FMA may differ in the last bit. */
#include "internal.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void tg_rng_seed(tg_rng *rng, uint64_t seed)
{
    uint64_t x = seed;
    uint64_t a = splitmix64(&x), b = splitmix64(&x);
    rng->s[0] = (uint32_t)a;
    rng->s[1] = (uint32_t)(a >> 32);
    rng->s[2] = (uint32_t)b;
    rng->s[3] = (uint32_t)(b >> 32);
    if (!(rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]))
        rng->s[0] = 1; /* the all-zero state is the one fixed point */
    rng->has_spare = 0;
    rng->spare = 0.0f;
}

static inline uint32_t rotl(uint32_t x, int k)
{
    return (x << k) | (x >> (32 - k));
}

uint32_t tg_rng_u32(tg_rng *rng)
{
    uint32_t *s = rng->s;
    uint32_t result = rotl(s[1] * 5u, 7) * 9u;
    uint32_t t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
}

float tg_rng_uniform01(tg_rng *rng)
{
    return (float)(tg_rng_u32(rng) >> 8) * (1.0f / 16777216.0f); /* 24 bits: exact in float */
}

float tg_rng_normal01(tg_rng *rng)
{
    /* Box-Muller in double; the second value of each pair is kept for the next call. */
    if (rng->has_spare) {
        rng->has_spare = 0;
        return rng->spare;
    }
    double u1 = ((double)(tg_rng_u32(rng) >> 8) + 1.0) / 16777217.0; /* (0, 1): log is finite */
    double u2 = (double)(tg_rng_u32(rng) >> 8) / 16777216.0;
    double r = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586 * u2;
    rng->spare = (float)(r * sin(th));
    rng->has_spare = 1;
    return (float)(r * cos(th));
}

/* The fills' loops, in a copy per level of isa.h (TG_ISA_LEAF), so that they give what a
 * -march=native build gives on this CPU (see the top of the file). */
TG_ISA_LEAF(uniform_fill, (float *d, int64_t n, tg_rng *rng, float lo, float hi),
            (d, n, rng, lo, hi))
{
    for (int64_t i = 0; i < n; i++)
        d[i] = lo + (hi - lo) * tg_rng_uniform01(rng);
}

TG_ISA_LEAF(normal_fill, (float *d, int64_t n, tg_rng *rng, float mean, float std),
            (d, n, rng, mean, std))
{
    for (int64_t i = 0; i < n; i++)
        d[i] = mean + std * tg_rng_normal01(rng);
}

tg_status tg_tensor_uniform_(tg_tensor *t, tg_rng *rng, float lo, float hi)
{
    if (!t || !rng)
        return tg_set_error(TG_ERR_ARG, "tg_tensor_uniform_: %s is NULL", t ? "rng" : "t");
    uniform_fill(t->data, t->numel, rng, lo, hi);
    t->storage->version++;
    return TG_OK;
}

tg_status tg_tensor_normal_(tg_tensor *t, tg_rng *rng, float mean, float std)
{
    if (!t || !rng)
        return tg_set_error(TG_ERR_ARG, "tg_tensor_normal_: %s is NULL", t ? "rng" : "t");
    normal_fill(t->data, t->numel, rng, mean, std);
    t->storage->version++;
    return TG_OK;
}

void tg_rng_permutation(tg_rng *rng, int64_t n, int64_t *out)
{
    /* Fisher-Yates with Lemire's unbiased bounded integers (64-bit draws for large n). */
    for (int64_t i = 0; i < n; i++)
        out[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        uint64_t bound = (uint64_t)i + 1, r;
        uint64_t threshold = (0 - bound) % bound;
        do {
            r = ((uint64_t)tg_rng_u32(rng) << 32) | tg_rng_u32(rng);
        } while (r < threshold);
        int64_t j = (int64_t)(r % bound);
        int64_t tmp = out[i];
        out[i] = out[j];
        out[j] = tmp;
    }
}
