import DroptraceSupport

/// The records of a torch.save archive that torch.load reads besides its
/// pickle and storages, checked as it checks them (torch 2.x:
/// `PyTorchStreamReader::init` in caffe2's inline_container.cc, and
/// `torch.serialization._load`): a file it refuses over one of them is
/// refused, not scored.
enum TorchArchiveRecords {
    /// The newest archive format version torch.load reads
    /// (`kMaxSupportedFileFormatVersion`, 10 in torch 2.15); torch.save writes 3.
    static let newestVersion: UInt64 = 10
    /// The most bytes of a record droptrace reads to check it (each is a few bytes).
    static let recordLimit = 4096

    /// Checks the records of `archive` under `prefix` (`archive/`).
    /// - Throws: `DroptraceError` naming the record: no `version` (nor
    ///   `.data/version`), a version torch cannot parse as an unsigned number
    ///   or does not read (below 1, above `newestVersion`), a `byteorder` other
    ///   than little (big-endian files are not supported), a
    ///   `.storage_alignment` Python's `int()` refuses, a
    ///   `.data/serialization_id` that is not UTF-8.
    static func check(_ archive: ZipArchive, prefix: String) throws {
        let versionName = prefix + (archive.entries[prefix + ".data/version"] != nil ? ".data/version" : "version")
        guard archive.entries[versionName] != nil else {
            throw DroptraceError("zip archive has no \(versionName.forErrorMessage) record, which torch.load requires; the file is damaged", path: archive.path)
        }
        let versionText = try contents(versionName, of: archive)
        guard let version = unsignedLongLong(versionText) else {
            throw DroptraceError(
                "zip entry \(versionName.forErrorMessage) holds \(shown(versionText)), which torch.load cannot parse as a version number",
                path: archive.path)
        }
        guard (1...newestVersion).contains(version) else {
            throw DroptraceError(
                "zip entry \(versionName.forErrorMessage) gives archive format version \(version); torch.load reads 1 to \(newestVersion)",
                path: archive.path)
        }
        if archive.entries[prefix + "byteorder"] != nil {
            let order = String(decoding: try contents(prefix + "byteorder", of: archive), as: UTF8.self)
            guard order == "little" else {
                throw DroptraceError(
                    order == "big" ? "checkpoint was saved with big-endian byte order; only little-endian is supported"
                        : "zip entry \(prefix.forErrorMessage)byteorder holds \"\(order.forErrorMessage)\" instead of \"little\" or \"big\"",
                    path: archive.path)
            }
        }
        let alignmentName = prefix + ".storage_alignment"
        if archive.entries[alignmentName] != nil {
            let text = try contents(alignmentName, of: archive)
            guard isPythonInteger(text) else {
                throw DroptraceError("zip entry \(alignmentName.forErrorMessage) holds \(shown(text)), which is not an integer as torch.load reads it", path: archive.path)
            }
        }
        let identifierName = prefix + ".data/serialization_id"
        if archive.entries[identifierName] != nil {
            guard String(validating: try contents(identifierName, of: archive), as: UTF8.self) != nil else {
                throw DroptraceError("zip entry \(identifierName.forErrorMessage) is not UTF-8 text, which torch.load refuses", path: archive.path)
            }
        }
    }

    /// The bytes of a small record; one longer than `recordLimit` is damage.
    private static func contents(_ name: String, of archive: ZipArchive) throws -> [UInt8] {
        let (_, count) = try archive.range(name)
        guard count <= recordLimit else {
            throw DroptraceError("zip entry \(name.forErrorMessage) holds \(count) bytes where torch writes a few; the file is damaged", path: archive.path)
        }
        return try archive.contents(name)
    }

    /// `bytes` as C++'s `std::stoull` reads them (base 10): leading
    /// whitespace, an optional sign (a minus wraps around, as it does there),
    /// then at least one digit; whatever follows the digits is ignored. nil
    /// when there is no digit or the number overflows 64 bits.
    static func unsignedLongLong(_ bytes: [UInt8]) -> UInt64? {
        var index = bytes.firstIndex { !isCSpace($0) } ?? bytes.count
        var negative = false
        if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
            negative = bytes[index] == UInt8(ascii: "-")
            index += 1
        }
        var value: UInt64 = 0
        var digits = 0
        while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) {
            let (times, overflow) = value.multipliedReportingOverflow(by: 10)
            let (sum, carry) = times.addingReportingOverflow(UInt64(bytes[index] - UInt8(ascii: "0")))
            guard !overflow, !carry else { return nil }
            (value, digits, index) = (sum, digits + 1, index + 1)
        }
        guard digits > 0 else { return nil }
        return negative ? 0 &- value : value
    }

    /// Whether Python's `int(bytes)` (base 10) accepts `bytes`: ASCII
    /// whitespace around, an optional sign, digits with single underscores
    /// between them, at most 4300 digits (Python's default limit).
    static func isPythonInteger(_ bytes: [UInt8]) -> Bool {
        guard let first = bytes.firstIndex(where: { !isCSpace($0) }), let last = bytes.lastIndex(where: { !isCSpace($0) }) else {
            return false
        }
        var body = bytes[first...last]
        if body.first == UInt8(ascii: "+") || body.first == UInt8(ascii: "-") { body = body.dropFirst() }
        let isDigit = { (byte: UInt8) in (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
        let digits = body.filter(isDigit).count
        guard let head = body.first, let tail = body.last, isDigit(head), isDigit(tail), digits <= 4300 else { return false }
        var previousUnderscore = false
        for byte in body {
            if byte == UInt8(ascii: "_") {
                if previousUnderscore { return false }
                previousUnderscore = true
            } else if isDigit(byte) {
                previousUnderscore = false
            } else {
                return false
            }
        }
        return true
    }

    /// C's `isspace` in the "C" locale, and Python's ASCII whitespace: space, \t, \n, \v, \f, \r.
    private static func isCSpace(_ byte: UInt8) -> Bool { byte == 0x20 || (0x09...0x0D).contains(byte) }

    private static func shown(_ bytes: [UInt8]) -> String {
        "\"\(String(decoding: bytes.prefix(32), as: UTF8.self).forErrorMessage)\"\(bytes.count > 32 ? "…" : "")"
    }
}
