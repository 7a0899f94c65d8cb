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

    public init(directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent(Self.fileName).path
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw DroptraceError("cannot open lock file: \(String(cString: strerror(errno)))", path: path)
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: path, encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
            close(descriptor)
            throw Held(path: directory.path, holder: holder)
        }
        // Who holds it, for the message a second run prints.
        let note = "pid \(getpid()) since \(ISO8601DateFormatter().string(from: Date()))\n"
        ftruncate(descriptor, 0)
        _ = note.withCString { write(descriptor, $0, strlen($0)) }
    }

    deinit {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
