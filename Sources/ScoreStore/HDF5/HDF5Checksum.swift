import Crypto
import DroptraceSupport
import Foundation

/// A checksum over every file droptrace writes, kept in HDF5's user block:
/// the first 512 bytes, before the superblock, which HDF5 readers (h5py,
/// pandas, h5dump) skip. It holds
///
///     droptrace store\n
///     sha256 <64 hex digits>\n
///     bytes <length of the rest>\n
///
/// then zeros. A damaged store (a flipped bit, a bad copy) is refused with
/// one line before libhdf5 parses it: libhdf5 trusts its own metadata and can
/// crash on it, or hand back garbled names. Files with HDF5's signature at
/// byte 0 (stores from before the checksum) are read as before.
enum HDF5Checksum {
    static let userBlockSize = 512
    static let magic = Array("droptrace store\n".utf8)

    /// The file for `image`, the image of a file created with
    /// `userBlockSize` bytes reserved (`H5Fget_file_image` leaves the user
    /// block out): the filled user block, then the image.
    static func sealed(_ image: [UInt8]) -> [UInt8] {
        var file = userBlock(for: image)
        file.reserveCapacity(userBlockSize + image.count)
        file += image
        return file
    }

    /// The filled user block for the bytes that follow it.
    private static func userBlock(for body: some DataProtocol) -> [UInt8] {
        let block = magic + Array("sha256 \(hex(SHA256.hash(data: body)))\nbytes \(body.count)\n".utf8)
        return block + [UInt8](repeating: 0, count: userBlockSize - block.count)
    }

    /// A SHA-256 digest as 64 lowercase hex digits, as droptrace writes hashes.
    static func hex(_ digest: SHA256.Digest) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }

    /// Rewrites the checksum of the file at `path` after a change in place
    /// (`HDF5File.open(writable: true)`); a file without one is left as is.
    static func renew(_ path: String) throws {
        guard let file = FileHandle(forUpdatingAtPath: path),
              let bytes = try? file.readToEnd(), bytes.starts(with: magic), bytes.count >= userBlockSize else { return }
        defer { try? file.close() }
        do {
            try file.seek(toOffset: 0)
            try file.write(contentsOf: userBlock(for: bytes.dropFirst(userBlockSize)))
            try file.synchronize()
        } catch {
            throw DroptraceError("cannot renew the checksum: \(SystemError.summary(of: error))", path: path)
        }
    }

    /// HDF5's format signature: at byte 0 of a file without a user block.
    static let hdf5Signature: [UInt8] = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]

    /// Throws unless the file at `path` matches the checksum in its user
    /// block; returns at once for a file with HDF5's signature at byte 0.
    /// - Throws: `DroptraceError` naming `path`: the file is damaged (or
    ///   has another tool's user block: not a droptrace store).
    static func verify(_ path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { return }
        defer { try? handle.close() }
        // A failed read (EIO) is said to be one, not taken for a short, damaged file.
        func chunk(_ count: Int) throws -> Data {
            do {
                return try handle.read(upToCount: count) ?? Data()
            } catch {
                throw DroptraceError("cannot read the store: \(SystemError.summary(of: error))", path: path, isTransient: true)
            }
        }
        let block = Array(try chunk(userBlockSize))
        func damaged(_ why: String) -> DroptraceError {
            DroptraceError(
                "the store is damaged: \(why); it was changed after it was written (if you changed it yourself, "
                    + "with h5py in append mode say, `droptrace reseal` accepts it as it now is)", path: path)
        }
        if block.starts(with: hdf5Signature) { return }
        guard block.starts(with: magic) else {
            throw damaged("it starts with neither droptrace's checksum block nor HDF5's signature")
        }
        let header = block[magic.count...].prefix { $0 != 0 }
        let text = String(decoding: header, as: UTF8.self)
        let fields = Dictionary(
            text.split(separator: "\n").compactMap { line -> (String, String)? in
                let parts = line.split(separator: " ", maxSplits: 1)
                return parts.count == 2 ? (String(parts[0]), String(parts[1])) : nil
            }, uniquingKeysWith: { first, _ in first })
        guard block.count == userBlockSize, block[header.endIndex...].allSatisfy({ $0 == 0 }),
              let expected = fields["sha256"], expected.count == 64, let length = fields["bytes"].flatMap({ Int($0) })
        else {
            throw damaged("its checksum header is unreadable")
        }
        var hasher = SHA256()
        var read = 0
        while case let data = try chunk(1 << 20), !data.isEmpty {
            hasher.update(data: data)
            read += data.count
        }
        guard read == length else { throw damaged("it holds \(read) bytes after its header, not \(length)") }
        guard hex(hasher.finalize()) == expected else { throw damaged("its SHA-256 does not match the one written with it") }
    }
}
