import Analysis
import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Logging
import Reporting
import Scoring
import ScoreStore

/// Reports progress of a trace to whoever is watching (a terminal bar).
public protocol TraceProgress: AnyObject {
    func checkpointStarted(_ index: Int, of total: Int, name: String)
    func layerFinished(_ done: Int, of total: Int)
    func finished()
}

/// What a trace run did.
public struct TraceSummary: Sendable {
    public var scored: [String] = []
    public var reused: [String] = []
    public var incomplete: [(name: String, reason: String)] = []
    /// Checkpoints `slurm finalize` left for later: shard tasks of theirs
    /// are still queued under a later submission, or no submit covered them
    /// yet (a later finalize merges them).
    public var queued: [String] = []
    public var failed: [(name: String, error: String)] = []
    public var report: URL?
}

/// The series pipeline: discover → score → analyze → report, each stage
/// persisting what it produced. The store is rewritten atomically after
/// every newly scored checkpoint, so a run killed at any moment keeps all
/// checkpoints scored before it.
public final class TraceRun {
    public let options: TraceOptions
    let log: Logger
    /// Perplexities carried from run to run (and through every rewrite of the store).
    var evaluation = DropEvaluation()
    /// Task accuracy, carried the same way.
    var taskAccuracy = TaskAccuracyRecord()
    /// The checkpoints the last run failed on or left for later: the stored
    /// record until this run's replaces it as it finishes.
    private var unscored = UnscoredCheckpoints()
    /// Whether a rewrite after one checkpoint also analyses.
    private var pacing = AnalysisPacing()
    /// What a user added to the store when the run began: the first rewrite
    /// keeps the store as it was beside it (`StoreAside.keepCopy`).
    private var additions: StoreAdditions?
    /// The store as this run last read or wrote it: a store another program
    /// put in its place meanwhile is never written over.
    private var storeVersion: FileVersion?
    /// The output directory's lock while `update` runs: every write checks
    /// the directory is still the one locked.
    private var lock: RunLock?

    public init(options: TraceOptions, log: Logger) {
        self.options = options
        self.log = log
    }

    public func run(progress: TraceProgress? = nil) throws -> TraceSummary {
        try update(force: options.force) { checkpoint, position, calibration, _ in
            progress?.checkpointStarted(position.index + 1, of: position.count, name: checkpoint.name)
            log.info("scoring \(checkpoint.name) (step \(checkpoint.step)) [\(position.index + 1)/\(position.count)]")
            let scored = try CheckpointScoring.run(
                checkpoint: checkpoint.directory, calibration: options.calibration,
                warn: { _ in }, progress: { progress?.layerFinished($0, of: $1) })
            try calibration.check(scored, checkpoint: checkpoint)
            let row = CheckpointRow(
                scores: scored.scores, name: checkpoint.name, step: checkpoint.step, tokens: checkpoint.tokens,
                fingerprint: checkpoint.fingerprint)
            return (row, ScoreFileMetadata(scored, precision: options.precision))
        } afterAll: {
            progress?.finished()
        }
    }

