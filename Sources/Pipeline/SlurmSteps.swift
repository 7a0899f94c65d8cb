import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Logging
import Scoring
import ScoreStore

/// What `droptrace slurm task` did.
public enum ShardTaskOutcome: Sendable, Equatable {
    /// Scored the shard and wrote its partial result here.
    case scored(URL)
    /// The partial result was there already, for these files and tokens.
    case partialExists(URL)
    /// The store already holds the checkpoint's row, for these files and tokens.
    case alreadyStored
}

/// The two steps of a Slurm run: one array task per (checkpoint,
/// calibration shard) and a finalize job after them. Both read the same
/// pipeline settings as `run`, and their store is the one `run` writes, so a
/// store started one way can be continued the other.
extension TraceRun {
    /// Exit status of a task ended by SIGTERM or SIGUSR1 (Slurm's preemption
    /// and time-limit signals): EX_TEMPFAIL, nothing was left behind, run it
    /// again (`RequeueExit=75` in slurm.conf, or `scontrol requeue`).
    public static let interruptedExitCode: Int32 = 75

    /// `droptrace slurm task`: scores `shard` of the calibration windows on
    /// the checkpoint at `directory` and writes the partial result
    /// `OUT_DIR/partials/<checkpoint>/shard-<I>-of-<N>.h5` atomically.
    /// Does nothing when that partial exists and belongs to these files and
    /// tokens, or when the store holds the checkpoint already. Takes no lock:
    /// the tasks of an array run side by side. While scoring, SIGTERM and
    /// SIGUSR1 end the process with `interruptedExitCode`, leaving no partial.
    /// - Throws: `DroptraceError` naming the file: a checkpoint not finished
    ///   or unreadable, calibration that the model cannot run, fewer windows
    ///   than shards, a partial that cannot be written.
    public func scoreShard(
        checkpoint directory: URL, shard: CalibrationShard, progress: ((Int, Int) -> Void)? = nil
    ) throws -> ShardTaskOutcome {
        // finalize merges the partials of the pipeline's checkpoints alone: another's would lie there for good.
        guard options.checkpoints.contains(directory) else {
            let among: String
            switch options.checkpoints {
            case .series(let series): among = "a checkpoint of the series \(series.path)"
            case .list: among = "one of the checkpoints the pipeline lists"
            }
            throw DroptraceError("is not \(among), whose partial results `slurm finalize` merges; nothing was scored", path: directory.path)
        }
        let found = try CheckpointDiscovery.inspect([directory], settleTime: options.settleTime)
        if let failed = found.failed.first { throw DroptraceError(failed.error) }
        guard let checkpoint = found.ready.first else {
            let reason = found.incomplete.first?.reason ?? "not a finished checkpoint"
            throw DroptraceError("is not finished yet (\(reason)); run the task again once it is", path: directory.path)
        }
        let partials = try ShardPartials(output: options.output, checkpoint: checkpoint)
        let target = partials.url(shard)

        let model = try ModelRegistry.load(try Checkpoint(location: directory))
        let set = try CheckpointScoring.loadCalibration(options.calibration, for: model) { log.warning("\($0)") }
        let calibration = CalibrationPlan(sha256: set.sha256, sequences: set.sequences, source: options.calibration)
        let windows = shard.windows(of: set.sequences.count)
        guard !windows.isEmpty else {
            throw DroptraceError(
                "has \(set.sequences.count) calibration windows, fewer than the \(shard.count) shards; use at most \(set.sequences.count)",
                path: options.calibration.url.path)
        }
        if let store = try? ScoreFile.read(from: options.storeURL),
           store.metadata.calibrationSHA256 == calibration.sha256, store.metadata.droptraceVersion == DroptraceVersion.string,
           store.metadata.storedPrecision == options.precision,
           let row = store.rows.first(where: { $0.name == checkpoint.name }), Self.reasonToRescore(row, checkpoint) == nil {
            log.info("\(checkpoint.name) is in the store already; nothing to do")
            return .alreadyStored
        }
        if FileManager.default.fileExists(atPath: target.path) {
            do {
                _ = try partials.read(shard, calibration: calibration, precision: options.precision)
                log.info("\(target.path): done already; nothing to do")
                return .partialExists(target)
            } catch let error as DroptraceError {
                log.warning("\(error.description); scoring it again")
            }
        }

        try partials.createDirectory()
        // SIGTERM and SIGUSR1 (preemption, the time limit's warning) end the task at once, leaving no partial
        // behind (one already renamed into place is complete and stays): requeued, it starts over.
        let interruption = InterruptCleanup(signals: [SIGTERM, SIGUSR1], exitCode: TraceRun.interruptedExitCode)
        interruption.add(ScoreFile.temporaryPath(for: target))
        defer { withExtendedLifetime(interruption) {} }
        log.info("scoring \(checkpoint.name), \(shard): calibration windows \(windows.lowerBound)..<\(windows.upperBound) of \(set.sequences.count)")
        let scores = try ImportanceScorer(model: model)
            .score(Array(set.sequences[windows]), calibrationPath: options.calibration.url.path, progress: progress)
        let row = CheckpointRow(
            scores: scores, name: checkpoint.name, step: checkpoint.step, tokens: checkpoint.tokens,
            fingerprint: checkpoint.fingerprint)
        var metadata = ScoreFileMetadata(
            modelType: model.modelType, numLayers: model.layerCount, hiddenSize: model.hiddenSize,
            layerShapesSHA256: ScoreFileMetadata.layerShapesSHA256(of: model.checkpoint.layerTensorShapes), calibrationSHA256: set.sha256,
            calibrationTokens: Int64(set.tokenCount), droptraceVersion: DroptraceVersion.string, shard: shard)
        metadata.record(options.precision)
        try ScoreFile(metadata: metadata, rows: [row]).write(to: target)
        log.info("wrote \(target.path)")
        return .scored(target)
    }

