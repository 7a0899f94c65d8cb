import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Hunyuan dense's defaults as HunYuanDenseV1Config has them, its q/k norms
/// after rotary and its NTK-alpha rope; the scores themselves are checked
/// against transformers with every other family (`ScoringReferenceTests`).
@Suite struct HunYuanDenseV1Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("hunyuan_v1_dense-f32", "rms_norm_eps", "0"),
        Mutant("hunyuan_v1_dense-f32", "attention_bias", "\"yes\""),
        // HunYuanDenseV1Attention reads head_dim as the head width: None cannot build it.
        Mutant("hunyuan_v1_dense-f32", "head_dim", "null"),
        // A negative alpha raised to 12 / 10 gives complex frequencies.
        Mutant("hunyuan_v1_dense-f32", "rope_parameters.alpha", "-2"),
        // transformers asks the "dynamic" type for a factor, alpha or not.
        Mutant("hunyuan_v1_dense-f32", "rope_parameters.factor", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Without `head_dim` the model cannot be built either (its default is None).
    @Test func absentHeadDimIsRefused() throws {
        try EditedFixture("hunyuan_v1_dense-f32") { $0["head_dim"] = nil }.expectRefused(naming: "head_dim")
    }

    /// The q/k norms are per head ([head_dim] weights) and act after rotary;
    /// q/k/v/o biases by `attention_bias` (none without it), the MLP none;
    /// the head is untied unless config.json ties it.
    @Test func blockAsHunYuanDenseV1Builds() throws {
        let block = try EditedFixture("hunyuan_v1_dense-f32").load().block(0)
        let attention = try #require(block.attention?.attention)
        guard case .perHead(let query, _)? = attention.queryKeyNorm, case .fused(let qkv) = attention.projection,
              case .gated(_, let down, _)? = block.mlp?.feedForward
        else {
            Issue.record("not a fused q/k/v attention with per-head q/k norms and a gated MLP")
            return
        }
        #expect(attention.queryKeyNormAfterRotary)
        if case .rms(let weight, _) = query { #expect(weight.count == 12) } else { Issue.record("not an RMSNorm") }
        #expect(qkv.bias != nil && attention.output.bias != nil && down.bias == nil)
        let defaults = try EditedFixture("hunyuan_v1_dense-f32") {
            $0["attention_bias"] = nil
            $0["tie_word_embeddings"] = nil
        }.load()
        let plain = try #require(try defaults.block(0).attention?.attention)
        guard case .fused(let unbiased) = plain.projection else { return }
        #expect(unbiased.bias == nil && plain.output.bias == nil)
        #expect(try defaults.head().vocabularySize == 512)
    }

    /// The rotary frequencies of the fixture's config with the rope settings changed by `change`.
    func frequencies(_ change: @escaping (inout [String: Any]) -> Void) throws -> [Float] {
        let model = try EditedFixture("hunyuan_v1_dense-f32") { config in
            var rope = config["rope_parameters"] as! [String: Any]
            change(&rope)
            config["rope_parameters"] = rope
        }.load()
        return try #require(try model.block(0).attention?.attention.rotary?.inverseFrequencies)
    }

    /// "dynamic" with an alpha rotates as the default type with base
    /// rope_theta · alpha^(head_dim / (head_dim − 2)); an alpha of 0, or
    /// another rope type, leaves the base alone.
    @Test func ropeAlphaStretchesTheBase() throws {
        let stretched = try frequencies { $0["alpha"] = 10.0 }
        let base = try frequencies {
            $0["alpha"] = nil
            $0["rope_type"] = "default"
            $0["rope_theta"] = 10_000 * pow(10, 12.0 / 10)
        }
        #expect(stretched == base)
        let plain = try frequencies {
            $0["alpha"] = nil
            $0["rope_type"] = "default"
        }
        #expect(stretched != plain)
        #expect(try frequencies { $0["alpha"] = 0 } == plain)
        #expect(try frequencies { $0["rope_type"] = "default" } == plain)
    }
}
