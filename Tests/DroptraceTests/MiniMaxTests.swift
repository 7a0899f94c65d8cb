@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
@testable import TensorEngine
import Testing

/// MiniMax (`minimax`): lightning attention beside softmax attention by
/// `layer_types`, its decay tables as stored or computed, the residual
/// scalings of the normed stream, and the original release's spellings
/// MiniMaxConfig ignores. The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct MiniMaxTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "minimax-f32"

    static let mutants: [Mutant] = [
        // torch.arange(block_size) sizes the tables: below 1 transformers cannot build or count blocks.
        Mutant(name, "block_size", "0"), Mutant(name, "block_size", "-1"), Mutant(name, "block_size", "null"),
        // The stored tables are sized for blocks of 16 (transformers refuses the mismatch).
        Mutant(name, "block_size", "8"),
        // Softmax attention on a layer whose mask MiniMaxModel has none for (KeyError).
        Mutant(name, "layer_types", #"["linear_attention", "sliding_attention", "linear_attention", "linear_attention"]"#),
        Mutant(name, "layer_types", #"["linear_attention", "full_attention", "linear_attention"]"#),
        // Kinds the weights contradict (transformers would draw the missing projections at random).
        Mutant(name, "layer_types", #"["linear_attention", "linear_attention", "linear_attention", "linear_attention"]"#),
        Mutant(name, "full_attn_alpha_factor", #""1.5""#), Mutant(name, "mlp_beta_factor", "true"),
        Mutant(name, "mlp_beta_factor", "1e39"),
        // The original release's spellings, which transformers ignores, describing another model.
        Mutant(name, "attn_type_list", "[0, 0, 1, 0]"), Mutant(name, "layernorm_full_attention_alpha", "3.5"),
        // Sizes the tensors contradict, and both spellings of the expert count with different values.
        Mutant(name, "num_local_experts", "8"), Mutant(name, "head_dim", "8"), Mutant(name, "num_experts_per_tok", "5"),
        Mutant(name, "num_experts", "8", key: "num_local_experts"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers 0, 2 and 3 are lightning attention (4 heads of 12, blocks of
    /// 16), layer 1 softmax attention; each branch joins the stream as
    /// α · norm(x) + β · out with its kind's factors; every MLP routed.
    @Test func layersAsMiniMaxBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            let branch = try #require(block.attention), mlp = try #require(block.mlp)
            let linear = index != 1
            if case .lightningAttention(let attention) = branch.mixer {
                #expect(linear && attention.heads == 4 && attention.headDim == 12 && attention.decay.blockSize == 16)
            } else {
                #expect(!linear && branch.attention != nil)
            }
            guard case .scalingNormalized(let alpha, let beta)? = branch.join,
                  case .scalingNormalized(let mlpAlpha, let mlpBeta)? = mlp.join else {
                Issue.record("layer \(index): no scaled residual")
                continue
            }
            #expect(alpha == (linear ? 1.4 : 1.8) && beta == (linear ? 1.3 : 0.7))
            #expect(mlpAlpha == 1.6 && mlpBeta == 0.9)
            guard case .mixture(let moe) = mlp.feedForward else { Issue.record("layer \(index): not routed"); continue }
            #expect(moe.experts.count == 4 && moe.expertsPerToken == 2)
        }
    }

    /// The stored tables are transformers' own: the ones computed from the
    /// layer's position agree with them, so without them the model scores
    /// the same (up to float32 rounding); a stored table is read as stored.
    @Test func decayTablesAsStoredOrComputed() throws {
        let fixture = try EditedFixture(Self.name)
        let checkpoint = try Checkpoint(directory: fixture.model)
        for layer in [0, 2, 3] {
            let stored = try checkpoint.storedTensor("model.layers.\(layer).self_attn.slope_rate").floats()
            let computed = LightningDecay.slopes(heads: 4, layer: layer, layers: 4)
            #expect(zip(stored, computed).allSatisfy { abs($0 - $1) <= 1e-6 * $0 }, "\(stored) vs \(computed)")
            let diagonal = try checkpoint.storedTensor("model.layers.\(layer).self_attn.diagonal_decay").floats()
            let ours = LightningDecay.diagonalDecay(stored, blockSize: 16)
            #expect(zip(diagonal, ours).allSatisfy { abs($0 - $1) <= 1e-6 }, "layer \(layer)'s diagonal decay")
        }
        let base = try fixture.attentionScores()
        let bare = try fixture.scratch.copyOfModel(Self.name, as: "bare")
        try BadInputTests().rewriteWeights(bare) { entries in
            entries.removeAll { entry in MiniMaxModel.decayBuffers.contains { entry.name.hasSuffix("." + $0) } }
        }
        let bareModel = try ModelRegistry.load(try Checkpoint(directory: bare))
        let bareScores = try ImportanceScorer(model: bareModel).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib").attention
        #expect(zip(base, bareScores).allSatisfy { abs($0 - $1) < 1e-6 }, "\(base) vs \(bareScores)")
        // Without stored tables any block size runs, one block holding each sequence: the same
        // attention up to rounding (the tables' entries are computed as they are read).
        try BadInputTests().rewriteConfig(bare) { $0["block_size"] = 1_000_000_000 }
        let oneBlock = try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: bare)))
            .score(FixtureFiles.jsonlSequences(), calibrationPath: "calib").attention
        #expect(zip(base, oneBlock).allSatisfy { abs($0 - $1) < 1e-5 }, "\(base) vs \(oneBlock)")
        // Tables computed anew for renumbered layers would be another model: such an export is refused.
        let plan = DropPlan(blocks: [1])
        #expect(bareModel.exportProblem(plan)?.contains("slope_rate") == true)
        #expect(try fixture.load().exportProblem(plan) == nil)
        #expect(try fixture.exportedConfig(droppingBlocks: [1])["layer_types"] as? [String] == Array(repeating: "linear_attention", count: 3))
        // Faster decay stored for layer 0: read as stored.
        let faster = try fixture.scratch.copyOfModel(Self.name, as: "faster")
        try BadInputTests().rewriteWeights(faster) { entries in
            let index = entries.firstIndex { $0.name == "model.layers.0.self_attn.slope_rate" }!
            let slopes = [Float](repeating: 0.5, count: 4)
            entries[index] = SafetensorsWriter.Entry(
                name: entries[index].name, dtype: .float32, shape: [4, 1, 1], bytes: slopes.withUnsafeBufferPointer { Data(buffer: $0) })
        }
        let fasterScores = try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: faster)))
            .score(FixtureFiles.jsonlSequences(), calibrationPath: "calib").attention
        #expect(abs(fasterScores[0] - base[0]) > 1e-6)
    }

    /// The block form over a sequence equals the token-by-token recurrence
    /// transformers decodes with (a state that has taken tokens in), up to
    /// rounding; blocks of 16 split the 40 rows 16 + 16 + 8.
    @Test func blocksAgreeWithTheRecurrence() throws {
        let model = try EditedFixture(Self.name).load()
        guard case .lightningAttention(let attention)? = try model.block(0).attention?.mixer else {
            Issue.record("layer 0 is not lightning attention")
            return
        }
        let rows = 40, width = model.hiddenSize
        let x = Matrix(rows: rows, cols: width, data: (0..<(rows * width)).map { Float(sin(Double($0) * 0.37)) })
        let whole = attention(x, TokenBatch(sequences: [[Int](repeating: 0, count: rows)]))
        var state = attention.emptyState()
        var stepped: [Float] = []
        for r in 0..<rows {
            let row = Matrix(rows: 1, cols: width, data: Array(x.data[(r * width)..<((r + 1) * width)]))
            stepped += attention(row, state: &state).data
        }
        #expect(zip(whole.data, stepped).allSatisfy { abs($0 - $1) <= 1e-4 * max(1, abs($0)) })
    }

    /// Legacy layer type names read as the current ones; the original
    /// release's spellings agreeing with what transformers reads are accepted;
    /// the scalings are read.
    @Test func spellingsAndScalings() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let legacy = try EditedFixture(Self.name) {
            $0["layer_types"] = ["mamba", "attention", "mamba", "mamba"]
            $0["attn_type_list"] = [0, 1, 0, 0]
            $0["layernorm_full_attention_alpha"] = 1.8
            $0["layernorm_mlp_beta"] = 0.9
        }
        #expect(try legacy.attentionScores() == base)
        let unscaled = try EditedFixture(Self.name) { $0["linear_attn_beta_factor"] = 1 }
        #expect(try unscaled.attentionScores()[0] != base[0])
        // Without layer_types MiniMaxConfig alternates full and lightning layers from layer 0: the weights refuse it.
        try EditedFixture(Self.name) { $0["layer_types"] = nil }.expectRefused(naming: "layer_types")
    }
}
