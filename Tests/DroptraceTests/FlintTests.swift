@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Flint (`flint`): sinks on every layer, NoPE full layers, sigmoid top-k
/// routing beside an ungated shared expert, FlintConfig's defaults and
/// refusals. The scores themselves are checked against transformers with
/// every other family (`DropTests` and the reference suites).
@Suite struct FlintTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "flint-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "num_experts", "9"), Mutant(name, "num_experts_per_tok", "9"),
        Mutant(name, "moe_intermediate_size", "12"), Mutant(name, "decoder_sparse_step", "0"),
        Mutant(name, "sliding_window", "null"), Mutant(name, "layer_types", "[\"full_attention\"]"),
        Mutant(name, "head_dim", "12"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every layer has sinks; sliding layers (2–4) rotate within 8 tokens,
    /// full ones have no rotary; layers 0 and 1 dense, the others routed by
    /// sigmoids beside an ungated shared expert.
    @Test func layersAsFlintBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<6 {
            let block = try model.block(index)
            let attention = try #require(block.attention?.attention)
            let sliding = (2...4).contains(index)
            #expect(attention.sinkLogits?.count == 4 && (attention.rotary != nil) == sliding)
            #expect(attention.slidingWindow == (sliding ? 8 : nil) && attention.output.bias != nil)
            guard case .mixture(let mixture)? = block.mlp?.feedForward, case .groupLimited(let routing) = mixture.rule else {
                #expect(index < 2)
                continue
            }
            #expect(index >= 2 && routing.scoring == .sigmoid && routing.selectionBias == nil && routing.normalizesWeights)
            #expect(mixture.sharedExperts.count == 1 && mixture.sharedExpertGate == nil)
        }
    }

    /// Without `layer_types` and `mlp_only_layers` FlintConfig's rule and
    /// default give the fixture's; heads of 128 (the default) are refused by
    /// the tensors; a block-drop export of such a config writes the kept
    /// dense layers out.
    @Test func omittedKeysTakeFlintConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let ruled = try EditedFixture(Self.name) {
            $0["layer_types"] = nil
            $0["mlp_only_layers"] = nil
        }
        #expect(try ruled.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["mlp_only_layers"] = NSNull() }.attentionScores() == base)
        try EditedFixture(Self.name) { $0["head_dim"] = nil }.expectRefused(naming: "head_dim")
        let exported = try ruled.exportedConfig(droppingBlocks: [0])
        #expect(exported["mlp_only_layers"] as? [Int] == [0])
        #expect(exported["layer_types"] as? [String] == ["full_attention"] + Array(repeating: "sliding_attention", count: 3) + ["full_attention"])
    }

    /// The sinks are read under the saved name and transformers' own; both
    /// stored are refused.
    @Test func sinksUnderEitherName() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let renamed = try EditedFixture(Self.name)
        try BadInputTests().rewriteWeights(renamed.model) { entries in
            for i in entries.indices where entries[i].name.hasSuffix("self_attn.softmax_offset") {
                entries[i].name = entries[i].name.replacingOccurrences(of: "softmax_offset", with: "sinks")
            }
        }
        #expect(try renamed.attentionScores() == base)
        let both = try EditedFixture(Self.name)
        try BadInputTests().rewriteWeights(both.model) { entries in
            var copy = entries.first { $0.name == "model.layers.0.self_attn.softmax_offset" }!
            copy.name = "model.layers.0.self_attn.sinks"
            entries.append(copy)
        }
        #expect(throws: DroptraceError.self) { _ = try both.load().block(0) }
    }
}
