// One body (vector_kernels_body.h), compiled per instruction-set level with
// clang's target attribute; the caller picks the level from CPUID.
#include "vector_kernels.h"
#include <string.h>

#define LEVEL_SUFFIX(name) name##_baseline
#define VECTOR_BYTES 16
#include "vector_kernels_body.h"
#undef LEVEL_SUFFIX
#undef VECTOR_BYTES

#if defined(__x86_64__) && defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#define LEVEL_SUFFIX(name) name##_avx2
#define VECTOR_BYTES 32
#include "vector_kernels_body.h"
#undef LEVEL_SUFFIX
#undef VECTOR_BYTES
#pragma clang attribute pop

#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))), apply_to = function)
#define LEVEL_SUFFIX(name) name##_avx512
#define VECTOR_BYTES 64
#include "vector_kernels_body.h"
#undef LEVEL_SUFFIX
#undef VECTOR_BYTES
#pragma clang attribute pop
#define HAVE_X86_LEVELS 1
#endif

const droptrace_vector_kernels *droptrace_vector_kernels_for(int level) {
#ifdef HAVE_X86_LEVELS
    if (level >= 2) return &kernels_avx512;
    if (level == 1) return &kernels_avx2;
#endif
    (void)level;
    return &kernels_baseline;
}
