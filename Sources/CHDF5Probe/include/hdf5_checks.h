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
} hdf5_dataset_storage;

/// Fills `storage` for dataset `dataset`; returns 0, or -1 when libhdf5 fails.
int hdf5_dataset_storage_of(int64_t dataset, hdf5_dataset_storage *storage);

#endif
