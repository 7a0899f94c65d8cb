import CheckpointIO
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
        ResolvedPath.of(url)
    }
}

extension ScoreFile {
    /// Refuses to continue this store with the checkpoints `found` in
    /// `seriesDirectory` when it holds another run's rows: two runs in one
    /// store would be read as one training run, their steps interleaved and
    /// a checkpoint of the same name taken for a replacement. The store is
    /// this series' when it records the same directory, or — a series moved
    /// or listed from elsewhere — when of the checkpoints `found` under
    /// names it holds, at least one and more than half have the files its
    /// rows were scored on (their fingerprints): runs started from one
    /// initial checkpoint share that one and differ in the rest — unless the
    /// recorded directory still holds checkpoints of its rows that `found`
    /// lacks (then the old run is still there, and this is another). A store
    /// that records no directory (written before it was recorded, or
    /// `droptrace score`'s file) is this series' unless none of its rows is
    /// one of `found` by name and none is named by a checkpoint naming rule
    /// (`score` names its row after any directory).
    /// - Returns: whether the series moved (the store records another
    ///   directory for it), to be said in the log.
    /// - Throws: `DroptraceError` naming the store, both series and the ways on.
    public func checkContinued(
        bySeriesIn seriesDirectory: String, found: [DiscoveredCheckpoint], store path: String
    ) throws -> Bool {
        guard !rows.isEmpty, metadata.seriesDirectory != seriesDirectory else { return false }
        let fingerprints = Dictionary(rows.map { ($0.name, $0.fingerprint) }, uniquingKeysWith: { _, last in last })
        let common = found.filter { fingerprints[$0.name] != nil }
        let ways = "use another output directory, or pass --force to rescore every checkpoint of this one in its place "
            + "(the other run's rows are dropped)"
        guard let recorded = metadata.seriesDirectory else {
            // Traces from before the directory was recorded name every row by a naming rule, and go on.
            if !common.isEmpty || rows.contains(where: { CheckpointName.parse($0.name) != nil }) { return false }
            let names = rows.map(\.name).shownInMessage()
            throw DroptraceError(
                "records no series directory (not a trace's store: `droptrace score`'s file?) and holds rows (\(names)) of "
                    + "none of the checkpoints found in \(seriesDirectory); \(ways)", path: path)
        }
        let same = common.filter { $0.isScored(asFingerprint: fingerprints[$0.name]!) }.count
        // A series that moved is no longer where it was: a run still there
        // with checkpoints this series lacks is another run, which shares
        // its first checkpoint(s) (a `runs/latest` link moved to a new run
        // that starts from the old one's initial checkpoint).
        let foundNames = Set(found.map(\.name))
        let stillThere = rows.map(\.name).filter {
            !foundNames.contains($0) && FileManager.default.fileExists(atPath: (recorded as NSString).appendingPathComponent($0))
        }
        if same > 0 && 2 * same > common.count {
            guard !stillThere.isEmpty else { return true }
            let names = stillThere.shownInMessage()
            throw DroptraceError(
                "holds the rows of the series in \(recorded), which is still there with checkpoints (\(names)) that "
                    + "\(seriesDirectory) lacks: it is another run; \(ways)", path: path)
        }
        let finding = same == 0
            ? "none of the checkpoints found in \(seriesDirectory) is one of them"
            : "of the \(common.count) checkpoints found in \(seriesDirectory) under names it holds, \(same) \(same == 1 ? "has" : "have") the files "
                + "it scored (runs from one initial checkpoint share that one)"
        throw DroptraceError(
            "holds the rows of the series in \(recorded) (\(rows.count) checkpoint\(rows.count == 1 ? "" : "s")), and "
                + "\(finding): it is another run; \(ways)", path: path)
    }
}
