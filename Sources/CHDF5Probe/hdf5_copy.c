// Copies what a user added to a store into its rewritten copy (see the header).
#include "hdf5_copy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Link values (a soft link's path, an external link's file and path) longer
// than this are not copied: no real path is, and the size comes from the file.
#define LINK_VALUE_LIMIT 65536

static herr_t copy_link_value(hid_t source, const char *name, H5L_type_t type, size_t size, hid_t target,
                              hid_t link_creation) {
    if (size == 0 || size > LINK_VALUE_LIMIT) return -1;
    char *value = calloc(size + 1, 1);
    if (!value) return -1;
    herr_t status = H5Lget_val(source, name, value, size, H5P_DEFAULT);
    if (status >= 0 && type == H5L_TYPE_SOFT) {
        status = H5Lcreate_soft(value, target, name, link_creation, H5P_DEFAULT);
    } else if (status >= 0) {
        unsigned flags = 0;
        const char *file = NULL, *object = NULL;
        status = H5Lunpack_elink_val(value, size, &flags, &file, &object);
        if (status >= 0) status = H5Lcreate_external(file, object, target, name, link_creation, H5P_DEFAULT);
    }
    free(value);
    return status;
}

typedef struct {
    haddr_t address;
    const char *group;
    char *path;
    size_t size;
} alias_search;

static herr_t find_alias(hid_t object, const char *name, const H5O_info_t *info, void *data) {
    (void)object;
    alias_search *search = data;
    if (info->addr != search->address) return 0;
    if (strcmp(name, ".") == 0) snprintf(search->path, search->size, "%s", search->group);
    else snprintf(search->path, search->size, "%s/%s", search->group, name);
    return 1;
}

// Whether every component of `path` exists in `file` (H5Lexists fails on a missing parent).
static int path_exists(hid_t file, const char *path) {
    char prefix[4096];
    size_t length = strlen(path);
    if (length == 0 || length >= sizeof prefix) return 0;
    for (size_t end = 1; end <= length; end++) {
        if (end < length && path[end] != '/') continue;
        memcpy(prefix, path, end);
        prefix[end] = 0;
        if (H5Lexists(file, prefix, H5P_DEFAULT) <= 0) return 0;
    }
    return 1;
}

static int copy_hard_link(hid_t source, const char *name, hid_t target, hid_t link_creation,
                          const char *const *owned_groups, size_t owned_count, char *shared_path, size_t size) {
    H5O_info_t info;
    if (H5Oget_info_by_name2(source, name, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) return -1;
    for (size_t i = 0; info.rc > 1 && i < owned_count; i++) {
        if (H5Lexists(source, owned_groups[i], H5P_DEFAULT) <= 0) continue;
        hid_t group = H5Oopen(source, owned_groups[i], H5P_DEFAULT);
        if (group < 0) return -1;
        alias_search search = {info.addr, owned_groups[i], shared_path, size};
        herr_t found = H5Ovisit2(group, H5_INDEX_NAME, H5_ITER_INC, find_alias, &search, H5O_INFO_BASIC);
        H5Oclose(group);
        if (found < 0) return -1;
        if (found > 0) {
            if (!path_exists(target, shared_path)) return HDF5_LINK_NOT_KEPT;
            return H5Lcreate_hard(target, shared_path, target, name, link_creation, H5P_DEFAULT) < 0
                ? -1 : HDF5_LINK_RELINKED;
        }
    }
    return H5Ocopy(source, name, target, name, H5P_DEFAULT, link_creation) < 0 ? -1 : HDF5_LINK_COPIED;
}

int hdf5_copy_link(hid_t source, const char *name, hid_t target, hid_t link_creation,
                   const char *const *owned_groups, size_t owned_count, char *shared_path, size_t shared_path_size) {
#if H5_VERS_MAJOR == 1 && H5_VERS_MINOR < 12
    H5L_info_t info;
    if (H5Lget_info(source, name, &info, H5P_DEFAULT) < 0) return -1;
#else
    H5L_info2_t info;
    if (H5Lget_info2(source, name, &info, H5P_DEFAULT) < 0) return -1;
#endif
    switch (info.type) {
    case H5L_TYPE_HARD:
        return copy_hard_link(source, name, target, link_creation, owned_groups, owned_count, shared_path,
                              shared_path_size);
    case H5L_TYPE_SOFT:
    case H5L_TYPE_EXTERNAL:
        return copy_link_value(source, name, info.type, info.u.val_size, target, link_creation) < 0
            ? -1 : HDF5_LINK_COPIED;
    default:
        return -1;
    }
}

herr_t hdf5_copy_attribute(hid_t source, const char *name, hid_t target, hid_t attribute_creation,
                           size_t element_limit) {
    herr_t status = -1;
    hid_t attribute = H5Aopen(source, name, H5P_DEFAULT);
    if (attribute < 0) return -1;
    hid_t type = H5Aget_type(attribute);
    hid_t space = H5Aget_space(attribute);
    hssize_t count = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    size_t size = type >= 0 ? H5Tget_size(type) : 0;
    if (type >= 0 && H5Tdetect_class(type, H5T_REFERENCE) > 0) {
        status = 1;
    } else if (count >= 0 && (size_t)count <= element_limit && size > 0) {
        // The file type as the memory type: no conversion, the bytes as stored
        // (variable-length values as libhdf5's pointers, freed below).
        void *buffer = calloc(count > 0 ? (size_t)count : 1, size);
        if (buffer) {
            int variable = H5Tis_variable_str(type) > 0 || H5Tdetect_class(type, H5T_VLEN) > 0;
            status = count > 0 ? H5Aread(attribute, type, buffer) : 0;
            if (status >= 0) {
                hid_t copy = H5Acreate2(target, name, type, space, attribute_creation, H5P_DEFAULT);
                status = copy < 0 ? -1 : (count > 0 ? H5Awrite(copy, type, buffer) : 0);
                if (copy >= 0 && H5Aclose(copy) < 0) status = -1;
                if (variable && count > 0) (void)H5Dvlen_reclaim(type, space, H5P_DEFAULT, buffer);
            }
            free(buffer);
        }
    }
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    H5Aclose(attribute);
    return status;
}
