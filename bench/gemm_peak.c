/* Peaks of the matrix units droptrace can run on, measured with the benchmark's thread count:
 * OpenBLAS SGEMM, oneDNN's dnnl_sgemm (f32) and oneDNN's matmul bf16×bf16→f32 (the bf16 units:
 * AMX or AVX512-BF16 where the CPU has them; oneDNN emulates them on f32 units elsewhere).
 *
 *   gcc -O2 bench/gemm_peak.c -o gemm_peak -lopenblas -ldnnl -fopenmp
 *   OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 [PEAK_SUSTAIN_SECONDS=20] ./gemm_peak [reps] [model ...]
 *
 * Each unit computes C = A·Bᵀ (row-major A [m, k] of activations, B [n, k] like a weight matrix
 * [out, in], C [m, n] in float32) for a square 2048³ product and the projection shapes of the
 * named benchmark models (mid, tiny; default both) over 8192 tokens (16 × 512); best of `reps`
 * (default 3) after one warm-up. oneDNN's bf16 matmul is timed twice: with B as stored ([n, k]
 * row-major, "plain") and with B reordered once, outside the timing, to the layout oneDNN prefers
 * ("packed") — the better of the two is the unit's peak, as a caller may prepare weights either way.
 * The thread count is OpenBLAS's own (OPENBLAS_NUM_THREADS) and oneDNN's OpenMP team
 * (OMP_NUM_THREADS).
 *
 * A best of a few products of a fraction of a second measures the unit in a burst. A score run
 * keeps it busy for seconds to minutes, at the clock a sustained load gets (and, on a virtual
 * machine, with whatever the host takes meanwhile), so each unit's best shape and variant is also
 * run back to back for PEAK_SUSTAIN_SECONDS (default 20; 0 skips it): its "sustained" entry is
 * the FLOPs of all those products over their total time.
 *
 * Prints one JSON object:
 *   {"reps": R, "threads": {"openblas": N, "omp": N},
 *    "openblas": {"config", "corename"}, "onednn": {"version", "isa", "bf16_impl"},
 *    "units": {"openblas_sgemm" | "onednn_sgemm" | "onednn_bf16":
 *              {"shapes": [{"m", "n", "k", "variant", "seconds", "gflops"}...], "peak_gflops",
 *               "sustained": {"m", "n", "k", "variant", "seconds", "runs", "gflops"}}}}
 * A unit that cannot run (oneDNN refusing a shape) gets "error" instead of a peak; exit code 0.
 */
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static const char *isa_name(dnnl_cpu_isa_t isa) {
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "unknown";
    }
}

/* bf16 by round-to-nearest-even of the float32 bits (the inputs here are finite) */
static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

typedef struct { int m, n, k; } shape_t;

/* fill deterministically with values in [-0.5, 0.5) (the magnitude is irrelevant to the speed) */
static float *filled(size_t count, unsigned mult) {
    float *p = malloc(sizeof(float) * count);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (size_t i = 0; i < count; i++) p[i] = (float)((i * mult) % 1000) * 1e-3f - 0.5f;
    return p;
}

/* one product's operands: A [m, k], B [n, k] and C [m, n] in float32, and A and B as bf16 bits when asked */
typedef struct { float *a, *b, *c; uint16_t *a16, *b16; } operands_t;

static operands_t operands(const shape_t *s, int bf16) {
    operands_t o = {filled((size_t)s->m * s->k, 2654435761u), filled((size_t)s->n * s->k, 40503u),
                    filled((size_t)s->m * s->n, 1u), NULL, NULL};
    if (bf16) {
        o.a16 = malloc(2 * (size_t)s->m * s->k);
        o.b16 = malloc(2 * (size_t)s->n * s->k);
        if (!o.a16 || !o.b16) { fprintf(stderr, "out of memory\n"); exit(1); }
        for (size_t j = 0; j < (size_t)s->m * s->k; j++) o.a16[j] = to_bf16(o.a[j]);
        for (size_t j = 0; j < (size_t)s->n * s->k; j++) o.b16[j] = to_bf16(o.b[j]);
    }
    return o;
}

