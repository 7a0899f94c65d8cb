@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// MiMo-V2-Flash (`mimo_v2_flash`): value heads narrower than the query/key
/// heads and scaled, sliding layers with twice the key/value heads and
/// sinks, per-type partial rotation, DeepSeek-V3's routing without shared
/// experts; MiMoV2FlashConfig's defaults and refusals. The scores themselves
/// are checked against transformers with every other family (`DropTests`
/// and the reference suites).
@Suite struct MiMoV2FlashTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "mimo_v2_flash-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "v_head_dim", "0"), Mutant(name, "v_head_dim", "12"),
        // 4 query heads cannot share the sliding layers' 2 × 4 key/value heads.
        Mutant(name, "num_key_value_heads", "4"),
        // validate_layer_type checks the length: MiMoV2FlashConfig always fills layer_types.
        Mutant(name, "mlp_layer_types", "[\"dense\", \"sparse\", \"sparse\", \"sparse\", \"sparse\"]"),
        Mutant(name, "mlp_layer_types", "[\"dense\", \"moe\", \"sparse\", \"sparse\"]"),
        Mutant(name, "sliding_window_size", "\"x\""), Mutant(name, "sliding_window_size", "-1"),
        Mutant(name, "sliding_window", "null"), Mutant(name, "attention_value_scale", "1"),
        Mutant(name, "rope_parameters.full_attention.rope_theta", "null", key: "rope_parameters.full_attention.rope_theta"),
        Mutant(name, "rope_parameters.sliding_attention.partial_rotary_factor", "2", key: "partial_rotary_factor"),
        // An entry's keys are named under its layer type.
        Mutant(name, "rope_parameters.full_attention.rope_type", #""yarn""#, key: "rope_parameters.full_attention.factor"),
        Mutant(name, "n_group", "3"), Mutant(name, "num_local_experts", "9"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layer 0 attends fully with one key/value head and no sinks, layers
    /// 1–3 within 8 tokens with two and a sink per head; heads are 24 wide
    /// (values padded from 16) and rotate 8 dimensions; values scaled by
    /// 0.707; layer 0's MLP dense, the others routed without shared experts.
    @Test func layersAsMiMoV2FlashBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            let attention = try #require(block.attention?.attention)
            let sliding = index > 0
            #expect(attention.slidingWindow == (sliding ? 8 : nil) && (attention.sinkLogits != nil) == sliding)
            #expect(attention.layout.numKVHeads == (sliding ? 2 : 1) && attention.layout.headDim == 24)
            #expect(attention.rotary?.rotaryDim == 8 && attention.valueScale == 0.707)
            #expect(attention.output.inFeatures == 4 * 24)
            guard case .mixture(let mixture)? = block.mlp?.feedForward else {
                #expect(index == 0)
                continue
            }
            #expect(index > 0 && mixture.sharedExperts.isEmpty && mixture.experts.count == 8)
        }
    }

    /// What config.json leaves out takes MiMoV2FlashConfig's values: its
    /// layer and MLP types and rope parameters (the fixture's), heads of 192
    /// and values of 128 (which the tensors refuse); a null value scale is 1.
    @Test func omittedKeysTakeMiMoV2FlashConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let ruled = try EditedFixture(Self.name) {
            $0["layer_types"] = nil
            $0["mlp_layer_types"] = nil
            $0["rope_parameters"] = nil
        }
        #expect(try ruled.attentionScores() == base)
        try EditedFixture(Self.name) { $0["head_dim"] = nil }.expectRefused(naming: "head_dim")
        try EditedFixture(Self.name) { $0["v_head_dim"] = nil }.expectRefused(naming: "v_head_dim")
        let unscaled = try EditedFixture(Self.name) { $0["attention_value_scale"] = NSNull() }
        #expect(try unscaled.load().block(1).attention?.attention?.valueScale == 1)
        #expect(try unscaled.attentionScores() == EditedFixture(Self.name) { $0["attention_value_scale"] = 1.0 }.attentionScores())
        #expect(try unscaled.attentionScores() != base)
    }

    /// `sliding_window_size` (the original checkpoints' key) gives the window
    /// one wider, replacing `sliding_window`; a null one is not read.
    @Test func slidingWindowSizeGivesTheWindow() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["sliding_window_size"] = 7; $0["sliding_window"] = 99 }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["sliding_window_size"] = NSNull() }.attentionScores() == base)
        let wider = try EditedFixture(Self.name) { $0["sliding_window_size"] = 15 }
        #expect(try wider.load().block(1).attention?.attention?.slidingWindow == 16)
        #expect(try wider.attentionScores() != base)
        // A key outside the config class's fields is refused with the kind droptrace reads it as.
        let error = #expect(throws: DroptraceError.self) { _ = try EditedFixture(Self.name) { $0["sliding_window_size"] = "x" }.load() }
        #expect(error?.message == #"key "sliding_window_size" has the wrong type (expected an integer)"#)
    }

    /// The sinks are read under the saved name and transformers' own; both
    /// stored are refused.
    @Test func sinksUnderEitherName() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let renamed = try EditedFixture(Self.name)
        try BadInputTests().rewriteWeights(renamed.model) { entries in
            for i in entries.indices where entries[i].name.hasSuffix("self_attn.attention_sink_bias") {
                entries[i].name = entries[i].name.replacingOccurrences(of: "attention_sink_bias", with: "sinks")
            }
        }
        #expect(try renamed.attentionScores() == base)
        let both = try EditedFixture(Self.name)
        try BadInputTests().rewriteWeights(both.model) { entries in
            var copy = entries.first { $0.name == "model.layers.1.self_attn.attention_sink_bias" }!
            copy.name = "model.layers.1.self_attn.sinks"
            entries.append(copy)
        }
        #expect(throws: DroptraceError.self) { _ = try both.load().block(1) }
    }

    /// A block-drop export spells out the kept layers' attention and MLP
    /// types where config.json left them to the class's rule.
    @Test func blockDropExportSpellsOutTheTypes() throws {
        let config = try EditedFixture(Self.name) { $0["layer_types"] = nil; $0["mlp_layer_types"] = nil }
            .exportedConfig(droppingBlocks: [0])
        #expect(config["layer_types"] as? [String] == Array(repeating: "sliding_attention", count: 3))
        #expect(config["mlp_layer_types"] as? [String] == Array(repeating: "sparse", count: 3))
    }
}
