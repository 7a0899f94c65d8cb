import Architectures
import DroptraceSupport
import Foundation
import TensorEngine

/// Computes attention, MLP and block importance plus the block-gap
/// similarities of a model in one layer-by-layer pass over all calibration
/// tokens (LLM-Drop needs a separate pass per module type).
public struct ImportanceScorer {
    public let model: any LanguageModel
    /// Bytes of block-boundary hidden states kept in memory; beyond it they
    /// go to an unlinked temporary file (see `BoundaryStates`).
    public var stateMemoryBudget: Int
    /// Bytes the layers' activations may take (`validate` refuses more).
    public var memoryLimit = EngineMemory.available

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
        // All tokens go through each layer at once: refuse a set whose activations cannot fit
        // rather than die allocating them.
        let tokens = sequences.reduce(0) { $0 + $1.count }
        let (needed, overflow) = tokens.multipliedReportingOverflow(by: model.streamWidth * Self.activationBytesPerWidth)
        if overflow || needed > memoryLimit {
            throw DroptraceError(
                "\(tokens) calibration tokens need about \(Self.gibibytes(overflow ? .max : needed)) of activations at once, more than the \(Self.gibibytes(memoryLimit)) this process may use; score fewer (--samples, --seq-len)",
                path: calibrationPath)
        }
    }

    /// Activation bytes per token per unit of hidden width a layer holds at
    /// its peak (residual, norms, q/k/v, attention output, the MLP's gate and
    /// up at about 4 widths each), in float32.
    static let activationBytesPerWidth = 12 * MemoryLayout<Float>.size

    static func gibibytes(_ bytes: Int) -> String { String(format: "%.1f GiB", Double(bytes) / Double(1 << 30)) }

    /// Importance of every module with the modules of `plan` dropped (their
    /// scores are NaN), from one pass, with the float64 sums the means are
    /// derived from (`ModuleScores.sums`: per sequence, in the order given).
    /// - Parameter progress: called after each layer with (done, total).
    public func score(
        _ sequences: [[Int]], calibrationPath: String, dropping plan: DropPlan = .none,
        progress: ((Int, Int) -> Void)? = nil
    ) throws -> ModuleScores {
        try validate(sequences, calibrationPath: calibrationPath)
        let layers = model.layerCount
        let batch = TokenBatch(sequences: sequences)
        var sums = SequenceSums(tokens: batch.sequences.map(\.count), layers: layers)
        let boundaries = try BoundaryStates(
            rows: batch.tokenCount, cols: model.scoredColumns?.count ?? model.streamWidth, expectedStates: layers + 1,
            memoryBudget: stateMemoryBudget)
        let lastRows = batch.sequences.compactMap { $0.isEmpty ? nil : $0.upperBound - 1 }

        // A layer the model runs more than once is scored over all its passes (each weighs 1 / passes);
        // its boundary state is the stream entering its last pass.
        let final = try LayerwiseForward(model: model, plan: plan).run(batch) { step in
            let index = step.index, share = (weight: 1 / Double(step.passes), first: step.pass == 0)
            if let attended = step.attentionResidual {
                try accumulate(step.branchInput ?? step.input, attended, batch, layer: index, share: share, into: &sums.attention, what: "attention output")
            }
            if let mlpResidual = step.mlpResidual {
                try accumulate(step.mlpInput, mlpResidual, batch, layer: index, share: share, into: &sums.mlp, what: "MLP output")
            }
            if !step.isDropped {
                try accumulate(
                    model.scored(step.input), model.scored(step.output), batch, layer: index, share: share, into: &sums.block, what: "block output")
            }
            guard step.pass == step.passes - 1 else { return }
            try boundaries.append(model.scored(step.input))
            progress?(index + 1, layers)
        }
        // Block gaps: cos(h_start, h_j) for every pair, h_j leaving layer j − 1.
        try boundaries.append(model.scored(final))
        for (layer, pairs) in try boundaries.pairTotals(lastRows: lastRows).enumerated() {
            for (start, totals) in pairs.enumerated() {
                guard totals.isFinite else { throw nonFinite(layer: layer, what: "block output") }
                sums.blockGap.cosineSum[start][layer - start] = totals.cosine
                sums.blockGap.angularDistanceSum[start][layer - start] = totals.angularDistance
                sums.blockGap.lastTokenAngularDistanceSum[start][layer - start] = totals.lastTokenAngularDistance
            }
        }
        // A layer without either module (Mllama's cross-attention layers, which transformers skips on
        // text) never runs: its one-block gap is unmeasured, as its block score is.
        for index in 0..<layers where model.lacksBothModules(index) {
            sums.blockGap.cosineSum[index][0] = .nan
            sums.blockGap.angularDistanceSum[index][0] = .nan
            sums.blockGap.lastTokenAngularDistanceSum[index][0] = .nan
        }
        // Around a loop the stream leaving a layer is not the next boundary state (a looped layer
        // is averaged over its passes, the layer before the loop meets its entries): its one-block
        // gap is its block score, as a drop of that one block is ranked.
        if let loop = model.layerLoop {
            for index in 0..<layers where (loop.layers.contains(index) || index + 1 == loop.layers.lowerBound) && !plan.blocks.contains(index) {
                let block = sums.block
                sums.blockGap.cosineSum[index][0] = block.cosineSum.reduce(0) { $0 + $1[index] }
                sums.blockGap.angularDistanceSum[index][0] = block.angularDistanceSum.reduce(0) { $0 + $1[index] }
                sums.blockGap.lastTokenAngularDistanceSum[index][0] =
                    block.lastTokenCosine.reduce(0) { $0 + SequenceSums.angularDistance($1[index]) }
            }
        }
        return ModuleScores(sums: sums)
    }

    /// One pass over the rows' cosines: per sequence of `batch`, their sum,
    /// the sum of their angular distances and the last token's, at `layer`,
    /// times `share.weight` (a looped layer's pass), added to the earlier
    /// passes' unless `share.first`.
    private func accumulate(
        _ a: Matrix, _ b: Matrix, _ batch: TokenBatch, layer: Int, share: (weight: Double, first: Bool),
        into sums: inout ModuleSequenceSums, what: String
    ) throws {
        guard let cosines = Cosine.rows(a, b) else { throw nonFinite(layer: layer, what: what) }
        func add(_ value: Double, to sum: inout Double) {
            sum = share.first ? value * share.weight : sum + value * share.weight
        }
        for (sequence, rows) in batch.sequences.enumerated() {
            var cosine = 0.0, angular = 0.0
            for row in rows {
                cosine += cosines[row]
                angular += SequenceSums.angularDistance(cosines[row])
            }
            add(cosine, to: &sums.cosineSum[sequence][layer])
            add(angular, to: &sums.angularDistanceSum[sequence][layer])
            add(rows.isEmpty ? .nan : cosines[rows.upperBound - 1], to: &sums.lastTokenCosine[sequence][layer])
        }
    }

    private func nonFinite(layer: Int, what: String) -> DroptraceError {
        DroptraceError(
            "NaN or Inf in the activations of layer \(layer) (\(what)); the weights or config.json's values (scales, rotary settings) may be corrupt, or overflow in this precision",
            path: model.checkpoint.weightsPath)
    }
}
