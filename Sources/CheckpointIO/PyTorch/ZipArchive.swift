import DroptraceSupport

/// The entries of a zip archive as torch.save writes it: every entry STORED
/// (uncompressed), so an entry's bytes can be used in place inside the mapping.
///
/// Only the central directory is trusted for sizes (local headers may leave
/// them zero); the local header is read for the length of its name and of the
/// padding torch puts there to align the data to 64 bytes.
struct ZipArchive {
    struct Entry {
        var name: String
        /// Compression method (0 = stored).
        var method: Int
        var flags: Int
        var compressedSize: Int
        var size: Int
        var localHeaderOffset: Int
    }

    let path: String
    let bytes: UnsafeRawBufferPointer
    let entries: [String: Entry]
    /// Entry names in central-directory order.
    let names: [String]

    static let endOfCentralDirectorySignature: UInt32 = 0x0605_4b50
    static let zip64LocatorSignature: UInt32 = 0x0706_4b50
    static let zip64EndSignature: UInt32 = 0x0606_4b50
    static let centralHeaderSignature: UInt32 = 0x0201_4b50
    static let localHeaderSignature: UInt32 = 0x0403_4b50

    /// Whether `bytes` start like a zip archive (a local file header).
    static func looksLikeZip(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 4 && bytes.loadUnaligned(as: UInt32.self).littleEndian == localHeaderSignature
    }

    /// Reads the central directory. Fails when the end-of-central-directory
    /// record is missing (a truncated file, or one still being written) or any
    /// record points past the end of the file.
    init(bytes: UnsafeRawBufferPointer, path: String) throws {
        self.path = path
        self.bytes = bytes
        let directory = try Self.centralDirectory(bytes, path: path)
        var entries: [String: Entry] = [:]
        var names: [String] = []
        var reader = ByteReader(bytes, at: directory.offset, end: directory.offset + directory.size, path: path, what: "zip central directory")
        for _ in 0..<directory.count {
            let entry = try Self.centralEntry(&reader, path: path)
            if entries[entry.name] == nil { names.append(entry.name) }
            entries[entry.name] = entry
        }
        self.entries = entries
        self.names = names
    }

    /// The bytes of entry `name`, checked to be stored, unencrypted and inside the file.
    func data(_ name: String) throws -> UnsafeRawBufferPointer {
        guard let entry = entries[name] else {
            throw DroptraceError("zip archive has no entry \(name.forErrorMessage)", path: path)
        }
        guard entry.method == 0, entry.compressedSize == entry.size else {
            throw DroptraceError(
                "zip entry \(name.forErrorMessage) is compressed (method \(entry.method)); torch.save stores entries uncompressed, so this file was repacked — re-save it with torch.save",
                path: path)
        }
        guard entry.flags & 1 == 0 else {
            throw DroptraceError("zip entry \(name.forErrorMessage) is encrypted", path: path)
        }
        let start = try Self.dataStart(of: entry, in: bytes, path: path)
        guard start <= bytes.count, entry.size <= bytes.count - start else {
            throw DroptraceError(
                "file is truncated: zip entry \(name.forErrorMessage) ends at byte \(start + entry.size) but the file has \(bytes.count) bytes",
                path: path)
        }
        return UnsafeRawBufferPointer(rebasing: bytes[start..<(start + entry.size)])
    }

    /// The length a complete archive needs according to its central
    /// directory, or nil when there is no readable end-of-central-directory
    /// record yet. Local headers that are not readable are assumed minimal.
    static func expectedLength(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard let directory = try? centralDirectory(bytes, path: "") else { return nil }
        var length = bytes.count
        var reader = ByteReader(bytes, at: directory.offset, end: directory.offset + directory.size, path: "", what: "")
        for _ in 0..<directory.count {
            guard let entry = try? centralEntry(&reader, path: "") else { return nil }
            let start = (try? dataStart(of: entry, in: bytes, path: "")) ?? (entry.localHeaderOffset + 30 + entry.name.utf8.count)
            length = max(length, start + entry.compressedSize)
        }
        return length
    }

    // MARK: - Records

    private struct CentralDirectory {
        var offset: Int
        var size: Int
        var count: Int
    }

    /// Finds the end-of-central-directory record (searching back over a
    /// possible archive comment) and, for ZIP64 archives, its ZIP64 twin.
    private static func centralDirectory(_ bytes: UnsafeRawBufferPointer, path: String) throws -> CentralDirectory {
        let recordLength = 22
        guard bytes.count >= recordLength else {
            throw DroptraceError("not a complete zip archive: \(bytes.count) bytes, too short for an end-of-central-directory record", path: path)
        }
        var position = bytes.count - recordLength
        let lowest = max(0, bytes.count - recordLength - 0xFFFF)
        var found: Int?
        while position >= lowest {
            if bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self).littleEndian == endOfCentralDirectorySignature {
                let commentLength = Int(bytes.loadUnaligned(fromByteOffset: position + 20, as: UInt16.self).littleEndian)
                if position + recordLength + commentLength == bytes.count { found = position; break }
            }
            position -= 1
        }
        guard let end = found else {
            throw DroptraceError(
                "zip archive has no end-of-central-directory record: the file is truncated (or still being written)", path: path)
        }
        var reader = ByteReader(bytes, at: end + 10, end: end + recordLength, path: path, what: "end-of-central-directory record")
        var count = Int(try reader.u16())
        var size = Int(try reader.u32())
        var offset = Int(try reader.u32())

