internal import CHDF5
internal import CHDF5Probe
import DroptraceSupport

/// An open dataset: an n-dimensional array of numbers or strings, read back
/// as a flat array in row-major (C) order plus its `shape`.
public final class HDF5Dataset: HDF5Object {
    /// Dimensions, outermost first; [] for a scalar dataset.
    public let shape: [Int]
    /// The element type as stored in the file.
    public let elementType: HDF5ElementType

    /// Takes ownership of `id` (closing it if describing it fails). `created`:
    /// just created in a file being written (see `shapeOfDataspace`).
    init(id: hid_t, openFile: HDF5OpenFile, objectPath: String, created: Bool = false) throws {
        do {
            shape = try withHDF5ID(H5Dget_space(id), closedBy: H5Sclose,
                                   failure: "cannot read shape of \(objectPath)", path: openFile.path) { space in
                try shapeOfDataspace(space, path: openFile.path, what: objectPath, bounded: !created)
            }
            elementType = try withHDF5ID(H5Dget_type(id), closedBy: H5Tclose,
                                         failure: "cannot read type of \(objectPath)", path: openFile.path) { type in
                HDF5ElementType(typeID: type)
            }
            if !created { try Self.checkStorage(id, count: elementCount(of: shape), objectPath: objectPath, path: openFile.path) }
        } catch {
            _ = H5Dclose(id)
            throw error
        }
        super.init(id: id, openFile: openFile, objectPath: objectPath, ownsID: true)
    }

    /// Refuses a dataset whose values are not all in the file: mapped from
    /// elsewhere (a virtual dataset, external storage: past the file's
    /// checksum and `HDF5Probe`), never written (storage not allocated: the
    /// fill value, whatever the shape claims), or more than its stored bytes
    /// can hold (deflate shrinks at most about 1032:1); and one whose reading
    /// would cost far more than the file: chunks beyond
    /// `HDF5_CHUNK_BYTES_LIMIT` (libhdf5 decompresses whole chunks), an
    /// extendible shape (chunks larger than the values), a filter this
    /// libhdf5 cannot decode. droptrace writes every value of every dataset
    /// in the file, deflated in chunks of about 256 KiB.
    private static func checkStorage(_ id: hid_t, count: Int, objectPath: String, path: String) throws {
        var storage = hdf5_dataset_storage()
        guard hdf5_dataset_storage_of(id, &storage) == 0 else {
            throw HDF5Failure.error("cannot read the storage of \(objectPath)", path: path)
        }
        if storage.unavailable_filter >= 0 {
            let name = withUnsafeBytes(of: storage.filter_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            throw DroptraceError(
                "\(objectPath) is compressed with HDF5 filter \(storage.unavailable_filter)"
                    + (name.isEmpty ? "" : " (\(SystemError.oneLine(String(name.prefix(40)))))")
                    + ", which this libhdf5 cannot decode: droptrace compresses with deflate; the file was written by other software",
                path: path)
        }
        let problem: String? = if storage.is_virtual != 0 {
            "is a virtual dataset (its values mapped from other datasets or files)"
        } else if storage.chunk_bytes > HDF5_CHUNK_BYTES_LIMIT {
            "stores its values in chunks of \(storage.chunk_bytes) bytes (droptrace writes about 256 KiB)"
        } else if storage.extendible != 0 {
            "has a maximum shape beyond its shape (extendible), where chunks may hold far more than its values"
        } else if storage.external_files > 0 {
            "keeps its values in external files"
        } else if count > 0 && storage.fully_allocated == 0 {
            "holds values that were never written"
        } else if count > elementsHeld(inBytes: Int(clamping: storage.storage_bytes), slack: 4096) {
            "claims \(count) values in \(storage.storage_bytes) bytes"
        } else {
            nil
        }
        if let problem {
            throw DroptraceError("\(objectPath) \(problem), which droptrace never writes: the file is damaged or was changed by other software", path: path)
        }
    }

    /// Number of elements (1 for a scalar).
    public var count: Int { elementCount(of: shape) }

    /// All values, converted by HDF5 to `T` (e.g. a float64 dataset read as Float).
    public func read<T: HDF5Numeric>(as type: T.Type = T.self) throws -> [T] {
        try ensureOpen()
        if let problem = elementType.problem(readingAs: T.hdf5Kind) {
            throw DroptraceError("dataset \(objectPath) \(problem)", path: filePath)
        }
        var values = [T](repeating: T.zero, count: count)
        if values.isEmpty { return values }
        try values.withUnsafeMutableBytes { buffer in
            try HDF5Failure.check(
                H5Dread(id, T.hdf5Kind.nativeTypeID, HDF5Library.selectAll, HDF5Library.selectAll,
                        HDF5Library.propertyListDefault, buffer.baseAddress),
                "cannot read dataset \(objectPath)", path: filePath)
        }
        return values
    }

    /// All values of a string dataset of one or more dimensions, in row-major
    /// order. libhdf5 (1.10) crashes sizing the strings of a scalar one,
    /// which droptrace never writes, so a scalar is refused first.
    /// - Throws: `DroptraceError` naming the dataset when it is a scalar or
    ///   holds strings that are not valid UTF-8.
    public func readStrings() throws -> [String] {
        try ensureOpen()
        guard !shape.isEmpty else {
            throw DroptraceError(
                "\(objectPath) is a scalar dataset, not a list of strings: the file was changed by other software", path: filePath)
        }
        return try withHDF5ID(H5Dget_type(id), closedBy: H5Tclose,
                              failure: "cannot read type of \(objectPath)", path: filePath) { fileType in
            try withHDF5ID(H5Dget_space(id), closedBy: H5Sclose,
                           failure: "cannot read shape of \(objectPath)", path: filePath) { space in
                try checkStringBytes(fileType: fileType, space: space)
                return try HDF5Strings.read(count: count, fileType: fileType, space: space,
                                     what: "dataset \(objectPath)", path: filePath) { memoryType, buffer in
                    H5Dread(id, memoryType, HDF5Library.selectAll, HDF5Library.selectAll,
                            HDF5Library.propertyListDefault, buffer)
                }
            }
        }
    }

    /// Throws when variable-length strings would take more bytes than the
    /// file holds: entries may share one string's storage (droptrace writes
    /// each once), so a small file could make its reader allocate gigabytes.
    private func checkStringBytes(fileType: hid_t, space: hid_t) throws {
        guard H5Tis_variable_str(fileType) > 0 else { return }
        var bytes: hsize_t = 0
        try HDF5Failure.check(H5Dvlen_get_buf_size(id, fileType, space, &bytes), "cannot read dataset \(objectPath)", path: filePath)
        if let fileBytes = fileByteCount(filePath), bytes > UInt64(fileBytes) + (1 << 20) {
            throw DroptraceError(
                "\(objectPath): its strings take \(bytes) bytes, more than the file holds: the file is damaged or was changed by other software",
                path: filePath)
        }
    }

    /// Chunking and compression as stored in the file.
    public func storageOptions() throws -> HDF5StorageOptions {
        try ensureOpen()
        return try ScoreStore.storageOptions(ofDataset: id, dataset: objectPath, path: filePath)
    }
}
