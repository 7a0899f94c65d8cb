@testable import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// gpt-oss features the shared reference tests do not single out: MXFP4
/// experts (Fixtures/gpt_oss, scripts/fixtures/make_gpt_oss_fixtures.py),
/// YaRN, the routing rule, the clamped SwiGLU and the config checks.
@Suite struct GptOssTests {
    static let root = FixtureFiles.root.appendingPathComponent("gpt_oss")
    static let mxfp4 = root.appendingPathComponent("mxfp4")
    static let reference: [String: Any] = {
        let data = try! Data(contentsOf: root.appendingPathComponent("reference.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    static func doubles(_ value: Any?) -> [Double] { (value as! [Any]).map { ($0 as! NSNumber).doubleValue } }

    func load(_ directory: URL) throws -> any LanguageModel { try ModelRegistry.load(try Checkpoint(directory: directory)) }

    /// The released layout: experts as U8 blocks and scales, dequantised on
    /// load; scores as transformers computes them on the dequantised model.
    @Test func mxfp4ExpertsScoreAsTransformersDequantisesThem() throws {
        let model = try load(Self.mxfp4)
        let scores = try ImportanceScorer(model: model).score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
        let expected = Self.reference["scores"] as! [String: Any]
        for (name, values) in [("attention", scores.attention), ("mlp", scores.mlp), ("block", scores.block)] {
            let worst = zip(values, Self.doubles(expected[name])).map { abs(Double($0) - $1) }.max() ?? .infinity
            #expect(worst < 1e-4, "\(name): \(worst)")
        }
        let windows = Array(FixtureFiles.jsonlSequences().prefix(2))
        let loss = try LanguageModelLoss.evaluate(model: model, plan: .none, windows: windows, sourcePath: "eval")
        let perplexity = (Self.reference["perplexity"] as! NSNumber).doubleValue
        #expect(abs(loss.perplexity / perplexity - 1) < 1e-4, "\(loss.perplexity) vs \(perplexity)")
    }

    /// A block-dropped export of an MXFP4 checkpoint holds the float expert
    /// tensors transformers builds ([experts, in, out]) and no
    /// quantization_config, and reads back with the dropped perplexity.
    @Test func mxfp4ExportWritesFloatExperts() throws {
        let scratch = try ScratchDirectory()
        let model = try load(Self.mxfp4)
        let plan = DropPlan(blocks: [1])
        let windows = Array(FixtureFiles.jsonlSequences().prefix(2))
        let expected = try LanguageModelLoss.evaluate(model: model, plan: plan, windows: windows, sourcePath: "eval")
        let export = scratch.path("export")
        try DroppedModelExport.write(model: model, plan: plan, to: export)

        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: export.appendingPathComponent("config.json"))) as! [String: Any]
        #expect(config["quantization_config"] == nil)
        #expect(config["layer_types"] as? [String] == ["sliding_attention", "sliding_attention"])
        let checkpoint = try Checkpoint(directory: export)
        #expect(!checkpoint.storedTensorNames.contains { $0.hasSuffix("_blocks") || $0.hasSuffix("_scales") })
        #expect(try checkpoint.tensor("model.layers.1.mlp.experts.gate_up_proj").shape == [4, 64, 64])
        #expect(try checkpoint.tensor("model.layers.1.mlp.experts.down_proj").shape == [4, 32, 64])
        let loss = try LanguageModelLoss.evaluate(model: try ModelRegistry.load(checkpoint), plan: .none, windows: windows, sourcePath: "eval")
        #expect(abs(loss.perplexity / expected.perplexity - 1) < 1e-6)
    }

    /// Inverse frequencies and the cos/sin factor against transformers'
    /// `_compute_yarn_parameters` (truncated or not, given attention factor,
    /// mscale / mscale_all_dim, a factor below 1, another head width).
    @Test func yarnMatchesTransformers() throws {
        for case let entry as [String: Any] in Self.reference["yarn"] as! [Any] {
            let config: [String: Any] = [
                "rope_parameters": entry["rope_parameters"]!, "max_position_embeddings": entry["max_position_embeddings"]!,
            ]
            let settings = try JSONDecoder().decode(RopeSettings.self, from: JSONSerialization.data(withJSONObject: config))
            let rotary = try settings.embedding(
                headDim: (entry["head_dim"] as! NSNumber).intValue, defaultTheta: 150_000, configPath: "config.json")
            let expected = Self.doubles(entry["inv_freq"])
            #expect(rotary.inverseFrequencies.count == expected.count)
            let worst = zip(rotary.inverseFrequencies, expected).map { abs(Double($0) / $1 - 1) }.max() ?? .infinity
            #expect(worst < 1e-6, "\(entry["name"]!): inverse frequencies off by \(worst)")
            let factor = (entry["attention_factor"] as! NSNumber).doubleValue
            #expect(abs(Double(rotary.attentionScaling) - factor) < 1e-6, "\(entry["name"]!): \(rotary.attentionScaling) vs \(factor)")
        }
    }

    /// transformers refuses YaRN parameters without a "factor" key (a null
    /// one it infers, as `factor_null` above checks), in 5.x's and 4.x's spelling.
    @Test func yarnWithoutFactorIsRefusedNamingTheKey() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        for (key, typeKey) in [("rope_parameters", "rope_type"), ("rope_scaling", "type")] {
            try ArchitectureTests().rewriteConfig(model) {
                $0.removeValue(forKey: "rope_parameters")
                $0[key] = [typeKey: "yarn", "rope_theta": 10000.0, "original_max_position_embeddings": 16]
            }
            let error = #expect(throws: DroptraceError.self) { try ModelRegistry.load(try Checkpoint(directory: model)) }
            #expect(error?.description.contains("missing key \"\(key).factor\"") == true, "\(String(describing: error))")
            #expect(error?.path == model.appendingPathComponent("config.json").path)
        }
    }