        // ZIP64: a locator right before the record points at a record with 64-bit fields.
        let locator = end - 20
        if locator >= 0, bytes.loadUnaligned(fromByteOffset: locator, as: UInt32.self).littleEndian == zip64LocatorSignature {
            var locatorReader = ByteReader(bytes, at: locator + 8, end: locator + 16, path: path, what: "ZIP64 locator")
            let zip64End = try locatorReader.int64()
            guard zip64End >= 0, zip64End <= bytes.count - 56,
                  bytes.loadUnaligned(fromByteOffset: zip64End, as: UInt32.self).littleEndian == zip64EndSignature
            else {
                throw DroptraceError("ZIP64 locator points at byte \(zip64End), where there is no ZIP64 end-of-central-directory record", path: path)
            }
            var record = ByteReader(bytes, at: zip64End + 32, end: zip64End + 56, path: path, what: "ZIP64 end-of-central-directory record")
            count = try record.int64()
            size = try record.int64()
            offset = try record.int64()
        } else if count == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
            throw DroptraceError("zip archive needs ZIP64 records but has none; the file is damaged", path: path)
        }
        guard offset >= 0, size >= 0, count >= 0, offset <= end, size <= end - offset else {
            throw DroptraceError(
                "zip central directory (\(size) bytes at byte \(offset)) lies outside the file of \(bytes.count) bytes; the file is truncated or damaged",
                path: path)
        }
        return CentralDirectory(offset: offset, size: size, count: count)
    }

    private static func centralEntry(_ reader: inout ByteReader, path: String) throws -> Entry {
        guard try reader.u32() == centralHeaderSignature else {
            throw DroptraceError("zip central directory is damaged (bad record signature at byte \(reader.position - 4))", path: path)
        }
        try reader.skip(4)
        let flags = Int(try reader.u16())
        let method = Int(try reader.u16())
        try reader.skip(8)
        var compressedSize = Int(try reader.u32())
        var size = Int(try reader.u32())
        let nameLength = Int(try reader.u16())
        let extraLength = Int(try reader.u16())
        let commentLength = Int(try reader.u16())
        try reader.skip(8)
        var localHeaderOffset = Int(try reader.u32())
        let name = try reader.string(nameLength)
        let extraEnd = reader.position + extraLength
        // The ZIP64 extra field holds, in this order, exactly the fields whose 32-bit slot is all ones.
        while reader.position + 4 <= extraEnd {
            let id = try reader.u16()
            let length = Int(try reader.u16())
            let fieldEnd = reader.position + length
            if id == 0x0001 {
                if size == 0xFFFF_FFFF { size = try reader.int64() }
                if compressedSize == 0xFFFF_FFFF { compressedSize = try reader.int64() }
                if localHeaderOffset == 0xFFFF_FFFF { localHeaderOffset = try reader.int64() }
            }
            guard fieldEnd <= extraEnd else { break }
            reader.position = fieldEnd
        }
        reader.position = extraEnd
        try reader.skip(commentLength)
        guard size >= 0, compressedSize >= 0, localHeaderOffset >= 0 else {
            throw DroptraceError("zip entry \(name.forErrorMessage) has sizes or offsets out of range", path: path)
        }
        return Entry(
            name: name, method: method, flags: flags, compressedSize: compressedSize, size: size,
            localHeaderOffset: localHeaderOffset)
    }

    private static func dataStart(of entry: Entry, in bytes: UnsafeRawBufferPointer, path: String) throws -> Int {
        let offset = entry.localHeaderOffset
        guard offset <= bytes.count - 30 else {
            throw DroptraceError(
                "file is truncated: zip entry \(entry.name.forErrorMessage) starts at byte \(offset) but the file has \(bytes.count) bytes",
                path: path)
        }
        var reader = ByteReader(bytes, at: offset, end: offset + 30, path: path, what: "zip local header")
        guard try reader.u32() == localHeaderSignature else {
            throw DroptraceError("zip local header of entry \(entry.name.forErrorMessage) at byte \(offset) is damaged", path: path)
        }
        try reader.skip(22)
        let nameLength = Int(try reader.u16())
        let extraLength = Int(try reader.u16())
        return offset + 30 + nameLength + extraLength
    }
}

/// Little-endian reads from a byte range, each checked against its end.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    var position: Int
    let end: Int
    let path: String
    /// What is being read, for the truncation error.
    let what: String

    init(_ bytes: UnsafeRawBufferPointer, at position: Int, end: Int, path: String, what: String) {
        self.bytes = bytes
        self.position = position
        self.end = min(end, bytes.count)
        self.path = path
        self.what = what
    }

    mutating func need(_ count: Int) throws {
        guard count >= 0, position >= 0, count <= end - position else {
            throw DroptraceError("\(what) ends early: needs \(count) more bytes at byte \(position)", path: path)
        }
    }

    mutating func skip(_ count: Int) throws {
        try need(count)
        position += count
    }

    mutating func u8() throws -> UInt8 {
        try need(1)
        defer { position += 1 }
        return bytes[position]
    }

    mutating func u16() throws -> UInt16 {
        try need(2)
        defer { position += 2 }
        return bytes.loadUnaligned(fromByteOffset: position, as: UInt16.self).littleEndian
    }

    mutating func u32() throws -> UInt32 {
        try need(4)
        defer { position += 4 }
        return bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self).littleEndian
    }

    mutating func u64() throws -> UInt64 {
        try need(8)
        defer { position += 8 }
        return bytes.loadUnaligned(fromByteOffset: position, as: UInt64.self).littleEndian
    }

    /// A 64-bit length or offset; values beyond Int's range read as -1 so the caller rejects them.
    mutating func int64() throws -> Int {
        let value = try u64()
        return value > UInt64(Int.max) ? -1 : Int(value)
    }

    mutating func raw(_ count: Int) throws -> UnsafeRawBufferPointer {
        try need(count)
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: bytes[position..<(position + count)])
    }

    mutating func string(_ count: Int) throws -> String {
        String(decoding: try raw(count), as: UTF8.self)
    }
}