    /// The skeleton of `run` and `slurm finalize`: lock the output directory,
    /// discover, open the store and fix the calibration tokens; then
    /// `produce` the row of every checkpoint the store lacks (or that was
    /// replaced since), storing each at once (a `DroptraceError` fails that
    /// checkpoint only); then analyze, evaluate and report.
    /// - Parameters:
    ///   - force: rescore every checkpoint on disk; the store's other rows are dropped.
    ///   - leave: whether a checkpoint's row is left for later (shard tasks of
    ///     theirs are still queued, or no submit covered it yet): neither
    ///     produced nor counted as failed; a row of its replaced files is removed.
    ///   - whenStored: called for every checkpoint whose current row the
    ///     store holds at the end (reused or produced now).
    func update(
        force: Bool,
        leaving leave: (DiscoveredCheckpoint) -> Bool = { _ in false },
        produce: (
            _ checkpoint: DiscoveredCheckpoint, _ position: (index: Int, count: Int), _ calibration: CalibrationPlan,
            _ store: ScoreFile?
        ) throws -> (row: CheckpointRow, metadata: ScoreFileMetadata),
        whenStored: (DiscoveredCheckpoint) -> Void = { _ in },
        afterAll: () -> Void = {}
    ) throws -> TraceSummary {
        // What can be checked from the inputs alone is, before the output directory is created.
        guard ScoreFileMetadata.canRecord(seriesDirectory: ResolvedPath.of(options.output)) else {
            throw DroptraceError(
                "the output directory's path holds a line break or control character (or is over 4096 bytes), which every "
                    + "message naming its files would split: choose another", path: options.output.path)
        }
        // The store is written through a temporary name; figures/<name>.svg's need up to 64 bytes more.
        try TemporaryFileName.checkFits(options.storeURL.path, room: 64)
        try checkOutputOutsideCheckpoints()
        if case .series(let directory) = options.checkpoints, !FileManager.default.fileExists(atPath: directory.path) {
            throw DroptraceError("series directory not found", path: directory.path)
        }
        let seriesDirectory = options.checkpoints.seriesDirectory
        guard ScoreFileMetadata.canRecord(seriesDirectory: seriesDirectory) else {
            throw DroptraceError(
                "the series directory's path holds a line break or control character (or is over 4096 bytes), which "
                    + "the store cannot record (series_directory): rename it", path: seriesDirectory)
        }
        for file in [options.calibration.url] + (options.evaluation.map { [$0.url] } ?? []) {
            _ = try RegularFile(path: file.path)
        }
        if let tokenizer = options.calibration.tokenizer { try CheckpointTokenizer.checkDirectory(tokenizer) }
        let tasks = options.tasks.isEmpty ? nil : try TaskEvaluation(
            requests: options.tasks, numFewshot: options.numFewshot, tokenizer: options.calibration.tokenizer)
        // A cron run before training's first save: nothing to write, so no output directory either; nor
        // for a run that cannot start (no checkpoint reads the calibration, a drop-k beyond the layers).
        var plan: CalibrationPlan?
        if !FileManager.default.fileExists(atPath: options.output.path) {
            let found = try CheckpointDiscovery.find(options.checkpoints, settleTime: options.settleTime)
            if found.ready.isEmpty {
                var summary = TraceSummary()
                report(found, into: &summary)
                log.warning("no finished checkpoints yet; nothing to do")
                return summary
            }
            plan = try CalibrationPlan(source: options.calibration, evaluation: options.evaluation, checkpoints: found.ready, log: log)
            try checkDropK(against: plan!)
        }

        lock = try RunLock(directory: options.output)
        defer { lock = nil }
        var summary = TraceSummary()
        removeStaleTemporaryFiles()
        try ReportWriter.checkReplaceable(in: options.output)
        let discovered = try CheckpointDiscovery.find(options.checkpoints, settleTime: options.settleTime)

        // Score what the store does not have yet.
        var store: ScoreFile?
        (store, evaluation, taskAccuracy, additions) = try existingStore()
        report(discovered, into: &summary, stored: Set(store?.rows.map(\.name) ?? []))
        // Before anything is computed: even perplexities would come out in the other precision.
        if let existing = store, !force {
            try existing.metadata.checkContinued(in: options.precision, store: options.storeURL.path)
            if try existing.checkContinued(bySeriesIn: seriesDirectory, found: discovered.ready, store: options.storeURL.path) {
                log.info("the series was in \(existing.metadata.seriesDirectory ?? ""); the store now records \(seriesDirectory)")
            }
            // Recorded even when nothing new is scored (a moved series, a store from before it was recorded).
            store?.metadata.seriesDirectory = seriesDirectory
            // The store's layer count is the series' (a checkpoint of another fails on its own).
            if let dropK = options.dropK {
                try SeriesAnalysis.checkDropK(
                    dropK, layers: existing.metadata.numLayers, path: options.storeURL.path, setting: options.dropKSetting)
            }
        }
        // A checkpoint that now fails by its own files (replaced by unreadable ones) keeps no row of the old
        // files; one refused as a duplicate of another (listed twice, a second name) is not that one's row.
        for name in discovered.unreadable.sorted() where !discovered.ready.contains(where: { $0.name == name }) {
            store = try withoutStaleRow(name, in: store)
        }
        guard !discovered.ready.isEmpty else {
            if store == nil {
                log.warning("no finished checkpoints yet; nothing to do")
                return summary
            }
            return try finish(store!, onDisk: [], tasks: tasks, summary: summary)
        }
        let calibration = try plan ?? CalibrationPlan(
            source: options.calibration, evaluation: options.evaluation, checkpoints: discovered.ready, log: log)
        if store == nil || force { try checkDropK(against: calibration) }
        if let existing = store, !force {
            try checkCompatible(existing, with: calibration)
        }
        var lacking = discovered.ready.filter { needsScoring($0, store: force ? nil : store) }
        if let existing = store, !force {
            let clashes = Self.placeClashes(lacking, with: existing.rows)
            for (checkpoint, error) in clashes {
                log.error("\(error.description)")
                summary.failed.append((checkpoint.name, error.description))
            }
            lacking.removeAll { checkpoint in clashes.contains { $0.checkpoint.name == checkpoint.name } }
        }
        let todo = lacking.filter { !leave($0) }
        summary.queued = lacking.filter(leave).map(\.name)
        let rescored = Set(lacking.map(\.name))
        summary.reused = discovered.ready.map(\.name).filter { !rescored.contains($0) }
        if !summary.reused.isEmpty { log.info("\(summary.reused.count) checkpoints already scored") }
        if force, let existing = store {
            let onDisk = Set(discovered.ready.map(\.name))
            let lost = existing.rows.map(\.name).filter { !onDisk.contains($0) }
            if !lost.isEmpty { log.warning("--force: dropping rows of checkpoints no longer on disk: \(lost.joined(separator: ", "))") }
            store = nil
        }

        if !summary.queued.isEmpty {
            log.info("leaving \(summary.queued.joined(separator: ", ")) for later: shard tasks of theirs are still queued, or no submit covered them yet")
            for name in summary.queued { store = try withoutStaleRow(name, in: store) }
        }
        var stored = discovered.ready.filter { !rescored.contains($0.name) }
        // An input's fault (a calibration id beyond the vocabulary) fails every checkpoint alike: said once.
        var said: Set<String> = []
        for (index, checkpoint) in todo.enumerated() {
            do {
                let (row, metadata) = try produce(checkpoint, (index, todo.count), calibration, store)
                store = try storing(row, in: store, metadata: metadata, checkpoint: checkpoint)
                summary.scored.append(checkpoint.name)
                stored.append(checkpoint)
            } catch let error as DroptraceError {
                try lock?.checkStillHeld()  // the output directory lost stops the run, not one checkpoint
                // Deleted or saved again after discovery (`save_total_limit`): as if gone before it, no failure.
                // A row of the files discovery found (rescored for its step or tokens alone) stays, as a deleted
                // checkpoint's does; one saved again waits for a later run, as one still being written.
                guard !checkpoint.changedSinceDiscovery else {
                    if !Self.holdsFiles(of: checkpoint, store) { store = try withoutStaleRow(checkpoint.name, in: store) }
                    log.warning("\(checkpoint.directory.path): removed or changed while this run read it (\(error.message)); not traced in this run")
                    if PathKind.of(checkpoint.directory) == .directory {
                        summary.incomplete.append((checkpoint.name, "it changed while this run read it (\(error.message))"))
                    }
                    continue
                }
                store = try withoutStaleRow(checkpoint.name, in: store)
                if said.insert(error.description).inserted { log.error("\(error.description)") }
                summary.failed.append((checkpoint.name, error.description))
            }
        }
        afterAll()
        stored.forEach(whenStored)
        let onDisk = discovered.ready.filter { !summary.queued.contains($0.name) }
        guard let final = store else {
            guard todo.isEmpty, !summary.queued.isEmpty else {
                throw DroptraceError("no checkpoint could be scored", path: options.output.path)
            }
            log.warning("nothing to merge yet: every checkpoint waits for its queued shard tasks")
            return summary
        }
        return try finish(final, onDisk: onDisk, tasks: tasks, summary: summary)
    }

