import Crypto
import Foundation
import DroptraceSupport

/// One checkpoint's scores: one row of every dataset in the score file.
public struct CheckpointRow: Sendable, Equatable {
    public var name: String
    /// Training step, -1 when unknown.
    public var step: Int64
    /// Training tokens seen, -1 when unknown.
    public var tokens: Int64
    /// Importance per layer, L entries each.
    public var attention: [Float]
    public var mlp: [Float]
    public var block: [Float]
    /// L×L block similarity gaps, NaN where undefined.
    public var blockGap: [[Float]]
    /// What identifies the checkpoint files these scores came from (see
    /// `ScoreFileLayout.checkpointFingerprints`); empty when not recorded.
    public var fingerprint: String
    /// The float64 sums the scores were derived from (`ScoreFileLayout.PerSequence`);
    /// nil for rows stored without them.
    public var sums: SequenceSums?
    /// The same pairs' angular distances; nil when not recorded (files
    /// written before droptrace stored them).
    public var angularDistance: AngularDistanceScores?

    public init(
        name: String, step: Int64 = -1, tokens: Int64 = -1,
        attention: [Float], mlp: [Float], block: [Float], blockGap: [[Float]], fingerprint: String = "",
        sums: SequenceSums? = nil, angularDistance: AngularDistanceScores? = nil
    ) {
        self.sums = sums
        self.name = name
        self.step = step
        self.tokens = tokens
        self.fingerprint = fingerprint
        self.attention = attention
        self.mlp = mlp
        self.block = block
        self.blockGap = blockGap
        self.angularDistance = angularDistance
    }

    // With plain `==` a row with an undefined (NaN) gap would not equal
    // itself, nor its own round trip through a file; here NaNs in the same
    // places count as equal.
    public static func == (lhs: CheckpointRow, rhs: CheckpointRow) -> Bool {
        lhs.name == rhs.name && lhs.step == rhs.step && lhs.tokens == rhs.tokens && lhs.fingerprint == rhs.fingerprint
            && sameFloats(lhs.attention, rhs.attention) && sameFloats(lhs.mlp, rhs.mlp)
            && sameFloats(lhs.block, rhs.block)
            && lhs.blockGap.count == rhs.blockGap.count
            && zip(lhs.blockGap, rhs.blockGap).allSatisfy { sameFloats($0, $1) }
            && lhs.sums == rhs.sums
            && lhs.angularDistance == rhs.angularDistance
    }

    static func sameFloats(_ lhs: [Float], _ rhs: [Float]) -> Bool {
        lhs.count == rhs.count && zip(lhs, rhs).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) }
    }
}

/// The root attributes of a score file.
public struct ScoreFileMetadata: Sendable, Equatable {
    public var modelType: String
    public var numLayers: Int
    /// `hidden_size` of the scored model (the residual stream's width), so
    /// that rows of a model of another width are never stored beside these;
    /// nil in stores written before it was recorded.
    public var hiddenSize: Int?
    /// SHA-256 (hex) of the shapes of the scored model's layer tensors
    /// (`layerShapesSHA256(of:)`), so that rows of a model whose layers
    /// differ (another `intermediate_size`, key/value head or expert count)
    /// are never stored beside these; nil in stores written before it was recorded.
    public var layerShapesSHA256: String?
    /// Similarity metric of `blockGap`; "cosine" is the only one so far.
    public var metric: String
    public var calibrationSHA256: String
    public var calibrationTokens: Int64
    public var droptraceVersion: String
    /// Set in the partial result of one calibration shard (its rows hold
    /// that shard's sequences only); nil in a store. `calibrationSHA256` and
    /// `calibrationTokens` describe the whole calibration set either way.
    public var shard: CalibrationShard?
    /// The arithmetic of the matrix products the rows were scored with, one
    /// of `ScoreFileLayout.precisions` (TensorEngine's `Precision`): "f32"
    /// in stores written before it was recorded.
    public var precision: String
    /// The matrix kernels that scored the rows (TensorEngine's
    /// `MatrixKernels.description`), several "; "-separated when a store was
    /// continued on other machines; nil in stores written before it was recorded.
    public var matrixKernel: String?
    /// The series the rows were traced from (`trace`, `run`): an absolute
    /// path, so a store is never continued with another run's checkpoints;
    /// nil in `score` files and in stores written before it was recorded.
    public var seriesDirectory: String?

