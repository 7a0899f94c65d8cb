import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// StableLM's two blocks (pre-norm, or parallel off one LayerNorm by
/// `use_parallel_residual`), its partial rotary, per-head q/k LayerNorms
/// with weights of their own and q/k/v biases.
@Suite struct StableLMTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("stablelm-f32", "layer_norm_eps", "0.0"),
        Mutant("stablelm-f32", "layer_norm_eps", "-1e-5"),
        // StableLmAttention's heads are hidden_size / heads = 16 wide whatever head_dim says.
        Mutant("stablelm-f32", "head_dim", "12"),
        // int(16 · 0.3) = 4 fits, int(12 · 0.25) = 3 does not: the rotary table is 4 wide.
        Mutant("stablelm_parallel-f32", "rope_parameters.partial_rotary_factor", "0.25"),
        Mutant("stablelm-f32", "rope_parameters.partial_rotary_factor", "1.5"),
        Mutant("stablelm-f32", "rope_parameters.partial_rotary_factor", "null"),
    ]

    /// The bias of the fused q/k/v projection of `block`'s attention.
    func qkvBias(_ block: TransformerBlock) -> [Float]? {
        guard case .fused(let qkv)? = block.attention?.attention.projection else { return nil }
        return qkv.bias
    }

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// use_parallel_residual false: input_layernorm before attention,
    /// post_attention_layernorm before the SwiGLU MLP, in sequence; the
    /// export naming keeps each norm with its branch.
    @Test func sequentialBlockHasTwoNorms() throws {
        let model = try EditedFixture("stablelm-f32").load()
        let block = try model.block(1)
        guard case .sequential = block.residual,
            case .layer(let w1, let b1, _)? = block.attention?.inputNorm, case .layer(let w2, _, _)? = block.mlp?.inputNorm
        else {
            Issue.record("stablelm's default block is not pre-norm with LayerNorms")
            return
        }
        #expect(w1 != w2 && b1.contains { $0 != 0 })
        guard case .gated(let gateUp, let down, .silu)? = block.mlp?.feedForward, gateUp.bias == nil, down.bias == nil else {
            Issue.record("the MLP is not a bias-free SwiGLU")
            return
        }
        #expect(qkvBias(block) != nil && block.attention?.attention.output.bias == nil)
        #expect(model.layerNaming.attention.contains("input_layernorm."))
    }

    /// use_parallel_residual true: both branches read input_layernorm of the
    /// block's input, which the export naming gives to neither.
    @Test func parallelBlockReadsTheOneNorm() throws {
        let model = try EditedFixture("stablelm_parallel-f32").load()
        let block = try model.block(1)
        guard case .parallel = block.residual,
            case .layer(let w1, let b1, _)? = block.attention?.inputNorm, case .layer(let w2, let b2, _)? = block.mlp?.inputNorm
        else {
            Issue.record("stablelm's parallel block is not parallel off LayerNorms")
            return
        }
        #expect(w1 == w2 && b1 == b2)
        #expect(qkvBias(block) == nil && block.attention?.attention.queryKeyNorm == nil)
        #expect(!model.layerNaming.attention.contains("input_layernorm.") && !model.layerNaming.mlp.contains("input_layernorm."))
    }

    /// A quarter of each 16-wide head rotates (StableLmConfig's default when
    /// the config names no partial_rotary_factor); a top-level factor of a
    /// 4.x config is read too.
    @Test func rotaryCoversAQuarterOfEachHead() throws {
        let model = try EditedFixture("stablelm-f32", rope: "partial_rotary_factor", nil).load()
        #expect(try model.block(0).attention?.attention.rotary?.rotaryDim == 4)
        let legacy = try EditedFixture("stablelm-f32") { config in
            config["rope_parameters"] = nil
            config["rope_theta"] = 10000.0
            config["partial_rotary_factor"] = 0.5
        }.load()
        #expect(try legacy.block(0).attention?.attention.rotary?.rotaryDim == 8)
    }

    /// `qk_layernorm` switches the per-head q/k LayerNorms, each head with
    /// its own weights, on (the fixture's) and off (StableLmConfig's default):
    /// the scores move.
    @Test func qkLayernormIsRead() throws {
        let normed = try EditedFixture("stablelm-f32")
        guard case .eachHead(.layer(let weight, let bias, _), _)? = try normed.load().block(0).attention?.attention.queryKeyNorm else {
            Issue.record("no per-head q/k LayerNorms")
            return
        }
        #expect(weight.count == 4 * 16 && bias.allSatisfy { $0 == 0 } && weight[0..<16] != weight[16..<32])
        let plain = try EditedFixture("stablelm-f32") { $0["qk_layernorm"] = nil }
        #expect(try plain.load().block(0).attention?.attention.queryKeyNorm == nil)
        let moved = zip(try normed.attentionScores(), try plain.attentionScores()).map { abs($0 - $1) }.max()!
        #expect(moved > 1e-3, "qk_layernorm moves the attention scores by \(moved)")
    }
}