static void release(operands_t *o) { free(o->a); free(o->b); free(o->c); free(o->a16); free(o->b16); }

static int first_entry;
static void entry(const shape_t *s, const char *variant, double best) {
    printf("%s{\"m\": %d, \"n\": %d, \"k\": %d, \"variant\": \"%s\", \"seconds\": %.4f, \"gflops\": %.1f}",
           first_entry ? "" : ", ", s->m, s->n, s->k, variant, best, 2.0 * s->m * s->n * s->k / best / 1e9);
    first_entry = 0;
    fflush(stdout);
}

static double time_best(int reps, void (*fn)(void *), void *ctx) {
    double best = 1e30;
    for (int r = 0; r <= reps; r++) { /* r == 0 is the warm-up */
        double t0 = now();
        fn(ctx);
        double dt = now() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    return best;
}

typedef struct { const shape_t *s; float *a, *b, *c; } f32_ctx;

static void run_openblas(void *p) {
    f32_ctx *x = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, x->s->m, x->s->n, x->s->k, 1.0f, x->a, x->s->k,
                x->b, x->s->k, 0.0f, x->c, x->s->n);
}

static void run_dnnl_sgemm(void *p) {
    f32_ctx *x = p;
    dnnl_sgemm('N', 'T', x->s->m, x->s->n, x->s->k, 1.0f, x->a, x->s->k, x->b, x->s->k, 0.0f, x->c, x->s->n);
}

typedef struct { dnnl_primitive_t prim; dnnl_stream_t stream; dnnl_exec_arg_t args[3]; } matmul_ctx;

static void run_matmul(void *p) {
    matmul_ctx *x = p;
    dnnl_primitive_execute(x->prim, x->stream, 3, x->args);
    dnnl_stream_wait(x->stream);
}

/* back-to-back runs of fn for at least `seconds` after one warm-up: the mean seconds of one run */
static double time_sustained(double seconds, int *runs, void (*fn)(void *), void *ctx) {
    fn(ctx);
    double t0 = now(), elapsed = 0;
    *runs = 0;
    do {
        fn(ctx);
        ++*runs;
        elapsed = now() - t0;
    } while (elapsed < seconds);
    return elapsed / *runs;
}

static double sustain_seconds;

/* the best shape and variant of a unit so far */
typedef struct { double gflops; shape_t shape; int packed; } peak_t;

static void peak_of(peak_t *peak, const shape_t *s, int packed, double seconds) {
    double gflops = 2.0 * s->m * s->n * s->k / seconds / 1e9;
    if (gflops > peak->gflops) *peak = (peak_t){gflops, *s, packed};
}

static void sustained_entry(const peak_t *peak, const char *variant, double seconds, int runs) {
    const shape_t *s = &peak->shape;
    printf(", \"sustained\": {\"m\": %d, \"n\": %d, \"k\": %d, \"variant\": \"%s\", \"seconds\": %.2f, \"runs\": %d, "
           "\"gflops\": %.1f}", s->m, s->n, s->k, variant, seconds * runs, runs, 2.0 * s->m * s->n * s->k / seconds / 1e9);
}

#define TRY(call) do { if ((call) != dnnl_success) { *err = #call; goto fail; } } while (0)

/* one bf16 matmul shape, B plain (tag ba: [n, k] row-major) or packed (format any, reordered once);
 * returns the best seconds of `reps` (or, when *sustained_runs is not NULL, the mean seconds of the
 * runs of a sustained measurement, their count stored there), or a negative number with *err set */
