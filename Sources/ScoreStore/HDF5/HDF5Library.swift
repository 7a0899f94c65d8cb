// HDF5's predefined types and property-list classes are C macros over global
// variables (`H5T_NATIVE_FLOAT` is `(H5open(), H5T_NATIVE_FLOAT_g)`), which
// Swift does not import. We read the globals directly once the library is
// open. `@preconcurrency` is needed because Swift 6 treats every imported C
// global as shared mutable state; these ids never change after `H5open()`,
// and this is the only file that touches them.
@preconcurrency internal import CHDF5

/// Constants and one-time setup for the HDF5 C library.
enum HDF5Library {
    /// Predefined ids, captured after `H5open()` so they are valid.
    struct PredefinedIDs: Sendable {
        let nativeFloat: hid_t
        let nativeDouble: hid_t
        let nativeInt32: hid_t
        let nativeInt64: hid_t
        // Explicit little-endian file types, so files do not depend on the
        // writing machine (every platform we run on is little-endian anyway).
        let fileFloat32: hid_t
        let fileFloat64: hid_t
        let fileInt32: hid_t
        let fileInt64: hid_t
        let cString: hid_t
        let datasetCreate: hid_t
        let linkCreate: hid_t
        let attributeCreate: hid_t
        let fileAccess: hid_t
        let fileCreate: hid_t
    }

    /// `static let` is initialised exactly once, thread-safely, on first use.
    static let ids: PredefinedIDs = {
        _ = H5open()
        return PredefinedIDs(
            nativeFloat: H5T_NATIVE_FLOAT_g,
            nativeDouble: H5T_NATIVE_DOUBLE_g,
            nativeInt32: H5T_NATIVE_INT32_g,
            nativeInt64: H5T_NATIVE_INT64_g,
            fileFloat32: H5T_IEEE_F32LE_g,
            fileFloat64: H5T_IEEE_F64LE_g,
            fileInt32: H5T_STD_I32LE_g,
            fileInt64: H5T_STD_I64LE_g,
            cString: H5T_C_S1_g,
            datasetCreate: H5P_CLS_DATASET_CREATE_ID_g,
            linkCreate: H5P_CLS_LINK_CREATE_ID_g,
            attributeCreate: H5P_CLS_ATTRIBUTE_CREATE_ID_g,
            fileAccess: H5P_CLS_FILE_ACCESS_ID_g,
            fileCreate: H5P_CLS_FILE_CREATE_ID_g
        )
    }()

    /// Call before any HDF5 call that may fail. Opens the library and turns off
    /// HDF5's habit of printing its error stack to stderr: we report failures
    /// ourselves as one-line `DroptraceError`s. Debian's build is thread-safe,
    /// which makes the error-stack settings per thread, so this has to run on
    /// whichever thread is about to call into HDF5; it is cheap.
    static func prepareThread() {
        _ = ids
        _ = H5Eset_auto2(errorStackDefault, nil, nil)
    }

    // Simple macros Swift imports with the wrong type, or not at all.
    static let propertyListDefault: hid_t = 0  // H5P_DEFAULT
    static let selectAll: hid_t = 0            // H5S_ALL
    static let errorStackDefault: hid_t = 0    // H5E_DEFAULT
    static let variableLength: Int = -1        // H5T_VARIABLE, ((size_t)-1)
    static let accessReadOnly: UInt32 = 0x0000 // H5F_ACC_RDONLY
    static let accessReadWrite: UInt32 = 0x0001 // H5F_ACC_RDWR
    static let accessTruncate: UInt32 = 0x0002 // H5F_ACC_TRUNC
}
