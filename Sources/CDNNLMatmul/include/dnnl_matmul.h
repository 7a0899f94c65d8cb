#ifndef DROPTRACE_DNNL_MATMUL_H
#define DROPTRACE_DNNL_MATMUL_H

#include <stdint.h>

/// Limits OpenMP (oneDNN's threading runtime) to one thread on the calling
/// thread: the engine splits products across its own workers, so oneDNN must
/// never start a team of its own. libgomp keeps the setting per thread; done
/// once per thread. A no-op when libgomp is not loaded.
void droptrace_omp_single_thread(void);

/// Row-major C[m×n] = alpha·op(A)·op(B) + beta·C through oneDNN's dnnl_sgemm,
/// single-threaded on the calling thread. Returns dnnl_status_t (0: success).
int droptrace_dnnl_sgemm(
    int transposeA, int transposeB, long m, long n, long k, float alpha,
    const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc);

/// Row-major C[m×n] (float32) = alpha·A·op(B) (+ C when `accumulate`) with A
/// [m×k] and B ([k×n], or [n×k] read transposed when `transposeB`) in
/// bfloat16 (raw bits), through oneDNN's matmul primitive on the calling
/// thread. Primitives are cached per thread by shape. Returns dnnl_status_t.
int droptrace_dnnl_bf16_matmul(
    long m, long n, long k, const uint16_t *a, long lda, const uint16_t *b, long ldb, int transposeB,
    float *c, long ldc, float alpha, int accumulate);

#endif
