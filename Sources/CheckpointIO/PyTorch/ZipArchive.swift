import DroptraceSupport

/// The entries of a zip archive as torch.save writes it: every entry STORED
/// (uncompressed), so an entry's bytes can be read in place from the file.
///
/// Only the central directory is trusted for sizes (local headers may leave
/// them zero); the local header is read for the length of its name and of the
/// padding torch puts there to align the data to 64 bytes. Only the records
/// are read into memory (the directory, local headers, small entries such as
/// data.pkl), never the storages; every offset and size is checked against the
/// file before it is used.
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

    let file: RegularFile
    var path: String { file.path }
    let entries: [String: Entry]
    /// Entry names in central-directory order.
    let names: [String]

    static let endOfCentralDirectorySignature: UInt32 = 0x0605_4b50
    static let zip64LocatorSignature: UInt32 = 0x0706_4b50
    static let zip64EndSignature: UInt32 = 0x0606_4b50
    static let centralHeaderSignature: UInt32 = 0x0201_4b50
    static let localHeaderSignature: UInt32 = 0x0403_4b50
    /// The fixed part of a central-directory record.
    static let centralHeaderLength = 46

    /// Whether `prefix` (the file's first bytes) starts like a zip archive (a local file header).
    static func looksLikeZip(_ prefix: [UInt8]) -> Bool {
        prefix.count >= 4 && prefix.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }.littleEndian == localHeaderSignature
    }

    /// Reads the central directory. Fails when the end-of-central-directory
    /// record is missing (a truncated file, or one still being written) or any
    /// record points past the end of the file.
    init(file: RegularFile) throws {
        self.file = file
        let path = file.path
        let (directory, records) = try Self.centralDirectory(file)
        var entries: [String: Entry] = [:]
        var names: [String] = []
        var reader = ByteReader(records, at: 0, end: records.count, path: path, what: "zip central directory")
        var seen = Set<[UInt8]>()
        for _ in 0..<directory.count {
            let entry = try Self.centralEntry(&reader, disk: directory.disk, fileSize: file.size, path: path)
            // Readers differ on which of two same-named entries they take (torch's miniz, Python's
            // zipfile); compared as bytes, as zip names are.
            guard seen.insert(Array(entry.name.utf8)).inserted, entries[entry.name] == nil else {
                throw DroptraceError("zip archive holds two entries named \(entry.name.forErrorMessage); the file is damaged", path: path)
            }
            // torch.load refuses an archive with any encrypted entry, read or not (miniz): encrypted,
            // strongly encrypted, or its local header masked (bits 0, 6 and 13 of the flags).
            guard entry.flags & 0x2041 == 0 else {
                throw DroptraceError("zip entry \(entry.name.forErrorMessage) is encrypted", path: path)
            }
            names.append(entry.name)
            entries[entry.name] = entry
        }
        self.entries = entries
        self.names = names
    }

    /// Where the bytes of entry `name` are in the file, checked to be stored,
    /// not a patch, and inside the file.
    func range(_ name: String) throws -> (offset: Int, count: Int) {
        guard let entry = entries[name] else {
            throw DroptraceError("zip archive has no entry \(name.forErrorMessage)", path: path)
        }
        guard entry.method == 0, entry.compressedSize == entry.size else {
            throw DroptraceError(
                "zip entry \(name.forErrorMessage) is compressed (method \(entry.method)); torch.save stores entries uncompressed, so this file was repacked — re-save it with torch.save",
                path: path)
        }
        // Encrypted entries were refused with the archive; miniz refuses a patch entry as it reads it.
        guard entry.flags & 0x20 == 0 else {
            throw DroptraceError("zip entry \(name.forErrorMessage) is a compressed patch (flag bit 5), which torch.load does not read", path: path)
        }
        let start = try Self.dataStart(of: entry, in: file)
        guard start <= file.size, entry.size <= file.size - start else {
            throw DroptraceError(
                "file is truncated: zip entry \(name.forErrorMessage) of \(entry.size) bytes starts at byte \(start) but the file has \(file.size) bytes",
                path: path)
        }
        return (start, entry.size)
    }

    /// The bytes of a small entry (data.pkl, byteorder), read into memory.
    func contents(_ name: String) throws -> [UInt8] {
        let (offset, count) = try range(name)
        return try file.bytes(count, at: offset)
    }

    /// The length a complete archive needs according to its central
    /// directory, or nil when there is no readable end-of-central-directory
    /// record yet. Local headers that are not readable are assumed minimal.
    /// Throws only when reading fails (an I/O error, `isTransient`).
    static func expectedLength(_ file: RegularFile) throws -> Int? {
        guard let (directory, records) = try DroptraceError.nilUnlessTransient({ try centralDirectory(file) }) else { return nil }
        var length = file.size
        var reader = ByteReader(records, at: 0, end: records.count, path: "", what: "")
        for _ in 0..<directory.count {
            // The end record is written last, after the whole directory: with it there, a
            // record that does not read is damage, not a write in progress (opening reports it).
            guard let entry = try? centralEntry(&reader, disk: directory.disk, fileSize: Int.max / 2, path: "") else { return file.size }
            // Each term is below Int.max / 4 (sizes from 8-byte fields are checked), so sums cannot overflow.
            let start = try DroptraceError.nilUnlessTransient({ try dataStart(of: entry, in: file) })
                ?? (entry.localHeaderOffset + 30 + entry.name.utf8.count)
            length = max(length, start + entry.compressedSize)
        }
        return length
    }

    // MARK: - Records

    private struct CentralDirectory {
        var offset: Int
        var size: Int
        var count: Int
        /// The archive's disk number, 0 or 1.
        var disk: Int
    }

    /// Finds the end-of-central-directory record (searching back over a
    /// possible archive comment) and, for ZIP64 archives, its ZIP64 twin;
    /// returns it with the directory's records, read into memory.
    private static func centralDirectory(_ file: RegularFile) throws -> (CentralDirectory, [UInt8]) {
        let path = file.path
        let recordLength = 22
        guard file.size >= recordLength else {
            throw DroptraceError("not a complete zip archive: \(file.size) bytes, too short for an end-of-central-directory record", path: path)
        }
        // The record, its comment (up to 0xFFFF bytes) and a ZIP64 locator before it.
        let tailStart = max(0, file.size - recordLength - 0xFFFF - 20)
        let tail = try file.bytes(file.size - tailStart, at: tailStart)
        // The record whose comment ends the file; failing that, as Python's
        // zipfile (and torch.load) read an archive with bytes appended, the last one.
        var end: Int?
        var last: Int?
        tail.withUnsafeBytes { bytes in
            var position = bytes.count - recordLength
            while position >= 0 {
                if bytes.loadUnaligned(fromByteOffset: position, as: UInt32.self).littleEndian == endOfCentralDirectorySignature {
                    let commentLength = Int(bytes.loadUnaligned(fromByteOffset: position + 20, as: UInt16.self).littleEndian)
                    if position + recordLength + commentLength == bytes.count { end = position; break }
                    last = last ?? position
                }
                position -= 1
            }
        }
        end = end ?? last
        guard let end else {
            throw DroptraceError(
                "zip archive has no end-of-central-directory record: the file is truncated (or still being written)", path: path)
        }
        var reader = ByteReader(tail, at: end + 4, end: end + recordLength, path: path, what: "end-of-central-directory record")
        var thisDisk = Int(try reader.u16()), directoryDisk = Int(try reader.u16())
        var entriesOnDisk = Int(try reader.u16())
        var count = Int(try reader.u16())
        var size = Int(try reader.u32())
        var offset = Int(try reader.u32())
        let recordOffset = tailStart + end
        let multiDisk = DroptraceError("zip archive spans several disks, which torch.load does not read; the file is damaged", path: path)

        // ZIP64: a locator right before the record points at a record with 64-bit fields, which
        // torch's reader (miniz) then takes in place of the classic record's.
        var locator = ByteReader(tail, at: end - 20, end: end, path: path, what: "ZIP64 locator")
        if end >= 20, try locator.u32() == zip64LocatorSignature {
            try locator.skip(4)
            let zip64End = try locator.int64()
            guard try locator.u32() == 1 else { throw multiDisk }  // the total number of disks
            let record = zip64End >= 0 && zip64End <= recordOffset - 56 ? try file.bytes(56, at: zip64End) : []
            var fields = ByteReader(record, at: 0, end: record.count, path: path, what: "ZIP64 end-of-central-directory record")
            guard record.count == 56, try fields.u32() == zip64EndSignature else {
                throw DroptraceError("ZIP64 locator points at byte \(zip64End), where there is no ZIP64 end-of-central-directory record", path: path)
            }
            let recordSize = try fields.int64()
            guard recordSize >= 44 else {
                throw DroptraceError("ZIP64 end-of-central-directory record declares \(recordSize) bytes, fewer than its fields; the file is damaged", path: path)
            }
            try fields.skip(4)
            thisDisk = Int(try fields.u32())
            directoryDisk = Int(try fields.u32())
            entriesOnDisk = try fields.int64()
            count = try fields.int64()
            size = try fields.int64()
            offset = try fields.int64()
        } else if count == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
            throw DroptraceError("zip archive needs ZIP64 records but has none; the file is damaged", path: path)
        }
        // miniz reads a single-disk archive numbered 0 or 1, all of its entries on that disk.
        guard entriesOnDisk == count, (thisDisk == 0 && directoryDisk == 0) || (thisDisk == 1 && directoryDisk == 1) else {
            throw multiDisk
        }
        guard offset >= 0, size >= 0, count >= 0, offset <= recordOffset, size <= recordOffset - offset,
              count <= size / centralHeaderLength
        else {
            throw DroptraceError(
                "zip central directory (\(count) entries, \(size) bytes at byte \(offset)) does not fit in the file of \(file.size) bytes; the file is truncated or damaged",
                path: path)
        }
        return (CentralDirectory(offset: offset, size: size, count: count, disk: thisDisk), try file.bytes(size, at: offset))
    }

    /// One central-directory record, checked as torch's reader (miniz) checks
    /// every record when it opens the archive, read or not.
    /// - Parameters:
    ///   - disk: the archive's disk number.
    ///   - fileSize: the archive's length in bytes.
    private static func centralEntry(_ reader: inout ByteReader, disk archiveDisk: Int, fileSize: Int, path: String) throws -> Entry {
        guard try reader.u32() == centralHeaderSignature else {
            throw DroptraceError("zip central directory is damaged (bad record signature at byte \(reader.position - 4) of the directory)", path: path)
        }
        try reader.skip(4)
        let flags = Int(try reader.u16())
        let method = Int(try reader.u16())
        let modificationTime = Int(try reader.u16())
        try reader.skip(6)
        var compressedSize = Int(try reader.u32())
        var size = Int(try reader.u32())
        let nameLength = Int(try reader.u16())
        let extraLength = Int(try reader.u16())
        let commentLength = Int(try reader.u16())
        let disk = Int(try reader.u16())
        try reader.skip(6)
        var localHeaderOffset = Int(try reader.u32())
        let name = try reader.string(nameLength)
        // miniz's checks of the 32-bit fields, before any ZIP64 extra field: a stored entry (it
        // reads method and time as one 32-bit zero) has one size, data has a compressed size,
        // and the data ends inside the file.
        if compressedSize != 0xFFFF_FFFF && size != 0xFFFF_FFFF,
           (method == 0 && modificationTime == 0 && size != compressedSize) || (size != 0 && compressedSize == 0) {
            throw DroptraceError(
                "zip entry \(name.forErrorMessage) declares \(compressedSize) bytes stored for \(size) bytes of data; the file is damaged",
                path: path)
        }
        if compressedSize != 0xFFFF_FFFF, localHeaderOffset + 30 + compressedSize > fileSize {
            throw DroptraceError(
                "zip entry \(name.forErrorMessage) (\(compressedSize) bytes, its header at byte \(localHeaderOffset)) ends past the end of "
                    + "the file of \(fileSize) bytes; the file is truncated or damaged", path: path)
        }
        // miniz takes an entry's disk number as the archive's or 1, and refuses others as multi-disk.
        guard disk != 0xFFFF, disk == archiveDisk || disk == 1 else {
            throw DroptraceError(
                "zip entry \(name.forErrorMessage) lies on disk \(disk): the archive spans several disks, which torch.load does not read; "
                    + "the file is damaged", path: path)
        }
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
        // No file is that large; the bound keeps every sum of these in range.
        let limit = Int.max / 4
        guard (0...limit).contains(size), (0...limit).contains(compressedSize), (0...limit).contains(localHeaderOffset) else {
            throw DroptraceError("zip entry \(name.forErrorMessage) has sizes or offsets out of range", path: path)
        }
        return Entry(
            name: name, method: method, flags: flags, compressedSize: compressedSize, size: size,
            localHeaderOffset: localHeaderOffset)
    }

    private static func dataStart(of entry: Entry, in file: RegularFile) throws -> Int {
        let offset = entry.localHeaderOffset
        guard offset <= file.size - 30 else {
            throw DroptraceError(
                "file is truncated: zip entry \(entry.name.forErrorMessage) starts at byte \(offset) but the file has \(file.size) bytes",
                path: file.path)
        }
        let header = try file.bytes(30, at: offset)
        var reader = ByteReader(header, at: 0, end: 30, path: file.path, what: "zip local header")
        guard try reader.u32() == localHeaderSignature else {
            throw DroptraceError("zip local header of entry \(entry.name.forErrorMessage) at byte \(offset) is damaged", path: file.path)
        }
        try reader.skip(22)
        let nameLength = Int(try reader.u16())
        let extraLength = Int(try reader.u16())
        return offset + 30 + nameLength + extraLength
    }
}