    /// `droptrace slurm finalize`: under the store's lock, merges, for every
    /// finished checkpoint the store lacks, the partial results of one
    /// complete set of its shards into its row (in series order, equal to a
    /// one-machine `run` up to the order of float64 additions), removes the
    /// merged partials, then analyzes, evaluates and reports as `run` does.
    /// A checkpoint with shards missing or refused is in `failed`, named by
    /// one line each; the others are stored. Checkpoints in `queued` (shard
    /// tasks of theirs are still in Slurm's queue, under a later submission
    /// with a finalize job of its own) are left alone, in `summary.queued`;
    /// so are checkpoints none of `submitted` names that have no partial
    /// results (saved after the last submit: the next one scores them).
    /// - Parameter submitted: the checkpoints the output directory's
    ///   submissions covered; nil: every checkpoint is this finalize's to merge.
    public func finalize(leaving queued: Set<String> = [], submitted: Set<String>? = nil) throws -> TraceSummary {
        let partials = options.output.appendingPathComponent(ShardPartials.directoryName)
        return try update(force: false, leaving: { checkpoint in
            queued.contains(checkpoint.name)
                || (submitted.map { !$0.contains(checkpoint.name) } == true
                    && !FileManager.default.fileExists(atPath: partials.appendingPathComponent(checkpoint.name).path))
        }) { checkpoint, _, calibration, store in
            let partials = try ShardPartials(output: options.output, checkpoint: checkpoint)
            let merged = try partials.merged(calibration: calibration, store: store?.metadata, precision: options.precision)
            log.info("merged \(checkpoint.name) from \(ShardPartials.directoryName)/\(checkpoint.name)")
            return merged
        } whenStored: { checkpoint in
            guard let partials = try? ShardPartials(output: options.output, checkpoint: checkpoint), partials.exists else { return }
            partials.removeAll()
        }
    }
}


extension TraceOptions {
    /// How many calibration windows `checkpoints` give (the windows each
    /// array task scores a shard of), as `trace` tokenizes them.
    /// - Throws: `DroptraceError` naming the file when the calibration cannot
    ///   be read for these checkpoints, or gives them different windows.
    public func calibrationWindows(of checkpoints: [DiscoveredCheckpoint], log: Logger) throws -> Int {
        try CalibrationPlan(source: calibration, evaluation: evaluation, checkpoints: checkpoints, log: log).sequenceLengths.count
    }
}
