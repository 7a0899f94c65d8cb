import Architectures
import DroptraceSupport
import TensorEngine

/// Computes attention, MLP and block importance plus the block-gap
/// similarities of a model in one layer-by-layer pass over all calibration
/// tokens (LLM-Drop needs a separate pass per module type).
public struct ImportanceScorer {
    public let model: any LanguageModel
    /// Bytes of block-boundary hidden states kept in memory; beyond it they
    /// go to an unlinked temporary file (see `BoundaryStates`).
    public var stateMemoryBudget: Int

    public init(model: any LanguageModel, stateMemoryBudget: Int = 768 << 20) {
        self.model = model
        self.stateMemoryBudget = stateMemoryBudget
    }

    /// Refuses calibration data the model cannot run, naming the file.
    public func validate(_ sequences: [[Int]], calibrationPath: String) throws {
        guard !sequences.isEmpty else {
            throw DroptraceError("no calibration sequences", path: calibrationPath)
        }
        for (index, sequence) in sequences.enumerated() {
            if sequence.count > model.maxPositions {
                throw DroptraceError(
                    "sequence \(index + 1) has \(sequence.count) tokens, more than the model's \(model.maxPositions) positions",
                    path: calibrationPath)
            }
            if let bad = sequence.first(where: { $0 < 0 || $0 >= model.vocabularySize }) {
                throw DroptraceError(
                    "token id \(bad) in sequence \(index + 1) is outside the model's vocabulary (vocab_size \(model.vocabularySize))",
                    path: calibrationPath)
            }
        }
    }

    /// Importance of every module with the modules of `plan` dropped (their
    /// scores are NaN), from one pass.
    /// - Parameter progress: called after each layer with (done, total).
    public func score(
        _ sequences: [[Int]], calibrationPath: String, dropping plan: DropPlan = .none,
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> ModuleScores {
        try validate(sequences, calibrationPath: calibrationPath)
        let layers = model.layerCount
        var attention = [Double](repeating: .nan, count: layers)
        var mlp = attention, block = attention
        var gap = [[Double]](repeating: [Double](repeating: .nan, count: layers), count: layers)
        let batch = TokenBatch(sequences: sequences)
        let boundaries = try BoundaryStates(
            rows: batch.tokenCount, cols: model.hiddenSize, expectedStates: layers, memoryBudget: stateMemoryBudget)

        try LayerwiseForward(model: model, plan: plan).run(batch) { step in
            let index = step.index
            if let attended = step.attentionResidual {
                attention[index] = 1 - (try meanCosine(step.input, attended, layer: index, what: "attention output"))
            }
            if let mlpResidual = step.mlpResidual {
                mlp[index] = 1 - (try meanCosine(step.mlpInput, mlpResidual, layer: index, what: "MLP output"))
            }
            if !step.isDropped {
                block[index] = 1 - (try meanCosine(step.input, step.output, layer: index, what: "block output"))
            }
            try boundaries.append(step.input)
            guard let similarities = boundaries.meanCosines(with: step.output) else {
                throw nonFinite(layer: index, what: "block output")
            }
            for (start, similarity) in similarities.enumerated() { gap[start][index - start] = similarity }
            progress?(index + 1, layers)
        }
        return ModuleScores(attention: attention, mlp: mlp, block: block, blockGap: gap)
    }

    private func meanCosine(_ a: Matrix, _ b: Matrix, layer: Int, what: String) throws -> Double {
        guard let value = Cosine.mean(a, b) else { throw nonFinite(layer: layer, what: what) }
        return value
    }

    private func nonFinite(layer: Int, what: String) -> DroptraceError {
        DroptraceError(
            "NaN or Inf in the activations of layer \(layer) (\(what)); the weights may be corrupt or overflow in this precision",
            path: model.checkpoint.directory.path)
    }
}
