@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Falcon's three blocks (7B, 40B/180B, RW), its switches read as Python
/// reads them, its fused rows regrouped, and the configs FalconConfig or
/// FalconDecoderLayer cannot run. The scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`).
@Suite struct FalconTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("falcon-f32", "num_attention_heads", "5"),
        Mutant("falcon_new-f32", "num_kv_heads", "3"),
        Mutant("falcon-f32", "layer_norm_epsilon", "null"),
        Mutant("falcon-f32", "activation", "null"),
        Mutant("falcon-f32", "head_dim", "12"),
        Mutant("falcon_new-f32", "num_ln_in_parallel_attn", "3"),
        // Multi-head attention splits as many key heads as query heads.
        Mutant("falcon_rw-f32", "num_kv_heads", "2"),
        // transformers builds ln_attn / ln_mlp and then reads input_layernorm.
        Mutant("falcon-f32", "num_ln_in_parallel_attn", "2"),
        Mutant("falcon_new-f32", "parallel_attn", "false", key: "new_decoder_architecture"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Each variant's block: residual, norms, key/value heads, positions.
    @Test func eachVariantBuildsItsBlock() throws {
        let seven = try EditedFixture("falcon-f32").load()
        let sevenBlock = try seven.block(1)
        guard case .parallel = sevenBlock.residual, let attention = sevenBlock.attention?.attention else {
            Issue.record("falcon-f32: not a parallel block with attention")
            return
        }
        #expect(attention.layout.numKVHeads == 1 && attention.rotary != nil && attention.alibi == nil)
        #expect(seven.layerNaming.attention == ["self_attention."] && seven.layerNaming.mlp == ["mlp."])

        let forty = try EditedFixture("falcon_new-f32").load()
        #expect(try forty.block(1).attention?.attention.layout.numKVHeads == 2)
        #expect(forty.layerNaming.attention == ["self_attention.", "ln_attn."] && forty.layerNaming.mlp == ["mlp.", "ln_mlp."])

        let rw = try EditedFixture("falcon_rw-f32").load()
        let rwBlock = try rw.block(1)
        guard case .sequential = rwBlock.residual, let rwAttention = rwBlock.attention?.attention else {
            Issue.record("falcon_rw-f32: not a sequential block with attention")
            return
        }
        #expect(rwAttention.layout.arrangement == .interleavedPerHead && rwAttention.rotary == nil)
        #expect(rwAttention.alibi == ALiBi(slopes: ALiBi.slopes(heads: 4), bfloat16Bias: true, divisor: Float(12.0.squareRoot())))
    }

    /// FalconConfig types its switches `bool | None`: absent takes the
    /// default (parallel_attn true), null is false, as `if config.parallel_attn` reads it.
    @Test func nullSwitchIsFalseAbsentIsTheDefault() throws {
        let absent = try EditedFixture("falcon_rw-f32") { $0["parallel_attn"] = nil }.load().block(0)
        guard case .parallel = absent.residual else {
            Issue.record("absent parallel_attn: not parallel")
            return
        }
        let null = try EditedFixture("falcon_rw-f32") { $0["parallel_attn"] = NSNull() }.load().block(0)
        guard case .sequential = null.residual else {
            Issue.record("null parallel_attn: not sequential")
            return
        }
    }

    /// Falcon ALiBi's bias: bf16(bf16(slope) · bf16(j)) / √head_dim, which
    /// loses the positions' low bits past 256 as transformers' does.
    @Test func alibiBiasIsRoundedAsFalconBuildsIt() {
        let alibi = ALiBi(slopes: [0.0883883386850357], bfloat16Bias: true, divisor: 4)
        #expect(alibi.bias(head: 0, position: 257) == alibi.bias(head: 0, position: 256))
        #expect(alibi.bias(head: 0, position: 0) == 0)
        #expect(ALiBi(slopes: [0.0883883386850357]).bias(head: 0, position: 257) == Float(0.0883883386850357) * 257)
    }

    /// The new architecture's rows [q0 q1 k0 v0 | q2 q3 k1 v1] (two groups
    /// of two query heads, one row each) become [q0 q1 q2 q3 | k0 k1 | v0 v1].
    @Test func newArchitectureRowsAreRegrouped() {
        let layout = QKVLayout(numHeads: 4, numKVHeads: 2, headDim: 1)
        let fused = Linear(weight: (0..<8).map(Float.init), bias: (10..<18).map(Float.init), inFeatures: 1, outFeatures: 8)
        let grouped = FalconModel.groupedQKV(fused, layout: layout)
        #expect(grouped.weight == [0, 1, 4, 5, 2, 6, 3, 7])
        #expect(grouped.bias == [10, 11, 14, 15, 12, 16, 13, 17])
    }
}
