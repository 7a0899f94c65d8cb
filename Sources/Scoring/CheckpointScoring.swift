import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Tokenization

/// Where calibration tokens come from and how to cut them.
public struct CalibrationSource: Sendable {
    public var url: URL
    /// Window length for text; the longest sequence kept for JSONL. nil: the
    /// text default (512, capped at the model's positions) / JSONL as given.
    public var seqLen: Int?
    /// How many windows (text) or lines (JSONL) to use; nil: all of a JSONL
    /// file; every full window of text, at most `defaultTextSamples`.
    public var samples: Int?
    /// The directory whose tokenizer.json reads text instead of each
    /// checkpoint's (`--tokenizer`); nil: the checkpoint's own.
    public var tokenizer: URL?

    /// How `seqLen` was set, so a message names what to change: the
    /// command line's `--seq-len`, or a pipeline file's `seq_len` (and that file).
    public var seqLenSetting = UserSetting(name: "--seq-len")

    public static let defaultTextSeqLen = 512
    /// LLM-Drop's `n_calibration_samples` (its dropping scripts use 256).
    public static let defaultTextSamples = 256

    public init(url: URL, seqLen: Int? = nil, samples: Int? = nil, tokenizer: URL? = nil) {
        self.url = url
        self.seqLen = seqLen
        self.samples = samples
        self.tokenizer = tokenizer
    }

    public var isJSONL: Bool { ["jsonl", "json"].contains(url.pathExtension.lowercased()) }
}

/// One checkpoint, scored.
public struct ScoredCheckpoint: Sendable {
    public var modelType: String
    public var layerCount: Int
    /// `hidden_size`: the residual stream's width.
    public var hiddenSize: Int
    /// `Checkpoint.layerTensorShapes` once scored: what its layers are made of.
    public var layerTensorShapes: String
    public var scores: ModuleScores
    public var calibration: CalibrationSet
}

/// Reads a checkpoint, prepares its calibration tokens and scores it: the
/// whole of `droptrace score`, reused per checkpoint by `trace`.
public enum CheckpointScoring {
    public static func run(
        checkpoint directory: URL, calibration source: CalibrationSource,
        warn: (String) -> Void = { _ in }, progress: ((Int, Int) -> Void)? = nil
    ) throws -> ScoredCheckpoint {
        let checkpoint = try Checkpoint(location: directory)
        let model = try ModelRegistry.load(checkpoint)
        let calibration = try loadCalibration(source, for: model, warn: warn)
        let scores = try ImportanceScorer(model: model)
            .score(calibration.sequences, calibrationPath: source.url.path, progress: progress)
        return ScoredCheckpoint(
            modelType: model.modelType, layerCount: model.layerCount, hiddenSize: model.hiddenSize,
            layerTensorShapes: checkpoint.layerTensorShapes, scores: scores, calibration: calibration)
    }

    /// What a text file is tokenised for; the raw value is how an error
    /// names it (a checkpoint without tokenizer.json).
    public enum TextUse: String, Sendable {
        /// `--calibration`: the windows modules are scored on.
        case calibration = "text calibration"
        /// `--eval`: the windows perplexity is measured on.
        case evaluation = "evaluation text"
    }

    /// JSONL as given; text tokenised with the checkpoint's own tokenizer
    /// (or the source's: checked even for JSONL, so a mistyped one is said).
    /// - Parameter use: what the windows are for, as errors name it.
    public static func loadCalibration(
        _ source: CalibrationSource, for model: any LanguageModel, as use: TextUse = .calibration,
        warn: (String) -> Void
    ) throws -> CalibrationSet {
        if let directory = source.tokenizer { try CheckpointTokenizer.checkDirectory(directory) }
        if source.isJSONL {
            // Text reads the tokenizer, and checks it so, below.
            try CheckpointTokenizer.checkVocabulary(of: model.checkpoint)
            let set = try CalibrationSet.load(from: source.url, tokenizer: nil, seqLen: source.seqLen, samples: source.samples)
            try set.checkFits(positions: model.maxPositions, vocabularySize: model.vocabularySize, seqLenSetting: source.seqLenSetting.name)
            if set.isShortOfRequestedSamples, let samples = source.samples {
                warn("\(source.url.path): only \(set.sequences.count) lines, fewer than the \(samples) samples requested")
            }
            return set
        }
        let tokenizer = try CheckpointTokenizer.load(
            for: model.checkpoint, from: source.tokenizer, purpose: use.rawValue, requestedBy: source.url.path, warn: warn)
        let seqLen = source.seqLen ?? min(CalibrationSource.defaultTextSeqLen, model.maxPositions)
        // Said before the text is cut: a window too long for the model is the option's fault, however long the text.
        guard seqLen <= model.maxPositions else {
            let setting = source.seqLenSetting
            throw DroptraceError(
                "\(setting.name) \(seqLen) is more than the model's \(model.maxPositions) positions "
                    + "(max_position_embeddings): give \(setting.name) \(model.maxPositions) or less",
                path: setting.file ?? source.url.path)
        }
        let samples = source.samples ?? CalibrationSource.defaultTextSamples
        let set = try CalibrationSet.load(
            from: source.url, tokenizer: tokenizer, seqLen: seqLen, samples: samples, memory: EngineMemory.available)
        // An id the embedding has no row for comes from the tokenizer, not from the text.
        if let bad = set.sequences.lazy.flatMap({ $0 }).first(where: { $0 >= model.vocabularySize }) {
            let token = tokenizer.tokenText(bad).map { " (token \(String(reflecting: $0)))" } ?? ""
            throw DroptraceError(
                "gives id \(bad)\(token) on \(source.url.path), outside the model's vocabulary (vocab_size \(model.vocabularySize))",
                path: tokenizer.sourcePath)
        }
        if source.samples != nil, set.isShortOfRequestedSamples {
            warn("\(source.url.path): only \(set.sequences.count) windows of \(seqLen) tokens available, fewer than the \(samples) requested")
        }
        return set
    }
}
