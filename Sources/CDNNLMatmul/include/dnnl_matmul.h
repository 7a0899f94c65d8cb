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

/// Elements (bf16) of B [k×n] in the layout oneDNN's bf16 matmul prefers
/// for it (the kernel's blocked, padded weights layout, so products skip
/// re-laying B out), with `columnBlock` set to its column block; 0 when that
/// layout is not packed column block after column block (then B stays plain).
long droptrace_dnnl_bf16_packed_size(long n, long k, long *columnBlock);

/// Lays B out in that layout: from [n×k] row-major read transposed
/// (`transposeB`, torch.nn.Linear's [out, in]) or [k×n], rows `ldb` apart,
/// into `packed` (droptrace_dnnl_bf16_packed_size elements). Returns dnnl_status_t.
int droptrace_dnnl_bf16_pack(long n, long k, const uint16_t *b, long ldb, int transposeB, uint16_t *packed);

/// Columns [column0, column0 + width) of packed B back to plain: [width×k]
/// read transposed (`transposeB`) or [k×width], rows `ldb` apart; column0 a
/// multiple of the column block. Returns dnnl_status_t.
int droptrace_dnnl_bf16_unpack(
    long n, long k, const uint16_t *packed, long column0, long width, uint16_t *plain, long ldb, int transposeB);

/// droptrace_dnnl_bf16_matmul with B packed: C[m×n] = alpha·A·B[:, column0 ..< column0 + n]
/// (+ C when `accumulate`), `packed` holding all `totalColumns` columns of B,
/// column0 a multiple of the column block. Returns dnnl_unimplemented when
/// the kernel would want this slice laid out otherwise (run it unpacked).
int droptrace_dnnl_bf16_matmul_packed(
    long m, long n, long k, const uint16_t *a, long lda, const uint16_t *packed, long totalColumns, long column0,
    float *c, long ldc, float alpha, int accumulate);

#endif
