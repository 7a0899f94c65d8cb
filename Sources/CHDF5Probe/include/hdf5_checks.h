#ifndef DROPTRACE_HDF5_CHECKS_H
#define DROPTRACE_HDF5_CHECKS_H

#include <stdint.h>

/// What a link in an HDF5 file is, for readers that follow only the hard
/// links a writer of the file makes (libhdf5's link API differs between
/// 1.10 and 1.12+, whose `H5Lget_info` is a macro Swift does not import).
typedef enum {
    HDF5_LINK_HARD = 0,
    HDF5_LINK_SOFT = 1,
    HDF5_LINK_EXTERNAL = 2,
    HDF5_LINK_OTHER = 3,   ///< a user-defined link class
    HDF5_LINK_ERROR = -1
} hdf5_link_kind;

/// The kind of the link `name` (relative to `location`, a file or group id).
hdf5_link_kind hdf5_link_kind_of(int64_t location, const char *name);

/// Where a dataset's values are, as far as a reader must trust them.
typedef struct {
    int is_virtual;           ///< a virtual dataset: values mapped from other datasets or files
    int external_files;       ///< raw data in files outside the HDF5 file (external storage)
    int fully_allocated;      ///< every value's storage exists (not only fill values never written)
    uint64_t storage_bytes;   ///< bytes the values take in the file (compressed, where filtered)
    int extendible;           ///< a maximum shape beyond the shape (unlimited, say): chunks may exceed the values
    uint64_t chunk_bytes;     ///< bytes of one chunk decompressed (0 when not chunked): what a read allocates at least
    int unavailable_filter;   ///< the id of a filter of its pipeline this libhdf5 cannot apply, else -1
    char filter_name[64];     ///< that filter's name as the file records it
} hdf5_dataset_storage;

/// Fills `storage` for dataset `dataset`; returns 0, or -1 when libhdf5 fails.
int hdf5_dataset_storage_of(int64_t dataset, hdf5_dataset_storage *storage);

/// The most bytes one decompressed chunk may take in a file droptrace
/// reads (it writes chunks of about 256 KiB): libhdf5 decompresses whole
/// chunks, so a few compressed bytes could otherwise cost gigabytes.
#define HDF5_CHUNK_BYTES_LIMIT ((uint64_t)64 << 20)

/// Bytes of one decompressed chunk of `dataset`, 0 when it is not chunked
/// (UINT64_MAX when it overflows).
uint64_t hdf5_chunk_bytes(int64_t dataset);

#endif