static double bf16_matmul(dnnl_engine_t engine, dnnl_stream_t stream, const shape_t *s, int packed, int reps,
                          int *sustained_runs, const uint16_t *a16, const uint16_t *b16, float *c, char impl[64],
                          const char **err) {
    dnnl_memory_desc_t a_md, b_plain_md, b_md, c_md;
    dnnl_dims_t a_dims = {s->m, s->k}, b_dims = {s->k, s->n}, c_dims = {s->m, s->n};
    dnnl_matmul_desc_t desc;
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t prim = NULL, reorder = NULL;
    dnnl_memory_t a_mem = NULL, b_plain = NULL, b_mem = NULL, c_mem = NULL;
    double best = -1;
    *err = NULL;
    TRY(dnnl_memory_desc_init_by_tag(&a_md, 2, a_dims, dnnl_bf16, dnnl_ab));
    TRY(dnnl_memory_desc_init_by_tag(&b_plain_md, 2, b_dims, dnnl_bf16, dnnl_ba));
    TRY(dnnl_memory_desc_init_by_tag(&b_md, 2, b_dims, dnnl_bf16, packed ? dnnl_format_tag_any : dnnl_ba));
    TRY(dnnl_memory_desc_init_by_tag(&c_md, 2, c_dims, dnnl_f32, dnnl_ab));
    TRY(dnnl_matmul_desc_init(&desc, &a_md, &b_md, NULL, &c_md));
    TRY(dnnl_primitive_desc_create(&pd, &desc, NULL, engine, NULL));
    const char *name = NULL; /* owned by pd: copied */
    TRY(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name));
    snprintf(impl, 64, "%s", name ? name : "?");
    TRY(dnnl_primitive_create(&prim, pd));
    TRY(dnnl_memory_create(&a_mem, &a_md, engine, (void *)a16));
    TRY(dnnl_memory_create(&b_plain, &b_plain_md, engine, (void *)b16));
    TRY(dnnl_memory_create(&c_mem, &c_md, engine, c));
    const dnnl_memory_desc_t *chosen = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (dnnl_memory_desc_equal(chosen, &b_plain_md)) {
        b_mem = b_plain;
    } else {
        TRY(dnnl_memory_create(&b_mem, chosen, engine, DNNL_MEMORY_ALLOCATE));
        TRY(dnnl_reorder_primitive_desc_create(&rpd, &b_plain_md, engine, chosen, engine, NULL));
        TRY(dnnl_primitive_create(&reorder, rpd));
        dnnl_exec_arg_t rargs[2] = {{DNNL_ARG_FROM, b_plain}, {DNNL_ARG_TO, b_mem}};
        TRY(dnnl_primitive_execute(reorder, stream, 2, rargs));
        TRY(dnnl_stream_wait(stream));
    }
    matmul_ctx x = {prim, stream, {{DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}}};
    best = sustained_runs ? time_sustained(sustain_seconds, sustained_runs, run_matmul, &x) : time_best(reps, run_matmul, &x);