    /// Says what discovery found, in the log and in `summary` (incomplete
    /// and failed checkpoints).
    /// - Parameter stored: names of the store's rows. A checkpoint among
    ///   them whose weight files are gone is no failure: its weights were
    ///   deleted, and its row is kept as a deleted checkpoint's is.
    func report(_ discovered: CheckpointDiscovery.Result, into summary: inout TraceSummary, stored: Set<String> = []) {
        for warning in discovered.warnings { log.warning("\(warning)") }
        summary.incomplete = discovered.incomplete
        for (name, reason) in discovered.incomplete {
            log.warning("skipping \(name) for now: \(reason); a later run will pick it up")
        }
        for (name, error) in discovered.failed {
            if discovered.weightless.contains(name) && stored.contains(name) {
                log.warning("\(error); its stored row is kept, as a deleted checkpoint's is")
            } else {
                summary.failed.append((name, error))
                log.error("\(error)")
            }
        }
        log.info("found \(discovered.ready.count) finished checkpoints")
    }

    /// Throws when the output directory is one of the checkpoints or lies
    /// inside one, finished or not, or inside any other checkpoint
    /// (`CheckpointPlacement`): training deletes and replaces checkpoint
    /// directories (`save_total_limit`), and the store with them. Checked
    /// from the paths alone, before the output directory is created.
    func checkOutputOutsideCheckpoints() throws {
        let (candidates, series): ([URL], [URL])
        switch options.checkpoints {
        case .list(let directories):
            (candidates, series) = (directories, [])
        case .series(let directory):
            (candidates, series) = (CheckpointPlacement.checkpoints(inSeries: directory), [directory])
        }
        try CheckpointPlacement.checkOutside(options.output, checkpoints: candidates, series: series, contents: "the store")
    }

