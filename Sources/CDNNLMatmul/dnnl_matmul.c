#include "dnnl_matmul.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
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
    // packed: B is a column slice of weights in oneDNN's preferred layout (ldb: their columns).
    int transposeB, accumulate, packed;
    float alpha;
} shape_key;

typedef struct {
    int used;
    shape_key key;
    dnnl_primitive_t primitive;
    dnnl_memory_t src, weights, dst, scratchpad;
    size_t scratchpadBytes;
    // Packed B: columns per column block, elements per column block.
    long columnBlock, blockStride;
    // A packed product oneDNN would run otherwise (no primitive): refused at once.
    int unsupported;
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
    if (!entry->unsupported) {
        dnnl_primitive_destroy(entry->primitive);
        dnnl_memory_destroy(entry->src);
        dnnl_memory_destroy(entry->weights);
        dnnl_memory_destroy(entry->dst);
        dnnl_memory_destroy(entry->scratchpad);
    }
    memset(entry, 0, sizeof *entry);
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

// The calling thread's oneDNN state (NULL when it cannot be made), with
// OpenMP pinned to one thread first: every primitive runs on it.
static thread_state *currentState(void) {
    droptrace_omp_single_thread();
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
        && x->transposeB == y->transposeB && x->accumulate == y->accumulate && x->packed == y->packed
        && x->alpha == y->alpha;
}

// B [k×n] in bf16 as stored: [n×k] row-major read transposed (torch.nn.Linear's [out, in]), or [k×n].
static dnnl_status_t plainWeightsDesc(dnnl_memory_desc_t *desc, long n, long k, long ldb, int transposeB) {
    dnnl_dims_t dims = {k, n};
    dnnl_dims_t strides = {transposeB ? 1 : ldb, transposeB ? ldb : 1};
    return dnnl_memory_desc_init_by_strides(desc, 2, dims, dnnl_bf16, strides);
}

// The column block of a packed layout: the product of the inner blocks over
// columns (dimension 1) when whole column blocks are stored one after
// another (each `padded K × block` elements), so that the columns of whole
// blocks from any block on are a packed matrix of their own; 0 otherwise.
static long columnBlockOf(const dnnl_memory_desc_t *desc) {
    if (desc->ndims != 2 || desc->format_kind != dnnl_blocked || desc->offset0 != 0) return 0;
    const dnnl_blocking_desc_t *blocking = &desc->format_desc.blocking;
    long rowBlock = 1, columnBlock = 1;
    for (int i = 0; i < blocking->inner_nblks; i++) {
        if (blocking->inner_idxs[i] == 0) rowBlock *= blocking->inner_blks[i];
        else columnBlock *= blocking->inner_blks[i];
    }
    if (blocking->inner_nblks == 0 || columnBlock < 2) return 0;  // plain, or blocked over rows alone
    long rowBlocks = desc->padded_dims[0] / rowBlock;
    if (blocking->strides[0] != rowBlock * columnBlock || blocking->strides[1] != rowBlocks * rowBlock * columnBlock)
        return 0;
    return columnBlock;
}

// The packed matrix of `width` columns starting at column block `column0 / columnBlock` of `parent`.
static dnnl_memory_desc_t sliceDesc(const dnnl_memory_desc_t *parent, long columnBlock, long width) {
    dnnl_memory_desc_t slice = *parent;
    slice.dims[1] = width;
    slice.padded_dims[1] = (width + columnBlock - 1) / columnBlock * columnBlock;
    return slice;
}

// The matmul primitive descriptor for `key` with B's layout `weightsDesc`
// (plain strides, a packed slice, or format "any" to ask oneDNN's choice).
static dnnl_status_t matmulPrimitiveDesc(
    thread_state *state, const shape_key *key, const dnnl_memory_desc_t *weightsDesc, dnnl_primitive_desc_t *pd) {
    dnnl_memory_desc_t srcDesc, dstDesc;
    dnnl_dims_t srcDims = {key->m, key->k}, srcStrides = {key->lda, 1};
    dnnl_dims_t dstDims = {key->m, key->n}, dstStrides = {key->ldc, 1};
    dnnl_status_t status;
    if ((status = dnnl_memory_desc_init_by_strides(&srcDesc, 2, srcDims, dnnl_bf16, srcStrides))
        || (status = dnnl_memory_desc_init_by_strides(&dstDesc, 2, dstDims, dnnl_f32, dstStrides)))
        return status;
    dnnl_matmul_desc_t desc;
    if ((status = dnnl_matmul_desc_init(&desc, &srcDesc, weightsDesc, NULL, &dstDesc))) return status;

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
    if (!status) status = dnnl_primitive_desc_create(pd, &desc, attr, state->engine, NULL);
    if (postOps) dnnl_post_ops_destroy(postOps);
    dnnl_primitive_attr_destroy(attr);
    return status;
}

static const char *implementation(const_dnnl_primitive_desc_t pd) {
    const char *name = NULL;
    return dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) == dnnl_success && name ? name : "";
}