    public init(
        modelType: String, numLayers: Int, hiddenSize: Int? = nil, layerShapesSHA256: String? = nil, metric: String = "cosine",
        calibrationSHA256: String, calibrationTokens: Int64, droptraceVersion: String, shard: CalibrationShard? = nil,
        precision: String = "f32", matrixKernel: String? = nil, seriesDirectory: String? = nil
    ) {
        self.seriesDirectory = seriesDirectory
        self.shard = shard
        self.precision = precision
        self.matrixKernel = matrixKernel
        self.modelType = modelType
        self.numLayers = numLayers
        self.hiddenSize = hiddenSize
        self.layerShapesSHA256 = layerShapesSHA256
        self.metric = metric
        self.calibrationSHA256 = calibrationSHA256
        self.calibrationTokens = calibrationTokens
        self.droptraceVersion = droptraceVersion
    }
}

extension ScoreFileMetadata {
    /// Whether `path` can be recorded as `series_directory`: absolute, on
    /// one line (no control characters or line separators), at most 4096
    /// bytes — it is printed in messages.
    public static func canRecord(seriesDirectory path: String) -> Bool {
        ScoreFileReader.oneLine(path, atMost: 4096) && path.hasPrefix("/")
    }

    /// Whether `text` is one line of text (no control characters or line
    /// separators, not empty) of at most `limit` bytes: what the reader
    /// requires of a string it prints in reports and messages.
    public static func isOneLine(_ text: String, atMost limit: Int) -> Bool {
        ScoreFileReader.oneLine(text, atMost: limit)
    }

    static let kernelSeparator = "; "

    /// `layerShapesSHA256` of a model's `Checkpoint.layerTensorShapes`.
    public static func layerShapesSHA256(of layerTensorShapes: String) -> String {
        HDF5Checksum.hex(SHA256.hash(data: Data(layerTensorShapes.utf8)))
    }

    /// Whether `text` is a SHA-256 as droptrace writes hashes: 64 lowercase hex digits.
    public static func isDigest(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }

    /// Whether rows scored under `other` are of the model these rows are
    /// of: the same `model_type`, layer count, width and layer shapes (each
    /// where both record it).
    public func isSameModel(as other: ScoreFileMetadata) -> Bool {
        modelType == other.modelType && numLayers == other.numLayers
            && Self.agree(hiddenSize, other.hiddenSize) && Self.agree(layerShapesSHA256, other.layerShapesSHA256)
    }

    private static func agree<Value: Equatable>(_ lhs: Value?, _ rhs: Value?) -> Bool {
        lhs == nil || rhs == nil || lhs == rhs
    }

    /// The model as messages name it: "llama with 5 layers (hidden_size 64)".
    public var modelDescription: String {
        "\(modelType) with \(numLayers) layers" + (hiddenSize.map { " (hidden_size \($0))" } ?? "")
    }

    /// How a message names this model and `other`, which is not the same
    /// (`isSameModel`): their `modelDescription`s, and where those are
    /// alike, the start of each one's layer-shapes digest with what differs.
    public func describedApart(from other: ScoreFileMetadata) -> (this: String, other: String) {
        guard modelDescription == other.modelDescription, let mine = layerShapesSHA256, let theirs = other.layerShapesSHA256
        else { return (modelDescription, other.modelDescription) }
        let named = { (digest: String) in "\(modelDescription) with layer_shapes_sha256 \(digest.prefix(12))…" }
        return (named(mine), named(theirs) + " (the layers' tensors differ in shape: another intermediate_size, key/value head or expert count)")
    }

    /// Adds the kernels of `other` (rows scored elsewhere, stored here) to
    /// `matrixKernel`, each kernel named once, in the order first used.
    public mutating func recordKernels(of other: ScoreFileMetadata) {
        guard let added = other.matrixKernel else { return }
        var kernels = matrixKernel?.components(separatedBy: Self.kernelSeparator) ?? []
        for kernel in added.components(separatedBy: Self.kernelSeparator) where !kernels.contains(kernel) {
            kernels.append(kernel)
        }
        matrixKernel = kernels.joined(separator: Self.kernelSeparator)
    }
}

/// A droptrace score file: per-checkpoint module importance and block
/// similarity for one model, in the HDF5 layout of `ScoreFileLayout`.
public struct ScoreFile: Sendable, Equatable {
    public var metadata: ScoreFileMetadata
    public var rows: [CheckpointRow]

    public init(metadata: ScoreFileMetadata, rows: [CheckpointRow]) {
        self.metadata = metadata
        self.rows = rows
    }

    /// Reads and validates a store: every dataset and attribute must be
    /// present with the right kind of values and shapes that agree.
    /// - Throws: `DroptraceError` naming the file; also for a calibration
    ///   shard's partial result (root attributes `shard_index`,
    ///   `shard_count`), which holds part of a row, not a store's rows.
    public static func read(from url: URL) throws -> ScoreFile {
        try ScoreFileReader.read(path: url.path, partial: false)
    }

