/* Run-time choice of instruction set for the hot kernels (docs/design.md, section 9).
 *
 * The library is compiled for the x86-64 baseline (SSE2), so it runs on every x86-64 CPU and
 * under valgrind. The kernels that matter for speed exist in three variants, and every call
 * goes to the best one the CPU has, chosen once at start-up (isa.c):
 *   TG_ISA_BASELINE  the file's normal compilation: x86-64, SSE2;
 *   TG_ISA_AVX2      -march=x86-64-v3: AVX2, FMA, BMI1/2, F16C, LZCNT, MOVBE;
 *   TG_ISA_AVX512    -march=x86-64-v4 -mprefer-vector-width=256: AVX-512 F/BW/CD/DQ/VL, with
 *                    256-bit vectors where GCC vectorises on its own (as -march=native tunes
 *                    it on Intel's AVX-512 cores; explicit 512-bit code stays 512-bit).
 * TG_ISA=baseline|avx2|avx512 in the environment asks for a lower level (tests, benchmarks);
 * a level the CPU lacks is refused with a warning. The GEMM (tensor/gemm.c) follows the same
 * choice: its AVX-512 kernels run at TG_ISA_AVX512, OpenBLAS otherwise.
 *
 * Two ways to give a function its variants, both with one line in place of its header:
 *
 *   TG_ISA_KERNEL(name, (params), (args))   in a file listed in isa_src (meson.build)
 *   {                                       The file is compiled three times: normally, and
 *       ...                                 with -march=x86-64-v3 / -v4 and TG_ISA_VARIANT
 *   }                                       1 / 2. Everything the kernel calls in its file, and
 *                                           its OpenMP regions, is compiled for that level.
 *                                           In the two extra compilations the file's external
 *                                           definitions (public functions) must be left out:
 *                                           they sit between `#if TG_ISA_BASE` and `#endif`.
 *                                           TG_OP_DEFINE turns into an unused static there.
 *
 *   TG_ISA_LEAF(name, (params), (args))      in any file, for a function without OpenMP
 *   {                                        regions: the body is inlined into three copies
 *       ...                                  with target attributes, in the same compilation.
 *   }                                        (An OpenMP region is outlined before inlining,
 *                                            so it would stay at the baseline: use
 *                                            TG_ISA_KERNEL there.)
 *
 * Both declare `static void name(params)`, which dispatches; args repeats the parameter names.
 * With -Dnative=true (or off x86-64) there is one compilation for the build machine and both
 * macros are a plain `static void name(params)`.
 *
 * Why the floating-point sites need it even where speed does not: GCC contracts a * b + c into
 * one fused multiply-add wherever the target has FMA (-ffp-contract=fast, its default for C),
 * which rounds once instead of twice. Code compiled for the baseline therefore computes
 * different last bits than the same code built with -march=native did; the variants make the
 * AVX2 and AVX-512 levels give exactly what a native build gives. */
#ifndef TAPEGRAD_TENSOR_ISA_H
#define TAPEGRAD_TENSOR_ISA_H

#include <stdbool.h>

enum { TG_ISA_BASELINE = 0, TG_ISA_AVX2 = 1, TG_ISA_AVX512 = 2 };

/* The level in force (set before main by isa.c; TG_ISA_BASELINE until then). Hidden: read
 * directly, not through the shared library's symbol table, on every dispatch. */
__attribute__((visibility("hidden"))) extern int tg_isa_level;
static inline int tg_isa(void)
{
    return tg_isa_level;
}
/* Nonzero when the CPU has AVX512_BF16 (VDPBF16PS, VCVTNE2PS2BF16) on top of the level in
 * force being TG_ISA_AVX512: TG_ISA=avx2 or lower turns it off with the rest of AVX-512. Set
 * with tg_isa_level, before main; the bf16 GEMM of tensor/gemm.c runs only where it is set. */
__attribute__((visibility("hidden"))) extern int tg_isa_bf16_level;
static inline bool tg_isa_has_bf16(void)
{
    return tg_isa_bf16_level != 0;
}
/* AMX-BF16 tiles (TDPBF16PS: a 16 x 16 x 32 product per instruction), on top of
 * tg_isa_has_bf16(): tg_isa_amx_enable asks Linux for the tile state once (the first bf16 GEMM
 * mode request does; a process in FP32 mode never asks) and says whether the tiles may be
 * used; tg_isa_amx_ready says it without asking. */
