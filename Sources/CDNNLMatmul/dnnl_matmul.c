#include "dnnl_matmul.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <dnnl.h>

// omp_set_num_threads is looked up at run time: libgomp comes in as
// oneDNN's dependency, and linking it directly would need its development
// symlink (only GCC's private directory has one).
static void (*ompSetNumThreads)(int);
static pthread_once_t ompLookup = PTHREAD_ONCE_INIT;
static __thread int ompPinned;

static void lookUpOpenMP(void) {
    ompSetNumThreads = (void (*)(int))dlsym(RTLD_DEFAULT, "omp_set_num_threads");
}

void droptrace_omp_single_thread(void) {
    if (ompPinned) return;
    pthread_once(&ompLookup, lookUpOpenMP);
    if (ompSetNumThreads) ompSetNumThreads(1);
    ompPinned = 1;
}

int droptrace_dnnl_sgemm(
    int transposeA, int transposeB, long m, long n, long k, float alpha,
    const float *a, long lda, const float *b, long ldb, float beta, float *c, long ldc) {
    droptrace_omp_single_thread();
    return dnnl_sgemm(transposeA ? 'T' : 'N', transposeB ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// Per-thread oneDNN state: a stream, the primitives of the shapes this
// thread ran last (attention runs a handful of shapes over and over), and a
// scratchpad. Scratchpads are user-managed so primitives on different
// threads never share one.
enum { cacheSize = 24 };

typedef struct {
    long m, n, k, lda, ldb, ldc;
    int transposeB, accumulate;
    float alpha;
} shape_key;

typedef struct {
    int used;
    shape_key key;
    dnnl_primitive_t primitive;
    dnnl_memory_t src, weights, dst, scratchpad;
    size_t scratchpadBytes;
} cache_entry;

typedef struct {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    cache_entry entries[cacheSize];
    int next;
    void *scratch;
    size_t scratchBytes;
} thread_state;

static pthread_key_t stateKey;
static pthread_once_t stateKeyOnce = PTHREAD_ONCE_INIT;

static void releaseEntry(cache_entry *entry) {
    if (!entry->used) return;
    dnnl_primitive_destroy(entry->primitive);
    dnnl_memory_destroy(entry->src);
    dnnl_memory_destroy(entry->weights);
    dnnl_memory_destroy(entry->dst);
    dnnl_memory_destroy(entry->scratchpad);
    entry->used = 0;
}

static void releaseState(void *pointer) {
    thread_state *state = pointer;
    for (int i = 0; i < cacheSize; i++) releaseEntry(&state->entries[i]);
    if (state->stream) dnnl_stream_destroy(state->stream);
    if (state->engine) dnnl_engine_destroy(state->engine);
    free(state->scratch);
    free(state);
}

static void makeStateKey(void) { pthread_key_create(&stateKey, releaseState); }

static thread_state *currentState(void) {
    pthread_once(&stateKeyOnce, makeStateKey);
    thread_state *state = pthread_getspecific(stateKey);
    if (state) return state;
    state = calloc(1, sizeof *state);
    if (!state) return NULL;
    if (dnnl_engine_create(&state->engine, dnnl_cpu, 0) != dnnl_success
        || dnnl_stream_create(&state->stream, state->engine, dnnl_stream_default_flags) != dnnl_success) {
        releaseState(state);
        return NULL;
    }
    pthread_setspecific(stateKey, state);
    return state;
}

static int sameKey(const shape_key *x, const shape_key *y) {
    return x->m == y->m && x->n == y->n && x->k == y->k && x->lda == y->lda && x->ldb == y->ldb && x->ldc == y->ldc
        && x->transposeB == y->transposeB && x->accumulate == y->accumulate && x->alpha == y->alpha;
}

static dnnl_status_t createEntry(thread_state *state, const shape_key *key, cache_entry *entry) {
    dnnl_memory_desc_t srcDesc, weightsDesc, dstDesc;
    dnnl_dims_t srcDims = {key->m, key->k}, srcStrides = {key->lda, 1};
    dnnl_dims_t weightsDims = {key->k, key->n};
    dnnl_dims_t weightsStrides = {key->transposeB ? 1 : key->ldb, key->transposeB ? key->ldb : 1};
    dnnl_dims_t dstDims = {key->m, key->n}, dstStrides = {key->ldc, 1};
    dnnl_status_t status;
    if ((status = dnnl_memory_desc_init_by_strides(&srcDesc, 2, srcDims, dnnl_bf16, srcStrides))
        || (status = dnnl_memory_desc_init_by_strides(&weightsDesc, 2, weightsDims, dnnl_bf16, weightsStrides))
        || (status = dnnl_memory_desc_init_by_strides(&dstDesc, 2, dstDims, dnnl_f32, dstStrides)))
        return status;
    dnnl_matmul_desc_t desc;
    if ((status = dnnl_matmul_desc_init(&desc, &srcDesc, &weightsDesc, NULL, &dstDesc))) return status;

    dnnl_primitive_attr_t attr;
    if ((status = dnnl_primitive_attr_create(&attr))) return status;
    dnnl_post_ops_t postOps = NULL;
    status = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (!status && key->alpha != 1) status = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha);
    if (!status && key->accumulate) {
        status = dnnl_post_ops_create(&postOps);
        if (!status) status = dnnl_post_ops_append_sum(postOps, 1);
        if (!status) status = dnnl_primitive_attr_set_post_ops(attr, postOps);
    }
    dnnl_primitive_desc_t pd = NULL;
    if (!status) status = dnnl_primitive_desc_create(&pd, &desc, attr, state->engine, NULL);
    if (postOps) dnnl_post_ops_destroy(postOps);
    dnnl_primitive_attr_destroy(attr);
    if (status) return status;

    const dnnl_memory_desc_t *scratchDesc = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    memset(entry, 0, sizeof *entry);
    entry->scratchpadBytes = scratchDesc ? dnnl_memory_desc_get_size(scratchDesc) : 0;
    status = scratchDesc ? dnnl_primitive_create(&entry->primitive, pd) : dnnl_runtime_error;
    if (!status) status = dnnl_memory_create(&entry->src, &srcDesc, state->engine, DNNL_MEMORY_NONE);
    if (!status) status = dnnl_memory_create(&entry->weights, &weightsDesc, state->engine, DNNL_MEMORY_NONE);
    if (!status) status = dnnl_memory_create(&entry->dst, &dstDesc, state->engine, DNNL_MEMORY_NONE);
    if (!status) status = dnnl_memory_create(&entry->scratchpad, scratchDesc, state->engine, DNNL_MEMORY_NONE);
    dnnl_primitive_desc_destroy(pd);
    if (status) {
        if (entry->primitive) dnnl_primitive_destroy(entry->primitive);
        if (entry->src) dnnl_memory_destroy(entry->src);
        if (entry->weights) dnnl_memory_destroy(entry->weights);
        if (entry->dst) dnnl_memory_destroy(entry->dst);
        memset(entry, 0, sizeof *entry);
        return status;
    }
    entry->key = *key;
    entry->used = 1;
    return dnnl_success;
}

int droptrace_dnnl_bf16_matmul(
    long m, long n, long k, const uint16_t *a, long lda, const uint16_t *b, long ldb, int transposeB,
    float *c, long ldc, float alpha, int accumulate) {
    droptrace_omp_single_thread();
    thread_state *state = currentState();
    if (!state) return dnnl_out_of_memory;
    shape_key key = {m, n, k, lda, ldb, ldc, transposeB ? 1 : 0, accumulate ? 1 : 0, alpha};
    cache_entry *entry = NULL;
    for (int i = 0; i < cacheSize; i++) {
        if (state->entries[i].used && sameKey(&state->entries[i].key, &key)) {
            entry = &state->entries[i];
            break;
        }
    }
    if (!entry) {
        entry = &state->entries[state->next];
        state->next = (state->next + 1) % cacheSize;
        releaseEntry(entry);
        dnnl_status_t status = createEntry(state, &key, entry);
        if (status) return status;
    }
    if (entry->scratchpadBytes > state->scratchBytes) {
        void *grown = realloc(state->scratch, entry->scratchpadBytes);
        if (!grown) return dnnl_out_of_memory;
        state->scratch = grown;
        state->scratchBytes = entry->scratchpadBytes;
    }
    dnnl_status_t status;
    if ((status = dnnl_memory_set_data_handle(entry->src, (void *)a))
        || (status = dnnl_memory_set_data_handle(entry->weights, (void *)b))
        || (status = dnnl_memory_set_data_handle(entry->dst, c))
        || (status = dnnl_memory_set_data_handle(entry->scratchpad, state->scratch)))
        return status;
    dnnl_exec_arg_t args[4] = {
        {DNNL_ARG_SRC, entry->src},
        {DNNL_ARG_WEIGHTS, entry->weights},
        {DNNL_ARG_DST, entry->dst},
        {DNNL_ARG_SCRATCHPAD, entry->scratchpad},
    };
    if ((status = dnnl_primitive_execute(entry->primitive, state->stream, 4, args))) return status;
    return dnnl_stream_wait(state->stream);
}