    /// Softmax over each token's k largest router logits, against Float64.
    @Test func routingSoftmaxesTheTopLogits() {
        var generator = SystemRandomNumberGenerator()
        let hidden = 6, experts = 5, k = 3
        let router = Linear(
            weight: (0..<(experts * hidden)).map { _ in Float.random(in: -2...2, using: &generator) }, bias: [0, 0.5, -0.5, 1, 0],
            inFeatures: hidden, outFeatures: experts)
        let identity = FeedForward.plain(
            up: Linear(weight: [1], bias: nil, inFeatures: 1, outFeatures: 1),
            down: Linear(weight: [1], bias: nil, inFeatures: 1, outFeatures: 1), activation: .relu)
        let moe = MixtureOfExperts(
            router: router, experts: Array(repeating: identity, count: experts), expertsPerToken: k, rule: .topKThenSoftmax)
        let x = Matrix(rows: 7, cols: hidden, data: (0..<(7 * hidden)).map { _ in Float.random(in: -1...1, using: &generator) })
        let logits = router(x), routing = moe.route(x)
        for r in 0..<x.rows {
            let row = (0..<experts).map { Double(logits[r, $0]) }
            let top = (0..<experts).sorted { row[$0] > row[$1] }.prefix(k)
            let total = top.reduce(0.0) { $0 + exp(row[$1]) }
            for (slot, e) in top.enumerated() {
                #expect(routing.experts[r * k + slot] == e)
                #expect(abs(Double(routing.weights[r * k + slot]) - exp(row[e]) / total) < 1e-6)
            }
        }
    }