    /// Reads and validates a calibration shard's partial result (written by
    /// `droptrace slurm task`), checked as `read(from:)` checks a store.
    public static func readPartial(from url: URL) throws -> ScoreFile {
        try ScoreFileReader.read(path: url.path, partial: true)
    }

    /// Whether `other` holds the run these rows hold, as a copy of the
    /// store would: the same calibration windows and precision, and row for
    /// row the same checkpoint (name, step, tokens, and the same recorded
    /// fingerprint, or, where either records none, the same scores).
    /// Distinct runs (seeds, other data) are never alike checkpoint for
    /// checkpoint; the same series scored on other calibration text or in
    /// the other precision is another measurement, not a copy.
    public func isSameRun(as other: ScoreFile) -> Bool {
        metadata.calibrationSHA256 == other.metadata.calibrationSHA256 && metadata.precision == other.metadata.precision
            && rows.count == other.rows.count
            && zip(rows, other.rows).allSatisfy { row, twin in
                row.name == twin.name && row.step == twin.step && row.tokens == twin.tokens
                    && (row.fingerprint.isEmpty || twin.fingerprint.isEmpty
                        ? CheckpointRow.sameFloats(row.attention, twin.attention) && CheckpointRow.sameFloats(row.mlp, twin.mlp)
                            && CheckpointRow.sameFloats(row.block, twin.block)
                        : row.fingerprint == twin.fingerprint)
            }
    }

    /// The temporary file `write(to: url)` fills before renaming it over
    /// `url` (`.<name>.tmp-<pid>` beside it), for a process that must remove
    /// it when interrupted mid-write.
    public static func temporaryPath(for url: URL) -> String {
        AtomicFileReplacement.temporaryPath(for: url.path)
    }

    /// The store's name in an output directory of `trace`, `run` and `slurm`.
    public static let outputFileName = "scores.h5"

    /// How a score file begins: its checksum block (`HDF5Checksum`), or
    /// HDF5's signature (stores from before the checksum).
    public static let signatures: [[UInt8]] = [HDF5Checksum.magic, HDF5Checksum.hdf5Signature]

    /// Throws unless `url` can take a score file: it is free, empty or an
    /// earlier score file, in an existing directory (`write` checks the same before
    /// it replaces anything). Commands call it before their work, so a
    /// mistaken output path fails at once.
    public static func checkOutput(_ url: URL) throws {
        try ReplaceableOutput.check(url.path, signatures: signatures)
    }

    /// `checkOutput` for one checkpoint's file (`droptrace score`): also
    /// throws when `url` holds a series store (`trace`'s: a series
    /// directory recorded, or several checkpoints), often the only record
    /// of checkpoints deleted since; a file that does not read as a score
    /// file is judged by `checkOutput` alone.
    /// - Throws: `DroptraceError` naming `url`.
    public static func checkOneCheckpointOutput(_ url: URL) throws {
        try checkOutput(url)
        guard let existing = try? read(from: url),
              existing.rows.count > 1 || existing.metadata.seriesDirectory != nil
        else { return }
        let series = existing.metadata.seriesDirectory.map { " of \($0)" } ?? ""
        throw DroptraceError(
            "refusing to replace a trace's store of \(existing.rows.count) checkpoint(s)\(series) with one checkpoint's "
                + "scores; choose another path", path: url.path)
    }

    /// Writes the file atomically: everything goes to `<dir>/.<name>.tmp-<pid>`
    /// in the same directory, which is fsynced, renamed over `url`, and then
    /// the directory is fsynced. A failure or a kill at any moment leaves any
    /// existing file at `url` untouched; on error the temporary file is removed.
    ///
    /// `extra` runs after the score layout is written and before the rename,
    /// so later stages can add their own groups (e.g. `/analysis/...`) to the
    /// same file; if it throws, nothing is replaced.
    ///
    /// `expected`: the version of the file at `url` the caller read (nil:
    /// as it is when the write starts); another there by the rename is left
    /// as it is and the write refused (`DroptraceError` naming `url`).
    /// - Returns: the version written, to expect at the next write.
    @discardableResult
    public func write(to url: URL, expected: FileVersion? = nil, extra: ((HDF5File) throws -> Void)? = nil) throws -> FileVersion {
        let path = url.path
        try ScoreFileWriter.validate(self, path: path)
        return try AtomicFileReplacement.replace(path, signatures: Self.signatures, expected: expected) { temporaryPath in
            let file = try HDF5File.create(at: temporaryPath)
            try ScoreFileWriter.writeLayout(of: self, into: file)
            try extra?(file)
            try file.close()
        }
    }
}