// A cache entry for `key` with B's layout `weightsDesc`; when `requiredImpl`
// is given, only on that implementation (dnnl_unimplemented otherwise).
static dnnl_status_t createEntry(
    thread_state *state, const shape_key *key, const dnnl_memory_desc_t *weightsDesc, const char *requiredImpl,
    cache_entry *entry) {
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t status = matmulPrimitiveDesc(state, key, weightsDesc, &pd);
    if (status) return status;
    if (requiredImpl && strcmp(implementation(pd), requiredImpl) != 0) {
        dnnl_primitive_desc_destroy(pd);
        return dnnl_unimplemented;
    }
    const dnnl_memory_desc_t *srcDesc = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *dstDesc = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *scratchDesc = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    memset(entry, 0, sizeof *entry);
    entry->scratchpadBytes = scratchDesc ? dnnl_memory_desc_get_size(scratchDesc) : 0;
    status = scratchDesc ? dnnl_primitive_create(&entry->primitive, pd) : dnnl_runtime_error;
    if (!status) status = dnnl_memory_create(&entry->src, srcDesc, state->engine, DNNL_MEMORY_NONE);
    if (!status) status = dnnl_memory_create(&entry->weights, weightsDesc, state->engine, DNNL_MEMORY_NONE);
    if (!status) status = dnnl_memory_create(&entry->dst, dstDesc, state->engine, DNNL_MEMORY_NONE);
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

// The cached entry for `key`, or NULL.
static cache_entry *cachedEntry(thread_state *state, const shape_key *key) {
    for (int i = 0; i < cacheSize; i++)
        if (state->entries[i].used && sameKey(&state->entries[i].key, key)) return &state->entries[i];
    return NULL;
}

// Runs `entry`'s primitive, or one made for `key` with B's layout
// `weightsDesc` (on `requiredImpl` when given) when `entry` is NULL.
static int runMatmul(
    thread_state *state, cache_entry *entry, const shape_key *key, const dnnl_memory_desc_t *weightsDesc,
    const char *requiredImpl, const uint16_t *a, const uint16_t *b, float *c) {
    if (!entry) {
        entry = &state->entries[state->next];
        releaseEntry(entry);
        dnnl_status_t status = createEntry(state, key, weightsDesc, requiredImpl, entry);
        if (status) return status;
        state->next = (state->next + 1) % cacheSize;
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

int droptrace_dnnl_bf16_matmul(
    long m, long n, long k, const uint16_t *a, long lda, const uint16_t *b, long ldb, int transposeB,
    float *c, long ldc, float alpha, int accumulate) {
    thread_state *state = currentState();
    if (!state) return dnnl_out_of_memory;
    shape_key key = {m, n, k, lda, ldb, ldc, transposeB ? 1 : 0, accumulate ? 1 : 0, 0, alpha};
    cache_entry *entry = cachedEntry(state, &key);
    dnnl_memory_desc_t weightsDesc;
    dnnl_status_t status = entry ? dnnl_success : plainWeightsDesc(&weightsDesc, n, k, ldb, transposeB);
    if (status) return status;
    return runMatmul(state, entry, &key, &weightsDesc, NULL, a, b, c);
}

// The layout oneDNN's bf16 matmul chooses for B [k×n] (format "any") and
// its column block, or an error when that is not a packed layout.
static dnnl_status_t packedLayout(thread_state *state, long n, long k, dnnl_memory_desc_t *desc, long *columnBlock) {
    // The layout depends on B's shape; 64 rows with C dense stand for any product's.
    shape_key key = {64, n, k, k, 0, n, 1, 0, 0, 1};
    dnnl_memory_desc_t any;
    dnnl_dims_t dims = {k, n};
    dnnl_primitive_desc_t pd = NULL;
    dnnl_status_t status = dnnl_memory_desc_init_by_tag(&any, 2, dims, dnnl_bf16, dnnl_format_tag_any);
    if (!status) status = matmulPrimitiveDesc(state, &key, &any, &pd);
    if (status) return status;
    *desc = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);
    *columnBlock = columnBlockOf(desc);
    return *columnBlock ? dnnl_success : dnnl_unimplemented;
}

// Reorders between B's plain and packed layouts, columns [column0, column0 + width) of the packed one.
static int reorderWeights(
    long n, long k, long column0, long width, const uint16_t *plain, long ldb, int transposeB,
    const uint16_t *packed, int toPacked) {
    thread_state *state = currentState();
    if (!state) return dnnl_out_of_memory;
    dnnl_memory_desc_t packedDesc, plainDesc;
    long columnBlock;
    dnnl_status_t status = packedLayout(state, n, k, &packedDesc, &columnBlock);
    if (status) return status;
    if (column0 % columnBlock || column0 < 0 || width < 1 || column0 + width > n) return dnnl_invalid_arguments;
    packedDesc = sliceDesc(&packedDesc, columnBlock, width);
    if ((status = plainWeightsDesc(&plainDesc, width, k, ldb, transposeB))) return status;
    const uint16_t *slice = packed + column0 / columnBlock * packedDesc.format_desc.blocking.strides[1];
    dnnl_memory_t plainMemory = NULL, packedMemory = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t reorder = NULL;
    const dnnl_memory_desc_t *from = toPacked ? &plainDesc : &packedDesc, *to = toPacked ? &packedDesc : &plainDesc;
    if (!(status = dnnl_memory_create(&plainMemory, &plainDesc, state->engine, (void *)plain))
        && !(status = dnnl_memory_create(&packedMemory, &packedDesc, state->engine, (void *)slice))
        && !(status = dnnl_reorder_primitive_desc_create(&pd, from, state->engine, to, state->engine, NULL))
        && !(status = dnnl_primitive_create(&reorder, pd))) {
        dnnl_exec_arg_t args[2] = {
            {DNNL_ARG_FROM, toPacked ? plainMemory : packedMemory},
            {DNNL_ARG_TO, toPacked ? packedMemory : plainMemory},
        };
        status = dnnl_primitive_execute(reorder, state->stream, 2, args);
        if (!status) status = dnnl_stream_wait(state->stream);
    }
    if (reorder) dnnl_primitive_destroy(reorder);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (packedMemory) dnnl_memory_destroy(packedMemory);
    if (plainMemory) dnnl_memory_destroy(plainMemory);
    return status;
}

long droptrace_dnnl_bf16_packed_size(long n, long k, long *columnBlock) {
    thread_state *state = currentState();
    dnnl_memory_desc_t desc;
    if (!state || n < 1 || k < 1 || packedLayout(state, n, k, &desc, columnBlock)) return 0;
    return (long)(dnnl_memory_desc_get_size(&desc) / sizeof(uint16_t));
}

int droptrace_dnnl_bf16_pack(long n, long k, const uint16_t *b, long ldb, int transposeB, uint16_t *packed) {
    return reorderWeights(n, k, 0, n, b, ldb, transposeB, packed, 1);
}

int droptrace_dnnl_bf16_unpack(
    long n, long k, const uint16_t *packed, long column0, long width, uint16_t *plain, long ldb, int transposeB) {
    return reorderWeights(n, k, column0, width, plain, ldb, transposeB, packed, 0);
}

int droptrace_dnnl_bf16_matmul_packed(
    long m, long n, long k, const uint16_t *a, long lda, const uint16_t *packed, long totalColumns, long column0,
    float *c, long ldc, float alpha, int accumulate) {
    thread_state *state = currentState();
    if (!state) return dnnl_out_of_memory;
    if (column0 < 0 || n < 1 || column0 + n > totalColumns) return dnnl_invalid_arguments;
    shape_key key = {m, n, k, lda, totalColumns, ldc, 1, accumulate ? 1 : 0, 1, alpha};
    cache_entry *entry = cachedEntry(state, &key);
    if (entry) {
        if (entry->unsupported) return dnnl_unimplemented;
        if (column0 % entry->columnBlock) return dnnl_invalid_arguments;
        return runMatmul(state, entry, &key, NULL, NULL, a, packed + column0 / entry->columnBlock * entry->blockStride, c);
    }
    dnnl_memory_desc_t parent, any;
    long columnBlock;
    dnnl_status_t status = packedLayout(state, totalColumns, k, &parent, &columnBlock);
    if (status) return status;
    if (column0 % columnBlock) return dnnl_invalid_arguments;
    dnnl_memory_desc_t slice = sliceDesc(&parent, columnBlock, n);
    // Only where oneDNN's own choice for this product (B's layout left to it)
    // is this layout, on the same kernel: another would be slower (for a
    // strided C it is a reference kernel), so the caller runs it unpacked.
    dnnl_dims_t dims = {k, n};
    dnnl_primitive_desc_t best = NULL;
    if ((status = dnnl_memory_desc_init_by_tag(&any, 2, dims, dnnl_bf16, dnnl_format_tag_any))
        || (status = matmulPrimitiveDesc(state, &key, &any, &best)))
        return status;
    char bestImpl[128];
    snprintf(bestImpl, sizeof bestImpl, "%s", implementation(best));
    int same = dnnl_memory_desc_equal(dnnl_primitive_desc_query_md(best, dnnl_query_weights_md, 0), &slice);
    dnnl_primitive_desc_destroy(best);
    long blockStride = parent.format_desc.blocking.strides[1];
    status = same ? runMatmul(state, NULL, &key, &slice, bestImpl, a, packed + column0 / columnBlock * blockStride, c)
                  : dnnl_unimplemented;
    if (status == dnnl_unimplemented) {
        entry = &state->entries[state->next];
        state->next = (state->next + 1) % cacheSize;
        releaseEntry(entry);
        entry->key = key;
        entry->used = entry->unsupported = 1;
    } else if ((entry = cachedEntry(state, &key))) {
        entry->columnBlock = columnBlock;
        entry->blockStride = blockStride;
    }
    return status;
}
