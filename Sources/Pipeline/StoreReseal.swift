import DroptraceSupport
import Foundation
import Reporting
import ScoreStore

/// `droptrace reseal`: a store changed outside droptrace accepted as it now is.
public enum StoreReseal {
    /// Reseals `target`: an output directory (its scores.h5, under its
    /// lock) or a store file. The resealed store must read as `report` reads
    /// it (rows, analysis, perplexities, task accuracy).
    /// - Returns: the store's path and whether it had a checksum to renew.
    /// - Throws: `RunLock.Held`; `DroptraceError` naming the file.
    public static func run(_ target: URL) throws -> (store: URL, resealed: Bool) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: target.path, isDirectory: &isDirectory) else {
            throw DroptraceError("no such file or directory", path: target.path)
        }
        let lock = isDirectory.boolValue ? try RunLock(directory: target) : nil
        defer { withExtendedLifetime(lock) {} }
        let store = isDirectory.boolValue ? target.appendingPathComponent(ScoreFile.outputFileName) : target
        let resealed = try ScoreFile.reseal(store) { copy in _ = try ReportWriter.load(store: copy) }
        return (store, resealed)
    }
}
