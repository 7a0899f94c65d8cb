import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Hunyuan MoE's config keys as HunYuanMoEV1Config has them, its mixture
/// (softmax top-k per layer, renormalised, a shared MLP) and its attention,
/// Hunyuan dense's; the scores themselves are checked against transformers
/// with every other family (`ScoringReferenceTests`).
@Suite struct HunYuanMoEV1Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("hunyuan_v1_moe-f32", "num_experts", "0"),
        Mutant("hunyuan_v1_moe-f32", "num_experts", "-1"),
        // HunYuanMoEV1Experts sizes its tensors by num_experts: a list cannot build them.
        Mutant("hunyuan_v1_moe-f32", "num_experts", "[4, 4, 4, 4]"),
        Mutant("hunyuan_v1_moe-f32", "num_experts", "1e30"),
        Mutant("hunyuan_v1_moe-f32", "moe_topk", "0"),
        Mutant("hunyuan_v1_moe-f32", "moe_topk", "5"),
        Mutant("hunyuan_v1_moe-f32", "moe_topk", "null"),
        // HunYuanMoEV1Gate reads its layer's entry: a shorter list fails there.
        Mutant("hunyuan_v1_moe-f32", "moe_topk", "[2, 1, 3]"),
        Mutant("hunyuan_v1_moe-f32", "moe_topk", "[2, 1, 0, 2]"),
        Mutant("hunyuan_v1_moe-f32", "moe_topk", "[2, 1, 3, 9]"),
        Mutant("hunyuan_v1_moe-f32", "moe_topk", "\"2\""),
        Mutant("hunyuan_v1_moe-f32", "rms_norm_eps", "0"),
        Mutant("hunyuan_v1_moe-f32", "attention_bias", "\"yes\""),
        Mutant("hunyuan_v1_moe-f32", "head_dim", "null"),
        Mutant("hunyuan_v1_moe-f32", "rope_parameters.alpha", "-2"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Without `num_experts` the class's single expert does not match the
    /// stored router; without `head_dim` the attention cannot be built.
    @Test func absentKeysTheWeightsNeedAreRefused() throws {
        try EditedFixture("hunyuan_v1_moe-f32") { $0["num_experts"] = nil }.expectRefused(naming: "num_experts")
        try EditedFixture("hunyuan_v1_moe-f32") { $0["head_dim"] = nil }.expectRefused(naming: "head_dim")
    }

    /// The mixture of layer `index` of the fixture with config.json changed by `change`.
    func mixture(_ index: Int, _ change: (inout [String: Any]) -> Void = { _ in }) throws -> MixtureOfExperts {
        let block = try EditedFixture("hunyuan_v1_moe-f32", change).load().block(index)
        guard case .mixture(let moe)? = block.mlp?.feedForward else {
            Issue.record("layer \(index)'s MLP is not a mixture of experts")
            throw CancellationError()
        }
        return moe
    }

    /// Every layer routes: softmax over `num_experts`, the layer's
    /// `moe_topk` entry, renormalised, and one shared MLP as wide as the
    /// experts (`intermediate_size`), without a gate; the attention is
    /// Hunyuan dense's, its q/k norms after rotary.
    @Test func everyLayerIsAMixtureWithASharedMLP() throws {
        let topk = [2, 1, 3, 2]
        for layer in 0..<4 {
            let moe = try mixture(layer)
            #expect(moe.experts.count == 4 && moe.router.inFeatures == 48)
            #expect(moe.expertsPerToken == topk[layer])
            guard case .softmaxTopK(renormalize: true) = moe.rule else {
                Issue.record("not a renormalised softmax top-k")
                continue
            }
            #expect(moe.sharedExperts.count == 1 && moe.sharedExpertGate == nil)
            if case .gated(let gateUp, _, _)? = moe.sharedExperts.first { #expect(gateUp.outFeatures == 2 * 32) }
        }
        let attention = try #require(try EditedFixture("hunyuan_v1_moe-f32").load().block(0).attention?.attention)
        #expect(attention.queryKeyNormAfterRotary)
    }

    /// One `moe_topk` for all layers; its alias `num_experts_per_tok`; the
    /// class's default of 1 when neither is given.
    @Test func moeTopkAsOneCountAliasOrDefault() throws {
        for layer in [0, 2] {
            #expect(try mixture(layer) { $0["moe_topk"] = 3 }.expertsPerToken == 3)
            #expect(try mixture(layer) {
                $0["moe_topk"] = nil
                $0["num_experts_per_tok"] = 2
            }.expertsPerToken == 2)
            #expect(try mixture(layer) { $0["moe_topk"] = nil }.expertsPerToken == 1)
        }
        // num_local_experts stands for num_experts.
        #expect(try mixture(1) {
            $0["num_experts"] = nil
            $0["num_local_experts"] = 4
        }.experts.count == 4)
    }

    /// A block-drop export keeps the kept layers' `moe_topk` entries.
    @Test func blockDropExportKeepsTheKeptLayersTopk() throws {
        let config = try EditedFixture("hunyuan_v1_moe-f32").exportedConfig(droppingBlocks: [1])
        #expect(config["moe_topk"] as? [Int] == [2, 3, 2])
        #expect(config["num_hidden_layers"] as? Int == 3)
        let single = try EditedFixture("hunyuan_v1_moe-f32") { $0["moe_topk"] = 2 }.exportedConfig(droppingBlocks: [1])
        #expect(single["moe_topk"] as? Int == 2)
    }
}
