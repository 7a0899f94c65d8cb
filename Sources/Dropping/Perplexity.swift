import Architectures
import DroptraceSupport
import Foundation
import TensorEngine
import Tokenization

/// Negative log-likelihood of evaluation windows: each window predicts its
/// tokens 1..n−1 from the ones before (windows independent, unpadded).
public struct LanguageModelLoss: Sendable, Equatable {
    public var totalNLL: Double
    public var predictedTokens: Int

    public var perplexity: Double { exp(totalNLL / Double(predictedTokens)) }

    /// - Throws: `DroptraceError` naming `sourcePath` for a token to be
    ///   predicted beyond a pruned head's logits
    ///   (`CalibrationSet.checkPredictable`), or when no window has two tokens.
    public static func evaluate(
        model: any LanguageModel, plan: DropPlan, windows: [[Int]], sourcePath: String
    ) throws -> LanguageModelLoss {
        try CalibrationSet(sequences: windows, sourcePath: sourcePath)
            .checkPredictable(logits: model.outputVocabularySize, vocabularySize: model.vocabularySize)
        let windows = windows.filter { $0.count >= 2 }
        guard !windows.isEmpty else {
            throw DroptraceError("no evaluation window has two or more tokens", path: sourcePath)
        }
        let batch = TokenBatch(sequences: windows)
        let hidden = try LayerwiseForward(model: model, plan: plan).run(batch)
        // Row r predicts token r + 1 of the same window; last rows predict nothing.
        var targets = [Int](repeating: -1, count: batch.tokenCount)
        for range in batch.sequences {
            for row in range.lowerBound..<(range.upperBound - 1) { targets[row] = batch.tokenIDs[row + 1] }
        }
        let logProbabilities = try model.head().logProbabilities(hidden, targets: targets)
        var total = 0.0, count = 0
        for (row, target) in targets.enumerated() where target >= 0 {
            total -= logProbabilities[row]
            count += 1
        }
        guard total.isFinite else {
            throw DroptraceError("NaN or Inf in the evaluation loss", path: model.checkpoint.weightsPath)
        }
        return LanguageModelLoss(totalNLL: total, predictedTokens: count)
    }
}