fail:
    if (reorder) dnnl_primitive_destroy(reorder);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (b_mem && b_mem != b_plain) dnnl_memory_destroy(b_mem);
    if (b_plain) dnnl_memory_destroy(b_plain);
    if (a_mem) dnnl_memory_destroy(a_mem);
    if (c_mem) dnnl_memory_destroy(c_mem);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    return best;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 3;
    if (reps < 1 || reps > 100) { fprintf(stderr, "reps must be 1...100\n"); return 64; }
    const char *sustain = getenv("PEAK_SUSTAIN_SECONDS");
    char *rest = NULL;
    sustain_seconds = sustain && *sustain ? strtod(sustain, &rest) : 20;
    if ((rest && *rest) || !(sustain_seconds >= 0 && sustain_seconds <= 600)) {
        fprintf(stderr, "PEAK_SUSTAIN_SECONDS must be 0...600, not '%s'\n", sustain);
        return 64;
    }
    int want_mid = argc <= 2, want_tiny = argc <= 2;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "mid")) want_mid = 1;
        else if (!strcmp(argv[i], "tiny")) want_tiny = 1;
        else { fprintf(stderr, "unknown model %s (mid, tiny)\n", argv[i]); return 64; }
    }
    /* m = tokens, n = output features, k = input features */
    shape_t shapes[7] = {{2048, 2048, 2048}};
    int nshapes = 1;
    if (want_mid) { /* q/o, gate/up, down */
        shapes[nshapes++] = (shape_t){8192, 1024, 1024};
        shapes[nshapes++] = (shape_t){8192, 2816, 1024};
        shapes[nshapes++] = (shape_t){8192, 1024, 2816};
    }
    if (want_tiny) {
        shapes[nshapes++] = (shape_t){8192, 2048, 2048};
        shapes[nshapes++] = (shape_t){8192, 5632, 2048};
        shapes[nshapes++] = (shape_t){8192, 2048, 5632};
    }

    /* oneDNN 2.x keeps AMX below its default ISA ceiling; droptrace raises the ceiling on CPUs with
     * AMX (MatrixKernels), and so does this, before oneDNN's first use fixes the ISA. A ceiling only:
     * on a CPU without AMX the effective ISA stays what the CPU has. */
    dnnl_set_max_cpu_isa(dnnl_cpu_isa_avx512_core_amx);
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
        fprintf(stderr, "oneDNN: no CPU engine\n");
        return 1;
    }
    const dnnl_version_t *v = dnnl_version();
    printf("{\"reps\": %d, \"threads\": {\"openblas\": %d, \"omp\": %d}, ", reps, openblas_get_num_threads(),
           omp_get_max_threads());
    printf("\"openblas\": {\"config\": \"%s\", \"corename\": \"%s\"}, ", openblas_get_config(), openblas_get_corename());
    printf("\"onednn\": {\"version\": \"%d.%d.%d\", \"isa\": \"%s\"}, \"units\": {", v->major, v->minor, v->patch,
           isa_name(dnnl_get_effective_cpu_isa()));
    fflush(stdout);

    /* f32 units */
    for (int lib = 0; lib < 2; lib++) {
        peak_t peak = {0};
        void (*run)(void *) = lib ? run_dnnl_sgemm : run_openblas;
        printf("%s\"%s\": {\"shapes\": [", lib ? ", " : "", lib ? "onednn_sgemm" : "openblas_sgemm");
        first_entry = 1;
        for (int i = 0; i < nshapes; i++) {
            operands_t o = operands(&shapes[i], 0);
            f32_ctx x = {&shapes[i], o.a, o.b, o.c};
            double best = time_best(reps, run, &x);
            entry(&shapes[i], "plain", best);
            peak_of(&peak, &shapes[i], 0, best);
            release(&o);
        }
        printf("], \"peak_gflops\": %.1f", peak.gflops);
        if (sustain_seconds > 0 && peak.gflops > 0) {
            operands_t o = operands(&peak.shape, 0);
            f32_ctx x = {&peak.shape, o.a, o.b, o.c};
            int runs;
            double mean = time_sustained(sustain_seconds, &runs, run, &x);
            sustained_entry(&peak, "plain", mean, runs);
            release(&o);
        }
        printf("}");
        fflush(stdout);
    }

    /* bf16 unit */
    peak_t peak = {0};
    const char *err = NULL;
    char impls[2][64] = {"", ""};
    printf(", \"onednn_bf16\": {\"shapes\": [");
    first_entry = 1;
    for (int i = 0; i < nshapes && !err; i++) {
        operands_t o = operands(&shapes[i], 1);
        for (int packed = 0; packed < 2 && !err; packed++) {
            double best = bf16_matmul(engine, stream, &shapes[i], packed, reps, NULL, o.a16, o.b16, o.c, impls[packed], &err);
            if (best > 0) {
                entry(&shapes[i], packed ? "packed" : "plain", best);
                peak_of(&peak, &shapes[i], packed, best);
            }
        }
        release(&o);
    }
    printf("], ");
    if (err) printf("\"error\": \"%s\", ", err);
    printf("\"impl_plain\": \"%s\", \"impl_packed\": \"%s\", \"peak_gflops\": %.1f", impls[0], impls[1], peak.gflops);
    if (sustain_seconds > 0 && peak.gflops > 0 && !err) {
        operands_t o = operands(&peak.shape, 1);
        char impl[64];
        int runs;
        double mean = bf16_matmul(engine, stream, &peak.shape, peak.packed, reps, &runs, o.a16, o.b16, o.c, impl, &err);
        if (mean > 0) sustained_entry(&peak, peak.packed ? "packed" : "plain", mean, runs);
        release(&o);
    }
    printf("}}}\n");
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(engine);
    return 0;
}
