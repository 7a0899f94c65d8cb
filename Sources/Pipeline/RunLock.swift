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
    private let directory: URL

    /// Thrown when another process holds the lock.
    public struct Held: Error, CustomStringConvertible {
        public let path: String
        public let holder: String
        public var description: String {
            "\(path): another droptrace run holds the lock\(holder.isEmpty ? "" : " (\(holder))"); try again when it has finished"
        }
    }

    /// The lock of `directory` when it is an output directory (it holds a
    /// lock file), for a command that writes into it beside the runs that
    /// own it; nil elsewhere, where no lock file is created (a checkpoint's
    /// directory, the user's own).
    /// - Throws: as `init(directory:)`; `Held` while a run holds it.
    public static func ofOutputDirectory(_ directory: URL) throws -> RunLock? {
        FileManager.default.fileExists(atPath: directory.appendingPathComponent(fileName).path)
            ? try RunLock(directory: directory) : nil
    }

    /// Refuses the file system's root (or a link to it) as an output directory.
    public static func checkNotRoot(_ directory: URL) throws {
        guard ResolvedPath.of(directory) != "/" else {
            throw DroptraceError("is the file system's root: choose a directory for the output", path: directory.path)
        }
    }

    /// Creates `directory` if needed and takes its lock. The file system's
    /// root is never an output directory (a mistyped `--output /` would
    /// write there).
    /// - Throws: `Held` when another process holds it; `DroptraceError` when
    ///   `directory` is the root, or the lock file is a symbolic link, not a
    ///   regular file, or cannot be opened (nothing is followed or truncated then).
    public init(directory: URL) throws {
        try Self.checkNotRoot(directory)
        self.directory = directory
        let handle = try DirectoryHandle.create(at: directory.path)
        descriptor = try handle.openRegularFile(Self.fileName)
        var locked = flock(descriptor, LOCK_EX | LOCK_NB)
        while locked != 0 && errno == EINTR { locked = flock(descriptor, LOCK_EX | LOCK_NB) }
        guard locked == 0 else {
            let failure = errno
            let holder = Self.contents(of: descriptor)
            close(descriptor)
            guard failure == EWOULDBLOCK else {
                // ENOSYS, ENOLCK, EOPNOTSUPP: a file system without flock (Lustre mounted without it, NFS
                // without a lock manager), where no run could ever tell whether another is writing.
                throw DroptraceError(
                    "cannot lock \(Self.fileName): \(String(cString: strerror(failure))) (the file system does not "
                        + "support flock); use an output directory on a file system that does", path: directory.path)
            }
            throw Held(path: directory.path, holder: SystemError.oneLine(holder))
        }
        // Who holds it, for the message a second run prints.
        let note = "pid \(getpid()) since \(ISO8601DateFormatter().string(from: Date()))\n"
        ftruncate(descriptor, 0)
        _ = note.withCString { pwrite(descriptor, $0, strlen($0), 0) }
    }

    /// Throws unless the lock file in the directory is still the one held:
    /// an output directory removed and made again meanwhile (by hand, or by
    /// another run after it) is not this run's to write, as its lock is not.
    /// - Throws: `DroptraceError` naming the directory.
    public func checkStillHeld() throws {
        var held = stat(), there = stat()
        let path = directory.appendingPathComponent(Self.fileName).path
        guard fstat(descriptor, &held) == 0, lstat(path, &there) == 0,
              held.st_dev == there.st_dev, held.st_ino == there.st_ino else {
            throw DroptraceError(
                "was removed or replaced while this run worked on it, its lock with it; nothing more of this run is "
                    + "written there: run again", path: directory.path)
        }
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
