@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Tencent's Hy3 (`hy_v3`): its config refusals and HYV3Config's defaults,
/// Qwen3's attention in Llama's blocks, the dense and routed layers
/// `mlp_layer_types` names, the routing (sigmoid, the correction bias
/// beside the router, `router_scaling_factor`), the shared experts'
/// widths and the MLP biases. The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct HYV3Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "hy_v3-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "rms_norm_eps", "0"),
        Mutant(name, "num_experts", "0"), Mutant(name, "num_experts", "4611686018427387904"), Mutant(name, "num_experts", "[8]"),
        // num_local_experts names the same setting (HYV3Config's attribute map).
        Mutant(name, "num_local_experts", "4", key: "num_experts"),
        Mutant(name, "num_experts_per_tok", "0"), Mutant(name, "num_experts_per_tok", "9"),
        Mutant(name, "num_shared_experts", "-1"), Mutant(name, "num_shared_experts", "null"),
        Mutant(name, "moe_intermediate_size", "0"),
        Mutant(name, "router_scaling_factor", "0"), Mutant(name, "router_scaling_factor", "null"),
        Mutant(name, "mlp_layer_types", "[\"dense\", \"moe\", \"sparse\", \"sparse\"]"),
        Mutant(name, "mlp_layer_types", "[\"dense\", \"sparse\"]"),
        Mutant(name, "head_dim", "0"), Mutant(name, "head_dim", "7", key: "head_dim"),
        Mutant(name, "mlp_bias", "1"),
        // Sizes the tensors contradict.
        Mutant(name, "num_experts", "16"), Mutant(name, "moe_intermediate_size", "32"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layer 0 is a dense MLP with biases; layers 1–3 route: sigmoid scores,
    /// one group, the stored correction bias, weights renormalised times
    /// router_scaling_factor, one shared expert of moe_intermediate_size with
    /// biases; every attention normalises each query and key head before rotary.
    @Test func layersAsHYV3Builds() throws {
        let model = try EditedFixture(Self.name).load()
        for layer in 0..<model.layerCount {
            let attention = try #require(try model.block(layer).attention?.attention)
            guard case .perHead? = attention.queryKeyNorm, case .fused(let qkv) = attention.projection else {
                Issue.record("layer \(layer): not Qwen3's attention")
                continue
            }
            #expect(!attention.queryKeyNormAfterRotary && qkv.bias != nil && attention.output.bias != nil && attention.layout.headDim == 12)
            let moe = try mlpMixture(model, layer: layer)
            guard layer > 0 else {
                guard case .gated(let gateUp, let down, _)? = try model.block(0).mlp?.feedForward else {
                    Issue.record("layer 0 is not a dense SwiGLU")
                    continue
                }
                #expect(moe == nil && gateUp.bias != nil && down.bias != nil && down.inFeatures == 96)
                continue
            }
            let rule = try #require(groupLimitedRule(moe), "layer \(layer) routes")
            #expect(rule.scoring == .sigmoid && rule.groups == 1 && rule.normalizesWeights && rule.scalingFactor == 2.5)
            #expect(rule.selectionBias?.contains { $0 != 0 } == true, "the fixture's bias is not zero")
            guard case .gated(let gateUp, let down, _)? = moe?.sharedExperts.first else {
                Issue.record("layer \(layer) has no shared expert")
                continue
            }
            #expect(moe?.experts.count == 8 && moe?.expertsPerToken == 2 && gateUp.outFeatures == 2 * 16 && down.bias != nil)
        }
    }

    /// What config.json leaves out takes HYV3Config's defaults: layer 0
    /// dense, the others routed; n_group, topk_group and norm_topk_prob are
    /// not HYV3Config's keys and are not read; with no shared experts, the
    /// shared MLP is intermediate_size wide (HYV3MLP's fallback for 0).
    @Test func omittedKeysTakeHYV3ConfigDefaults() throws {
        let defaulted = try EditedFixture(Self.name) { $0["mlp_layer_types"] = nil }
        #expect(try defaulted.load().layerNaming.perLayerLists["mlp_layer_types"] == ["dense", "sparse", "sparse", "sparse"])
        #expect(try defaulted.attentionScores() == EditedFixture(Self.name).attentionScores())
        let foreign = try EditedFixture(Self.name) {
            $0["n_group"] = 4
            $0["topk_group"] = 1
            $0["norm_topk_prob"] = false
            $0["routed_scaling_factor"] = 1.0
        }
        #expect(try foreign.attentionScores() == EditedFixture(Self.name).attentionScores())
        let scale = try EditedFixture(Self.name) { $0["router_scaling_factor"] = nil }.load()
        #expect(try groupLimitedRule(try mlpMixture(scale, layer: 1))?.scalingFactor == 2.826)
        // 0 shared experts: an MLP of intermediate_size 96, whose weights the fixture's shared expert (16) contradicts.
        let unshared = try EditedFixture(Self.name) { $0["num_shared_experts"] = 0 }.load()
        let error = #expect(throws: DroptraceError.self) { _ = try unshared.block(1) }
        #expect(error?.message.contains("96") == true, "\(error?.message ?? "")")
    }

    /// An export keeps the kept layers' `mlp_layer_types`.
    @Test func blockDropKeepsTheKeptLayersTypes() throws {
        let exported = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0])
        #expect(exported["mlp_layer_types"] as? [String] == ["sparse", "sparse", "sparse"])
    }

    /// Router and experts of one layer against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers(Self.name, unordered: true)
    }

    /// Fused 3-D experts (transformers' layout) under transformers' router
    /// name score exactly as the per-expert tensors Hy3 saves.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike(Self.name, router: "mlp.router.gate", fusedRouter: "mlp.gate")
    }

    /// The correction bias and shared experts under transformers' names
    /// (`e_score_correction_bias`, `shared_experts`) score as Hy3's saved
    /// ones (`expert_bias`, `shared_mlp`); both names of one tensor are refused.
    @Test func savedAndTransformersNamesAlike() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let renamed = try EditedFixture(Self.name)
        for layer in 1...3 {
            let p = "model.layers.\(layer).mlp."
            try SavedLayoutTests().renameTensor(p + "expert_bias", to: p + "e_score_correction_bias", in: renamed.model)
            for part in ["gate_proj", "up_proj", "down_proj"] {
                for kind in ["weight", "bias"] {
                    try SavedLayoutTests().renameTensor(
                        p + "shared_mlp.\(part).\(kind)", to: p + "shared_experts.\(part).\(kind)", in: renamed.model)
                }
            }
        }
        #expect(try renamed.attentionScores() == base)
        let both = try EditedFixture(Self.name)
        try BadInputTests().rewriteWeights(both.model) { entries in
            var copy = try! #require(entries.first { $0.name == "model.layers.1.mlp.router.gate.weight" })
            copy.name = "model.layers.1.mlp.gate.weight"
            entries.append(copy)
        }
        let error = #expect(throws: DroptraceError.self) { _ = try both.load() }
        #expect(error?.message.contains("keep one of the two") == true && error?.message.contains("\n") == false)
    }
}
