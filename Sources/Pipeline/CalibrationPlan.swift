import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Logging
import Scoring

/// The calibration tokens of a series, fixed before any checkpoint is
/// scored: their hash decides whether stored rows can be reused, and every
/// checkpoint must see exactly these tokens.
struct CalibrationPlan {
    let sha256: String
    let source: CalibrationSource
    /// Tokens of each window, in order: what a calibration shard's partial
    /// result must hold for its windows.
    let sequenceLengths: [Int]
    /// The layer count of the checkpoint that tokenised, with its directory:
    /// settings bounded by it (drop-k) are checked before anything is scored.
    let model: (layers: Int, directory: URL)?

    /// The plan of a calibration set already loaded.
    init(sha256: String, sequences: [[Int]], source: CalibrationSource, model: (layers: Int, directory: URL)? = nil) {
        self.source = source
        self.sha256 = sha256
        sequenceLengths = sequences.map(\.count)
        self.model = model
    }

    /// Tokenises with the first checkpoint that loads (text calibration uses
    /// the checkpoint's tokenizer.json). The `evaluation` file, when given,
    /// is read with that checkpoint too, so that a file no checkpoint can
    /// read (not text, too short for one window) fails the run before
    /// anything is scored rather than once per checkpoint after.
    init(source: CalibrationSource, evaluation: CalibrationSource?, checkpoints: [DiscoveredCheckpoint], log: Logger) throws {
        var firstError: Error?
        for candidate in checkpoints {
            do {
                let model = try ModelRegistry.load(try Checkpoint(directory: candidate.directory))
                let set = try CheckpointScoring.loadCalibration(source, for: model) { log.warning("\($0)") }
                if let evaluation { try Self.checkReadable(evaluation, by: model) }
                self.init(
                    sha256: set.sha256, sequences: set.sequences, source: source,
                    model: (model.layerCount, candidate.directory))
                log.info("calibration: \(set.sequences.count) sequences, \(set.tokenCount) tokens, sha256 \(set.sha256.prefix(12))…")
                return
            } catch let error as DroptraceError where [source.url.path, evaluation?.url.path].contains(error.path) {
                throw error  // the calibration or evaluation file itself is bad: no checkpoint will do
            } catch {
                firstError = firstError ?? error
            }
        }
        throw firstError ?? DroptraceError("no checkpoints", path: source.url.path)
    }

    /// Throws what makes `evaluation` unreadable whatever the checkpoint:
    /// not text or token ids, too short for one window. A fault of `model`'s
    /// own tokenizer (missing, malformed) is left to the evaluation, which
    /// reports it as that checkpoint's.
    private static func checkReadable(_ evaluation: CalibrationSource, by model: any LanguageModel) throws {
        let path = evaluation.url.path
        if !evaluation.isJSONL,
           (try? CheckpointTokenizer.load(
               for: model.checkpoint, from: evaluation.tokenizer, purpose: "evaluation text", requestedBy: path)) == nil {
            return
        }
        do {
            _ = try CheckpointScoring.loadCalibration(evaluation, for: model, as: .evaluation) { _ in }
        } catch let error as DroptraceError where error.path == path {
            throw error
        } catch {}
    }

    func check(_ scored: ScoredCheckpoint, checkpoint: DiscoveredCheckpoint) throws {
        guard scored.calibration.sha256 == sha256 else {
            throw DroptraceError(
                "its tokenizer turns the calibration into different tokens than the series' first checkpoint did",
                path: checkpoint.directory.path)
        }
    }
}
