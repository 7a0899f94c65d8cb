@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Beam (`beam`): the depth-scaled residual adds, the output gate with its
/// per-head bias, the NoPE layers' query scaling, group-limited routing;
/// BeamConfig's defaults and refusals, and exports that would renumber the
/// layers. The scores themselves are checked against transformers with
/// every other family (`DropTests` and the reference suites).
@Suite struct BeamTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "beam-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "num_key_value_heads", "3"),
        Mutant(name, "mlp_layer_types", "[\"dense\", \"sparse\", \"sparse\", \"dense\", \"dense\"]"),
        Mutant(name, "mlp_layer_types", "[\"dense\", \"moe\", \"sparse\", \"dense\"]"),
        Mutant(name, "layer_types", "[\"sliding_attention\", \"chunked_attention\", \"sliding_attention\", \"full_attention\"]"),
        // BeamTopKRouter cannot group by None, views 8 experts as 3 groups wrongly, keeps more groups than there are.
        Mutant(name, "n_group", "null"), Mutant(name, "n_group", "3"), Mutant(name, "n_group", "8"),
        Mutant(name, "topk_group", "5"), Mutant(name, "topk_group", "0"), Mutant(name, "topk_group", "null"),
        // 2 kept groups of 2 experts hold fewer than 5.
        Mutant(name, "num_experts_per_tok", "5"), Mutant(name, "num_experts_per_tok", "9"),
        Mutant(name, "routed_scaling_factor", "0.0"), Mutant(name, "final_logit_softcapping", "0.0"),
        Mutant(name, "sliding_window", "null"), Mutant(name, "sliding_window", "0"), Mutant(name, "rms_norm_eps", "-1.0"),
        Mutant(name, "hidden_act", "\"nope\""),
        Mutant(name, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 10000.0}", key: "rope_parameters.full_attention"),
        Mutant(name, "rope_parameters.sliding_attention.rope_theta", "null", key: "rope_parameters.sliding_attention.rope_theta"),
        // A rope_scaling key replaces rope_parameters, even null (PreTrainedConfig's legacy setter).
        Mutant(name, "rope_scaling", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers 0 and 2 slide within 8 tokens and rotate, 1 and 3 take no
    /// positions and scale their queries; every attention gated by
    /// sigmoid(gate_proj x + gate_bias); layers 0 and 3 dense, 1 and 2
    /// routed within 2 of 4 groups, × 2.5, without shared experts; each
    /// branch joins the stream by its depth-scaled add.
    @Test func layersAsBeamBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            let branch = try #require(block.attention), attention = try #require(branch.attention)
            let sliding = index % 2 == 0
            #expect(attention.slidingWindow == (sliding ? 8 : nil) && (attention.rotary != nil) == sliding)
            #expect(attention.queryTemperature == (sliding ? nil : BeamModel.scalableSoftmax))
            let gate = try #require(attention.outputGate)
            #expect(gate.outFeatures == 64 && gate.bias?.count == 64 && attention.outputGateFunction == .sigmoid)
            // Each head's bias over its 16 columns.
            #expect(gate.bias.map { bias in (0..<4).allSatisfy { h in Set(bias[(h * 16)..<((h + 1) * 16)]).count == 1 } } == true)
            for (join, position) in [(branch.join, 2 * index + 2), (block.mlp?.join, 2 * index + 3)] {
                guard case .scaling(let stream, let output)? = join else {
                    Issue.record("layer \(index): \(String(describing: join))")
                    continue
                }
                let i = Double(position)
                #expect(stream == Float(((i - 1) / i).squareRoot()) && output == Float(1 / i.squareRoot()))
            }
            guard case .mixture(let mixture)? = block.mlp?.feedForward, case .groupLimited(let routing) = mixture.rule else {
                #expect(index == 0 || index == 3)
                continue
            }
            #expect(index == 1 || index == 2)
            #expect(routing.groups == 4 && routing.groupsPerToken == 2 && routing.groupScore == .sumOfBestTwo)
            #expect(routing.scalingFactor == 2.5 && routing.selectionBias != nil && routing.normalizesWeights)
            #expect(mixture.sharedExperts.isEmpty && mixture.experts.count == 8)
        }
    }

    /// (1 + (p + 1)/2048)^0.1, in Float32.
    @Test func scalableSoftmaxFactor() {
        let scale = BeamModel.scalableSoftmax
        #expect(scale.factor(position: 2047) == expf(0.1 * log1pf(1)))
        #expect(scale.factor(position: 0) == expf(0.1 * log1pf(1 / 2048)) && scale.factor(position: 0) > 1)
    }

    /// What config.json leaves out takes BeamConfig's values: its rope
    /// parameters (the fixture's), every sixth and the last layer full
    /// (other scores), the first three layers dense and 8 groups keeping 4
    /// (which the weights and the experts refuse).
    @Test func omittedKeysTakeBeamConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["rope_parameters"] = nil }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["rope_parameters"] = NSNull() }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["layer_types"] = nil }.attentionScores() != base)
        #expect(throws: DroptraceError.self) { _ = try EditedFixture(Self.name) { $0["mlp_layer_types"] = nil }.load() }
        try EditedFixture(Self.name) { $0["n_group"] = nil; $0["topk_group"] = nil }.expectRefused(naming: "n_group")
    }

    /// A rope_scaling object replaces rope_parameters: per-type entries are read from it.
    @Test func ropeScalingReplacesRopeParameters() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let entries: [String: Any] = ["sliding_attention": ["rope_type": "default", "rope_theta": 10_000.0], "full_attention": NSNull()]
        #expect(try EditedFixture(Self.name) { $0["rope_scaling"] = entries; $0["rope_parameters"] = nil }.attentionScores() == base)
        let other: [String: Any] = ["sliding_attention": ["rope_type": "default", "rope_theta": 100.0], "full_attention": NSNull()]
        #expect(try EditedFixture(Self.name) { $0["rope_scaling"] = other }.attentionScores() != base)
    }

    /// A block drop that moves a kept layer to another index is refused for
    /// export (its residual adds would scale by the new index); dropping the
    /// last blocks spells out the kept layers' types.
    @Test func exportsKeepEveryLayerAtItsIndex() throws {
        let model = try EditedFixture(Self.name).load()
        let problem = model.exportProblem(DropPlan(blocks: [1]))
        #expect(problem?.contains("depth-scaled") == true && problem?.contains("layer 2") == true, "\(String(describing: problem))")
        #expect(model.exportProblem(DropPlan(blocks: [3])) == nil)
        #expect(model.exportProblem(DropPlan(blocks: [2, 3])) == nil)
        #expect(model.exportProblem(DropPlan(attention: [0, 2], mlp: [1])) == nil)
        let config = try EditedFixture(Self.name) { $0["layer_types"] = nil }.exportedConfig(droppingBlocks: [3])
        #expect(config["layer_types"] as? [String] == ["sliding_attention", "sliding_attention", "sliding_attention"])
        #expect(config["mlp_layer_types"] as? [String] == ["dense", "sparse", "sparse"] && config["num_hidden_layers"] as? Int == 3)
    }
}
