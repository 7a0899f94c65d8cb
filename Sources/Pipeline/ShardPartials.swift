import DroptraceSupport
import Foundation
import Scoring
import ScoreStore
import TensorEngine

/// The partial results of one checkpoint's calibration shards, scored apart
/// (`droptrace slurm task`) and merged into the store (`slurm finalize`):
/// `OUT_DIR/partials/<checkpoint>/shard-<I>-of-<N>.h5`, each a one-row score
/// file holding the shard's per-sequence sums (means of the shard alone),
/// with the root attributes `shard_index` and `shard_count`;
/// `calibration_sha256` and `calibration_tokens` are those of the whole
/// calibration set, the row's fingerprint that of the checkpoint's files,
/// `precision` and `matrix_kernel` those the shard was scored with.
public struct ShardPartials {
    /// The directory under OUT_DIR that holds every checkpoint's partials.
    public static let directoryName = "partials"

    let checkpoint: DiscoveredCheckpoint
    let output: URL
    /// `OUT_DIR/partials/<checkpoint>`.
    let directory: URL

    /// - Throws: `DroptraceError` when the checkpoint's name cannot name a directory.
    init(output: URL, checkpoint: DiscoveredCheckpoint) throws {
        guard !checkpoint.name.isEmpty, checkpoint.name != ".", checkpoint.name != "..", !checkpoint.name.contains("/") else {
            throw DroptraceError("cannot keep partial results for a checkpoint named '\(checkpoint.name)'",
                                 path: checkpoint.directory.path)
        }
        self.checkpoint = checkpoint
        self.output = output
        directory = output.appendingPathComponent(Self.directoryName).appendingPathComponent(checkpoint.name)
    }

    static func fileName(_ shard: CalibrationShard) -> String { fileName(index: shard.index, count: shard.count) }

    /// The partial's file name of shard `index` of `count`.
    public static func fileName(index: Int, count: Int) -> String { "shard-\(index)-of-\(count).h5" }

    func url(_ shard: CalibrationShard) -> URL { directory.appendingPathComponent(Self.fileName(shard)) }

    /// The shard a partial's file name stands for, nil for any other name.
    public static func shard(named name: String) -> CalibrationShard? {
        guard name.hasPrefix("shard-"), name.hasSuffix(".h5") else { return nil }
        let parts = name.dropFirst("shard-".count).dropLast(".h5".count).components(separatedBy: "-of-")
        guard parts.count == 2, let index = Int(parts[0]), let count = Int(parts[1]),
              let shard = try? CalibrationShard(index: index, count: count),
              fileName(shard) == name  // one spelling only: no "shard-01-of-2.h5"
        else { return nil }
        return shard
    }

