import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Granite 4.0-H (`granitemoehybrid`): Mamba-2 and attention layers by
/// `layer_types` (legacy names and the `layers_block_type` alias
/// included), the Mamba-2 sizes and `time_step_limit` as
/// GraniteMoeHybridConfig reads them, rotary only with
/// `position_embedding_type` "rope", the shared MLP alone without experts.
/// The scores themselves are checked against transformers with every other
/// family, and key/value-cache decoding against the batched forward
/// (`DropTests.incrementalDecodingMatchesTheFullForward`).
@Suite struct GraniteMoeHybridTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "granitemoehybrid-f32"

    static let mutants: [Mutant] = [
        // mamba_expand × hidden_size is 96.
        Mutant(name, "mamba_n_heads", "5"),
        Mutant(name, "mamba_n_heads", "0"),
        Mutant(name, "mamba_n_heads", "null"),
        Mutant(name, "mamba_n_heads", "-1"),
        Mutant(name, "mamba_expand", "0"),
        Mutant(name, "mamba_expand", "null"),
        Mutant(name, "mamba_expand", "1152921504606846976"),
        Mutant(name, "mamba_n_groups", "4"),
        Mutant(name, "mamba_n_groups", "0"),
        Mutant(name, "mamba_d_head", "8"), Mutant(name, "mamba_d_head", "9223372036854775807"),
        Mutant(name, "mamba_d_head", "\"x\""),
        Mutant(name, "mamba_d_head", "null"),
        Mutant(name, "mamba_d_state", "0"),
        Mutant(name, "mamba_d_state", "1152921504606846976"),
        Mutant(name, "mamba_d_conv", "0"),
        Mutant(name, "mamba_chunk_size", "0"),
        Mutant(name, "time_step_limit", "null"),
        Mutant(name, "time_step_limit", "[0.0]"),
        Mutant(name, "time_step_limit", "[0.0, 1.0, 2.0]"),
        Mutant(name, "layer_types", "[\"linear_attention\"]"),
        Mutant(name, "layer_types", "[\"linear_attention\", \"sliding_attention\", \"linear_attention\", \"linear_attention\"]"),
        Mutant(name, "num_local_experts", "-1"),
        Mutant(name, "num_local_experts", "null"),
        Mutant(name, "num_experts_per_tok", "0"),
        Mutant(name, "num_experts_per_tok", "5"),
        Mutant(name, "shared_intermediate_size", "16"),
        Mutant(name, "residual_multiplier", "null"),
        Mutant(name, "logits_scaling", "0"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers 0, 2 and 3 are Mamba-2 mixers of the `mamba_*` sizes, layer 1
    /// attention rotated by rope and scaled by attention_multiplier; both
    /// branches scaled by residual_multiplier.
    @Test func layersFollowLayerTypes() throws {
        let model = try EditedFixture(Self.name).load()
        for index in [0, 2, 3] {
            let branch = try #require(try model.block(index).attention)
            guard case .mamba2(let mixer) = branch.mixer else {
                Issue.record("layer \(index) is not a Mamba-2 layer")
                continue
            }
            #expect(mixer.heads == Mamba2Heads(heads: 6, headDim: 16, groups: 2, stateSize: 8, convolutionKernel: 4))
            #expect(mixer.convolutionBias != nil && mixer.projection.bias == nil)
            #expect(mixer.timeStepLimit.lower == 0 && mixer.timeStepLimit.upper == 1)
            #expect(branch.outputScale == 0.22)
        }
        let attention = try #require(try model.block(1).attention?.attention)
        #expect(attention.rotary != nil && attention.scale == 0.15)
    }

    /// Legacy layer names (mamba, attention) and the alias
    /// layers_block_type read as transformers reads them: the same scores;
    /// a block-drop export keeps the alias with the kept layers' entries.
    @Test func legacyLayerNamesAndAliasReadAlike() throws {
        let scores = try EditedFixture(Self.name).attentionScores()
        let legacy = ["mamba", "attention", "mamba", "mamba"]
        #expect(try EditedFixture(Self.name) { $0["layer_types"] = legacy }.attentionScores() == scores)
        let aliased = try EditedFixture(Self.name) {
            $0["layer_types"] = nil
            $0["layers_block_type"] = legacy
        }
        #expect(try aliased.attentionScores() == scores)
        let exported = try aliased.exportedConfig(droppingBlocks: [0])
        #expect(exported["layers_block_type"] as? [String] == ["attention", "mamba", "mamba"])
        #expect(exported["layer_types"] == nil)
        try EditedFixture(Self.name) {
            $0["layer_types"] = nil
            $0["layers_block_type"] = ["mamba", "mamba"]
        }.expectRefused(naming: "layers_block_type")
    }

    /// GraniteMoeHybridConfig's defaults: every layer Mamba-2 without
    /// layer_types (the fixture's layer 1 has no mixer weights), no rotary
    /// unless position_embedding_type is "rope", mamba_d_head "auto",
    /// time_step_limit (0, ∞), which config.json spells [0.0, Infinity] as
    /// Python writes it, and a shared MLP of 1024 (the fixture's is 24).
    @Test func defaultsAreGraniteMoeHybridConfigs() throws {
        #expect(throws: DroptraceError.self) { try EditedFixture(Self.name) { $0["layer_types"] = nil }.load().block(1) }
        for type: Any? in [nil, "nope", NSNull()] {
            let model = try EditedFixture(Self.name) { $0["position_embedding_type"] = type }.load()
            #expect(try model.block(1).attention?.attention.rotary == nil)
        }
        let auto = try EditedFixture(Self.name) { $0["mamba_d_head"] = "auto" }.load()
        guard case .mamba2(let mixer)? = try auto.block(0).attention?.mixer else {
            Issue.record("layer 0 is not a Mamba-2 layer")
            return
        }
        #expect(mixer.heads.headDim == 16)
        let unbounded = try EditedFixture(Self.name) { $0["time_step_limit"] = nil }
        let infinite = try EditedFixture(Self.name)
        let config = infinite.model.appendingPathComponent("config.json")
        let text = try String(contentsOf: config, encoding: .utf8)
        let spelled = text.replacingOccurrences(
            of: #""time_step_limit"\s*:\s*\[[^\]]*\]"#, with: #""time_step_limit": [0.0, Infinity]"#, options: .regularExpression)
        #expect(spelled != text)
        try spelled.write(to: config, atomically: true, encoding: .utf8)
        let scores = try unbounded.attentionScores()
        #expect(try infinite.attentionScores() == scores)
        // The clamp to [0, 1] acts on the fixture.
        #expect(try EditedFixture(Self.name).attentionScores() != scores)
        try EditedFixture(Self.name) { $0["shared_intermediate_size"] = nil }.expectRefused(naming: "shared_intermediate_size")
    }

    /// With num_local_experts 0 the MLP module is the shared MLP alone
    /// (GraniteMoeHybridDecoderLayer's dense layers); without a shared MLP
    /// either, there is no MLP to run.
    @Test func noExpertsLeaveTheSharedMLP() throws {
        let model = try EditedFixture(Self.name) { $0["num_local_experts"] = 0 }.load()
        guard case .gated(let gateUp, _, _)? = try model.block(0).mlp?.feedForward else {
            Issue.record("not the shared MLP alone")
            return
        }
        #expect(gateUp.outFeatures == 2 * 24)
        try EditedFixture(Self.name) {
            $0["num_local_experts"] = 0
            $0["shared_intermediate_size"] = 0
        }.expectRefused(naming: "shared_intermediate_size")
    }
}
