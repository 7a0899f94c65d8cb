internal import CHDF5
import DroptraceSupport

/// Attributes: small named values on the file (root group), a group or a
/// dataset. Setting an attribute that exists replaces it, as in h5py.
extension HDF5Object {
    /// A scalar variable-length UTF-8 string (h5py reads it as `str`).
    public func setAttribute(_ name: String, _ value: String) throws {
        try ensureOpen()
        try HDF5Strings.withVariableLengthType(path: filePath) { type in
            try HDF5Strings.withCStringArray([value], what: describeAttribute(name), path: filePath) { buffer in
                try createAttribute(name, fileType: type, shape: []) { attribute in
                    H5Awrite(attribute, type, buffer)
                }
            }
        }
    }

    /// A scalar number (h5py reads it as a numpy scalar, e.g. `numpy.int64`).
    public func setAttribute<T: HDF5Numeric>(_ name: String, _ value: T) throws {
        try setNumericAttribute(name, values: [value], shape: [])
    }

    /// A one-dimensional array of numbers.
    public func setAttribute<T: HDF5Numeric>(_ name: String, _ values: [T]) throws {
        try setNumericAttribute(name, values: values, shape: [values.count])
    }

    public func hasAttribute(_ name: String) throws -> Bool {
        try ensureOpen()
        return try HDF5Failure.checkedValue(H5Aexists(id, name), "cannot look up \(describeAttribute(name))",
                                     path: filePath) > 0
    }

    /// Attribute names in HDF5's name order.
    public func attributeNames() throws -> [String] {
        try ensureOpen()
        final class Names { var list: [String] = [] }
        let names = Names()
        let collect: H5A_operator2_t = { _, name, _, context in
            guard let name, let context else { return -1 }
            Unmanaged<Names>.fromOpaque(context).takeUnretainedValue().list.append(String(cString: name))
            return 0
        }
        try withExtendedLifetime(names) {
            try HDF5Failure.check(
                H5Aiterate2(id, H5_INDEX_NAME, H5_ITER_INC, nil, collect, Unmanaged.passUnretained(names).toOpaque()),
                "cannot list attributes of \(objectPath)", path: filePath)
        }
        return names.list
    }

    public func removeAttribute(_ name: String) throws {
        try ensureOpen()
        try HDF5Failure.check(H5Adelete(id, name), "cannot remove \(describeAttribute(name))", path: filePath)
    }

    /// The stored element type of an attribute.
    public func attributeType(_ name: String) throws -> HDF5ElementType {
        try withAttribute(name) { _, fileType, _, _ in HDF5ElementType(typeID: fileType) }
    }

    /// The shape of an attribute: [] for a scalar.
    public func attributeShape(_ name: String) throws -> [Int] {
        try withAttribute(name) { _, _, _, shape in shape }
    }

    /// A string attribute (scalar, or the single element of a one-element array).
    public func stringAttribute(_ name: String) throws -> String {
        let what = describeAttribute(name)
        let strings = try withAttribute(name) { attribute, fileType, space, shape in
            // Counted before reading: many entries may share one long string's storage.
            let count = elementCount(of: shape)
            guard count == 1 else { throw DroptraceError("\(what) holds \(count) strings, expected one", path: filePath) }
            return try HDF5Strings.read(count: count, fileType: fileType, space: space, what: what, path: filePath) { memoryType, buffer in
                H5Aread(attribute, memoryType, buffer)
            }
        }
        return strings[0]
    }

    /// All values of a numeric attribute, converted by HDF5 to `T`.
    public func numericAttribute<T: HDF5Numeric>(_ name: String, as type: T.Type = T.self) throws -> [T] {
        let what = describeAttribute(name)
        return try withAttribute(name) { attribute, fileType, _, shape in
            if let problem = HDF5ElementType(typeID: fileType).problem(readingAs: T.hdf5Kind) {
                throw DroptraceError("\(what) \(problem)", path: filePath)
            }
            var values = [T](repeating: T.zero, count: elementCount(of: shape))
            if values.isEmpty { return values }
            try values.withUnsafeMutableBytes { buffer in
                try HDF5Failure.check(H5Aread(attribute, T.hdf5Kind.nativeTypeID, buffer.baseAddress!),
                                      "cannot read \(what)", path: filePath)
            }
            return values
        }
    }

    /// A single number (a scalar attribute or a one-element array).
    public func scalarAttribute<T: HDF5Numeric>(_ name: String, as type: T.Type = T.self) throws -> T {
        let values = try numericAttribute(name, as: type)
        guard values.count == 1 else {
            throw DroptraceError("\(describeAttribute(name)) holds \(values.count) values, expected one",
                                    path: filePath)
        }
        return values[0]
    }

    // MARK: - Helpers

    func describeAttribute(_ name: String) -> String {
        "attribute '\(name)' of \(objectPath)"
    }

    private func setNumericAttribute<T: HDF5Numeric>(_ name: String, values: [T], shape: [Int]) throws {
        try ensureOpen()
        let kind = T.hdf5Kind
        try createAttribute(name, fileType: kind.fileTypeID, shape: shape) { attribute in
            // HDF5 rejects a null buffer even for zero elements.
            if values.isEmpty { return 0 }
            return values.withUnsafeBytes { H5Awrite(attribute, kind.nativeTypeID, $0.baseAddress!) }
        }
    }

    /// Creates (or replaces) an attribute and fills it with `write(attributeID)`.
    private func createAttribute(
        _ name: String, fileType: hid_t, shape: [Int], write: (hid_t) -> herr_t
    ) throws {
        let what = describeAttribute(name)
        if try hasAttribute(name) {
            try removeAttribute(name)
        }
        try withDataspace(shape: shape, path: filePath) { space in
            try withHDF5ID(H5Pcreate(HDF5Library.ids.attributeCreate), closedBy: H5Pclose,
                           failure: "cannot create attribute-creation property list", path: filePath) { acpl in
                try HDF5Failure.check(H5Pset_char_encoding(acpl, H5T_CSET_UTF8),
                                      "cannot set UTF-8 attribute names", path: filePath)
                try withHDF5ID(H5Acreate2(id, name, fileType, space, acpl, HDF5Library.propertyListDefault),
                               closedBy: H5Aclose, failure: "cannot create \(what)", path: filePath) { attribute in
                    try HDF5Failure.check(write(attribute), "cannot write \(what)", path: filePath)
                }
            }
        }
    }

    /// Opens an attribute with its file type, dataspace and shape; a missing
    /// attribute is reported as such rather than as an HDF5 failure.
    private func withAttribute<Result>(
        _ name: String, _ body: (_ attribute: hid_t, _ fileType: hid_t, _ space: hid_t, _ shape: [Int]) throws -> Result
    ) throws -> Result {
        let what = describeAttribute(name)
        guard try hasAttribute(name) else {
            throw DroptraceError("missing \(what)", path: filePath)
        }
        return try withHDF5ID(H5Aopen(id, name, HDF5Library.propertyListDefault), closedBy: H5Aclose,
                              failure: "cannot open \(what)", path: filePath) { attribute in
            try withHDF5ID(H5Aget_type(attribute), closedBy: H5Tclose,
                           failure: "cannot read type of \(what)", path: filePath) { fileType in
                try withHDF5ID(H5Aget_space(attribute), closedBy: H5Sclose,
                               failure: "cannot read shape of \(what)", path: filePath) { space in
                    try body(attribute, fileType, space, shapeOfDataspace(space, path: filePath, what: what))
                }
            }
        }
    }
}
