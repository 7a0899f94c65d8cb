#ifndef DROPTRACE_HDF5_COPY_H
#define DROPTRACE_HDF5_COPY_H

#include <stddef.h>
#include <hdf5/serial/hdf5.h>

/// How `hdf5_copy_link` ended; negative: libhdf5 failed, or the link is of a
/// user-defined class (or its value is over 64 KiB).
typedef enum {
    HDF5_LINK_COPIED = 0,    ///< the object with all it holds, or the soft or external link
    HDF5_LINK_RELINKED = 1,  ///< another name of an object under `owned_groups`: now a name of the new object at that path
    HDF5_LINK_NOT_KEPT = 2,  ///< another name of such an object, whose path the new file lacks
} hdf5_copy_link_outcome;

/// Copies the link `name` of the group `source` into the group `target`
/// (another file) under the same name: a hard link's object with all it
/// holds and its attributes (`H5Ocopy`), a soft or an external link as a
/// link to the same target path, not as a copy of what it points at.
///
/// A hard link to an object that is also linked under one of the
/// `owned_groups` (root group names of data the caller rewrites) is not a
/// copy of the old object but a second name of the new one at the same
/// path (its path goes to `shared_path`). `link_creation` is the
/// link-creation property list for the new link.
int hdf5_copy_link(hid_t source, const char *name, hid_t target, hid_t link_creation,
                   const char *const *owned_groups, size_t owned_count, char *shared_path, size_t shared_path_size);

/// Copies the attribute `name` of the object `source` to the object `target`
/// with its stored type, shape and values (variable-length strings
/// included). At most `element_limit` elements are read.
/// Returns 0 when copied, 1 when not copied because it holds object or
/// region references (they would point into the other file), and a
/// negative value when libhdf5 fails or the attribute is too large.
herr_t hdf5_copy_attribute(hid_t source, const char *name, hid_t target, hid_t attribute_creation,
                           size_t element_limit);

#endif
