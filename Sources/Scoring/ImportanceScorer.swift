import Architectures
import DroptraceSupport
import TensorEngine

/// Computes attention, MLP and block importance plus the block-gap
/// similarities of a model in one layer-by-layer pass over all calibration
/// tokens (LLM-Drop needs a separate pass per module type).
public struct ImportanceScorer {
    public let model: any LanguageModel

    public init(model: any LanguageModel) {
        self.model = model
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

    /// - Parameter progress: called after each layer with (done, total).
    public func score(
        _ sequences: [[Int]], calibrationPath: String, progress: ((Int, Int) -> Void)? = nil
    ) throws -> ModuleScores {
        try validate(sequences, calibrationPath: calibrationPath)
        let batch = TokenBatch(sequences: sequences)
        let layers = model.layerCount
        var attention = [Double](), mlp = [Double](), block = [Double]()
        var gap = [[Double]](repeating: [Double](repeating: .nan, count: layers), count: layers)
        // Hidden states at block boundaries, for the block-gap similarities.
        var boundaries: [Matrix] = []

        var x = try model.embed(batch)
        for index in 0..<layers {
            let layer = try model.block(index)
            let attended = x.adding(layer.attention(x, batch))
            let y: Matrix
            switch layer.residual {
            case .sequential:
                y = attended.adding(layer.mlp(attended))
                mlp.append(1 - (try meanCosine(attended, y, layer: index, what: "MLP output")))
            case .parallel:
                let mlpOut = layer.mlp(x)
                mlp.append(1 - (try meanCosine(x, x.adding(mlpOut), layer: index, what: "MLP output")))
                y = attended.adding(mlpOut)
            }
            attention.append(1 - (try meanCosine(x, attended, layer: index, what: "attention output")))
            block.append(1 - (try meanCosine(x, y, layer: index, what: "block output")))

            boundaries.append(x)
            for start in 0...index {
                gap[start][index - start] = try meanCosine(boundaries[start], y, layer: index, what: "block output")
            }
            x = y
            progress?(index + 1, layers)
        }
        return ModuleScores(attention: attention, mlp: mlp, block: block, blockGap: gap)
    }

    private func meanCosine(_ a: Matrix, _ b: Matrix, layer: Int, what: String) throws -> Double {
        guard let value = Cosine.mean(a, b) else {
            throw DroptraceError(
                "NaN or Inf in the activations of layer \(layer) (\(what)); the weights may be corrupt or overflow in this precision",
                path: model.checkpoint.directory.path)
        }
        return value
    }
}
