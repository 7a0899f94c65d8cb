import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// GPTBigCode's defaults as GPTBigCodeConfig has them, its multi-query and
/// per-head fused rows, and the configs its model cannot build; the scores
/// themselves are checked against transformers with every other family
/// (`ScoringReferenceTests`).
@Suite struct GPTBigCodeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("gpt_bigcode-f32", "n_head", "5"),
        Mutant("gpt_bigcode-f32", "n_embd", "0"),
        Mutant("gpt_bigcode-f32", "n_layer", "-1"),
        Mutant("gpt_bigcode-f32", "n_inner", "0"),
        Mutant("gpt_bigcode-f32", "layer_norm_epsilon", "0"),
        Mutant("gpt_bigcode-f32", "multi_query", "null"),
        Mutant("gpt_bigcode-f32", "multi_query", "1"),
        // GPTBigCodeBlock raises NotImplementedError for cross-attention with multi-query.
        Mutant("gpt_bigcode-f32", "add_cross_attention", "true"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// multi_query (the default): c_attn gives every query head, then one
    /// key and one value head; without it q, k and v per head, as many key
    /// heads as query heads. nn.Linear projections, all with biases.
    @Test func multiQueryReadsOneKeyValueHead() throws {
        let model = try EditedFixture("gpt_bigcode-f32") { $0["multi_query"] = nil }.load()
        #expect(model.modelType == "gpt_bigcode")
        let attention = try #require(try model.block(0).attention?.attention)
        guard case .fused(let qkv) = attention.projection else {
            Issue.record("not a fused c_attn")
            return
        }
        #expect(attention.layout.numKVHeads == 1 && attention.layout.arrangement == .grouped)
        #expect(qkv.outFeatures == 48 + 2 * 12 && qkv.bias != nil && attention.output.bias != nil)
        #expect(attention.rotary == nil && attention.alibi == nil)
        #expect(attention.scale == 1 / Float(12).squareRoot())

        let multiHead = try #require(try EditedFixture("gpt_bigcode_mha-f32").load().block(0).attention?.attention)
        #expect(multiHead.layout.numKVHeads == 4 && multiHead.layout.arrangement == .interleavedPerHead)
    }

    /// Without activation_function the MLP is GELU's tanh approximation
    /// (gelu_pytorch_tanh), not gpt2's default gelu_new by name but the same
    /// function; scale_attn_weights false leaves the scores unscaled.
    @Test func defaultsAreGPTBigCodeConfigs() throws {
        let model = try EditedFixture("gpt_bigcode-f32") {
            $0["activation_function"] = nil
            $0["scale_attn_weights"] = false
        }.load()
        let block = try model.block(0)
        guard case .plain(let up, _, let activation)? = block.mlp?.feedForward else {
            Issue.record("not a plain MLP")
            return
        }
        #expect(activation == .geluTanh && up.outFeatures == 96)
        #expect(try #require(block.attention?.attention).scale == 1)
    }

    /// GPTBigCodeConfig has no scale_attn_by_inverse_layer_idx: a config
    /// that carries one is read as GPTBigCodeAttention reads it, not at all.
    @Test func inverseLayerIndexScalingIsNotRead() throws {
        let model = try EditedFixture("gpt_bigcode-f32") { $0["scale_attn_by_inverse_layer_idx"] = true }.load()
        #expect(try #require(try model.block(2).attention?.attention).scale == 1 / Float(12).squareRoot())
    }

    /// A block drop removes whole layers and rewrites n_layer.
    @Test func blockDropExportRewritesTheLayerCount() throws {
        let config = try EditedFixture("gpt_bigcode-f32").exportedConfig(droppingBlocks: [1])
        #expect(config["n_layer"] as? Int == 3 && config["model_type"] as? String == "gpt_bigcode")
    }
}
