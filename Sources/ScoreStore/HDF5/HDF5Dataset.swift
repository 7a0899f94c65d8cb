internal import CHDF5
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
        } catch {
            _ = H5Dclose(id)
            throw error
        }
        super.init(id: id, openFile: openFile, objectPath: objectPath, ownsID: true)
    }

    /// Number of elements (1 for a scalar).
    public var count: Int { elementCount(of: shape) }

    /// All values, converted by HDF5 to `T` (e.g. a float64 dataset read as Float).
    public func read<T: HDF5Numeric>(as type: T.Type = T.self) throws -> [T] {
        try ensureOpen()
        guard elementType.isNumeric else {
            throw DroptraceError("dataset \(objectPath) holds \(elementType) values, not numbers", path: filePath)
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

    /// All values of a string dataset.
    public func readStrings() throws -> [String] {
        try ensureOpen()
        return try withHDF5ID(H5Dget_type(id), closedBy: H5Tclose,
                              failure: "cannot read type of \(objectPath)", path: filePath) { fileType in
            try withHDF5ID(H5Dget_space(id), closedBy: H5Sclose,
                           failure: "cannot read shape of \(objectPath)", path: filePath) { space in
                try HDF5Strings.read(count: count, fileType: fileType, space: space,
                                     what: "dataset \(objectPath)", path: filePath) { memoryType, buffer in
                    H5Dread(id, memoryType, HDF5Library.selectAll, HDF5Library.selectAll,
                            HDF5Library.propertyListDefault, buffer)
                }
            }
        }
    }

    /// Chunking and compression as stored in the file.
    public func storageOptions() throws -> HDF5StorageOptions {
        try ensureOpen()
        return try ScoreStore.storageOptions(ofDataset: id, dataset: objectPath, path: filePath)
    }
}