bool tg_isa_amx_enable(void);
bool tg_isa_amx_ready(void);
/* "baseline", "avx2", "avx512". */
const char *tg_isa_name(int level);
/* The best level this CPU (and OS) supports, whatever TG_ISA says. */
int tg_isa_detect(void);

/* Set by meson: TG_ISA_MULTI 1 when the variants are built (default build on x86-64);
 * TG_ISA_VARIANT 1 or 2 in the extra compilations of the files in isa_src. */
#ifndef TG_ISA_MULTI
#define TG_ISA_MULTI 0
#endif
#ifndef TG_ISA_VARIANT
#define TG_ISA_VARIANT 0
#endif
/* True in the compilation that holds the file's public functions and descriptors. */
#define TG_ISA_BASE (TG_ISA_VARIANT == 0)

/* Variant entry points: external (the dispatcher is in the base compilation) but not
 * exported from the shared library. */
#define TG_ISA_HIDDEN __attribute__((visibility("hidden")))

#if TG_ISA_MULTI && TG_ISA_VARIANT == 0
#define TG_ISA_KERNEL(name, params, args)                                                          \
    TG_ISA_HIDDEN void tg_isa_avx2_##name params;                                                  \
    TG_ISA_HIDDEN void tg_isa_avx512_##name params;                                                \
    static void tg_isa_baseline_##name params;                                                     \
    static void name params                                                                        \
    {                                                                                              \
        switch (tg_isa()) {                                                                        \
        case TG_ISA_AVX512: tg_isa_avx512_##name args; break;                                      \
        case TG_ISA_AVX2: tg_isa_avx2_##name args; break;                                          \
        default: tg_isa_baseline_##name args; break;                                               \
        }                                                                                          \
    }                                                                                              \
    static void tg_isa_baseline_##name params
#elif TG_ISA_MULTI
/* An extra compilation: the kernel under its own name (so that the file's code calls this
 * level's copy), and the entry point that the base compilation's dispatcher calls. */
#if TG_ISA_VARIANT == 1
#define TG_ISA_ENTRY(name) tg_isa_avx2_##name
#else
#define TG_ISA_ENTRY(name) tg_isa_avx512_##name
#endif
#define TG_ISA_KERNEL(name, params, args)                                                          \
    static void name params;                                                                       \
    TG_ISA_HIDDEN void TG_ISA_ENTRY(name) params;                                                  \
    void TG_ISA_ENTRY(name) params                                                                 \
    {                                                                                              \
        name args;                                                                                 \
    }                                                                                              \
    static void name params
#else
#define TG_ISA_KERNEL(name, params, args) static void name params
#endif

/* The target attributes of TG_ISA_LEAF's copies: the levels' -march flags (GCC also takes the
 * vector-width preference in the attribute; clang only on the command line). */
#if defined(__clang__)
#define TG_ISA_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#define TG_ISA_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#else
#define TG_ISA_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#define TG_ISA_TARGET_AVX512 __attribute__((target("arch=x86-64-v4,prefer-vector-width=256")))
#endif

#if TG_ISA_MULTI && TG_ISA_VARIANT == 0
#define TG_ISA_LEAF(name, params, args)                                                            \
    static inline __attribute__((always_inline)) void tg_isa_body_##name params;                   \
    TG_ISA_TARGET_AVX512 static void tg_isa_avx512_##name params                                   \
    {                                                                                              \
        tg_isa_body_##name args;                                                                   \
    }                                                                                              \
    TG_ISA_TARGET_AVX2 static void tg_isa_avx2_##name params                                       \
    {                                                                                              \
        tg_isa_body_##name args;                                                                   \
    }                                                                                              \
    static void name params                                                                        \
    {                                                                                              \
        switch (tg_isa()) {                                                                        \
        case TG_ISA_AVX512: tg_isa_avx512_##name args; break;                                      \
        case TG_ISA_AVX2: tg_isa_avx2_##name args; break;                                          \
        default: tg_isa_body_##name args; break;                                                   \
        }                                                                                          \
    }                                                                                              \
    static inline __attribute__((always_inline)) void tg_isa_body_##name params
#else
#define TG_ISA_LEAF(name, params, args) static void name params
#endif

#endif
