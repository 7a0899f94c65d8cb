import DroptraceSupport
import Foundation
import Reporting
import ScoreStore

/// `droptrace reseal`: a store changed outside droptrace accepted as it now is.
public enum StoreReseal {
    /// Reseals `target`: an output directory's scores.h5 or a store file.
    /// A store in an output directory (one holding `.droptrace.lock`) is
    /// resealed under that directory's lock, whichever way it is named; a
    /// symbolic link is followed to the store it names. The resealed store
    /// must read as `report` reads it (rows, analysis, perplexities, task
    /// accuracy); its permissions are kept.
    /// - Returns: the store's path and whether it had a checksum to renew.
    /// - Throws: `RunLock.Held`; `DroptraceError` naming the file.
    public static func run(_ target: URL) throws -> (store: URL, resealed: Bool) {
        let kind = PathKind.of(target)
        guard kind != .missing else { throw DroptraceError("no such file or directory", path: target.path) }
        let named = kind == .directory ? target.appendingPathComponent(ScoreFile.outputFileName) : target
        guard FileManager.default.fileExists(atPath: named.path) else {
            throw DroptraceError("no \(ScoreFile.outputFileName) here to reseal", path: target.path)
        }
        // The lock of the directory the store is in, found after following
        // links (a link named elsewhere reseals the same store a run of that
        // directory rewrites), and of the directory it was named in when that
        // is an output directory too. No lock file is created in any other
        // directory holding a store (a checkpoint's, the user's own).
        let store = named.resolvingSymlinksInPath()
        var directories = [store.deletingLastPathComponent().path]
        if named.deletingLastPathComponent().path != directories[0] { directories.append(named.deletingLastPathComponent().path) }
        let locks = try directories.compactMap { try RunLock.ofOutputDirectory(URL(fileURLWithPath: $0)) }
        defer { withExtendedLifetime(locks) {} }
        let resealed = try ScoreFile.reseal(store) { copy in
            let report = try ReportWriter.load(store: copy)
            try report.analysis.requireRecomputed(from: report.scoreFile.rows, path: store.path)
        }
        return (store, resealed)
    }
}
