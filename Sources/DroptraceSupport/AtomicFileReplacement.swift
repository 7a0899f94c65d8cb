import Foundation

/// Replaces a file so that readers (and a crash) only ever see the old file
/// or the complete new one: write a temporary file in the same directory
/// (rename(2) is only atomic within one file system), fsync it, rename it
/// over the target, fsync the directory so the rename itself is durable.
public enum AtomicFileReplacement {
    /// `<dir>/.<name>.tmp-<pid>` (`TemporaryFileName`).
    public static func temporaryPath(for path: String) -> String {
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
    /// replaced: see `ReplaceableOutput`; nil replaces any regular file
    /// (for a file in a directory this run made). `expected` is the version of the
    /// file the caller read (nil: the file as it is when this starts); if
    /// the file is another by the time the new one would replace it, it is
    /// left as it is and the replacement refused. A symbolic link at `path`
    /// is followed: the file it names is replaced, the link kept (as a
    /// shell's `>` writes through one); a link to nothing is refused.
    /// - Returns: the version written.
    @discardableResult
    public static func replace(
        _ path: String, signatures: [[UInt8]]?, expected: FileVersion? = nil, write: (_ temporaryPath: String) throws -> Void
    ) throws -> FileVersion {
        let path = try linkTarget(path)
        let expected = expected ?? .current(path)
        try checkUnchanged(path, expected: expected)
        if let signatures { try ReplaceableOutput.check(path, signatures: signatures) }
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let temporary = temporaryPath(for: path)
        // What runs killed while replacing this file left (score and reseal have no other clean-up).
        (try? DirectoryHandle.create(at: directory))?.removeStaleTemporaryFiles(
            targets: [URL(fileURLWithPath: path).lastPathComponent])
        // A leftover from an earlier run killed with the same pid (unlink
        // removes a link itself, never what it points to).
        unlink(temporary)
        do {
            try write(temporary)
            try flushToDisk(temporary, flags: O_RDONLY | O_NOFOLLOW, reportAs: path)
            try checkUnchanged(path, expected: expected)
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
        return .current(path)
    }

    /// `path`, or the file a symbolic link there names (links followed to
    /// the end): what a write to `path` replaces.
    /// - Throws: `DroptraceError` naming `path` for a link to nothing.
    static func linkTarget(_ path: String) throws -> String {
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFLNK else { return path }
        guard let resolved = realpath(path, nil) else {
            throw DroptraceError("is a symbolic link to nothing (\(lastErrorDescription())): give the output file's own path",
                                 path: path)
        }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    private static func checkUnchanged(_ path: String, expected: FileVersion) throws {
        guard FileVersion.current(path) == expected else {
            let what = expected == .absent ? "appeared" : "was changed or replaced"
            throw DroptraceError(
                "\(what) while this run was working on it, by something other than droptrace; left as it is, and "
                    + "nothing of this run was written over it: run again", path: path)
        }
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
