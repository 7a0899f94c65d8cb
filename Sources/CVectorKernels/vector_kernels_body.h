// The kernels of vector_kernels.h for one instruction-set level. Included by
// vector_kernels.c once per level with LEVEL_SUFFIX(name) and VECTOR_BYTES
// defined; written with clang/GCC vector extensions so the same source gives
// 4, 8 or 16 float lanes. Not a public header.

#define VF LEVEL_SUFFIX(vf)
#define VI LEVEL_SUFFIX(vi)
#define VU LEVEL_SUFFIX(vu)
#define VH LEVEL_SUFFIX(vh)
#define LANES (VECTOR_BYTES / 4)
typedef float VF __attribute__((vector_size(VECTOR_BYTES)));
typedef int32_t VI __attribute__((vector_size(VECTOR_BYTES)));
typedef uint32_t VU __attribute__((vector_size(VECTOR_BYTES)));
typedef uint16_t VH __attribute__((vector_size(VECTOR_BYTES / 2)));

static inline VF LEVEL_SUFFIX(load)(const float *p) { VF v; memcpy(&v, p, sizeof v); return v; }
static inline void LEVEL_SUFFIX(store)(float *p, VF v) { memcpy(p, &v, sizeof v); }
/// The first `count` (< LANES) elements at p, the other lanes zero.
static inline VF LEVEL_SUFFIX(load_part)(const float *p, long count) {
    VF v = {0};
    memcpy(&v, p, (size_t)count * sizeof(float));
    return v;
}
static inline void LEVEL_SUFFIX(store_part)(float *p, VF v, long count) { memcpy(p, &v, (size_t)count * sizeof(float)); }
static inline VF LEVEL_SUFFIX(splat)(float x) { return (VF){0} + x; }
/// mask ? a : b, lane by lane (mask lanes all ones or all zeros).
static inline VF LEVEL_SUFFIX(select)(VI mask, VF a, VF b) { return (VF)(((VI)a & mask) | ((VI)b & ~mask)); }
static inline float LEVEL_SUFFIX(hsum)(VF v) {
    float s = 0;
    for (int i = 0; i < LANES; i++) s += v[i];
    return s;
}

#define LOAD LEVEL_SUFFIX(load)
#define STORE LEVEL_SUFFIX(store)
#define LOAD_PART LEVEL_SUFFIX(load_part)
#define STORE_PART LEVEL_SUFFIX(store_part)
#define SPLAT LEVEL_SUFFIX(splat)
#define SELECT LEVEL_SUFFIX(select)
#define HSUM LEVEL_SUFFIX(hsum)
#define EXP LEVEL_SUFFIX(exp)
#define ACT LEVEL_SUFFIX(act)

static inline VF EXP(VF x) {
    // Below −87.3 the result would be subnormal; 0 and e^−87.3 are the same to us.
    const VF low = SPLAT(-87.33654f), high = SPLAT(88.37626f);
    x = SELECT(x < low, low, x);
    x = SELECT(x > high, high, x);
    // Round x·log2(e) to the nearest integer with the 1.5·2²³ trick: after
    // the add, the integer sits in the low mantissa bits.
    const VF magic = SPLAT(12582912.0f);
    VF shifted = x * 1.44269504f + magic;
    VF k = shifted - magic;
    // r = x − k·ln 2, with ln 2 split in two for precision.
    VF r = x - k * 0.693359375f;
    r = r - k * -2.12194440e-4f;
    VF p = SPLAT(1.9875691e-4f);
    p = p * r + 1.3981999e-3f;
    p = p * r + 8.3334520e-3f;
    p = p * r + 4.1665796e-2f;
    p = p * r + 1.6666665e-1f;
    p = p * r + 5.0e-1f;
    VF er = p * (r * r) + r + 1.0f;
    // 2^k: k is an integer in [−126, 127], so (k + 127) << 23 is its float bits.
    VI integer = (VI)shifted - (VI)magic;
    return er * (VF)((integer + 127) << 23);
}

/// SiLU (0) or the tanh GELU (1; tanh y = 1 − 2 / (e^{2y} + 1)).
static inline VF ACT(int activation, VF x) {
    if (activation == 0) return x / (1.0f + EXP(-x));
    VF y = 0.79788456080286536f * (x + 0.044715f * x * x * x);
    VF t = 1.0f - 2.0f / (EXP(y + y) + 1.0f);
    return 0.5f * x * (1.0f + t);
}

static float LEVEL_SUFFIX(exp_shifted)(float *x, long n, float shift) {
    VF sums = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES) {
        VF e = EXP(LOAD(x + i) - shift);
        STORE(x + i, e);
        sums += e;
    }
    float sum = HSUM(sums);
    if (i < n) {
        VF e = EXP(LOAD_PART(x + i, n - i) - shift);
        STORE_PART(x + i, e, n - i);
        for (long j = 0; j < n - i; j++) sum += e[j];
    }
    return sum;
}

static float LEVEL_SUFFIX(maximum)(const float *x, long n) {
    VF m = SPLAT(-__builtin_inff());
    long i = 0;
    for (; i + LANES <= n; i += LANES) {
        VF v = LOAD(x + i);
        m = SELECT(v > m, v, m);
    }
    float result = -__builtin_inff();
    for (int j = 0; j < LANES; j++) result = m[j] > result ? m[j] : result;
    for (; i < n; i++) result = x[i] > result ? x[i] : result;
    return result;
}

static void LEVEL_SUFFIX(scale)(float *x, long n, float factor) {
    long i = 0;
    for (; i + LANES <= n; i += LANES) STORE(x + i, LOAD(x + i) * factor);
    if (i < n) STORE_PART(x + i, LOAD_PART(x + i, n - i) * factor, n - i);
}