    /// Throws `DroptraceError` naming the checkpoint the calibration was
    /// tokenised with (the series' first that loads) when a drop-k is beyond
    /// its layer count, which a new store takes (a checkpoint of another
    /// layer count fails on its own).
    func checkDropK(against plan: CalibrationPlan) throws {
        guard let dropK = options.dropK, let model = plan.model else { return }
        try SeriesAnalysis.checkDropK(dropK, layers: model.layers, path: model.directory.path, setting: options.dropKSetting)
    }

    /// `store` (a new one with `metadata` when nil) with `row` in place of
    /// any row of that name, in series order, written.
    /// - Throws: `DroptraceError` naming the checkpoint when it is another
    ///   model than the store holds; `StoreWriteFailure`.
    func storing(
        _ row: CheckpointRow, in store: ScoreFile?, metadata: ScoreFileMetadata, checkpoint: DiscoveredCheckpoint
    ) throws -> ScoreFile {
        var next = store ?? ScoreFile(metadata: metadata, rows: [])
        next.metadata.seriesDirectory = options.checkpoints.seriesDirectory
        if let existingStore = store {
            guard existingStore.metadata.isSameModel(as: metadata) else {
                let (scored, stored) = metadata.describedApart(from: existingStore.metadata)
                throw DroptraceError("is \(scored), but the store holds \(stored)", path: checkpoint.directory.path)
            }
            next.metadata.recordKernels(of: metadata)
            // A store from before widths and layer shapes were recorded takes the first ones scored into it.
            next.metadata.hiddenSize = next.metadata.hiddenSize ?? metadata.hiddenSize
            next.metadata.layerShapesSHA256 = next.metadata.layerShapesSHA256 ?? metadata.layerShapesSHA256
        }
        next.rows.removeAll { $0.name == row.name }
        next.rows.append(row)
        next.rows = Self.ordered(next.rows, listed: options.checkpoints.listedNames)
        try rewrite(next, forgetting: row.name)
        return next
    }

