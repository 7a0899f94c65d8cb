import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import Testing

/// Qwen2-MoE's keys: which layers are sparse, the shared expert and its
/// sigmoid gate, probabilities left unnormalised by default, and
/// Qwen2MoeConfig's own rule for which layers slide.
@Suite struct Qwen2MoeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("qwen2_moe-f32", "num_experts", "-1"),
        Mutant("qwen2_moe-f32", "num_experts", "5"),
        Mutant("qwen2_moe-f32", "num_experts", "1152921504606846976"),
        Mutant("qwen2_moe-f32", "num_experts_per_tok", "0"),
        Mutant("qwen2_moe-f32", "num_experts_per_tok", "5"),
        Mutant("qwen2_moe-f32", "decoder_sparse_step", "0"),
        Mutant("qwen2_moe-f32", "moe_intermediate_size", "0"),
        Mutant("qwen2_moe-f32", "shared_expert_intermediate_size", "-1"),
        // Sliding layers need a window: use_sliding_window true with none.
        Mutant("qwen2_moe-f32", "sliding_window", "null", key: "sliding_window"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    func scores(_ model: any LanguageModel) throws -> ModuleScores {
        try ImportanceScorer(model: model).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
    }

    /// Layer 2 is in `mlp_only_layers` (a dense MLP of intermediate_size);
    /// the others route without renormalising and add the gated shared expert.
    @Test func sparseLayersHaveTheGatedSharedExpert() throws {
        let model = try EditedFixture("qwen2_moe-f32").load()
        var sparse: [Bool] = []
        for layer in 0..<model.layerCount {
            guard case .mixture(let moe)? = try model.block(layer).mlp?.feedForward else {
                sparse.append(false)
                continue
            }
            sparse.append(true)
            guard case .softmaxTopK(let renormalize) = moe.rule else {
                Issue.record("layer \(layer) is not routed by softmax top-k")
                continue
            }
            #expect(!renormalize)
            #expect(moe.sharedExperts.count == 1 && moe.sharedExpertGate?.outFeatures == 1)
            guard case .gated(let gateUp, _, _)? = moe.sharedExperts.first else {
                Issue.record("layer \(layer)'s shared expert is not a gated MLP")
                continue
            }
            #expect(gateUp.outFeatures == 2 * 24, "shared_expert_intermediate_size")
        }
        #expect(sparse == [true, true, false, true])
    }

    /// Without `layer_types`, Qwen2MoeConfig slides the even layers below
    /// `max_window_layers` (3 here: layers 0 and 2, as the saved list says),
    /// not the layers from it on as Qwen2Config does.
    @Test func defaultLayerTypesFollowQwen2MoeConfig() throws {
        let saved = try EditedFixture("qwen2_moe-f32").load()
        let derived = try EditedFixture("qwen2_moe-f32") { $0["layer_types"] = nil }.load()
        let windows = try (0..<derived.layerCount).map { try derived.block($0).attention?.attention.slidingWindow }
        #expect(windows == [8, nil, 8, nil])
        let (a, b) = (try scores(derived), try scores(saved))
        #expect(a.attention == b.attention && a.mlp == b.mlp && a.block == b.block)
    }

    /// Without `use_sliding_window` no layer slides, and Qwen2MoeConfig
    /// saves the window as 0 then: such a config loads.
    @Test func switchedOffWindowOfZeroLoads() throws {
        let model = try EditedFixture("qwen2_moe-f32") {
            $0["use_sliding_window"] = false
            $0["sliding_window"] = 0
            $0["layer_types"] = Array(repeating: "full_attention", count: 4)
        }.load()
        #expect(try (0..<model.layerCount).allSatisfy { try model.block($0).attention?.attention.slidingWindow == nil })
    }

    /// Router, experts and gated shared expert of layer 0 against
    /// transformers' Qwen2MoeSparseMoeBlock on its own input.
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("qwen2_moe-f32")
    }

    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike("qwen2_moe-f32")
    }
}
