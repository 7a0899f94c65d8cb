import DroptraceSupport
import Foundation
import Reporting
import ScoreStore

/// `droptrace report`: the report from the store alone.
public enum ReportRebuild {
    /// Takes OUT_DIR's lock and rewrites report.md and figures/ from
    /// OUT_DIR/scores.h5: byte for byte what `trace` wrote from the same
    /// store (with `title` nil).
    /// - Parameter title: overrides the stored title for this report only.
    /// - Returns: the URL of report.md.
    /// - Throws: `RunLock.Held`; `DroptraceError` naming the file.
    public static func run(outDir: URL, title: String?) throws -> URL {
        // A mistyped directory is not created (with a lock file in it) only to be found empty.
        switch PathKind.of(outDir) {
        case .missing: throw DroptraceError("no such directory; run `droptrace trace` first", path: outDir.path)
        case .other:
            let hint = outDir.lastPathComponent == ScoreFile.outputFileName ? ": give the directory that holds it" : ""
            throw DroptraceError("not a directory\(hint)", path: outDir.path)
        case .directory: break
        }
        // Nor is a lock file left in a directory holding no store (a checkpoint's, say).
        try RunLock.checkNotRoot(outDir)
        let storeURL = outDir.appendingPathComponent(ScoreFile.outputFileName)
        guard FileManager.default.fileExists(atPath: storeURL.path) else {
            throw DroptraceError("no scores.h5 here; run `droptrace trace` first", path: outDir.path)
        }
        let lock = try RunLock(directory: outDir)
        defer { withExtendedLifetime(lock) {} }
        ReportWriter.removeStaleTemporaryFiles(in: outDir)
        return try write(outDir: outDir, storeURL: storeURL, title: title)
    }

    /// The report of the store at `storeURL`, written into `outDir`; the
    /// caller holds the lock.
    static func write(outDir: URL, storeURL: URL, title: String?) throws -> URL {
        try ReportWriter.load(store: storeURL, title: title).write(to: outDir)
    }
}
