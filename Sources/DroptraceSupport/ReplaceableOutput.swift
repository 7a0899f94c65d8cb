import Foundation

/// Which existing files an output may replace.
public enum ReplaceableOutput {
    /// Throws unless `path` can take a new output: its directory exists, and
    /// `path` is either free, an empty file, or a regular file (or a link to
    /// one) that starts with one of `signatures`, i.e. an earlier output of
    /// the same format. Anything else (a checkpoint's weights or a calibration file
    /// given as the output by mistake, a directory) is refused, never
    /// replaced. Cheap: commands check their outputs before any work, and the
    /// writers again just before they replace.
    /// - Parameter refusal: why a file that begins otherwise is refused.
    /// - Throws: `DroptraceError` naming `path`.
    public static func check(
        _ path: String, signatures: [[UInt8]],
        refusal: String = "it is not an earlier output (an input given as the output?); choose another path"
    ) throws {
        try TemporaryFileName.checkFits(path)
        _ = try AtomicFileReplacement.linkTarget(path)  // writers follow a link: a link to nothing is refused
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard PathKind.of(directory) == .directory else {
            throw DroptraceError("cannot write: directory \(directory) does not exist", path: path)
        }
        var info = stat()
        guard stat(path, &info) == 0 else {
            if errno == ENOENT { return }
            throw DroptraceError("cannot write: \(SystemError.describe())", path: path)
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            let kind = info.st_mode & S_IFMT == S_IFDIR ? "a directory" : "not a regular file"
            throw DroptraceError("cannot write the output here: it is \(kind)", path: path)
        }
        guard info.st_size > 0 else { return }
        let descriptor = open(path, O_RDONLY | O_NONBLOCK)
        guard descriptor >= 0 else { throw DroptraceError("cannot read it: \(SystemError.describe())", path: path) }
        defer { close(descriptor) }
        let longest = signatures.map(\.count).max() ?? 0
        var leading = [UInt8](repeating: 0, count: longest)
        let count = read(descriptor, &leading, longest)
        guard count >= 0, signatures.contains(where: { leading.prefix(count).starts(with: $0) }) else {
            throw DroptraceError("refusing to replace this file with the output: \(refusal)", path: path)
        }
    }
}