    /// gate clamped above, up clamped both ways, (up + 1) · gate · σ(α · gate).
    @Test func clampedSwiGLUClampsAndGates() {
        let activation = ClampedSwiGLU(alpha: 1.702, limit: 7)
        for (gate, up) in [(0.5, -0.25), (9.0, 3.0), (-3.0, -8.0), (2.0, 12.0)] as [(Double, Double)] {
            let g = min(gate, 7), u = min(max(up, -7), 7)
            let expected = (u + 1) * g / (1 + exp(-1.702 * g))
            #expect(abs(Double(activation.apply(gate: Float(gate), up: Float(up))) - expected) < 1e-5)
        }
        let interleaved: [Float] = [0.5, -0.25, 9, 3]
        var out: [Float] = [0, 0]
        out.withUnsafeMutableBufferPointer { activation.applyInterleaved(interleaved, into: $0.baseAddress!, count: 2) }
        #expect(out == [activation.apply(gate: 0.5, up: -0.25), activation.apply(gate: 9, up: 3)])
    }

    @Test func badConfigurationsAreRefused() throws {
        let tests = ArchitectureTests()
        try tests.expectError("gpt_oss-f32", mentioning: ["swiglu_limit"]) { $0["swiglu_limit"] = 0 }
        try tests.expectError("gpt_oss-f32", mentioning: ["swiglu_alpha"]) { $0["swiglu_alpha"] = -1.0 }
        try tests.expectError("gpt_oss-f32", mentioning: ["num_experts_per_tok", "5"]) { $0["num_experts_per_tok"] = 5 }
        try tests.expectError("gpt_oss-f32", mentioning: ["num_local_experts"]) { $0["num_local_experts"] = 0 }
        try tests.expectError("gpt_oss-f32", mentioning: ["num_local_experts", "8"]) { $0["num_local_experts"] = 8 }
        try tests.expectError("gpt_oss-f32", mentioning: ["chunked_attention"]) {
            $0["layer_types"] = ["sliding_attention", "full_attention", "chunked_attention", "full_attention"]
        }
        try tests.expectError("gpt_oss-f32", mentioning: ["sliding_window"]) { $0["sliding_window"] = NSNull() }
        try tests.expectError("gpt_oss-f32", mentioning: ["beta_fast"]) {
            var rope = $0["rope_parameters"] as! [String: Any]
            rope["beta_fast"] = -32
            $0["rope_parameters"] = rope
        }
        try tests.expectError("gpt_oss-f32", mentioning: ["yarn", "rope_theta"]) {
            var rope = $0["rope_parameters"] as! [String: Any]
            rope["rope_theta"] = 1
            $0["rope_parameters"] = rope
        }
        // transformers' GptOssConfig: head_dim 64 when config.json omits it (the fixture's heads are 16 wide).
        try tests.expectError("gpt_oss-f32", mentioning: ["head_dim", "[256, 48]"]) { $0.removeValue(forKey: "head_dim") }
    }

    /// Without rotary settings transformers uses YaRN (factor 32 over 4096
    /// positions, rope_theta 150000), and even layers slide without layer_types.
    @Test func defaultsFollowGptOssConfig() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("gpt_oss-f32")
        try ArchitectureTests().rewriteConfig(directory) {
            $0.removeValue(forKey: "rope_parameters")
            $0.removeValue(forKey: "layer_types")
        }
        let model = try #require(try load(directory) as? GptOssModel)
        #expect(model.layerTypes == ["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
        let yarn = try RopeSettings(type: "yarn", factor: 32, betaFast: 32, betaSlow: 1, truncate: false, originalMax: 4096)
            .embedding(headDim: 16, defaultTheta: 150_000, configPath: "config.json")
        #expect(model.rotary.inverseFrequencies == yarn.inverseFrequencies)
        #expect(model.rotary.attentionScaling == Float(0.1 * log(32.0) + 1))
    }
}

extension RopeSettings {
    /// YaRN settings as a config.json would spell them.
    init(type: String, factor: Double, betaFast: Double, betaSlow: Double, truncate: Bool, originalMax: Int) throws {
        let config: [String: Any] = ["rope_parameters": [
            "rope_type": type, "factor": factor, "beta_fast": betaFast, "beta_slow": betaSlow, "truncate": truncate,
            "original_max_position_embeddings": originalMax,
        ]]
        self = try JSONDecoder().decode(RopeSettings.self, from: JSONSerialization.data(withJSONObject: config))
    }
}
