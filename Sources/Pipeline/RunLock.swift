import DroptraceSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive lock on an output directory, so two runs (say, overlapping
/// cron jobs) never write the same store. The kernel releases a flock when
/// its holder dies, even by kill -9, so a crash never leaves a stale lock.
public final class RunLock {
    public static let fileName = ".droptrace.lock"
    private let descriptor: Int32

    /// Thrown when another process holds the lock.
    public struct Held: Error, CustomStringConvertible {
        public let path: String
        public let holder: String
        public var description: String {
            "\(path): another droptrace run holds the lock\(holder.isEmpty ? "" : " (\(holder))"); try again when it has finished"
        }
    }

    /// Creates `directory` if needed and takes its lock. The file system's
    /// root is never an output directory (a mistyped `--output /` would
    /// write there).
    /// - Throws: `Held` when another process holds it; `DroptraceError` when
    ///   `directory` is the root, or the lock file is a symbolic link, not a
    ///   regular file, or cannot be opened (nothing is followed or truncated then).
    public init(directory: URL) throws {
        guard ResolvedPath.of(directory) != "/" else {
            throw DroptraceError("is the file system's root: choose a directory for the output", path: directory.path)
        }
        let handle = try DirectoryHandle.create(at: directory.path)
        descriptor = try handle.openRegularFile(Self.fileName)
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = Self.contents(of: descriptor)
            close(descriptor)
            throw Held(path: directory.path, holder: SystemError.oneLine(holder))
        }
        // Who holds it, for the message a second run prints.
        let note = "pid \(getpid()) since \(ISO8601DateFormatter().string(from: Date()))\n"
        ftruncate(descriptor, 0)
        _ = note.withCString { pwrite(descriptor, $0, strlen($0), 0) }
    }

    /// The holder's note: the first bytes of the lock file, read through the
    /// descriptor already checked to be a regular file.
    private static func contents(of descriptor: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 200)
        let count = pread(descriptor, &buffer, buffer.count, 0)
        return String(decoding: buffer.prefix(max(count, 0)), as: UTF8.self)
    }

    deinit {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
