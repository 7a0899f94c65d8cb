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
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: target.path, isDirectory: &isDirectory) else {
            throw DroptraceError("no such file or directory", path: target.path)
        }
        let named = isDirectory.boolValue ? target.appendingPathComponent(ScoreFile.outputFileName) : target
        guard FileManager.default.fileExists(atPath: named.path) else {
            throw DroptraceError("no \(ScoreFile.outputFileName) here to reseal", path: target.path)
        }
        // Not a lock file created in any directory holding a store (a checkpoint's, the user's own).
        let directory = named.deletingLastPathComponent()
        let isOutputDirectory = FileManager.default.fileExists(atPath: directory.appendingPathComponent(RunLock.fileName).path)
        let lock = isOutputDirectory ? try RunLock(directory: directory) : nil
        defer { withExtendedLifetime(lock) {} }
        let store = named.resolvingSymlinksInPath()
        let resealed = try ScoreFile.reseal(store) { copy in _ = try ReportWriter.load(store: copy) }
        return (store, resealed)
    }
}
