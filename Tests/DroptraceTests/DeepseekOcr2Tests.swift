@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// DeepSeek-OCR 2 (`deepseek_ocr2-f32`): its language model read as
/// DeepseekOcr2TextConfig builds it (DeepSeek-V2's mixture on the
/// `mlp_layer_types` "sparse" layers, Llama's multi-head attention over
/// head_dim = hidden_size / num_attention_heads), whatever `text_config`
/// names or `head_dim` says.
@Suite struct DeepseekOcr2Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "deepseek_ocr2-f32"

    static let mutants: [Mutant] = [
        // The class's default None builds no decoder layer; one type per layer, "dense" or "sparse".
        Mutant(name, "text_config.mlp_layer_types", "null", key: "text_config.mlp_layer_types"),
        Mutant(name, "text_config.mlp_layer_types", "[\"dense\", \"sparse\"]", key: "text_config.mlp_layer_types"),
        Mutant(name, "text_config.mlp_layer_types", "[\"dense\", \"sparse\", \"moe\", \"sparse\"]", key: "text_config.mlp_layer_types"),
        Mutant(name, "text_config.topk_method", "\"noaux_tc\"", key: "text_config.topk_method"),
        Mutant(name, "text_config.num_experts_per_tok", "null", key: "text_config.num_experts_per_tok"),
        Mutant(name, "text_config.n_routed_experts", "8", key: "n_routed_experts"),
        Mutant(name, "text_config.num_key_value_heads", "4", key: "text_config.num_key_value_heads"),
        Mutant(name, "text_config.attention_bias", "1", key: "text_config.attention_bias"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score within 1e-7 of transformers', read under `model.language_model.`.
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.name)
        let model = try EditedFixture(Self.name).load()
        #expect(model.layerNaming.prefix == "model.language_model.layers.")
    }

    /// Llama's attention (4 heads of 12, 2 KV heads) and a dense MLP on
    /// layer 0, routed experts on the layers `mlp_layer_types` marks
    /// "sparse"; the text config's written type and head_dim change
    /// nothing, its routing settings do.
    @Test func layersAsDeepseekOcr2TextConfigBuildsThem() throws {
        let model = try EditedFixture(Self.name).load()
        let attention = try #require(try model.block(1).attention?.attention)
        #expect(attention.layout.numHeads == 4 && attention.layout.numKVHeads == 2 && attention.layout.headDim == 12)
        guard case .gated? = try model.block(0).mlp?.feedForward else {
            Issue.record("layer 0 is not the dense SwiGLU MLP")
            return
        }
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) {
            EditedModel.set("llama", at: "text_config.model_type", in: &$0)
            EditedModel.set(16, at: "text_config.head_dim", in: &$0)
        }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) {
            EditedModel.set(1.0, at: "text_config.routed_scaling_factor", in: &$0)
        }.attentionScores() != base)
        // Layer 2 marked dense: its SwiGLU MLP is read, which the checkpoint does not hold.
        let dense = try EditedFixture(Self.name) {
            EditedModel.set(["dense", "sparse", "dense", "sparse"], at: "text_config.mlp_layer_types", in: &$0)
        }
        let error = #expect(throws: DroptraceError.self) { try dense.load().block(2) }
        #expect(error?.message.contains("layers.2.mlp.gate_proj.weight") == true, "\(String(describing: error))")
        guard case .mixture? = try model.block(2).mlp?.feedForward else {
            Issue.record("layer 2 marked sparse is not routed")
            return
        }
    }
}