    /// Writes `store`, changed in the row of `name`, within a run: the
    /// perplexities and accuracies of that row's old files are stale too
    /// (kept when the write fails), and the analysis is paced.
    private func rewrite(_ store: ScoreFile, forgetting name: String) throws {
        let stale = (evaluation, taskAccuracy)
        forgetEvaluations(of: name)
        do {
            let analysis = try pacing.analysis { try SeriesAnalysis(rows: store.rows, dropK: options.dropK) }
            try write(store, analysis: analysis)
        } catch {
            (evaluation, taskAccuracy) = stale
            throw error
        }
    }

    /// Analyze, evaluate and report on the store as it now stands.
    func finish(
        _ store: ScoreFile, onDisk: [DiscoveredCheckpoint], tasks: TaskEvaluation?, summary: TraceSummary
    ) throws -> TraceSummary {
        var summary = summary
        let analysis = try SeriesAnalysis(rows: store.rows, dropK: options.dropK)
        // A checkpoint failing evaluation fails the run, after the others' values are stored and reported.
        func failed(_ failures: [(name: String, error: String)]) {
            for failure in failures { log.error("\(failure.error)") }
            summary.failed += failures
        }
        if let source = options.evaluation {
            failed(evaluation.update(store: store, analysis: analysis, onDisk: onDisk, source: source) { log.info("\($0)") })
        } else if let final = store.rows.last, !evaluation.byCheckpoint.isEmpty {
            // Without --eval nothing is measured, but values without an older final's sets are not the final's.
            evaluation.settleFinal(final.name)
        }
        failed(tasks?.update(&taskAccuracy, store: store, analysis: analysis, onDisk: onDisk) { log.info("\($0)") } ?? [])
        unscored = UnscoredCheckpoints(
            failed: summary.failed.map { .init(name: $0.name, reason: $0.error) },
            pending: summary.incomplete.map { .init(name: $0.name, reason: "still being written: \($0.reason)") }
                + summary.queued.map { .init(name: $0, reason: "its Slurm shard tasks are still queued, or no submit covered it yet") })
        // A cron run that found nothing new leaves the store's bytes alone.
        if try !storeHolds(store, analysis: analysis) { try write(store, analysis: analysis) }
        // The report is drawn from the store as written, exactly as `droptrace report` draws it.
        try lock?.checkStillHeld()
        summary.report = try ReportRebuild.write(outDir: options.output, storeURL: options.storeURL, title: nil)
        log.info("report: \(summary.report!.path)")
        return summary
    }

    /// Writes the store with its analysis (and the report title, so
    /// `droptrace report` can rebuild the same report), atomically.
    /// - Parameter analysis: of `store`'s rows; nil leaves the store
    ///   without one (`AnalysisPacing`).
    private func write(_ store: ScoreFile, analysis: SeriesAnalysis?) throws {
        let dropK = try analysis?.attentionDropK ?? SeriesAnalysis.analysedDropK(options.dropK, layers: store.metadata.numLayers)
        let (evaluation, taskAccuracy, unscored, title) = (self.evaluation, self.taskAccuracy, self.unscored, options.title)
        try lock?.checkStillHeld()
        do {
            if let additions {
                let kept = try StoreAside.keepCopy(options.storeURL, as: "additions")
                log.warning("\(options.storeURL.path): holds what droptrace does not write (\(additions)); the rewritten store has droptrace's contents only, and the store as it was, with them, is kept as \(kept.lastPathComponent)")
                self.additions = nil
            }
            storeVersion = try store.write(to: options.storeURL, expected: storeVersion) { file in
                try analysis?.write(into: file)
                try evaluation.write(into: file, rows: store.rows, dropK: dropK)
                try taskAccuracy.write(into: file, rows: store.rows.map(\.name), dropK: dropK)
                try unscored.write(into: file)
                if let title { try file.setAttribute(ReportWriter.titleAttribute, title) }
            }
        } catch let error as DroptraceError {
            throw StoreWriteFailure(error: error)
        }
    }