/// Little-endian reads from bytes in memory, each checked against its end.
struct ByteReader {
    let bytes: [UInt8]
    var position: Int
    let end: Int
    let path: String
    /// What is being read, for the truncation error.
    let what: String

    init(_ bytes: [UInt8], at position: Int, end: Int, path: String, what: String) {
        self.bytes = bytes
        self.position = position
        self.end = min(end, bytes.count)
        self.path = path
        self.what = what
    }

    mutating func need(_ count: Int) throws {
        guard count >= 0, position >= 0, position <= end, count <= end - position else {
            throw DroptraceError("\(what) ends early: needs \(count) more bytes at byte \(position)", path: path)
        }
    }

    mutating func skip(_ count: Int) throws {
        try need(count)
        position += count
    }

    private mutating func load<T: FixedWidthInteger>(_: T.Type) throws -> T {
        try need(MemoryLayout<T>.size)
        defer { position += MemoryLayout<T>.size }
        let at = position
        return bytes.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: T.self)) }
    }

    mutating func u8() throws -> UInt8 { try load(UInt8.self) }
    mutating func u16() throws -> UInt16 { try load(UInt16.self) }
    mutating func u32() throws -> UInt32 { try load(UInt32.self) }
    mutating func u64() throws -> UInt64 { try load(UInt64.self) }

    /// A 64-bit length or offset; values beyond Int's range read as -1 so the caller rejects them.
    mutating func int64() throws -> Int {
        let value = try u64()
        return value > UInt64(Int.max) ? -1 : Int(value)
    }

    mutating func raw(_ count: Int) throws -> ArraySlice<UInt8> {
        try need(count)
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    /// `count` bytes of UTF-8 text, refused when they are not UTF-8: Python
    /// decodes a pickle's strings and torch an archive's names as UTF-8 and
    /// fails on anything else, so replacing bad bytes would read a name that
    /// torch never reads.
    mutating func string(_ count: Int) throws -> String {
        let start = position
        guard let text = String(validating: try raw(count), as: UTF8.self) else {
            throw DroptraceError("\(what) holds a string that is not UTF-8 at byte \(start)", path: path)
        }
        return text
    }
}
