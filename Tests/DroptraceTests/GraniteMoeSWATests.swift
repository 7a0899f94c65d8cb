import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// GraniteMoE SWA: GraniteMoE-Shared's mixture and shared MLP with Granite
/// SWA's windows, per-layer rotary bases and sinks, GraniteMoeSWAConfig's
/// defaults, and only transformers' own tensor names (it maps no others);
/// the scores themselves are checked against transformers with every other
/// family (`ScoringReferenceTests`).
@Suite struct GraniteMoeSWATests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("granitemoe_swa-f32", "sliding_window", "0"),
        Mutant("granitemoe_swa-f32", "sliding_window", "null"),
        Mutant("granitemoe_swa-f32", "layer_types", "[\"sliding_attention\"]"),
        Mutant("granitemoe_swa-f32", "layer_rope_theta", "[10000.0, 0]"),
        Mutant("granitemoe_swa-f32", "layer_rope_theta", "[10000.0, -1.0, 10000.0, 10000.0]"),
        Mutant("granitemoe_swa-f32", "num_local_experts", "null"),
        Mutant("granitemoe_swa-f32", "num_local_experts", "5"),
        Mutant("granitemoe_swa-f32", "num_experts_per_tok", "0"),
        Mutant("granitemoe_swa-f32", "shared_intermediate_size", "-1"),
        Mutant("granitemoe_swa-f32", "shared_intermediate_size", "16"),
        Mutant("granitemoe_swa-f32", "logits_scaling", "0"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The fixture: layer 0 global, 1-3 sliding; bases 10000, none, 500000,
    /// 10000; sinks on every layer; 4 experts of 16, top-2 by the softmax of
    /// their logits, and the shared MLP of 24 in every layer.
    @Test func layersAreGraniteSWAsAttentionAndTheMixture() throws {
        let model = try EditedFixture("granitemoe_swa-f32").load()
        for layer in 0..<4 {
            let block = try model.block(layer)
            let attention = try #require(block.attention?.attention)
            #expect(attention.slidingWindow == (layer == 0 ? nil : 8) && attention.sinkLogits?.count == 4 && attention.scale == 0.15)
            #expect((attention.rotary == nil) == (layer == 1))
            guard case .mixture(let moe)? = block.mlp?.feedForward else {
                Issue.record("layer \(layer)'s MLP is not a mixture")
                continue
            }
            #expect(moe.experts.count == 4 && moe.expertsPerToken == 2 && moe.sharedExperts.count == 1 && moe.sharedExpertGate == nil)
            guard case .topKThenSoftmax = moe.rule else { Issue.record("not GraniteMoeTopKRouter's rule"); continue }
            #expect(block.mlp?.outputScale == 0.22)
        }
        let bases = try (0..<4).map { try model.block($0).attention?.attention.rotary?.inverseFrequencies }
        #expect(bases[2] == RotaryEmbedding.defaultInverseFrequencies(base: 500000, rotaryDim: 12))
        #expect(bases[0] == RotaryEmbedding.defaultInverseFrequencies(base: 10000, rotaryDim: 12) && bases[3] == bases[0])
    }

    /// Absent, layer_types is every fourth layer from 0 global, the window
    /// 128, layer_rope_theta rope_theta everywhere and no shared MLP.
    @Test func defaultsAreGraniteMoeSWAConfigs() throws {
        let model = try EditedFixture("granitemoe_swa-f32") {
            $0["layer_types"] = nil
            $0["sliding_window"] = nil
            $0["layer_rope_theta"] = nil
            $0["shared_intermediate_size"] = nil
        }.load()
        for layer in 0..<4 {
            let block = try model.block(layer)
            let attention = try #require(block.attention?.attention)
            #expect(attention.slidingWindow == (layer == 0 ? nil : 128))
            #expect(attention.rotary?.inverseFrequencies == RotaryEmbedding.defaultInverseFrequencies(base: 10000, rotaryDim: 12))
            guard case .mixture(let moe)? = block.mlp?.feedForward else { Issue.record("not a mixture"); continue }
            #expect(moe.sharedExperts.isEmpty)
        }
    }

    /// transformers maps GraniteMoE's saved names for granitemoe and
    /// granitemoeshared only: a granitemoe_swa checkpoint under them lacks
    /// its experts, and is refused naming the tensor transformers reads.
    @Test func graniteMoesSavedNamesAreNotRead() throws {
        let fixture = try EditedFixture("granitemoe_swa-f32")
        try BadInputTests().rewriteWeights(fixture.model) { entries in
            for index in entries.indices where entries[index].name.hasSuffix("block_sparse_moe.experts.gate_up_proj") {
                entries[index].name = String(entries[index].name.dropLast("experts.gate_up_proj".count)) + "input_linear.weight"
            }
        }
        let error = #expect(throws: DroptraceError.self) { try fixture.load() }
        #expect(error?.message.contains("experts.gate_up_proj") == true, "\(String(describing: error))")
    }

    /// A block-drop export keeps each kept layer's type and base.
    @Test func blockDropExportKeepsTypesAndBases() throws {
        let config = try EditedFixture("granitemoe_swa-f32").exportedConfig(droppingBlocks: [0])
        #expect(config["layer_types"] as? [String] == ["sliding_attention", "sliding_attention", "sliding_attention"])
        #expect((config["layer_rope_theta"] as? [NSNumber])?.map(\.doubleValue) == [0, 500000, 10000])
        #expect(config["num_hidden_layers"] as? Int == 3)
    }
}