    /// Shards whose partial files are present (by name), in no order.
    func present() -> [CalibrationShard] {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).compactMap(Self.shard(named:))
    }

    /// Creates the directory for the partials (never through a link).
    func createDirectory() throws {
        _ = try DirectoryHandle.create(at: output.path).subdirectory(Self.directoryName).subdirectory(checkpoint.name)
    }

    /// The partial of `shard`, read and checked to belong to this checkpoint's
    /// files, this calibration set, this droptrace and `precision` (so the
    /// shards of one row are never scored in two precisions).
    /// - Throws: `DroptraceError` naming the partial's file.
    func read(_ shard: CalibrationShard, calibration: CalibrationPlan, precision: Precision) throws -> ScoreFile {
        let url = url(shard)
        let file = try ScoreFile.readPartial(from: url)
        func refuse(_ problem: String) -> DroptraceError {
            DroptraceError("\(problem); run its `droptrace slurm task` again", path: url.path)
        }
        let metadata = file.metadata
        guard metadata.shard == shard else {
            throw refuse("holds \(metadata.shard.map { "\($0)" } ?? "no calibration shard"), not \(shard)")
        }
        guard metadata.calibrationSHA256 == calibration.sha256 else {
            throw refuse("was scored with other calibration tokens (sha256 \(metadata.calibrationSHA256.prefix(12))…) than the series' (\(calibration.sha256.prefix(12))…)")
        }
        guard metadata.droptraceVersion == DroptraceVersion.string else {
            throw refuse("was written by droptrace \(metadata.droptraceVersion), this is \(DroptraceVersion.string)")
        }
        guard metadata.storedPrecision == precision else {
            throw refuse("was scored in \(metadata.precision) precision, the pipeline's is \(precision.rawValue)")
        }
        guard file.rows.count == 1, let row = file.rows.first, row.name == checkpoint.name else {
            throw refuse("holds \(file.rows.count == 1 ? "checkpoint '\(file.rows[0].name)'" : "\(file.rows.count) rows"), not the one row of '\(checkpoint.name)'")
        }
        guard row.fingerprint == checkpoint.fingerprint else {
            throw refuse("was scored from other files than \(checkpoint.directory.path) holds now")
        }
        guard let sums = row.sums else { throw refuse("holds no per-sequence sums") }
        let expected = Array(calibration.sequenceLengths[shard.windows(of: calibration.sequenceLengths.count)])
        guard sums.tokens == expected else {
            throw refuse("holds \(sums.sequenceCount) sequences of \(Int(sums.totalTokens)) tokens, but \(shard) of the calibration is \(expected.count) windows of \(expected.reduce(0, +)) tokens")
        }
        guard metadata.calibrationTokens == Int64(calibration.sequenceLengths.reduce(0, +)) else {
            throw refuse("records \(metadata.calibrationTokens) calibration tokens, the calibration has \(calibration.sequenceLengths.reduce(0, +))")
        }
        return file
    }

    /// The shards of one complete set (every I of one N present; the
    /// smallest such N), in order.
    /// - Throws: `DroptraceError` naming the checkpoint and the shards missing.
    func completeSet() throws -> [CalibrationShard] {
        let byCount = Dictionary(grouping: Set(present()), by: \.count)
        if let count = byCount.filter({ $0.value.count == $0.key }).keys.min() {
            return byCount[count]!.sorted { $0.index < $1.index }
        }
        guard let largest = byCount.max(by: { $0.value.count < $1.value.count }) else {
            throw DroptraceError(
                "no partial results in \(directory.path): its `droptrace slurm task`s failed or have not run",
                path: checkpoint.directory.path)
        }
        let (count, found) = (largest.key, largest.value)
        let have = Set(found.map(\.index))
        let missing = (0..<count).lazy.filter { !have.contains($0) }
        let shown = missing.prefix(10).map(String.init).joined(separator: ", ")
        let more = count - have.count > 10 ? " (\(count - have.count) in all)" : ""
        throw DroptraceError(
            "shards \(shown)\(more) of \(count) have no partial result in \(directory.path): their `droptrace slurm task`s failed or have not run",
            path: checkpoint.directory.path)
    }

    /// The store row of the complete set merged (means from the merged
    /// sums, equal to scoring every window in one pass up to the order of
    /// float64 additions), and the store metadata it belongs under.
    /// - Parameters:
    ///   - store: the store's metadata, when there is a store: every
    ///     partial must be of its model.
    ///   - precision: the pipeline's: every partial must be scored in it.
    /// - Throws: `DroptraceError` naming a missing shard or a partial that does not belong.
    func merged(
        calibration: CalibrationPlan, store: ScoreFileMetadata?, precision: Precision
    ) throws -> (row: CheckpointRow, metadata: ScoreFileMetadata) {
        let shards = try completeSet()
        let files = try shards.map { try read($0, calibration: calibration, precision: precision) }
        let reference = store ?? files[0].metadata
        for (shard, file) in zip(shards, files) where !file.metadata.isSameModel(as: reference) {
            let (partial, held) = file.metadata.describedApart(from: reference)
            throw DroptraceError(
                "is \(partial), but \(store == nil ? "shard 0 holds" : "the store holds") \(held); run its `droptrace slurm task` again",
                path: url(shard).path)
        }
        let sums: SequenceSums
        do {
            sums = try SequenceSums.merged(files.map { $0.rows[0].sums! })
        } catch let error as DroptraceError {
            throw DroptraceError("cannot merge the partial results: \(error.message)", path: directory.path)
        }
        let row = CheckpointRow(
            scores: ModuleScores(sums: sums), name: checkpoint.name, step: checkpoint.step, tokens: checkpoint.tokens,
            fingerprint: checkpoint.fingerprint)
        var metadata = files[0].metadata
        metadata.shard = nil
        for file in files.dropFirst() { metadata.recordKernels(of: file.metadata) }
        return (row, metadata)
    }

    /// Removes the partial files (of every shard count), temporary files of
    /// tasks killed while writing them, and the directory once empty. What
    /// cannot be removed stays; a later finalize removes it.
    func removeAll() {
        guard let handle = try? DirectoryHandle.create(at: output.path)
            .subdirectory(Self.directoryName, create: false).subdirectory(checkpoint.name, create: false)
        else { return }
        let entries = handle.entryNames()
        for name in entries where Self.shard(named: name) != nil { _ = handle.removeRegularFile(name) }
        let targets = entries.compactMap { TemporaryFileName.parse($0)?.target }.filter { Self.shard(named: $0) != nil }
        _ = handle.removeStaleTemporaryFiles(targets: Set(targets))
        rmdir(directory.path)
    }

    var exists: Bool { FileManager.default.fileExists(atPath: directory.path) }
}

extension ShardPartials {
    /// Why the partial at `url` will not be merged into checkpoint `name`'s
    /// row as its files are now (`fingerprint`, `CheckpointFingerprint`'s
    /// stored form): unreadable or damaged, another checkpoint's, or scored
    /// from other files; nil when nothing short of the calibration set (which
    /// `slurm finalize` checks) refuses it. `slurm submit` submits such a
    /// shard again and `slurm status` calls it failed, where a partial that
    /// merely exists counted as done for good.
    public static func staleness(of url: URL, checkpoint name: String, fingerprint: String) -> String? {
        do {
            let file = try ScoreFile.readPartial(from: url)
            guard file.rows.count == 1, let row = file.rows.first, row.name == name else {
                return "holds another checkpoint's scores"
            }
            if CheckpointFingerprint.reasonToRescore(stored: row.fingerprint, current: fingerprint) != nil {
                return "was scored from other files than the checkpoint holds now"
            }
            return nil
        } catch let error as DroptraceError {
            return error.message
        } catch {
            return "\(error)"
        }
    }
}
