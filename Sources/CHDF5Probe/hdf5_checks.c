#include "hdf5_checks.h"

#include <stdio.h>

#include <hdf5/serial/hdf5.h>

hdf5_link_kind hdf5_link_kind_of(int64_t location, const char *name) {
    H5L_info_t info;  // H5L_info2_t from 1.12 on, through the API compatibility macros
    if (H5Lget_info((hid_t)location, name, &info, H5P_DEFAULT) < 0) return HDF5_LINK_ERROR;
    switch (info.type) {
    case H5L_TYPE_HARD: return HDF5_LINK_HARD;
    case H5L_TYPE_SOFT: return HDF5_LINK_SOFT;
    case H5L_TYPE_EXTERNAL: return HDF5_LINK_EXTERNAL;
    default: return HDF5_LINK_OTHER;
    }
}

// Bytes of one decompressed chunk of a dataset whose creation property list
// is `plist` (0 when not chunked; UINT64_MAX when it overflows); its shape
// into `chunk` when given and of `rank` dimensions (else `chunk` is left as it is).
static uint64_t chunk_bytes_of(hid_t dataset, hid_t plist, int rank, hsize_t *chunk) {
    if (H5Pget_layout(plist) != H5D_CHUNKED) return 0;
    hsize_t dims[H5S_MAX_RANK];
    int chunk_rank = H5Pget_chunk(plist, H5S_MAX_RANK, dims);
    hid_t type = H5Dget_type(dataset);
    uint64_t bytes = type >= 0 ? (uint64_t)H5Tget_size(type) : 1;
    if (type >= 0) H5Tclose(type);
    for (int i = 0; i < chunk_rank; i++) {
        if (chunk && chunk_rank == rank) chunk[i] = dims[i];
        if (dims[i] != 0 && bytes > UINT64_MAX / dims[i]) { bytes = UINT64_MAX; break; }
        bytes *= dims[i];
    }
    return bytes;
}

uint64_t hdf5_chunk_bytes(int64_t dataset) {
    hid_t plist = H5Dget_create_plist((hid_t)dataset);
    if (plist < 0) return 0;
    uint64_t bytes = chunk_bytes_of((hid_t)dataset, plist, 0, NULL);
    H5Pclose(plist);
    return bytes;
}

// Whether every chunk of the dataset (`dims`, in chunks of `chunk`) is
// stored (H5Dget_space_status cannot tell: libhdf5 1.10 reports compressed
// chunks as "partly allocated"); -1 when libhdf5 fails.
static int all_chunks_stored(hid_t dataset, hid_t space, int rank, const hsize_t *dims, const hsize_t *chunk) {
    hsize_t stored = 0, expected = 1;
    if (H5Dget_num_chunks(dataset, space, &stored) < 0) return -1;
    for (int i = 0; i < rank; i++) {
        if (chunk[i] == 0) return -1;
        hsize_t along = dims[i] / chunk[i] + (dims[i] % chunk[i] != 0);
        if (along != 0 && expected > (hsize_t)-1 / along) return 0;  // more chunks than can exist
        expected *= along;
    }
    return stored == expected;
}

// The first filter of the pipeline libhdf5 cannot apply here (a plugin not installed: LZF, Blosc, ...).
static void find_unavailable_filter(hid_t plist, hdf5_dataset_storage *storage) {
    storage->unavailable_filter = -1;
    storage->filter_name[0] = 0;
    int count = H5Pget_nfilters(plist);
    for (int i = 0; i < count; i++) {
        unsigned int flags = 0, config = 0;
        size_t values = 0;
        char name[64] = {0};
        H5Z_filter_t filter = H5Pget_filter2(plist, (unsigned)i, &flags, &values, NULL, sizeof name, name, &config);
        if (filter >= 0 && H5Zfilter_avail(filter) <= 0) {
            storage->unavailable_filter = (int)filter;
            snprintf(storage->filter_name, sizeof storage->filter_name, "%s", name);
            return;
        }
    }
}

int hdf5_dataset_storage_of(int64_t dataset, hdf5_dataset_storage *storage) {
    hid_t id = (hid_t)dataset;
    hid_t plist = H5Dget_create_plist(id);
    if (plist < 0) return -1;
    hid_t space = H5Dget_space(id);
    if (space < 0) { H5Pclose(plist); return -1; }
    int rank = H5Sget_simple_extent_ndims(space);
    hsize_t dims[H5S_MAX_RANK], maxdims[H5S_MAX_RANK], chunk[H5S_MAX_RANK] = {0};  // a chunk rank other than the rank leaves 0s: refused
    int result = -1;
    if (rank >= 0 && rank <= H5S_MAX_RANK && H5Sget_simple_extent_dims(space, dims, maxdims) >= 0) {
        find_unavailable_filter(plist, storage);
        H5D_layout_t layout = H5Pget_layout(plist);
        int external = H5Pget_external_count(plist);
        hsize_t bytes = H5Dget_storage_size(id);
        storage->chunk_bytes = chunk_bytes_of(id, plist, rank, chunk);
        int allocated = 1;  // compact: the values are in the object header
        if (layout == H5D_CHUNKED) {
            allocated = all_chunks_stored(id, space, rank, dims, chunk);
        } else if (layout == H5D_CONTIGUOUS) {
            allocated = bytes > 0;
        }
        storage->is_virtual = layout == H5D_VIRTUAL;
        storage->external_files = external;
        storage->fully_allocated = allocated;
        storage->storage_bytes = (uint64_t)bytes;
        storage->extendible = 0;
        for (int i = 0; i < rank; i++) if (maxdims[i] != dims[i]) storage->extendible = 1;
        if (layout >= 0 && external >= 0 && allocated >= 0) result = 0;
    }
    H5Sclose(space);
    H5Pclose(plist);
    return result;
}
