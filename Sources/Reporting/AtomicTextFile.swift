import Foundation
import DroptraceSupport

/// Writes a file so that readers, and a crash, see either the old file or
/// the complete new one: write `.<name>.tmp-<pid>` next to it, fsync, then
/// rename(2) over the target (atomic within one file system).
enum AtomicTextFile {
    static func write(_ text: String, to url: URL) throws {
        let path = url.path
        let directory = url.deletingLastPathComponent().path
        let temporary = (directory as NSString).appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        unlink(temporary)  // a leftover from a killed run with the same pid
        do {
            try writeAndSync(Array(text.utf8), to: temporary, reportAs: path)
            if rename(temporary, path) != 0 {
                throw DroptraceError("cannot move the new file into place: \(lastError())", path: path)
            }
        } catch {
            unlink(temporary)
            throw error
        }
    }

    /// Makes the renames in `directory` durable.
    static func syncDirectory(_ directory: URL) throws {
        let descriptor = open(directory.path, O_RDONLY | O_DIRECTORY)
        guard descriptor >= 0 else {
            throw DroptraceError("cannot open directory to flush it: \(lastError())", path: directory.path)
        }
        defer { close(descriptor) }
        if fsync(descriptor) != 0 {
            throw DroptraceError("cannot flush directory: \(lastError())", path: directory.path)
        }
    }

    private static func writeAndSync(_ bytes: [UInt8], to temporary: String, reportAs path: String) throws {
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard descriptor >= 0 else {
            throw DroptraceError("cannot create temporary file \(temporary): \(lastError())", path: path)
        }
        defer { close(descriptor) }
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Foundation.write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw DroptraceError("cannot write: \(lastError())", path: path)
            }
            offset += written
        }
        if fsync(descriptor) != 0 {
            throw DroptraceError("cannot flush to disk: \(lastError())", path: path)
        }
    }

    private static func lastError() -> String { String(cString: strerror(errno)) }
}
