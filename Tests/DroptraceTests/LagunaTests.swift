@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Laguna (`laguna`): per-layer query head counts, the softplus output gate,
/// per-type partial rotation, sigmoid routing of soft-capped logits beside a
/// shared expert; LagunaConfig's defaults and refusals, and the saved tensor
/// names. The scores themselves are checked against transformers with every
/// other family (`DropTests` and the reference suites).
@Suite struct LagunaTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "laguna-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "num_attention_heads_per_layer", "[4, 2, 6]"),
        // 3 query heads cannot share 2 key/value heads.
        Mutant(name, "num_attention_heads_per_layer", "[4, 3, 6, 4]"),
        Mutant(name, "num_attention_heads_per_layer", "[4, 0, 6, 4]"),
        Mutant(name, "moe_apply_router_weight_on_input", "true"),
        Mutant(name, "mlp_layer_types", "[\"dense\", \"sparse\", \"sparse\", \"sparse\", \"sparse\"]"),
        Mutant(name, "moe_router_logit_softcapping", "1e308"), Mutant(name, "moe_routed_scaling_factor", "0.0"),
        Mutant(name, "num_experts", "9"), Mutant(name, "moe_intermediate_size", "12"),
        Mutant(name, "rope_parameters.full_attention.rope_theta", "null", key: "rope_parameters.full_attention.rope_theta"),
        Mutant(name, "gating", "1"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// 4, 2, 6 and 4 query heads over 2 key/value heads; layers 1 and 2
    /// slide within 8 tokens rotating whole heads, 0 and 3 rotate half;
    /// softplus per-head gates; layer 0 dense, the others routed by
    /// soft-capped sigmoids with a correction bias, × 1.5, beside a shared expert.
    @Test func layersAsLagunaBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for (index, heads) in [4, 2, 6, 4].enumerated() {
            let block = try model.block(index)
            let attention = try #require(block.attention?.attention)
            let sliding = index == 1 || index == 2
            #expect(attention.layout.numHeads == heads && attention.layout.numKVHeads == 2 && attention.layout.headDim == 16)
            #expect(attention.slidingWindow == (sliding ? 8 : nil) && attention.rotary?.rotaryDim == (sliding ? 16 : 8))
            #expect(attention.outputGateFunction == .softplus && attention.outputGate?.outFeatures == heads * 16)
            guard case .mixture(let mixture)? = block.mlp?.feedForward, case .groupLimited(let routing) = mixture.rule else {
                #expect(index == 0)
                continue
            }
            #expect(routing.logitSoftcap == 2 && routing.scalingFactor == 1.5 && routing.selectionBias != nil)
            #expect(mixture.sharedExperts.count == 1 && mixture.experts.count == 8)
        }
    }

    /// What config.json leaves out takes LagunaConfig's values: its rope
    /// parameters and MLP types (the fixture's), every layer full (other
    /// scores), num_attention_heads on every layer (which layer 1's tensors
    /// refuse); a per-head gate by true or "per-head", else per column
    /// (which g_proj refuses).
    @Test func omittedKeysTakeLagunaConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["rope_parameters"] = nil; $0["mlp_layer_types"] = nil }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["gating"] = "per-head" }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["gating"] = nil }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["layer_types"] = nil }.attentionScores() != base)
        let uniform = try EditedFixture(Self.name) { $0["num_attention_heads_per_layer"] = nil }.load()
        #expect(throws: DroptraceError.self) { _ = try uniform.block(1) }
        let perColumn = try EditedFixture(Self.name) { $0["gating"] = "per-element" }.load()
        #expect(throws: DroptraceError.self) { _ = try perColumn.block(0) }
    }

    /// The shared expert and the correction bias are read under the saved
    /// names and transformers' own; the bias under both is refused.
    @Test func savedAndRenamedTensors() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let renamed = try EditedFixture(Self.name)
        try BadInputTests().rewriteWeights(renamed.model) { entries in
            for i in entries.indices {
                entries[i].name = entries[i].name.replacingOccurrences(of: "mlp.shared_expert.", with: "mlp.shared_experts.")
                    .replacingOccurrences(of: "mlp.experts.e_score_correction_bias", with: "mlp.gate.e_score_correction_bias")
            }
        }
        #expect(try renamed.attentionScores() == base)
        let both = try EditedFixture(Self.name)
        try BadInputTests().rewriteWeights(both.model) { entries in
            var copy = entries.first { $0.name == "model.layers.1.mlp.experts.e_score_correction_bias" }!
            copy.name = "model.layers.1.mlp.gate.e_score_correction_bias"
            entries.append(copy)
        }
        #expect(throws: DroptraceError.self) { _ = try both.load().block(1) }
    }

    /// A block-drop export keeps the kept layers' head counts and spells out their types.
    @Test func blockDropExportKeepsTheHeadCounts() throws {
        let config = try EditedFixture(Self.name) { $0["mlp_layer_types"] = nil }.exportedConfig(droppingBlocks: [1])
        #expect(config["num_attention_heads_per_layer"] as? [Int] == [4, 6, 4])
        #expect(config["mlp_layer_types"] as? [String] == ["dense", "sparse", "sparse"])
        #expect(config["layer_types"] as? [String] == ["full_attention", "sliding_attention", "full_attention"])
    }
}
