@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// GPT-J's defaults as GPTJConfig has them, its parallel block off one
/// ln_1, its interleaved partial rotary and its biased head, and CodeGen's
/// sharded qkv_proj; the scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`).
@Suite struct GPTJTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("gptj-f32", "n_head", "5"),
        Mutant("gptj-f32", "n_embd", "0"),
        Mutant("gptj-f32", "n_layer", "null"),
        Mutant("gptj-f32", "n_inner", "-1"),
        Mutant("gptj-f32", "layer_norm_epsilon", "0.0"),
        // GPTJAttention's sin/cos table must fit an even part of each head.
        Mutant("gptj-f32", "rotary_dim", "0"),
        Mutant("gptj-f32", "rotary_dim", "7"),
        Mutant("gptj-f32", "rotary_dim", "18"),
        Mutant("gptj-f32", "rotary_dim", "null"),
        Mutant("gptj-f32", "tie_word_embeddings", "\"no\""),
        Mutant("codegen-f32", "rotary_dim", "10"),
        Mutant("codegen-f32", "n_head", "6"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Both branches read the one ln_1 of a parallel block; q/k/v and
    /// out_proj have no biases, the MLP and the head have; rotary turns the
    /// first rotary_dim dimensions of each head, base 10000.
    @Test func blockAsGPTJBuilds() throws {
        let model = try EditedFixture("gptj-f32").load()
        let block = try model.block(0)
        guard case .parallel = block.residual, let attention = block.attention?.attention,
              case .fused(let qkv) = attention.projection, case .plain(let up, let down, let activation)? = block.mlp?.feedForward
        else {
            Issue.record("not a parallel block with a fused attention and a plain MLP")
            return
        }
        #expect(qkv.bias == nil && attention.output.bias == nil && up.bias != nil && down.bias != nil)
        #expect(activation == .geluTanh && up.outFeatures == 96)
        let rotary = try #require(attention.rotary)
        #expect(rotary.rotaryDim == 8 && rotary.headDim == 16)
        #expect(rotary.inverseFrequencies == RotaryEmbedding.defaultInverseFrequencies(base: 10000, rotaryDim: 8))
        #expect(attention.scale == 0.25)
        #expect(model.layerNaming.attention == ["attn."] && model.layerNaming.mlp == ["mlp."])
        #expect(try model.head().projection.bias != nil)
    }

    /// The fused q/k rows of the rotated part are reordered evens first,
    /// then odds, so that rotate-half turns GPT-J's pairs (2i, 2i + 1); the
    /// values and the unrotated dimensions keep their order.
    @Test func interleavedPairsAreGathered() throws {
        let model = try EditedFixture("gptj-f32").load()
        let attention = try #require(try model.block(0).attention?.attention)
        guard case .fused(let qkv) = attention.projection else { return }
        let layout = QKVLayout(numHeads: 4, numKVHeads: 4, headDim: 16)
        let plain = try (model as! GPTJModel).weights.stackedQKV("h.0.attn.", hidden: 64, layout: layout, bias: false)
        let row = { (linear: Linear, r: Int) in Array(linear.weight[(r * 64)..<((r + 1) * 64)]) }
        #expect(row(qkv, 1) == row(plain, 2) && row(qkv, 4) == row(plain, 1))
        #expect(row(qkv, 8) == row(plain, 8) && row(qkv, 64 + 1) == row(plain, 64 + 2))
        #expect(row(qkv, 128 + 1) == row(plain, 128 + 1))
    }

    /// Without tie_word_embeddings the head is untied (GPTJConfig's false);
    /// n_inner null is 4 × n_embd, rotary_dim absent is 64.
    @Test func defaultsAreGPTJConfigs() throws {
        let fixture = try EditedFixture("gptj-f32") { $0["rotary_dim"] = nil }
        fixture.expectRefused(naming: "rotary_dim")
        let tied = try EditedFixture("gptj-f32") { $0["tie_word_embeddings"] = nil }.load()
        #expect(try tied.head().projection.bias != nil)
    }

    /// CodeGen's qkv_proj holds 4 shards of [q, v, k] rows (16 each here):
    /// read as q | k | v, each the shards' rows in turn (the values, and
    /// the unrotated query dimensions, keep their order); scores scaled by
    /// head_dim^−½; n_embd not a multiple of the 4 shards is refused.
    @Test func codeGenReadsItsShardedProjection() throws {
        let model = try EditedFixture("codegen-f32").load()
        let attention = try #require(try model.block(1).attention?.attention)
        guard case .fused(let qkv) = attention.projection else {
            Issue.record("not a fused projection")
            return
        }
        let stored = try (model as! GPTJModel).weights.linear("h.1.attn.qkv_proj", in: 64, out: 192, bias: false)
        let row = { (linear: Linear, r: Int) in Array(linear.weight[(r * 64)..<((r + 1) * 64)]) }
        // Values: shard m's v rows are stored from 48m + 16.
        #expect(row(qkv, 128) == row(stored, 16) && row(qkv, 128 + 16 + 3) == row(stored, 48 + 16 + 3))
        // Query dimensions 4–7 of head 0 and of head 2 (shard 1's first) are unrotated.
        #expect(row(qkv, 5) == row(stored, 5) && row(qkv, 16 + 5) == row(stored, 48 + 5))
        // Keys (dimensions past rotary_dim): shard m's k rows are stored from 48m + 32.
        #expect(row(qkv, 64 + 6) == row(stored, 32 + 6))
        #expect(attention.scale == Float(pow(8.0, -0.5)) && attention.rotary?.rotaryDim == 4)
        let unsharded = try EditedFixture("codegen-f32") {
            $0["n_embd"] = 18
            $0["n_head"] = 2
        }
        unsharded.expectRefused(naming: "n_embd")
    }
}
