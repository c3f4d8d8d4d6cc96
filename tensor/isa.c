/* The instruction-set level of the kernels (isa.h): what the CPU has, lowered by TG_ISA. */
#include "isa.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#ifdef __linux__
#include <sys/syscall.h>
#include <unistd.h>
#endif
#define TG_ISA_X86 1
#else
#define TG_ISA_X86 0
#endif

int tg_isa_level = TG_ISA_BASELINE;
int tg_isa_bf16_level = 0;
/* 1: the CPU and the OS have AMX-BF16 (tiles); 2: and this process may use them; -1: the
 * kernel refused them (tg_isa_amx_enable). */
static _Atomic int amx_state = 0;

static const char *const names[] = {"baseline", "avx2", "avx512"};

const char *tg_isa_name(int level)
{
    return level >= TG_ISA_BASELINE && level <= TG_ISA_AVX512 ? names[level] : "unknown";
}

#if TG_ISA_X86
/* The OS's enabled register state (XCR0): the CPU may have AVX yet the OS not save its
 * registers. Only called when CPUID reports OSXSAVE. */
static unsigned long long xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (unsigned long long)hi << 32 | lo;
}
#endif

/* The levels as GCC defines -march=x86-64-v3 and -v4 (what the variants are compiled with):
 * v3 = v2 (SSE3, SSSE3, SSE4.1, SSE4.2, POPCNT, CMPXCHG16B, LAHF) + AVX, AVX2, BMI1, BMI2,
 * F16C, FMA, LZCNT, MOVBE, XSAVE; v4 = v3 + AVX512F, BW, CD, DQ, VL. CPUID read directly: GCC's
 * __builtin_cpu_supports("x86-64-v3") has no counterpart in clang 14. */
int tg_isa_detect(void)
{
#if TG_ISA_X86
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return TG_ISA_BASELINE;
    const unsigned c1 = c;
    const bool v2 = (c1 & bit_SSE3) && (c1 & bit_SSSE3) && (c1 & bit_SSE4_1) && (c1 & bit_SSE4_2) &&
                    (c1 & bit_POPCNT) && (c1 & bit_CMPXCHG16B);
    const bool osxsave = c1 & bit_OSXSAVE;
    if (!v2 || !osxsave || !(c1 & bit_AVX) || !(c1 & bit_FMA) || !(c1 & bit_F16C) ||
        !(c1 & bit_MOVBE))
        return TG_ISA_BASELINE;
    const unsigned long long xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* SSE and AVX state */
        return TG_ISA_BASELINE;
    if (!__get_cpuid(0x80000001, &a, &b, &c, &d) || !(c & bit_LAHF_LM) || !(c & bit_LZCNT))
        return TG_ISA_BASELINE;
    if (__get_cpuid_max(0, NULL) < 7)
        return TG_ISA_BASELINE;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & bit_AVX2) || !(b & bit_BMI) || !(b & bit_BMI2))
        return TG_ISA_BASELINE;
    const unsigned avx512 = bit_AVX512F | bit_AVX512BW | bit_AVX512CD | bit_AVX512DQ | bit_AVX512VL;
    if ((b & avx512) != avx512 || (xcr0 & 0xe0) != 0xe0) /* opmask, ZMM0-15 upper, ZMM16-31 */
        return TG_ISA_AVX2;
    return TG_ISA_AVX512;
#else
    return TG_ISA_BASELINE;
#endif
}

/* AVX512_BF16: CPUID leaf 7, subleaf 1, EAX bit 5 (subleaf 0's EAX is the last subleaf).
 * Meaningful only where tg_isa_detect found the AVX-512 level (its XCR0 check covers the
 * registers these instructions use). */
static bool detect_bf16(void)
{
#if TG_ISA_X86
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7)
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    if (a < 1)
        return false;
    __cpuid_count(7, 1, a, b, c, d);
    return (a >> 5) & 1;
#else
    return false;
#endif
}

/* AMX-TILE and AMX-BF16 (CPUID leaf 7 subleaf 0, EDX bits 24 and 22) with the tile state
 * enabled by the OS (XCR0 bits 17 and 18). Linux also wants each process to ask for the tile
 * data first (tg_isa_amx_enable). */
static bool detect_amx(void)
{
#if TG_ISA_X86 && defined(__linux__)
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7)
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    const unsigned amx = 1u << 24 | 1u << 22;
    return (d & amx) == amx && (xgetbv0() & 0x60000) == 0x60000;
#else
    return false;
#endif
}

bool tg_isa_amx_enable(void)
{
    int state = atomic_load(&amx_state);
#if TG_ISA_X86 && defined(__linux__)
    if (state == 1) {
        /* ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): process-wide, once. A
         * kernel without it (before 5.16) refuses, and the tiles stay unused. */
        state = syscall(SYS_arch_prctl, 0x1023, 18) == 0 ? 2 : -1;
        atomic_store(&amx_state, state);
    }
#endif
    return state == 2;
}

bool tg_isa_amx_ready(void)
{
    return atomic_load_explicit(&amx_state, memory_order_relaxed) == 2;
}

/* Before main (and when the shared library is loaded): once, for the whole process. */
__attribute__((constructor)) static void tg_isa_init(void)
{
    const int best = tg_isa_detect();
    int level = best;
    const char *want = getenv("TG_ISA");
    if (want && *want && strcmp(want, "auto") != 0) {
        int asked = -1;
        for (int i = TG_ISA_BASELINE; i <= TG_ISA_AVX512; i++)
            if (!strcmp(want, names[i]))
                asked = i;
        if (asked < 0)
            fprintf(stderr,
                    "tapegrad: TG_ISA=%s is not one of baseline, avx2, avx512, auto; "
                    "using %s\n",
                    want, names[best]);
        else if (asked > best)
            fprintf(stderr,
                    "tapegrad: TG_ISA=%s: this CPU (or the emulator running it) has "
                    "only %s; using %s\n",
                    want, names[best], names[best]);
        else
            level = asked;
    }
    tg_isa_level = level;
    tg_isa_bf16_level = level >= TG_ISA_AVX512 && detect_bf16();
    atomic_store(&amx_state, tg_isa_bf16_level && detect_amx() ? 1 : 0);
}