    /// A store that cannot be written (a full disk) ends the run: unlike a
    /// checkpoint that fails to score, it would fail again for every later
    /// one. The previous store stays as it was.
    public struct StoreWriteFailure: Error, CustomStringConvertible {
        public let error: DroptraceError
        public var description: String { error.description }
    }

    /// Temporary files of runs killed while writing the store or the report
    /// (the lock is ours, so no other run writes them); nothing else.
    func removeStaleTemporaryFiles() {
        ReportWriter.removeStaleTemporaryFiles(in: options.output, otherTargets: [options.storeURL.lastPathComponent])
    }

    /// Whether the store on disk already holds exactly these rows, this
    /// analysis, these perplexities and this title.
    private func storeHolds(_ store: ScoreFile, analysis: SeriesAnalysis) throws -> Bool {
        guard FileManager.default.fileExists(atPath: options.storeURL.path),
              try ScoreFile.read(from: options.storeURL) == store
        else { return false }
        let file = try HDF5File.open(at: options.storeURL)
        defer { try? file.close() }
        let storedTitle = try ReportWriter.storedTitle(in: file)
        let storedEvaluation = try DropEvaluation.read(from: file, rows: store.rows) ?? DropEvaluation()
        let storedTasks = try TaskAccuracyRecord.read(from: file, rows: store.rows.map(\.name))
        return try SeriesAnalysis.isStored(in: file) && SeriesAnalysis.read(from: file) == analysis
            && storedEvaluation == evaluation && storedTasks == taskAccuracy.stored(rows: store.rows.map(\.name), dropK: analysis.attentionDropK)
            && storedTitle == options.title && UnscoredCheckpoints.read(from: file) == unscored
    }

    /// What the store holds beside its rows: perplexities, task accuracy,
    /// and what a user added (nil when nothing), from one opening of it;
    /// its record of unscored checkpoints is taken as `unscored`.
    private func storedBesideRows(_ store: ScoreFile) throws -> (DropEvaluation, TaskAccuracyRecord, StoreAdditions?) {
        let file = try HDF5File.open(at: options.storeURL)
        defer { try? file.close() }
        let additions = try StoreAdditions(in: file)
        unscored = try UnscoredCheckpoints.read(from: file)
        return (try DropEvaluation.read(from: file, rows: store.rows) ?? DropEvaluation(),
                try TaskAccuracyRecord.read(from: file, rows: store.rows.map(\.name)),
                additions.isEmpty ? nil : additions)
    }

    /// Forgets the perplexities and task accuracies of checkpoint `name`.
    private func forgetEvaluations(of name: String) {
        evaluation.forget(name)
        for task in taskAccuracy.tasks.keys { taskAccuracy.tasks[task]?.byCheckpoint.removeValue(forKey: name) }
    }

