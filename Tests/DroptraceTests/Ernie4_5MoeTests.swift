@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// ERNIE 4.5's mixture-of-experts models (`ernie4_5_moe`): config refusals
/// and Ernie4_5_MoeConfig's defaults, the routed layers' range and beat,
/// the softmax router with its moe_statics correction bias and
/// `moe_norm_min`, and the range an export rewrites. The scores themselves
/// are checked against transformers with every other family
/// (`ScoringReferenceTests`, `DropTests`).
@Suite struct Ernie4_5MoeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("ernie4_5_moe-f32", "rms_norm_eps", "0"),
        Mutant("ernie4_5_moe-f32", "num_nextn_predict_layers", "2"), Mutant("ernie4_5_moe-f32", "num_mtp_layers", "3"),
        Mutant("ernie4_5_moe-f32", "moe_num_experts", "0"), Mutant("ernie4_5_moe-f32", "moe_num_experts", "null"),
        Mutant("ernie4_5_moe-f32", "moe_num_experts", "4611686018427387904"),
        Mutant("ernie4_5_moe-f32", "moe_k", "0"), Mutant("ernie4_5_moe-f32", "moe_k", "9"), Mutant("ernie4_5_moe-f32", "moe_k", "null"),
        Mutant("ernie4_5_moe-f32", "moe_num_shared_experts", "null"),
        Mutant("ernie4_5_moe-f32", "moe_intermediate_size", "0"),
        // (layer + 1) % 0 and comparisons with None fail building the layers.
        Mutant("ernie4_5_moe-f32", "moe_layer_interval", "0"), Mutant("ernie4_5_moe-f32", "moe_layer_interval", "null"),
        Mutant("ernie4_5_moe-f32", "moe_layer_start_index", "null"), Mutant("ernie4_5_moe-f32", "moe_layer_end_index", "null"),
        Mutant("ernie4_5_moe-f32", "moe_norm_min", "null"), Mutant("ernie4_5_moe-f32", "moe_norm_min", "1e39"),
        Mutant("ernie4_5_moe-f32", "use_bias", "\"yes\""),
        // Two spellings of one setting that disagree.
        Mutant("ernie4_5_moe-f32", "num_experts", "4", key: "moe_num_experts"),
        Mutant("ernie4_5_moe-f32", "num_experts_per_tok", "3", key: "moe_k"),
        // Sizes the tensors contradict.
        Mutant("ernie4_5_moe-f32", "moe_num_experts", "16"), Mutant("ernie4_5_moe-f32", "moe_intermediate_size", "32"),
        Mutant("ernie4_5_moe-f32", "head_dim", "16"),
        // LlamaAttention reads head_dim with getattr: a null one cannot build it.
        Mutant("ernie4_5_moe-f32", "head_dim", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Each layer's mixture, or nil for a dense MLP.
    static func mixtures(_ model: any LanguageModel) throws -> [MixtureOfExperts?] {
        try (0..<model.layerCount).map { layer in
            guard case .mixture(let moe)? = try model.block(layer).mlp?.feedForward else { return nil }
            return moe
        }
    }

    /// The fixture routes layers 1 and 2 (start 1, end 2) with the softmax
    /// router: one group, the stored correction bias choosing, weights
    /// renormalised with the sum clamped to moe_norm_min, no scaling, the
    /// shared expert biased as use_bias says; the attention rotates
    /// interleaved pairs with biases on every projection, the head is the
    /// embedding with its own bias.
    @Test func routedLayersSoftmaxRouterAndErnieAttention() throws {
        let model = try EditedFixture("ernie4_5_moe-f32").load(), config = try FixtureFiles.config("ernie4_5_moe-f32")
        let mixtures = try Self.mixtures(model)
        #expect(mixtures.map { $0 != nil } == [false, true, true, false])
        for moe in mixtures.compactMap({ $0 }) {
            let rule = try #require(groupLimitedRule(moe))
            #expect(moe.experts.count == config["moe_num_experts"] as? Int && moe.expertsPerToken == config["moe_k"] as? Int)
            #expect(rule.scoring == .softmax && rule.groups == 1 && rule.groupsPerToken == 1)
            #expect(rule.normalizesWeights && rule.scalingFactor == 1)
            #expect(rule.denominatorFloor == Float(config["moe_norm_min"] as! Double))
            #expect(rule.selectionBias?.count == moe.experts.count && rule.selectionBias?.contains { $0 != 0 } == true)
            guard case .gated(_, let down, _)? = moe.sharedExperts.first, moe.sharedExperts.count == 1 else {
                Issue.record("not one gated shared expert")
                continue
            }
            #expect(down.bias != nil && down.inFeatures == config["moe_intermediate_size"] as? Int)
        }
        let biases = try blockZeroBiases(EditedFixture("ernie4_5_moe-f32"))
        #expect(biases.qkv && biases.output && biases.mlp)
        let head = try model.head()
        #expect(head.projection.bias != nil)
    }

    /// What config.json leaves out takes Ernie4_5_MoeConfig's defaults:
    /// routed layers from 1 to the last, every one (interval 1), two shared
    /// experts (which the fixture's tensors contradict), moe_norm_min 1e-12,
    /// no biases, a tied head, rotary base 500000.
    @Test func omittedKeysTakeErnie4_5_MoeConfigDefaults() throws {
        let ranged = try EditedFixture("ernie4_5_moe-f32") {
            for key in ["moe_layer_start_index", "moe_layer_end_index", "moe_layer_interval"] { $0[key] = nil }
        }.load() as! Ernie4_5MoeModel
        #expect(ranged.sparse == [false, true, true, true])
        let floor = try EditedFixture("ernie4_5_moe-f32") { $0["moe_norm_min"] = nil }.load()
        #expect(groupLimitedRule(try Self.mixtures(floor)[1])?.denominatorFloor == Float(1e-12))
        let unbiased = try EditedFixture("ernie4_5_moe-f32") { $0["use_bias"] = nil }
        let biases = try blockZeroBiases(unbiased)
        #expect(!biases.qkv && !biases.output && !biases.mlp)
        #expect(try unbiased.load().head().projection.bias == nil)
        // Two shared experts are twice as wide as the fixture's one.
        let shared = try EditedFixture("ernie4_5_moe-f32") { $0["moe_num_shared_experts"] = nil }.load()
        #expect(throws: DroptraceError.self) { try shared.block(1) }
        let theta = try EditedFixture("ernie4_5_moe-f32") { config in
            var rope = config["rope_parameters"] as! [String: Any]
            rope["rope_theta"] = nil
            config["rope_parameters"] = rope
        }.load()
        let frequencies = try #require(try theta.block(0).attention?.attention.rotary?.inverseFrequencies)
        #expect(frequencies == (try EditedFixture("ernie4_5_moe-f32").load().block(0).attention?.attention.rotary?.inverseFrequencies))
    }

    /// The beat: layer i routes when (i + 1) % interval == 0 within the
    /// range (Python's remainder, zero exactly when Swift's is, also for a
    /// negative interval); an end of -1 is the last layer; a start past the
    /// end routes none; no shared experts unless the count is above 0.
    @Test func rangeAndBeatChooseTheRoutedLayers() throws {
        func routed(_ change: @escaping (inout [String: Any]) -> Void) throws -> [Bool] {
            (try EditedFixture("ernie4_5_moe-f32", change).load() as! Ernie4_5MoeModel).sparse
        }
        #expect(try routed { $0["moe_layer_interval"] = 2; $0["moe_layer_start_index"] = 0; $0["moe_layer_end_index"] = -1 }
            == [false, true, false, true])
        #expect(try routed { $0["moe_layer_interval"] = -2; $0["moe_layer_start_index"] = 0; $0["moe_layer_end_index"] = 3 }
            == [false, true, false, true])
        #expect(try routed { $0["moe_layer_start_index"] = 3; $0["moe_layer_end_index"] = 2 } == [false, false, false, false])
        // With no routed layer, the expert keys are not read.
        #expect(try routed { $0["moe_layer_start_index"] = 4; $0["moe_num_experts"] = NSNull(); $0["moe_k"] = NSNull() }
            == [false, false, false, false])
        for count in [0, -1] {
            let model = try EditedFixture("ernie4_5_moe-f32") { $0["moe_num_shared_experts"] = count }.load()
            #expect(try Self.mixtures(model)[1]?.sharedExperts.isEmpty == true)
        }
    }

    /// `moe_norm_min` clamps the sum the weights are divided by: with a
    /// floor of 1 every token's two weights are its plain probabilities.
    @Test func normMinFloorsTheDenominator() throws {
        let rule = GroupLimitedTopK(
            scoring: .softmax, groupScore: .best, groups: 1, groupsPerToken: 1, selectionBias: nil, normalizesWeights: true,
            denominatorFloor: 1, scalingFactor: 1)
        let logits = Matrix(rows: 1, cols: 4, data: [0, 1, 2, 3])
        let routing = rule.route(logits, expertsPerToken: 2)
        let exps = [0, 1, 2, 3].map { exp(Float($0) - 3) }, total = exps.reduce(0, +)
        #expect(routing.experts == [3, 2])
        #expect(routing.weights == [exps[3] / total, exps[2] / total])
        let summed = GroupLimitedTopK(
            scoring: .softmax, groupScore: .best, groups: 1, groupsPerToken: 1, selectionBias: nil, normalizesWeights: true,
            denominatorFloor: 1e-12, scalingFactor: 1
        ).route(logits, expertsPerToken: 2)
        #expect(abs(summed.weights[0] + summed.weights[1] - 1) < 1e-6)
    }

    /// `num_experts` and `num_experts_per_tok`, given alone, are the keys
    /// they stand for.
    @Test(arguments: [("num_experts", "moe_num_experts"), ("num_experts_per_tok", "moe_k")])
    func aliasGivenAloneIsReadAsItsKey(_ alias: String, _ key: String) throws {
        #expect(ConfigValueKinds.transformers["ernie4_5_moe"]?.aliases[alias] == key)
        let renamed = try EditedFixture("ernie4_5_moe-f32") { $0[alias] = $0.removeValue(forKey: key) }
        #expect(try String(contentsOfFile: renamed.configPath, encoding: .utf8).contains("\"\(alias)\""))
        #expect(try scores(renamed) == scores(EditedFixture("ernie4_5_moe-f32")))
    }

    /// An export without some blocks writes the range and beat that keep
    /// every kept layer's MLP; a plan no range and beat can keep is refused.
    @Test func blockDropRewritesTheRoutedRange() throws {
        let dropFirst = try EditedFixture("ernie4_5_moe-f32").exportedConfig(droppingBlocks: [0])
        #expect(dropFirst["moe_layer_start_index"] as? Int == 0 && dropFirst["moe_layer_end_index"] as? Int == 1)
        #expect(dropFirst["moe_layer_interval"] as? Int == 1 && dropFirst["num_hidden_layers"] as? Int == 3)
        // Routed 1 and 3 of 0-3 (interval 2); without block 2: 1 and 2 of three layers.
        let beat = try EditedFixture("ernie4_5_moe-f32") {
            $0["moe_layer_interval"] = 2
            $0["moe_layer_start_index"] = 0
            $0["moe_layer_end_index"] = -1
        }
        let config = try beat.exportedConfig(droppingBlocks: [2])
        #expect(config["moe_layer_start_index"] as? Int == 1 && config["moe_layer_end_index"] as? Int == 2)
        #expect(config["moe_layer_interval"] as? Int == 1)
        #expect(SparseLayerRange.fitting([false, true, false, true, true]) == nil)
        #expect(SparseLayerRange.fitting([false, true, false, true]).map { [$0.start, $0.end, $0.interval] } == [1, 3, 2])
        #expect(SparseLayerRange.fitting([false, false]).map { [$0.start, $0.end, $0.interval] } == [2, 1, 1])
        // Without block 0 the beat's layers 1 and 3 become 0 and 2 of three, around a dense 1: no rule routes those.
        let model = try beat.load()
        #expect(model.exportProblem(DropPlan(blocks: [2])) == nil)
        let problem = try #require(model.exportProblem(DropPlan(blocks: [0])))
        #expect(problem.contains("moe_layer_interval") && !problem.contains("\n"))
        #expect(throws: DroptraceError.self) { try beat.exportedConfig(droppingBlocks: [0]) }
    }

    /// Router and experts against transformers' MoE block (`routing_check`):
    /// the same experts per token with the same weights (clamped sums
    /// included), and the block's output (shared expert included) within 1e-5.
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("ernie4_5_moe-f32", unordered: true)
    }

    /// Fused 3-D experts score exactly as the per-expert tensors `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike("ernie4_5_moe-f32")
    }
}
