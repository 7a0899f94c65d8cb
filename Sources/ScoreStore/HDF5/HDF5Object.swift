internal import CHDF5
import Foundation
import DroptraceSupport

/// Owns an open HDF5 file id. Every object opened from the file keeps a strong
/// reference to it, so the file cannot be closed under an open dataset by ARC
/// (it can only be closed explicitly, with `HDF5File.close()`).
final class HDF5OpenFile {
    let id: hid_t
    /// The file's path on disk, used in every error message.
    let path: String
    /// Built in memory (`HDF5File.create`): close() writes it to `path`.
    let inMemory: Bool
    /// Opened for changes in place: close() renews its checksum.
    let writable: Bool
    private(set) var isOpen = true

    init(id: hid_t, path: String, inMemory: Bool, writable: Bool = false) {
        self.id = id
        self.path = path
        self.inMemory = inMemory
        self.writable = writable
    }

    func close() throws {
        guard isOpen else { return }
        isOpen = false
        HDF5Library.prepareThread()
        // Files are opened with the "strong" close degree: this also closes
        // every object still open in the file and flushes everything.
        guard inMemory else {
            try HDF5Failure.check(H5Fclose(id), "cannot close HDF5 file", path: path)
            if writable { try HDF5Checksum.renew(path) }
            return
        }
        let image: [UInt8]
        do {
            defer { _ = H5Fclose(id) }
            try HDF5Failure.check(H5Fflush(id, H5F_SCOPE_GLOBAL), "cannot finish HDF5 file", path: path)
            let size = try HDF5Failure.check(H5Fget_file_image(id, nil, 0), "cannot finish HDF5 file", path: path)
            var bytes = [UInt8](repeating: 0, count: size)
            let copied = try HDF5Failure.check(H5Fget_file_image(id, &bytes, size), "cannot finish HDF5 file",
                                               path: path)
            guard copied == size else { throw DroptraceError("cannot finish HDF5 file (short image)", path: path) }
            image = bytes
        }
        try HDF5Checksum.sealed(image).withUnsafeBytes { try FileOutput.writeNewFile($0, at: path) }
    }

    deinit {
        if isOpen {
            HDF5Library.prepareThread()
            _ = H5Fclose(id)
        }
    }
}

/// Anything in an HDF5 file that can carry attributes: the file (its root
/// group), a group or a dataset.
public class HDF5Object {
    let id: hid_t
    let openFile: HDF5OpenFile
    /// Absolute path inside the file, e.g. "/scores/attention"; "/" for the root.
    public let objectPath: String
    /// Whether `id` is ours to close; the file's id belongs to `HDF5OpenFile`.
    private let ownsID: Bool

    init(id: hid_t, openFile: HDF5OpenFile, objectPath: String, ownsID: Bool) {
        self.id = id
        self.openFile = openFile
        self.objectPath = objectPath
        self.ownsID = ownsID
    }

    /// The file's path on disk.
    public var filePath: String { openFile.path }

    deinit {
        // After an explicit file close (strong degree) the id is already gone.
        if ownsID && openFile.isOpen {
            HDF5Library.prepareThread()
            _ = H5Oclose(id)
        }
    }

    /// The absolute in-file path of `relative`, for error messages.
    func childPath(_ relative: String) -> String {
        if relative.hasPrefix("/") { return relative }
        return objectPath == "/" ? "/" + relative : objectPath + "/" + relative
    }

    /// Fails with a clear message instead of letting HDF5 report an invalid id.
    func ensureOpen() throws {
        HDF5Library.prepareThread()
        if !openFile.isOpen {
            throw DroptraceError("HDF5 file was already closed (while using \(objectPath))", path: filePath)
        }
    }
}

/// Runs `body` with a freshly created temporary HDF5 id (dataspace, datatype,
/// property list, attribute) and closes it afterwards, even when `body`
/// throws. Scoped closing, not ARC, because ARC may release an owner before
/// the C call that still uses its id.
func withHDF5ID<Result>(
    _ id: hid_t,
    closedBy close: (hid_t) -> herr_t,
    failure: @autoclosure () -> String,
    path: String,
    _ body: (hid_t) throws -> Result
) throws -> Result {
    let checked = try HDF5Failure.check(id, failure(), path: path)
    defer { _ = close(checked) }
    return try body(checked)
}

/// Number of elements of an array with the given shape; 1 for a scalar ([]).
func elementCount(of shape: [Int]) -> Int {
    shape.reduce(1, *)
}

/// Creates a dataspace for `shape` (scalar when `shape` is empty).
func withDataspace<Result>(shape: [Int], path: String, _ body: (hid_t) throws -> Result) throws -> Result {
    let id: hid_t
    if shape.isEmpty {
        id = H5Screate(H5S_SCALAR)
    } else {
        let dims = shape.map { hsize_t($0) }
        id = H5Screate_simple(Int32(dims.count), dims, nil)
    }
    return try withHDF5ID(id, closedBy: H5Sclose, failure: "cannot create dataspace of shape \(shape)",
                          path: path, body)
}

/// The shape of a dataspace: [] for a scalar, [0] for a null dataspace.
/// `bounded` (reading a complete file) also refuses
/// shapes the file's size cannot hold (`plausibleElementLimit`); a dataset
/// just created in a file still being written is not bounded by its size.
func shapeOfDataspace(_ space: hid_t, path: String, what: String, bounded: Bool = true) throws -> [Int] {
    let rank = try HDF5Failure.checkedValue(H5Sget_simple_extent_ndims(space), "cannot read shape of \(what)",
                                            path: path)
    if H5Sget_simple_extent_type(space) == H5S_NULL { return [0] }
    var dims = [hsize_t](repeating: 0, count: Int(rank))
    try HDF5Failure.check(H5Sget_simple_extent_dims(space, &dims, nil), "cannot read shape of \(what)", path: path)
    // A damaged dataspace must fail here, before anything is allocated for it.
    let limit = bounded ? plausibleElementLimit(path) : Int.max
    var total = 1
    for dim in dims {
        let (product, overflow) = total.multipliedReportingOverflow(by: Int(clamping: dim))
        guard dim <= UInt64(Int.max), !overflow, product <= limit else {
            throw DroptraceError(
                "\(what) claims shape \(dims), more values than a file of this size can hold: the file is damaged", path: path)
        }
        total = product
    }
    return dims.map { Int($0) }
}

/// The most elements a dataset or attribute of the file at `path` can
/// hold (`elementsHeld(inBytes:slack:)` of the whole file, with 1 MiB of
/// slack for tiny files).
func plausibleElementLimit(_ path: String) -> Int {
    guard let bytes = fileByteCount(path) else { return Int.max }
    return elementsHeld(inBytes: bytes, slack: 1 << 20)
}

/// The most elements `bytes` of stored data can hold, plus `slack`:
/// deflate, the strongest filter HDF5 files use, shrinks data at most about
/// 1032:1, so compressed data holds no more than about 1100 bytes per byte
/// stored. Counting one byte per element keeps it a bound for every element type.
func elementsHeld(inBytes bytes: Int, slack: Int) -> Int {
    bytes > (Int.max - slack) / 1100 ? Int.max : bytes * 1100 + slack
}

/// The size of the file at `path` in bytes; nil when it cannot be read.
func fileByteCount(_ path: String) -> Int? {
    var info = stat()
    return stat(path, &info) == 0 ? Int(info.st_size) : nil
}
