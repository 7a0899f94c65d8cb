@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Muse Glimmer (`muse_glimmer-f32`) and Muse Spark (`muse_spark-f32`):
/// sandwich blocks of (1 + w) norms, weightless q/k norms and queries times
/// qk_scale_factor, gated attention, NoPE full layers by the classes' rule
/// and a capped head scaled by output_multiplier; Muse Spark with per-head
/// output norms, residual gates and its latent mixture of experts.
@Suite struct MuseTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let glimmer = "muse_glimmer-f32", spark = "muse_spark-f32"

    static let mutants: [Mutant] = [
        // MuseGlimmerTextModel reads one entry per layer.
        Mutant(glimmer, "text_config.layer_rope_theta", "[0, 1.0]", key: "text_config.layer_rope_theta"),
        Mutant(glimmer, "text_config.qk_scale_factor", "null", key: "text_config.qk_scale_factor"),
        // validate_architecture, though head_dim sizes the heads.
        Mutant(glimmer, "text_config.num_attention_heads", "10", key: "text_config.num_attention_heads"),
        // Its sliding-window mask needs a window.
        Mutant(glimmer, "text_config.sliding_window", "null", key: "text_config.sliding_window"),
        Mutant(spark, "text_config.residual_gate_temperature", "0.0", key: "residual_gate_temperature"),
        Mutant(spark, "text_config.mlp_layer_types", "[\"dense\", \"sparse\", \"moe\", \"sparse\", \"sparse\"]", key: "mlp_layer_types"),
        Mutant(spark, "text_config.mlp_layer_types", "[\"dense\", \"sparse\"]", key: "mlp_layer_types"),
        Mutant(spark, "text_config.num_experts_per_tok", "5", key: "text_config.num_experts_per_tok"),
        Mutant(spark, "text_config.moe_hidden_size", "16", key: "moe_hidden_size"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score within 1e-7 of transformers', read under `model.language_model.`.
    @Test(arguments: [glimmer, spark])
    func scoresMatchTransformersClosely(_ name: String) throws {
        try expectScoresMatchTransformers(name)
        #expect(try EditedFixture(name).load().layerNaming.prefix == "model.language_model.layers.")
    }

    /// `layer_rope_theta` decides which layers rotate by its entries' truth
    /// alone (a non-zero entry rotates by the global base, as
    /// MuseGlimmerTextModel reads it); the default is the classes' rule
    /// (layers 0 and 4 of 5 without rotary); the queries' factor acts.
    @Test(arguments: [glimmer, spark])
    func rotaryLayersAndQueryScaleAsTransformersReadsThem(_ name: String) throws {
        let base = try EditedFixture(name).attentionScores()
        func scores(_ key: String, _ value: Any) throws -> [Double] {
            try EditedFixture(name) { EditedModel.set(value, at: "text_config." + key, in: &$0) }.attentionScores()
        }
        #expect(try scores("layer_rope_theta", [0, 10_000.0, 10_000.0, 10_000.0, 0]) == base)
        #expect(try scores("layer_rope_theta", [0, 1.0, 7.0, 10_000.0, 0]) == base)
        #expect(try scores("layer_rope_theta", [10_000.0, 10_000.0, 10_000.0, 10_000.0, 0]) != base)
        #expect(try scores("qk_scale_factor", 1.0) != base)
    }

    /// Muse Spark's pieces each act: the residual gates' temperature, the
    /// router's multiplier, the latent experts (layer 1 routed, layer 0 a
    /// SwiGLU), the per-head output norm.
    @Test func sparkPiecesAct() throws {
        let model = try EditedFixture(Self.spark).load()
        guard case .gated? = try model.block(0).mlp?.feedForward, case .mixture(let experts)? = try model.block(1).mlp?.feedForward else {
            Issue.record("layer 0 is not a SwiGLU or layer 1 not routed")
            return
        }
        #expect(experts.latent?.downNorm != nil && experts.latent?.down.outFeatures == 32)
        #expect(try model.block(1).attention?.attention?.headOutputNorm != nil)
        guard case .gated? = try model.block(1).attention?.join else {
            Issue.record("the attention does not join through its residual gate")
            return
        }
        let base = try EditedFixture(Self.spark).attentionScores()
        #expect(try EditedFixture(Self.spark) { EditedModel.set(1.0, at: "text_config.residual_gate_temperature", in: &$0) }
            .attentionScores() != base)
        let mlp = try EditedFixture(Self.spark).load()
        let changed = try EditedFixture(Self.spark) { EditedModel.set(3.0, at: "text_config.output_multiplier", in: &$0) }.load()
        let x = Matrix(rows: 3, cols: 48, data: (0..<144).map { Float(sin(Double($0))) })
        #expect(try mlp.block(2).mlp?.feedForward(x).data != changed.block(2).mlp?.feedForward(x).data)
    }

    /// Image, video and (Muse Spark) audio token ids are embedded as token 0,
    /// as the wrappers' forward embeds them.
    @Test func mediaTokensAreEmbeddedAsTokenZero() throws {
        let model = try EditedFixture(Self.spark) {
            $0["image_token_id"] = 100
            $0["video_token_id"] = 101
            $0["audio_token_id"] = 102
        }.load()
        let embedded = try model.embed(TokenBatch(sequences: [[5, 100, 101, 102, 0, 99]]))
        func row(_ r: Int) -> ArraySlice<Float> { embedded.data[(r * embedded.cols)..<((r + 1) * embedded.cols)] }
        #expect(row(1) == row(4) && row(2) == row(4) && row(3) == row(4) && row(5) != row(4))
    }

    /// An export without block 1 spells out the kept layers' attention
    /// types, rotary entries and MLP types, which the classes' rules would
    /// otherwise give another layer.
    @Test func blockDropExportSpellsOutPerLayerLists() throws {
        let config = try EditedFixture(Self.spark) {
            EditedModel.set(nil, at: "text_config.layer_types", in: &$0)
            EditedModel.set(nil, at: "text_config.layer_rope_theta", in: &$0)
        }.exportedConfig(droppingBlocks: [1])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 4)
        #expect(text["layer_types"] as? [String] == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"])
        #expect(text["layer_rope_theta"] as? [Double] == [0, 10_000, 10_000, 0])
        #expect(text["mlp_layer_types"] as? [String] == ["dense", "sparse", "sparse", "sparse"])
    }
}
