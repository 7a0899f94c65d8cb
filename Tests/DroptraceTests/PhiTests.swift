import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Phi's parallel block off one LayerNorm, its partial rotary, optional
/// per-head q/k LayerNorms and the head's bias.
@Suite struct PhiTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("phi-f32", "layer_norm_eps", "0"),
        Mutant("phi-f32", "layer_norm_eps", "-1e-5"),
        // The q/k norms are hidden_size / heads = 12 wide; heads of 16 cannot take them.
        Mutant("phi-f32", "head_dim", "16"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Both branches read input_layernorm of the block's input, in parallel.
    @Test func bothBranchesReadTheOneNorm() throws {
        let block = try EditedFixture("phi-f32").load().block(1)
        guard case .parallel = block.residual else {
            Issue.record("phi's block is not parallel")
            return
        }
        guard case .layer(let w1, let b1, _)? = block.attention?.inputNorm, case .layer(let w2, let b2, _)? = block.mlp?.inputNorm
        else {
            Issue.record("the branches' norms are not LayerNorms")
            return
        }
        #expect(w1 == w2 && b1 == b2 && b1.contains { $0 != 0 })
        guard case .plain(let up, let down, .geluTanh)? = block.mlp?.feedForward else {
            Issue.record("the MLP is not fc2(gelu_new(fc1 x))")
            return
        }
        #expect(up.bias != nil && down.bias != nil && block.attention?.attention.output.bias != nil)
    }

    /// Half of each 12-wide head rotates (PhiConfig's default when the
    /// config names no partial_rotary_factor); the whole head with 1.
    @Test func rotaryCoversHalfOfEachHead() throws {
        let model = try EditedFixture("phi-f32", rope: "partial_rotary_factor", nil).load()
        #expect(try model.block(0).attention?.attention.rotary?.rotaryDim == 6)
        let whole = try EditedFixture("phi-f32", rope: "partial_rotary_factor", 1.0).load()
        #expect(try whole.block(0).attention?.attention.rotary?.rotaryDim == 12)
    }

    /// `qk_layernorm` switches the per-head q/k LayerNorms on (the fixture's)
    /// and off (PhiConfig's default): the scores move.
    @Test func qkLayernormIsRead() throws {
        let normed = try EditedFixture("phi-f32")
        guard case .perHead? = try normed.load().block(0).attention?.attention.queryKeyNorm else {
            Issue.record("no per-head q/k norms")
            return
        }
        let plain = try EditedFixture("phi-f32") { $0["qk_layernorm"] = nil }
        #expect(try plain.load().block(0).attention?.attention.queryKeyNorm == nil)
        let moved = zip(try normed.attentionScores(), try plain.attentionScores()).map { abs($0 - $1) }.max()!
        #expect(moved > 1e-3, "qk_layernorm moves the attention scores by \(moved)")
    }

    /// The head adds lm_head.bias, tied or not; a head without one is refused.
    @Test func headHasItsBias() throws {
        let head = try EditedFixture("phi-f32").load().head()
        #expect(head.projection.bias?.count == 512)
        let fixture = try EditedFixture("phi-f32")
        try BadInputTests().rewriteWeights(fixture.model) { entries in entries.removeAll { $0.name == "lm_head.bias" } }
        let error = #expect(throws: DroptraceError.self) { try fixture.load().head() }
        #expect(error?.message.contains("lm_head.bias") == true, "\(String(describing: error))")
    }
}
