#ifndef DROPTRACE_VECTOR_KERNELS_H
#define DROPTRACE_VECTOR_KERNELS_H

#include <stdint.h>

// Every pointer here is non-null.
#pragma clang assume_nonnull begin

/// The engine's elementwise and reduction loops (everything outside the
/// matrix products that touches every activation), compiled three times:
/// for AVX-512, for AVX2 with FMA, and for baseline x86-64 (SSE2) or any
/// other architecture. One source, so every level computes the same
/// formulas; levels differ only in lane count (summation order) and FMA
/// contraction. `n` counts float elements; pointers need no alignment.
typedef struct {
    /// x[i] = e^(x[i] − shift) for i < n; returns their float32 sum (softmax).
    /// exp is Cephes' single-precision scheme (x = k·ln 2 + r, degree-6
    /// polynomial for e^r, 2^k in the exponent bits), within ~2 ulp; inputs
    /// below −87.3 give e^−87.3 (treated as 0 by every caller).
    float (* _Nonnull exp_shifted)(float *x, long n, float shift);
    /// max over x[0..<n] (n > 0).
    float (* _Nonnull maximum)(const float *x, long n);
    /// x[i] *= factor.
    void (* _Nonnull scale)(float *x, long n, float factor);
    /// out[i] = act(gate[i]) · up[i]; activation 0: SiLU x/(1+e^−x), 1: GELU
    /// tanh approximation 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³))).
    void (* _Nonnull gated)(int activation, const float *gate, const float *up, float *out, long n);
    /// x[i] = act(x[i]) in place, activations as for `gated`.
    void (* _Nonnull activate)(int activation, float *x, long n);
    /// (x·y, x·x, y·y): float32 lanes over blocks of 64 elements, each block's
    /// partial sums carried in float64.
    void (* _Nonnull dot_norms)(const float *x, const float *y, long n, double *out3);
    /// x·y, accumulated as `dot_norms`.
    double (* _Nonnull dot)(const float *x, const float *y, long n);
    /// y = x / sqrt(mean(x²) + eps) · w (RMSNorm; sum of squares in float32).
    void (* _Nonnull rms_norm)(const float *x, const float *w, float *y, long n, float eps);
    /// out[i] = a[i] + b[i].
    void (* _Nonnull add)(const float *a, const float *b, float *out, long n);
    /// dst[i] = src[i] rounded to bfloat16 (nearest, ties to even; NaN stays
    /// NaN, quieted), as float32 values; dst may be src.
    void (* _Nonnull bf16_round)(const float *src, float *dst, long n);
    /// dst[i] = the bfloat16 bits of src[i] rounded as `bf16_round`.
    void (* _Nonnull bf16_convert)(const float *src, uint16_t *dst, long n);
} droptrace_vector_kernels;

/// The kernels for `level`: 2 AVX-512 (F, DQ, BW, VL), 1 AVX2 with FMA,
/// 0 baseline. The caller decides from CPUID and XCR0 which level the CPU
/// and OS support; a level this build cannot provide (another architecture)
/// gives the baseline.
const droptrace_vector_kernels *droptrace_vector_kernels_for(int level);

#pragma clang assume_nonnull end

#endif