    /// The store on disk, its perplexities, task accuracies and what a user
    /// added to it; nil and none when there is no store yet. A store that cannot be read (not HDF5, truncated,
    /// another layout) stops the run, unless --force: then it is set aside
    /// under a new name, never deleted, and the run starts over.
    func existingStore() throws -> (ScoreFile?, DropEvaluation, TaskAccuracyRecord, StoreAdditions?) {
        let path = options.storeURL.path
        // The store is replaced in place: through a link, the link would become a file and its target go stale
        // (or, dangling, a new store would replace a store the link reaches when its share is mounted).
        var info = stat()
        if lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFLNK {
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: path)).map { " to \(SystemError.oneLine($0))" } ?? ""
            throw DroptraceError(
                "is a symbolic link\(target); droptrace replaces its store in place, which would replace the link, not "
                    + "what it leads to: give the directory that holds the store itself as the output", path: path)
        }
        storeVersion = .current(path)
        guard FileManager.default.fileExists(atPath: path) else { return (nil, DropEvaluation(), TaskAccuracyRecord(), nil) }
        // A store we may not read is not damaged: say why, and touch nothing.
        // Without O_NONBLOCK, a FIFO in the store's place would block here, holding the lock.
        let probe = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard probe >= 0 else { throw DroptraceError("cannot read: \(SystemError.describe())", path: path) }
        close(probe)
        do {
            let store = try ScoreFile.read(from: options.storeURL)
            let (evaluation, taskAccuracy, additions) = try storedBesideRows(store)
            return (store, evaluation, taskAccuracy, additions)
        } catch let error as DroptraceError {
            // Moved, removed or replaced while it was read: not a damaged store, and nothing to set aside.
            guard FileVersion.current(path) == storeVersion else {
                throw DroptraceError(
                    "was moved, removed or replaced while this run read it, by something other than droptrace; "
                        + "nothing was written: run again", path: path)
            }
            let problem = error.path == path ? error.message : error.description
            // An I/O error or a process that could not start says nothing about the store: left as it is.
            guard !error.isTransient else { throw DroptraceError("\(problem); the store was left as it is: run again", path: path) }
            guard options.force else {
                throw DroptraceError(
                    "cannot be read as a droptrace store (\(problem)); pass --force to set it aside (it is renamed, not deleted) and start over",
                    path: path)
            }
            let aside = try StoreAside.setAside(options.storeURL)
            storeVersion = .absent
            log.warning("\(path): cannot be read as a droptrace store (\(problem)); --force: renamed it to \(aside.lastPathComponent) and starting over")
            return (nil, DropEvaluation(), TaskAccuracyRecord(), nil)
        }
    }

    func checkCompatible(_ store: ScoreFile, with calibration: CalibrationPlan) throws {
        let advice = "pass --force to rescore every checkpoint (rows of checkpoints no longer on disk are dropped), or use another output directory"
        if store.metadata.calibrationSHA256 != calibration.sha256 {
            throw DroptraceError(
                "was scored with other calibration tokens (sha256 \(store.metadata.calibrationSHA256.prefix(12))…, now \(calibration.sha256.prefix(12))…); \(advice)",
                path: options.storeURL.path)
        }
        // The same hash with other windows: rows edited (or the attribute) by other software.
        if let row = store.rows.first(where: { $0.sums.map { $0.tokens != calibration.sequenceLengths } ?? false }) {
            throw DroptraceError(
                "holds checkpoint '\(SystemError.oneLine(row.name))' scored on \(row.sums!.tokens.count) sequences of \(row.sums!.tokens.reduce(0, +)) tokens, "
                    + "but its calibration (the same sha256) has \(calibration.sequenceLengths.count) of \(calibration.sequenceLengths.reduce(0, +)): "
                    + "the file was changed by other software; \(advice)",
                path: options.storeURL.path)
        }
        if store.metadata.droptraceVersion != DroptraceVersion.string {
            throw DroptraceError(
                "was scored by droptrace \(store.metadata.droptraceVersion), this is \(DroptraceVersion.string); \(advice)",
                path: options.storeURL.path)
        }
    }

    /// `store` without the row of `name`, written, when it has one: the
    /// checkpoint was replaced under that name and its new files could not
    /// be scored, so the row describes a model no longer on disk.
    func withoutStaleRow(_ name: String, in store: ScoreFile?) throws -> ScoreFile? {
        guard var next = store, next.rows.contains(where: { $0.name == name }) else { return store }
        next.rows.removeAll { $0.name == name }
        if next.rows.isEmpty {
            // No row left to describe: the whole store belongs to the old files.
            let aside = try StoreAside.setAside(options.storeURL, as: "replaced")
            storeVersion = .absent
            additions = nil  // they went aside with it
            forgetEvaluations(of: name)
            log.warning("\(name): its stored scores belong to the files it replaced; the store is set aside as \(aside.lastPathComponent)")
            return nil
        }
        try rewrite(next, forgetting: name)
        log.warning("\(name): removed its stored scores, which belong to the files it replaced")
        return next
    }

    /// Whether `checkpoint` has no row in `store`, a row scored from other
    /// files (a checkpoint replaced under the same name), a row placed at
    /// another step or token count than the checkpoint now says (its
    /// trainer_state.json written or changed after it was scored) or one
    /// stored without per-sequence sums (said in the log).
    func needsScoring(_ checkpoint: DiscoveredCheckpoint, store: ScoreFile?) -> Bool {
        guard let row = store?.rows.first(where: { $0.name == checkpoint.name }) else { return true }
        guard let reason = Self.reasonToRescore(row, checkpoint) else { return false }
        log.info("rescoring \(checkpoint.name): \(reason)")
        return true
    }

    /// Whether `store` has a row of `checkpoint` scored from the files
    /// discovery found (its step or tokens may differ).
    static func holdsFiles(of checkpoint: DiscoveredCheckpoint, _ store: ScoreFile?) -> Bool {
        guard let row = store?.rows.first(where: { $0.name == checkpoint.name }) else { return false }
        return CheckpointFingerprint.reasonToRescore(stored: row.fingerprint, current: checkpoint.fingerprint) == nil
    }

    /// Why `row` does not hold `checkpoint`'s current scores, nil when it does.
    static func reasonToRescore(_ row: CheckpointRow, _ checkpoint: DiscoveredCheckpoint) -> String? {
        CheckpointFingerprint.reasonToRescore(stored: row.fingerprint, current: checkpoint.fingerprint)
            ?? (row.step != checkpoint.step || row.tokens != checkpoint.tokens
                ? "its stored row is at step \(row.step), tokens \(row.tokens); the checkpoint now says step \(checkpoint.step), tokens \(checkpoint.tokens)"
                : nil)
            ?? (row.sums == nil ? "its stored row has no per-sequence sums" : nil)
    }

    /// The checkpoints of `lacking` at the point of training (stage,
    /// ingredient and known step) of a stored row of another name, each with
    /// the error that fails it: a checkpoint renamed (checkpoint-7 as
    /// checkpoint-007) or saved again under another name would be a second
    /// row at that point, counted twice by the analysis. (Two such
    /// directories on disk are refused by discovery.)
    static func placeClashes(
        _ lacking: [DiscoveredCheckpoint], with rows: [CheckpointRow]
    ) -> [(checkpoint: DiscoveredCheckpoint, error: DroptraceError)] {
        lacking.compactMap { checkpoint in
            let place = CheckpointDiscovery.position(checkpoint)
            guard place.isKnown,
                  let row = rows.first(where: {
                      $0.name != checkpoint.name && CheckpointName.position(name: $0.name, step: $0.step) == place
                  })
            else { return nil }
            return (checkpoint, DroptraceError(
                "is at the same point of training (step \(place.step)) as \(row.name), whose row the store holds; "
                    + "pass --force to rescore every checkpoint (rows of checkpoints no longer on disk are dropped), "
                    + "or use another output directory",
                path: checkpoint.directory.path))
        }
    }

    /// Rows in series order (`CheckpointName.Position`: stage, ingredient,
    /// step; unknown steps last), ties in the order of `listed` (a
    /// `checkpoints:` list gives training's order where steps are unknown),
    /// then by name.
    static func ordered(_ rows: [CheckpointRow], listed: [String] = []) -> [CheckpointRow] {
        let place = Dictionary(listed.enumerated().map { ($1, $0) }, uniquingKeysWith: { first, _ in first })
        return rows.sorted { a, b in
            let (x, y) = (CheckpointName.position(name: a.name, step: a.step), CheckpointName.position(name: b.name, step: b.step))
            guard x == y else { return x < y }
            let (i, j) = (place[a.name] ?? Int.max, place[b.name] ?? Int.max)
            return i != j ? i < j : a.name < b.name
        }
    }
}
