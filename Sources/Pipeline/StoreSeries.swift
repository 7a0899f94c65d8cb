import DroptraceSupport
import Foundation
import ScoreStore

extension TraceOptions.Checkpoints {
    /// The directory of the series, as the store records it
    /// (`series_directory`): absolute, symbolic links resolved, so a
    /// `runs/latest` link moved to a new run names that run. For a list of
    /// checkpoints, the deepest directory holding them all.
    public var seriesDirectory: String {
        switch self {
        case .series(let directory):
            return Self.canonical(directory)
        case .list(let checkpoints):
            let parents = checkpoints.map { Self.canonical($0).split(separator: "/", omittingEmptySubsequences: true).dropLast() }
            guard var common = parents.first.map(Array.init) else { return "/" }
            for parent in parents.dropFirst() {
                common = Array(zip(common, parent).prefix { $0 == $1 }.map(\.0))
            }
            return "/" + common.joined(separator: "/")
        }
    }

    private static func canonical(_ url: URL) -> String {
        url.resolvingSymlinksInPath().standardizedFileURL.path
    }
}

extension ScoreFile {
    /// Refuses to continue this store with the checkpoints `found` in
    /// `seriesDirectory` when it holds another run's rows: two runs in one
    /// store would be read as one training run, their steps interleaved and
    /// a checkpoint of the same name taken for a replacement. The store is
    /// this series' when it records no directory (written before it was
    /// recorded, or empty), the same directory, or — a series moved or
    /// listed from elsewhere — one of `found` is a stored row's checkpoint,
    /// same name and same files (its fingerprint).
    /// - Returns: whether the series moved (the store records another
    ///   directory for it), to be said in the log.
    /// - Throws: `DroptraceError` naming the store, both series and the ways on.
    public func checkContinued(
        bySeriesIn seriesDirectory: String, found: [DiscoveredCheckpoint], store path: String
    ) throws -> Bool {
        guard let recorded = metadata.seriesDirectory, recorded != seriesDirectory, !rows.isEmpty else { return false }
        let fingerprints = Dictionary(rows.map { ($0.name, $0.fingerprint) }, uniquingKeysWith: { _, last in last })
        if found.contains(where: { checkpoint in fingerprints[checkpoint.name].map(checkpoint.isScored(asFingerprint:)) ?? false }) {
            return true
        }
        throw DroptraceError(
            "holds the rows of the series in \(recorded) (\(rows.count) checkpoint\(rows.count == 1 ? "" : "s")), and none of the checkpoints found in "
                + "\(seriesDirectory) is one of them: it is another run; use another output directory, or pass --force "
                + "to rescore every checkpoint of this one in its place (the other run's rows are dropped)",
            path: path)
    }
}
