import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A regular file opened for reading with `pread`, which notices when the file
/// is changed under it.
///
/// Checkpoints are read while training jobs may still write or replace them, and
/// by cron jobs that must never hang: opening never blocks (a FIFO, device or
/// socket is refused before anything is read), every read is bounds-checked
/// against the size seen at open, and `checkUnchanged()` compares the file's
/// identity (device, inode, size, modification time) with the one at open, so
/// bytes of two versions of a file are never combined: every write moves the
/// modification time. A file replaced by a rename is not a change: the open
/// descriptor keeps reading the complete file that was opened. (The change
/// time is not compared: a hard link, chmod or that rename move it without
/// touching the bytes.)
public final class RegularFile: @unchecked Sendable {
    public let path: String
    /// Bytes, as seen at open.
    public let size: Int
    private let descriptor: Int32
    private let identity: FileIdentity

    /// Opens `path`, refusing anything but a regular file (following symlinks).
    /// Throws `DroptraceError` naming the path when it is missing, unreadable or
    /// not a regular file.
    public init(path: String) throws {
        self.path = path
        // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            throw DroptraceError("cannot open: \(String(cString: strerror(errno)))", path: path)
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw DroptraceError("cannot stat: \(reason)", path: path)
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw DroptraceError("not a regular file (\(Self.kind(info.st_mode))); refusing to read it", path: path)
        }
        descriptor = fd
        size = Int(info.st_size)
        identity = FileIdentity(info)
    }

    deinit { close(descriptor) }

    /// Reads `count` bytes at byte `offset` into `destination`. Throws when the
    /// range lies outside the file as it was at open, or the file is now shorter
    /// (truncated while being read). Call `checkUnchanged()` after the reads
    /// whose bytes must belong together.
    public func read(_ count: Int, at offset: Int, into destination: UnsafeMutableRawPointer) throws {
        guard count >= 0, offset >= 0, offset <= size, count <= size - offset else {
            throw DroptraceError(
                "file is truncated: needs bytes \(offset)..<\(offset.addingReportingOverflow(count).partialValue) but has \(size) bytes",
                path: path)
        }
        var done = 0
        while done < count {
            let got = pread(descriptor, destination + done, count - done, off_t(offset + done))
            if got < 0 {
                if errno == EINTR { continue }
                throw DroptraceError("cannot read: \(String(cString: strerror(errno)))", path: path, isTransient: true)
            }
            guard got > 0 else {
                throw DroptraceError("file changed while being read (it is now shorter than \(size) bytes)", path: path)
            }
            done += got
        }
    }

    /// `count` bytes at `offset` (see `read(_:at:into:)`).
    public func bytes(_ count: Int, at offset: Int) throws -> [UInt8] {
        try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { try read(count, at: offset, into: buffer.baseAddress!) }
            initialized = count
        }
    }

    /// Throws "file changed while being read" when the file's size,
    /// modification time or inode differ from those at open: bytes read before this call may mix
    /// two versions of the file.
    public func checkUnchanged() throws {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw DroptraceError("cannot stat: \(String(cString: strerror(errno)))", path: path)
        }
        guard FileIdentity(info) == identity else {
            throw DroptraceError(
                "file changed while being read (now \(info.st_size) bytes, was \(size)); run again once it is written", path: path)
        }
    }

    /// Copies the file's bytes to a new file at `destination` (mode 0644,
    /// fsynced; nothing may exist there, a link included), a mebibyte at a
    /// time. Reading follows what `init(path:)` opened: the file a symbolic
    /// link points to, never a FIFO or device.
    /// - Throws: `DroptraceError` naming this file when it cannot be read or
    ///   changed meanwhile, `destination` when it cannot be written (the
    ///   partial copy is removed).
    public func copy(to destination: String) throws {
        let output = open(destination, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard output >= 0 else { throw DroptraceError("cannot create: \(SystemError.describe())", path: destination) }
        do {
            defer { close(output) }
            let chunk = 1 << 20
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 16)
            defer { buffer.deallocate() }
            for offset in stride(from: 0, to: size, by: chunk) {
                let count = min(chunk, size - offset)
                try read(count, at: offset, into: buffer)
                try FileOutput.writeAll(UnsafeRawBufferPointer(start: buffer, count: count), to: output, path: destination)
            }
            try checkUnchanged()
            try FileOutput.sync(output, path: destination)
        } catch {
            unlink(destination)
            throw error
        }
    }

    /// The whole file, refused when larger than `limit` bytes or not a regular
    /// file — for JSON companions (config.json, tokenizer.json, shard indexes),
    /// which `FileManager.contents(atPath:)` would read from a FIFO forever.
    public static func contents(path: String, limit: Int = 1 << 30) throws -> Data {
        let file = try RegularFile(path: path)
        guard file.size <= limit else {
            throw DroptraceError("file of \(file.size) bytes is larger than the \(limit) bytes droptrace reads", path: path)
        }
        let bytes = try file.bytes(file.size, at: 0)
        try file.checkUnchanged()
        return Data(bytes)
    }

    private static func kind(_ mode: mode_t) -> String {
        switch mode & S_IFMT {
        case S_IFIFO: "a FIFO"
        case S_IFCHR: "a character device"
        case S_IFBLK: "a block device"
        case S_IFSOCK: "a socket"
        case S_IFDIR: "a directory"
        default: "not a regular file"
        }
    }
}

extension Unicode.UTF8 {
    /// The UTF-8 byte order mark, which editors on Windows write at a file's
    /// start and JSON readers skip there.
    public static let byteOrderMark: [UInt8] = [0xEF, 0xBB, 0xBF]
}
