/* SGEMM peak of the machine's OpenBLAS, the ceiling droptrace's GEMMs run against.
 *
 *   gcc -O2 bench/sgemm_peak.c -o sgemm_peak -lopenblas && OPENBLAS_NUM_THREADS=2 ./sgemm_peak [reps]
 *
 * Times C = A·Bᵀ (row-major, B transposed like a weight matrix [out, in]) for a square 2048³
 * product and the shapes of the benchmark models' projections over 8192 tokens (16 × 512),
 * best of `reps` (default 5) after one warm-up each, and prints one JSON object:
 * {"threads": N, "shapes": [{"m","n","k","gflops"}...], "peak_gflops": best}.
 * The thread count is OpenBLAS's own (OPENBLAS_NUM_THREADS).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    /* m = tokens, n = output features, k = input features */
    static const int shapes[][3] = {
        {2048, 2048, 2048},
        {8192, 1024, 1024}, {8192, 2816, 1024}, {8192, 1024, 2816}, /* mid: q/o, gate/up, down */
        {8192, 2048, 2048}, {8192, 5632, 2048}, {8192, 2048, 5632}, /* tiny: q/o, gate/up, down */
    };
    int nshapes = sizeof shapes / sizeof shapes[0];
    double peak = 0;
    printf("{\"threads\": %d, \"openblas_config\": \"%s\", \"shapes\": [", openblas_get_num_threads(), openblas_get_config());
    for (int s = 0; s < nshapes; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *a = malloc(sizeof(float) * (size_t)m * k);
        float *b = malloc(sizeof(float) * (size_t)n * k);
        float *c = malloc(sizeof(float) * (size_t)m * n);
        for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
        for (size_t i = 0; i < (size_t)n * k; i++) b[i] = (float)((i * 40503u) % 1000) * 1e-3f - 0.5f;
        double best = 1e30;
        for (int r = 0; r <= reps; r++) {
            double t0 = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, c, n);
            double dt = now() - t0;
            if (r > 0 && dt < best) best = dt; /* r == 0 is the warm-up */
        }
        double gflops = 2.0 * m * n * k / best / 1e9;
        if (gflops > peak) peak = gflops;
        printf("%s{\"m\": %d, \"n\": %d, \"k\": %d, \"seconds\": %.4f, \"gflops\": %.1f}", s ? ", " : "", m, n, k, best, gflops);
        fflush(stdout);
        free(a); free(b); free(c);
    }
    printf("], \"peak_gflops\": %.1f}\n", peak);
    return 0;
}
