import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Bamba (`bamba`): attention on the `attn_layer_indices` layers, the
/// Mamba-2 mixer (granitemoehybrid's) on the others, half of each head
/// rotated unless `rope_parameters` says otherwise, BambaConfig's defaults.
/// The scores themselves are checked against transformers with every other
/// family, and key/value-cache decoding against the batched forward
/// (`DropTests.incrementalDecodingMatchesTheFullForward`).
@Suite struct BambaTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "bamba-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "mamba_n_heads", "5"),
        Mutant(name, "mamba_n_heads", "null"),
        Mutant(name, "mamba_n_groups", "4"),
        Mutant(name, "mamba_d_head", "7"), Mutant(name, "mamba_d_head", "9223372036854775807"),
        Mutant(name, "mamba_d_conv", "0"),
        Mutant(name, "mamba_expand", "-1"),
        Mutant(name, "time_step_limit", "[0.0]"),
        Mutant(name, "time_step_limit", "null"),
        Mutant(name, "rope_parameters.partial_rotary_factor", "0"),
        Mutant(name, "rms_norm_eps", "0"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layer 1 is attention rotating half of its 12-wide heads; the others
    /// are Mamba-2 mixers of the fixture's sizes, Δ clamped to [0, 1.5].
    @Test func layersFollowAttentionLayerIndices() throws {
        let model = try EditedFixture(Self.name).load()
        for index in [0, 2, 3] {
            guard case .mamba2(let mixer)? = try model.block(index).attention?.mixer else {
                Issue.record("layer \(index) is not a Mamba-2 layer")
                continue
            }
            #expect(mixer.heads == Mamba2Heads(heads: 6, headDim: 16, groups: 2, stateSize: 8, convolutionKernel: 4))
            #expect(mixer.timeStepLimit.lower == 0 && mixer.timeStepLimit.upper == 1.5)
        }
        let attention = try #require(try model.block(1).attention?.attention)
        #expect(attention.rotary?.rotaryDim == 6)
        // Without attn_layer_indices every layer is Mamba-2 (layer 1 has no mixer weights).
        #expect(throws: DroptraceError.self) { try EditedFixture(Self.name) { $0["attn_layer_indices"] = nil }.load().block(1) }
    }

    /// BambaConfig hands the rope set-up 0.5 over a top-level
    /// partial_rotary_factor; rope_parameters' own share wins.
    @Test func partialRotaryFactorIsBambas() throws {
        func rotaryDim(_ change: @escaping (inout [String: Any]) -> Void) throws -> Int? {
            try EditedFixture(Self.name, change).load().block(1).attention?.attention.rotary?.rotaryDim
        }
        #expect(try rotaryDim { $0["partial_rotary_factor"] = 1.0 } == 6)
        #expect(try rotaryDim {
            var rope = $0["rope_parameters"] as! [String: Any]
            rope["partial_rotary_factor"] = nil
            $0["rope_parameters"] = rope
        } == 6)
        #expect(try rotaryDim {
            var rope = $0["rope_parameters"] as! [String: Any]
            rope["partial_rotary_factor"] = 1.0
            $0["rope_parameters"] = rope
        } == 12)
    }

    /// transformers 5.23 writes an infinite float as `{"__float__":
    /// "Infinity"}` (the default `time_step_limit`, (0.0, inf)) and reads it
    /// back as one: so does droptrace; a tagged NaN is refused naming its
    /// key, as a bare one is, and a tag elsewhere as a bare Infinity is.
    @Test func taggedFloatsAreReadAsTransformersReadsThem() throws {
        let tagged = try EditedFixture(Self.name) { $0["time_step_limit"] = [0.0, ["__float__": "Infinity"]] }
        guard case .mamba2(let mixer)? = try tagged.load().block(0).attention?.mixer else {
            Issue.record("layer 0 is not a Mamba-2 layer")
            return
        }
        #expect(mixer.timeStepLimit.lower == 0 && mixer.timeStepLimit.upper == .infinity)
        try EditedFixture(Self.name) { $0["time_step_limit"] = [0.0, ["__float__": "NaN"]] }.expectRefused(naming: "time_step_limit")
        try EditedFixture(Self.name) { $0["rms_norm_eps"] = ["__float__": "-Infinity"] }.expectRefused(naming: "rms_norm_eps")
    }

    /// A block-drop export renumbers attn_layer_indices.
    @Test func exportRenumbersAttentionLayers() throws {
        let exported = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0])
        #expect((exported["attn_layer_indices"] as? [Int]) == [0])
        #expect((exported["num_hidden_layers"] as? Int) == 3)
    }
}
