import Foundation
import DroptraceSupport

/// Replaces a file so that readers (and a crash) only ever see the old file
/// or the complete new one: write a temporary file in the same directory
/// (rename(2) is only atomic within one file system), fsync it, rename it
/// over the target, fsync the directory so the rename itself is durable.
enum AtomicFileReplacement {
    /// `<dir>/.<name>.tmp-<pid>` (`TemporaryFileName`).
    static func temporaryPath(for path: String) -> String {
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        return (directory as NSString).appendingPathComponent(TemporaryFileName.forTarget(url.lastPathComponent))
    }

    /// Calls `write(temporaryPath)` to produce the new file, then moves it
    /// into place. `write` must create the file exclusively (O_EXCL, as
    /// `HDF5File.create` does), so a link planted under the temporary name
    /// is refused rather than followed. Errors that name the temporary file
    /// are reported against `path`, which is the file the user asked for.
    /// `signatures` (how files of the format written begin) guard what is
    /// replaced: see `ReplaceableOutput`.
    static func replace(_ path: String, signatures: [[UInt8]], write: (_ temporaryPath: String) throws -> Void) throws {
        try ReplaceableOutput.check(path, signatures: signatures)
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let temporary = temporaryPath(for: path)
        // A leftover from an earlier run killed with the same pid (unlink
        // removes a link itself, never what it points to).
        unlink(temporary)
        do {
            try write(temporary)
            try flushToDisk(temporary, flags: O_RDONLY | O_NOFOLLOW, reportAs: path)
            if rename(temporary, path) != 0 {
                throw DroptraceError("cannot move the new file into place: \(lastErrorDescription())", path: path)
            }
        } catch {
            unlink(temporary)
            if let error = error as? DroptraceError, error.path == temporary {
                throw DroptraceError(error.message, path: path)
            }
            throw error
        }
        try flushToDisk(directory, flags: O_RDONLY | O_DIRECTORY, reportAs: path)
    }

    private static func flushToDisk(_ path: String, flags: Int32, reportAs reportedPath: String) throws {
        let descriptor = open(path, flags)
        guard descriptor >= 0 else {
            throw DroptraceError("cannot open \(path) to flush it to disk: \(lastErrorDescription())",
                                 path: reportedPath)
        }
        defer { close(descriptor) }
        if fsync(descriptor) != 0 {
            throw DroptraceError("cannot flush \(path) to disk: \(lastErrorDescription())", path: reportedPath)
        }
    }

    private static func lastErrorDescription() -> String {
        SystemError.describe()
    }
}