static void LEVEL_SUFFIX(gated)(int activation, const float *gate, const float *up, float *out, long n) {
    long i = 0;
    for (; i + LANES <= n; i += LANES) STORE(out + i, ACT(activation, LOAD(gate + i)) * LOAD(up + i));
    if (i < n) STORE_PART(out + i, ACT(activation, LOAD_PART(gate + i, n - i)) * LOAD_PART(up + i, n - i), n - i);
}

static void LEVEL_SUFFIX(activate)(int activation, float *x, long n) {
    long i = 0;
    for (; i + LANES <= n; i += LANES) STORE(x + i, ACT(activation, LOAD(x + i)));
    if (i < n) STORE_PART(x + i, ACT(activation, LOAD_PART(x + i, n - i)), n - i);
}

static void LEVEL_SUFFIX(dot_norms)(const float *x, const float *y, long n, double *out3) {
    double dot = 0, xx = 0, yy = 0;
    long i = 0;
    for (; i + 64 <= n; i += 64) {
        VF d = {0}, a = {0}, b = {0};
        for (long k = i; k < i + 64; k += LANES) {
            VF u = LOAD(x + k), v = LOAD(y + k);
            d += u * v;
            a += u * u;
            b += v * v;
        }
        dot += HSUM(d);
        xx += HSUM(a);
        yy += HSUM(b);
    }
    for (; i < n; i++) {
        double u = x[i], v = y[i];
        dot += u * v;
        xx += u * u;
        yy += v * v;
    }
    out3[0] = dot;
    out3[1] = xx;
    out3[2] = yy;
}

static double LEVEL_SUFFIX(dot)(const float *x, const float *y, long n) {
    double total = 0;
    long i = 0;
    for (; i + 64 <= n; i += 64) {
        VF d = {0};
        for (long k = i; k < i + 64; k += LANES) d += LOAD(x + k) * LOAD(y + k);
        total += HSUM(d);
    }
    for (; i < n; i++) total += (double)x[i] * (double)y[i];
    return total;
}

static void LEVEL_SUFFIX(rms_norm)(const float *x, const float *w, float *y, long n, float eps) {
    VF squares = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES) {
        VF v = LOAD(x + i);
        squares += v * v;
    }
    if (i < n) {
        VF v = LOAD_PART(x + i, n - i);
        squares += v * v;
    }
    float scale = 1.0f / __builtin_sqrtf(HSUM(squares) / (float)n + eps);
    for (i = 0; i + LANES <= n; i += LANES) STORE(y + i, LOAD(w + i) * (LOAD(x + i) * scale));
    if (i < n) STORE_PART(y + i, LOAD_PART(w + i, n - i) * (LOAD_PART(x + i, n - i) * scale), n - i);
}

static void LEVEL_SUFFIX(add)(const float *a, const float *b, float *out, long n) {
    long i = 0;
    for (; i + LANES <= n; i += LANES) STORE(out + i, LOAD(a + i) + LOAD(b + i));
    for (; i < n; i++) out[i] = a[i] + b[i];
}

/// The float32 bits of v rounded to bfloat16 (low half zero).
static inline VU LEVEL_SUFFIX(bf16_bits)(VF v) {
    VU u = (VU)v;
    VU rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    VU quietNaN = (u | 0x00400000u) & 0xFFFF0000u;
    VI isNaN = (VI)((u & 0x7FFFFFFFu) > 0x7F800000u);
    return (VU)(((VI)quietNaN & isNaN) | ((VI)rounded & ~isNaN));
}

static void LEVEL_SUFFIX(bf16_round)(const float *src, float *dst, long n) {
    long i = 0;
    for (; i + LANES <= n; i += LANES) STORE(dst + i, (VF)LEVEL_SUFFIX(bf16_bits)(LOAD(src + i)));
    if (i < n) STORE_PART(dst + i, (VF)LEVEL_SUFFIX(bf16_bits)(LOAD_PART(src + i, n - i)), n - i);
}

static void LEVEL_SUFFIX(bf16_convert)(const float *src, uint16_t *dst, long n) {
    long i = 0;
    for (; i + LANES <= n; i += LANES) {
        VH h = __builtin_convertvector(LEVEL_SUFFIX(bf16_bits)(LOAD(src + i)) >> 16, VH);
        memcpy(dst + i, &h, sizeof h);
    }
    if (i < n) {
        VH h = __builtin_convertvector(LEVEL_SUFFIX(bf16_bits)(LOAD_PART(src + i, n - i)) >> 16, VH);
        memcpy(dst + i, &h, (size_t)(n - i) * sizeof(uint16_t));
    }
}

static const droptrace_vector_kernels LEVEL_SUFFIX(kernels) = {
    .exp_shifted = LEVEL_SUFFIX(exp_shifted),
    .maximum = LEVEL_SUFFIX(maximum),
    .scale = LEVEL_SUFFIX(scale),
    .gated = LEVEL_SUFFIX(gated),
    .activate = LEVEL_SUFFIX(activate),
    .dot_norms = LEVEL_SUFFIX(dot_norms),
    .dot = LEVEL_SUFFIX(dot),
    .rms_norm = LEVEL_SUFFIX(rms_norm),
    .add = LEVEL_SUFFIX(add),
    .bf16_round = LEVEL_SUFFIX(bf16_round),
    .bf16_convert = LEVEL_SUFFIX(bf16_convert),
};

#undef VF
#undef VI
#undef VU
#undef VH
#undef LANES
#undef LOAD
#undef STORE
#undef LOAD_PART
#undef STORE_PART
#undef SPLAT
#undef SELECT
#undef HSUM
#undef EXP
#undef ACT
