internal import CHDF5
import DroptraceSupport

extension HDF5Group {
    /// Creates a numeric dataset at `path` (parent groups are created as
    /// needed) holding `values`, a flat row-major array of `shape`.
    @discardableResult
    public func createDataset<T: HDF5Numeric>(
        _ path: String, values: [T], shape: [Int], storage: HDF5StorageOptions = .contiguous
    ) throws -> HDF5Dataset {
        let kind = T.hdf5Kind
        let dataset = try createEmptyDataset(path, fileType: kind.fileTypeID, elementBytes: kind.byteCount,
                                             count: values.count, shape: shape, storage: storage)
        if !values.isEmpty {
            try values.withUnsafeBytes { buffer in
                try HDF5Failure.check(
                    H5Dwrite(dataset.id, kind.nativeTypeID, HDF5Library.selectAll, HDF5Library.selectAll,
                             HDF5Library.propertyListDefault, buffer.baseAddress),
                    "cannot write dataset \(dataset.objectPath)", path: filePath)
            }
        }
        return dataset
    }

    /// Creates a one-dimensional numeric dataset.
    @discardableResult
    public func createDataset<T: HDF5Numeric>(
        _ path: String, values: [T], storage: HDF5StorageOptions = .contiguous
    ) throws -> HDF5Dataset {
        try createDataset(path, values: values, shape: [values.count], storage: storage)
    }

    /// Creates a dataset of variable-length UTF-8 strings.
    @discardableResult
    public func createDataset(
        _ path: String, strings: [String], shape: [Int]? = nil, storage: HDF5StorageOptions = .contiguous
    ) throws -> HDF5Dataset {
        try HDF5Strings.withVariableLengthType(path: filePath) { type in
            // The file stores a heap reference per string, hence pointer-sized elements.
            let dataset = try createEmptyDataset(path, fileType: type, elementBytes: 16, count: strings.count,
                                                 shape: shape ?? [strings.count], storage: storage)
            if !strings.isEmpty {
                let what = "dataset \(dataset.objectPath)"
                try HDF5Strings.withCStringArray(strings, what: what, path: filePath) { buffer in
                    try HDF5Failure.check(
                        H5Dwrite(dataset.id, type, HDF5Library.selectAll, HDF5Library.selectAll,
                                 HDF5Library.propertyListDefault, buffer),
                        "cannot write dataset \(dataset.objectPath)", path: filePath)
                }
            }
            return dataset
        }
    }

    private func createEmptyDataset(
        _ path: String, fileType: hid_t, elementBytes: Int, count: Int, shape: [Int], storage: HDF5StorageOptions
    ) throws -> HDF5Dataset {
        try ensureOpen()
        let fullPath = childPath(path)
        if shape.contains(where: { $0 < 0 }) || elementCount(of: shape) != count {
            throw DroptraceError(
                "cannot create dataset \(fullPath): \(count) values do not fill shape \(shape)", path: filePath)
        }
        if try exists(path) {
            throw DroptraceError("cannot create dataset \(fullPath): it already exists", path: filePath)
        }
        let datasetID = try withDataspace(shape: shape, path: filePath) { space in
            try withLinkCreationList { lcpl in
                try withDatasetCreationList(options: storage, shape: shape, elementBytes: elementBytes,
                                            dataset: fullPath, path: filePath) { dcpl in
                    try HDF5Failure.check(
                        H5Dcreate2(id, path, fileType, space, lcpl, dcpl, HDF5Library.propertyListDefault),
                        "cannot create dataset \(fullPath)", path: filePath)
                }
            }
        }
        return try HDF5Dataset(id: datasetID, openFile: openFile, objectPath: fullPath, created: true)
    }
}
