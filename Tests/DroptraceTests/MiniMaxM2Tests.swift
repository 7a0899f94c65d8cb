@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// MiniMax-M2 (`minimax_m2`): its config refusals and MiniMaxM2Config's
/// defaults, the q/k norms over the whole projections, `rotary_dim` read as
/// the rotary fraction, and the sigmoid routing with its correction bias.
/// The scores themselves are checked against transformers with every other
/// family (`ScoringReferenceTests`, `DropTests`).
@Suite struct MiniMaxM2Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("minimax_m2-f32", "rms_norm_eps", "0"), Mutant("minimax_m2-f32", "rms_norm_eps", "-1e-6"),
        Mutant("minimax_m2-f32", "num_local_experts", "0"), Mutant("minimax_m2-f32", "num_local_experts", "-1"),
        Mutant("minimax_m2-f32", "num_local_experts", "4611686018427387904"),
        Mutant("minimax_m2-f32", "num_experts_per_tok", "0"), Mutant("minimax_m2-f32", "num_experts_per_tok", "9"),
        Mutant("minimax_m2-f32", "num_experts_per_tok", "null"),
        // Two spellings of one setting that disagree.
        Mutant("minimax_m2-f32", "num_experts", "4", key: "num_local_experts"),
        // Sizes the tensors contradict.
        Mutant("minimax_m2-f32", "num_local_experts", "16"), Mutant("minimax_m2-f32", "head_dim", "16"),
        Mutant("minimax_m2-f32", "intermediate_size", "32"),
        // MiniMaxM2Config's head_dim is an int: null is refused as transformers refuses it.
        Mutant("minimax_m2-f32", "head_dim", "null"),
        // rotary_dim / head_dim is the rotary fraction: it must be in (0, 1].
        Mutant("minimax_m2-f32", "rotary_dim", "14"), Mutant("minimax_m2-f32", "rotary_dim", "0"),
        Mutant("minimax_m2-f32", "rotary_dim", "-6"), Mutant("minimax_m2-f32", "rotary_dim", "\"6\""),
        Mutant("minimax_m2-f32", "rope_theta", "0"), Mutant("minimax_m2-f32", "rope_theta", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// One RMSNorm over all query columns and one over all key columns
    /// ([heads · head_dim], [kv_heads · head_dim]), no biases; every MLP a
    /// sigmoid router over the configured experts with the stored
    /// correction bias, one group, renormalised, unscaled, no shared experts.
    @Test func blockAsMiniMaxM2Builds() throws {
        let model = try EditedFixture("minimax_m2-f32").load()
        let config = try FixtureFiles.config("minimax_m2-f32")
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            let attention = try #require(block.attention?.attention)
            guard case .acrossHeads(.rms(let query, _), .rms(let key, _))? = attention.queryKeyNorm,
                  case .fused(let qkv) = attention.projection
            else {
                Issue.record("layer \(layer): not a fused q/k/v attention with RMSNorms across heads")
                continue
            }
            #expect(query.count == attention.layout.queryWidth && key.count == attention.layout.keyWidth)
            #expect(qkv.bias == nil && attention.output.bias == nil && !attention.queryKeyNormAfterRotary)
            let moe = try #require(try mlpMixture(model, layer: layer))
            guard case .groupLimited(let rule) = moe.rule else {
                Issue.record("layer \(layer): not sigmoid-routed")
                continue
            }
            #expect(moe.experts.count == config["num_local_experts"] as? Int && moe.expertsPerToken == config["num_experts_per_tok"] as? Int)
            #expect(moe.sharedExperts.isEmpty && !moe.weightsScaleInput)
            #expect(rule.scoring == .sigmoid && rule.groups == 1 && rule.groupsPerToken == 1)
            #expect(rule.normalizesWeights && rule.scalingFactor == 1)
            #expect(rule.selectionBias?.count == moe.experts.count && rule.selectionBias?.contains { $0 != 0 } == true)
        }
    }

    /// The rotary table of the fixture with config.json changed by `change`.
    func rotary(_ change: @escaping (inout [String: Any]) -> Void) throws -> RotaryEmbedding {
        try #require(try EditedFixture("minimax_m2-f32", change).load().block(0).attention?.attention.rotary)
    }

    /// `rotary_dim` is read as partial_rotary_factor rotary_dim / head_dim:
    /// the fixture's 6 of 12 rotate as a fraction of 0.5 would; a fraction
    /// given beside it, at the top level or in the rope parameters, wins;
    /// without either the whole head rotates.
    @Test func rotaryDimIsTheRotaryFraction() throws {
        let released = try rotary { _ in }
        #expect(released.rotaryDim == 6)
        let fraction = try rotary {
            $0["rotary_dim"] = nil
            $0["rope_parameters"] = ["rope_type": "default", "rope_theta": $0.removeValue(forKey: "rope_theta")!, "partial_rotary_factor": 0.5]
        }
        #expect(fraction.inverseFrequencies == released.inverseFrequencies && fraction.rotaryDim == 6)
        #expect(try rotary { $0["partial_rotary_factor"] = 1.0 }.rotaryDim == 12)
        #expect(try rotary { $0["rope_parameters"] = ["partial_rotary_factor": 1.0] }.rotaryDim == 12)
        #expect(try rotary { $0["rotary_dim"] = nil }.rotaryDim == 12)
        // A null rotary_dim is no rotary_dim, as the config class reads it.
        #expect(try rotary { $0["rotary_dim"] = NSNull() }.rotaryDim == 12)
    }

    /// What config.json leaves out takes MiniMaxM2Config's defaults: the
    /// rotary base 5e6, head_dim 128 and 256 experts (both of which the
    /// fixture's tensors contradict), 8 experts per token (all it has).
    @Test func omittedKeysTakeMiniMaxM2ConfigDefaults() throws {
        let base = try rotary { $0["rope_theta"] = nil }
        #expect(base.inverseFrequencies == (try rotary { $0["rope_theta"] = 5_000_000.0 }).inverseFrequencies)
        #expect(base.inverseFrequencies != (try rotary { $0["rope_theta"] = 10_000.0 }).inverseFrequencies)
        try EditedFixture("minimax_m2-f32") { $0["head_dim"] = nil }.expectRefused(naming: "head_dim")
        try EditedFixture("minimax_m2-f32") { $0["num_local_experts"] = nil }.expectRefused(naming: "num_local_experts")
        let everyExpert = try EditedFixture("minimax_m2-f32") { $0["num_experts_per_tok"] = nil }.load()
        #expect(try mlpMixture(everyExpert, layer: 0)?.expertsPerToken == 8)
        // The alias alone is the expert count.
        let aliased = try EditedFixture("minimax_m2-f32") { $0["num_experts"] = $0.removeValue(forKey: "num_local_experts") }.load()
        #expect(try mlpMixture(aliased, layer: 0)?.experts.count == 8)
    }

    /// Without a stored correction bias the router chooses by the sigmoids
    /// alone, as transformers' zero buffer does.
    @Test func absentCorrectionBiasIsZero() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("minimax_m2-f32")
        let original = try Checkpoint(directory: directory)
        let entries = try original.tensorNames.filter { !$0.hasSuffix("e_score_correction_bias") }
            .map { SafetensorsWriter.Entry(try original.tensor($0)) }
        try FileManager.default.removeItem(at: directory.appendingPathComponent(Checkpoint.singleFileName))
        try SafetensorsWriter.write(entries, to: directory.appendingPathComponent(Checkpoint.singleFileName))
        let model = try ModelRegistry.load(try Checkpoint(directory: directory))
        guard case .groupLimited(let rule)? = try mlpMixture(model, layer: 0)?.rule else {
            Issue.record("not sigmoid-routed")
            return
        }
        #expect(rule.selectionBias == nil)
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("minimax_m2-f32", unordered: true)
    }

    /// Fused 3-D experts (`mlp.experts.gate_up_proj` / `down_proj`, router
    /// `mlp.gate`, the bias left under `block_sparse_moe.`) score exactly as
    /// the per-expert tensors `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike(
            "minimax_m2-f32", from: "block_sparse_moe.experts.", router: "block_sparse_moe.gate", names: ("w1", "w3", "w2"))
    }
}
