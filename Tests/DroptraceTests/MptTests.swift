@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// MPT's defaults as MptConfig and MptAttentionConfig have them, its ALiBi
/// (MPT's slopes, biases from the last key), and the settings transformers'
/// MptModel does not run; the scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`).
@Suite struct MptTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("mpt-f32", "n_heads", "5"),
        Mutant("mpt-f32", "d_model", "0"),
        Mutant("mpt-f32", "n_layers", "null"),
        Mutant("mpt-f32", "layer_norm_epsilon", "0.0"),
        Mutant("mpt-f32", "expansion_ratio", "2"),
        Mutant("mpt-f32", "no_bias", "false"),
        Mutant("mpt-f32", "attn_config.qk_ln", "true"),
        Mutant("mpt-f32", "attn_config.attn_type", "\"multiquery_attention\""),
        Mutant("mpt-f32", "attn_config.alibi", "false"),
        Mutant("mpt-f32", "attn_config.alibi_bias_max", "16"),
        Mutant("mpt-f32", "attn_config.alibi_bias_max", "8.0"),
        Mutant("mpt-f32", "attn_config.clip_qkv", "-1.0"),
        Mutant("mpt-f32", "attn_config.clip_qkv", "1"),
        Mutant("mpt-f32", "attn_config.softmax_scale", "\"x\""),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// No biases, ALiBi from the last key with MPT's slopes, clip_qkv, the
    /// softmax scale 1 / √head_dim unless attn_config gives one, a tied head.
    @Test func blockAsMptBuilds() throws {
        let model = try EditedFixture("mpt-f32").load()
        let block = try model.block(0)
        let attention = try #require(block.attention?.attention)
        guard case .fused(let qkv) = attention.projection, case .plain(let up, let down, let activation)? = block.mlp?.feedForward
        else {
            Issue.record("not a fused Wqkv and a plain MLP")
            return
        }
        #expect(qkv.bias == nil && attention.output.bias == nil && up.bias == nil && down.bias == nil)
        #expect(activation == .gelu && up.outFeatures == 4 * 48)
        #expect(attention.alibi == ALiBi(slopesFromLastKey: ALiBi.mptSlopes(heads: 6, maxBias: 8)) && attention.rotary == nil)
        #expect(attention.clip == 0.5 && attention.scale == 1 / Float(8.0.squareRoot()))
        guard case .layer(_, let bias, _)? = block.attention?.inputNorm else {
            Issue.record("not a LayerNorm")
            return
        }
        #expect(bias.allSatisfy { $0 == 0 })
        #expect(model.layerNaming.attention == ["attn.", "norm_1."] && model.layerNaming.mlp == ["ffn.", "norm_2."])

        let scaled = try EditedFixture("mpt-f32") { config in
            var attn = config["attn_config"] as! [String: Any]
            attn["softmax_scale"] = 0.25
            attn["clip_qkv"] = 0.0
            config["attn_config"] = attn
        }.load()
        let other = try #require(try scaled.block(0).attention?.attention)
        #expect(other.scale == 0.25 && other.clip == nil)
        let defaults = try EditedFixture("mpt-f32") {
            $0["attn_config"] = nil
            $0["tie_word_embeddings"] = nil
        }.load()
        #expect(try defaults.block(0).attention?.attention.clip == nil)
        #expect(try defaults.head().vocabularySize == 512)
    }

    /// transformers' slopes: 1 / 2^(8i / n) for the power of two n ≥ heads,
    /// the odd-numbered ones first when heads < n (BLOOM's values for these
    /// powers of two, by another computation).
    @Test func mptSlopesAreTransformers() {
        #expect(ALiBi.mptSlopes(heads: 4, maxBias: 8) == [0.25, 0.0625, 0.015625, 0.00390625])
        #expect(ALiBi.mptSlopes(heads: 6, maxBias: 8) == [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125])
        #expect(ALiBi.mptSlopes(heads: 1, maxBias: 8) == [0.00390625])
        #expect(ALiBi.mptSlopes(heads: 6, maxBias: 8) == ALiBi.slopes(heads: 6))
    }

    /// The bias of key j is slope · (j − last key): a score row's biases are
    /// BLOOM's shifted by a constant, MPT's table sliced to the sequence.
    @Test func biasesCountFromTheLastKey() {
        let alibi = ALiBi(slopesFromLastKey: [0.5])
        #expect(alibi.table(positions: 3) == [-1, -0.5, 0])
        #expect(alibi.tableOffset(length: 2, longest: 3) == 1)
        var row: [Float] = [0, 0, 0]
        row.withUnsafeMutableBufferPointer {
            alibi.add(to: $0.baseAddress!, visible: 0..<3, head: 0, firstPosition: 4, lastPosition: 6)
        }
        #expect(row == [-1, -0.5, 0])
        #expect(ALiBi(slopes: [0.5]).tableOffset(length: 2, longest: 3) == 0)
    }

    /// MptModel's ALiBi table has max_seq_len columns: no longer sequence runs.
    @Test func positionsAreMaxSeqLen() throws {
        #expect(try EditedFixture("mpt-f32").load().maxPositions == 128)
    }
}
