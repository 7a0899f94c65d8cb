import Foundation
internal import CHDF5
import DroptraceSupport

/// Strings are stored as variable-length UTF-8: h5py 3 reads such attributes
/// back as Python `str` (fixed-length ones come back as `bytes`), and names
/// of any length fit without padding rules.
enum HDF5Strings {
    /// The variable-length UTF-8 string type, used both in the file and in memory.
    static func withVariableLengthType<Result>(path: String, _ body: (hid_t) throws -> Result) throws -> Result {
        try withHDF5ID(H5Tcopy(HDF5Library.ids.cString), closedBy: H5Tclose,
                       failure: "cannot create string type", path: path) { type in
            try HDF5Failure.check(H5Tset_size(type, HDF5Library.variableLength),
                                  "cannot make string type variable-length", path: path)
            try HDF5Failure.check(H5Tset_cset(type, H5T_CSET_UTF8), "cannot make string type UTF-8", path: path)
            return try body(type)
        }
    }

    /// The `char *[]` HDF5 expects for variable-length strings, valid during `body`.
    static func withCStringArray<Result>(
        _ strings: [String], what: String, path: String, _ body: (UnsafeRawPointer?) throws -> Result
    ) throws -> Result {
        // C strings end at the first NUL, so such a string would silently be cut.
        if let index = strings.firstIndex(where: { $0.utf8.contains(0) }) {
            throw DroptraceError("cannot write \(what): string \(index) contains a NUL character", path: path)
        }
        let pointers = strings.map { strdup($0) }
        defer { pointers.forEach { free($0) } }
        return try pointers.withUnsafeBufferPointer { try body(UnsafeRawPointer($0.baseAddress)) }
    }

    /// Reads `count` strings of `fileType`, variable- or fixed-length (files
    /// written by other tools may use either), with `read(memoryType, buffer)`.
    static func read(
        count: Int, fileType: hid_t, space: hid_t, what: String, path: String,
        _ read: (hid_t, UnsafeMutableRawPointer) -> herr_t
    ) throws -> [String] {
        guard H5Tget_class(fileType) == H5T_STRING else {
            throw DroptraceError("\(what) does not hold strings", path: path)
        }
        if count == 0 { return [] }
        // The memory type is a copy of the file type: same length rule and
        // character set, so HDF5 has nothing to convert.
        return try withHDF5ID(H5Tcopy(fileType), closedBy: H5Tclose,
                              failure: "cannot copy string type of \(what)", path: path) { memoryType in
            if H5Tis_variable_str(fileType) > 0 {
                return try readVariableLength(count: count, memoryType: memoryType, space: space,
                                              what: what, path: path, read)
            }
            return try readFixedLength(count: count, memoryType: memoryType, what: what, path: path, read)
        }
    }

    private static func readVariableLength(
        count: Int, memoryType: hid_t, space: hid_t, what: String, path: String,
        _ read: (hid_t, UnsafeMutableRawPointer) -> herr_t
    ) throws -> [String] {
        var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: count)
        return try pointers.withUnsafeMutableBufferPointer { buffer in
            let raw = UnsafeMutableRawPointer(buffer.baseAddress!)
            // HDF5 mallocs each string; give them back even if reading failed
            // halfway. (H5Dvlen_reclaim works for attributes too; HDF5 1.12
            // renamed it H5Treclaim but keeps the old name.)
            defer { _ = H5Dvlen_reclaim(memoryType, space, HDF5Library.propertyListDefault, raw) }
            try HDF5Failure.check(read(memoryType, raw), "cannot read \(what)", path: path)
            return try buffer.enumerated().map { index, pointer in
                guard let pointer else { return "" }
                guard let text = String(validatingCString: pointer) else { throw notUTF8(what, index, path) }
                return text
            }
        }
    }

    private static func readFixedLength(
        count: Int, memoryType: hid_t, what: String, path: String,
        _ read: (hid_t, UnsafeMutableRawPointer) -> herr_t
    ) throws -> [String] {
        let width = H5Tget_size(memoryType)
        let (total, overflow) = count.multipliedReportingOverflow(by: width)
        guard !overflow, total <= plausibleElementLimit(path) else {
            throw DroptraceError("\(what) claims \(count) strings of \(width) bytes, more than the file can hold: the file is damaged", path: path)
        }
        var bytes = [UInt8](repeating: 0, count: total)
        try bytes.withUnsafeMutableBytes { buffer in
            try HDF5Failure.check(read(memoryType, buffer.baseAddress!), "cannot read \(what)", path: path)
        }
        let spacePadded = H5Tget_strpad(memoryType) == H5T_STR_SPACEPAD
        return try (0..<count).map { index in
            var field = bytes[(index * width)..<((index + 1) * width)]
            if let end = field.firstIndex(of: 0) { field = field[..<end] }
            if spacePadded { while field.last == 0x20 { field = field.dropLast() } }
            guard let text = String(validating: field, as: UTF8.self) else { throw notUTF8(what, index, path) }
            return text
        }
    }

    /// Text that is not UTF-8 was not written by droptrace (which writes
    /// UTF-8 only); replacing its bytes would read another name than stored.
    private static func notUTF8(_ what: String, _ index: Int, _ path: String) -> DroptraceError {
        DroptraceError("\(what) holds a string that is not UTF-8 (entry \(index)): the file was changed by other software", path: path)
    }
}
