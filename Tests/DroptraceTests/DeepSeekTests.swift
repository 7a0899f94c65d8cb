@testable import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// DeepSeek-V2/V3: their config keys refused when transformers could not run
/// them, and the pieces they add (latent attention's interleaved rope, YaRN,
/// group-limited routing) checked against transformers' definitions.
@Suite struct DeepSeekTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("deepseek_v3-f32", "qk_rope_head_dim", "7"), Mutant("deepseek_v3-f32", "qk_rope_head_dim", "0"),
        Mutant("deepseek_v3-f32", "qk_nope_head_dim", "-8"), Mutant("deepseek_v3-f32", "v_head_dim", "0"),
        Mutant("deepseek_v3-f32", "kv_lora_rank", "0"), Mutant("deepseek_v3-f32", "q_lora_rank", "0"),
        Mutant("deepseek_v3-f32", "num_key_value_heads", "2"), Mutant("deepseek_v3-f32", "n_group", "3"),
        Mutant("deepseek_v3-f32", "n_group", "8"), Mutant("deepseek_v3-f32", "topk_group", "5"),
        Mutant("deepseek_v3-f32", "topk_group", "0"), Mutant("deepseek_v3-f32", "num_experts_per_tok", "9"),
        Mutant("deepseek_v3-f32", "routed_scaling_factor", "0"), Mutant("deepseek_v3-f32", "first_k_dense_replace", "-1"),
        Mutant("deepseek_v3-f32", "n_shared_experts", "-1"), Mutant("deepseek_v3-f32", "moe_intermediate_size", "0"),
        Mutant("deepseek_v3-f32", "n_routed_experts", "4611686018427387904"),
        Mutant("deepseek_v3-f32", "kv_lora_rank", "4611686018427387904"),
        Mutant("deepseek_v3-f32", "rope_parameters.beta_fast", "-1"), Mutant("deepseek_v3-f32", "rope_parameters.mscale", "-1"),
        Mutant("deepseek_v3-f32", "rope_parameters.attention_factor", "0"),
        // Sizes the tensors contradict.
        Mutant("deepseek_v3-f32", "kv_lora_rank", "12"), Mutant("deepseek_v3-f32", "q_lora_rank", "20"),
        Mutant("deepseek_v3-f32", "n_routed_experts", "16", key: "n_routed_experts"),
        Mutant("deepseek_v3-f32", "qk_nope_head_dim", "4"), Mutant("deepseek_v3-f32", "v_head_dim", "8"),
        Mutant("deepseek_v2-f32", "topk_method", "\"noaux_tc\""), Mutant("deepseek_v2-f32", "num_experts_per_tok", "null"),
        // transformers accepts a null topk_method, then its router fails in the forward.
        Mutant("deepseek_v2-f32", "topk_method", "null"),
        Mutant("deepseek_v2-f32", "num_experts_per_tok", "5"), Mutant("deepseek_v2-f32", "q_lora_rank", "16", key: "q_lora_rank"),
        Mutant("deepseek_v2-f32", "qk_rope_head_dim", "4"),
    ]

    /// DeepseekV3Config's num_key_value_heads is 128 when config.json omits
    /// it, which the 4-head fixture's latent attention cannot take
    /// (transformers fails in the forward); null means num_attention_heads.
    @Test func omittedKeyValueHeadsAreTheClassDefault() throws {
        do {
            let fixture = try EditedFixture("deepseek_v3-f32") { $0["num_key_value_heads"] = nil }
            fixture.expectRefused(naming: "num_key_value_heads")
        }
        let null = try EditedFixture("deepseek_v3-f32") { $0["num_key_value_heads"] = NSNull() }
        #expect(try null.load().layerCount == 4)
    }

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel(mutant.model, as: "model")
        let configURL = model.appendingPathComponent("config.json")
        try mutant.apply(to: configURL)
        do {
            let loaded = try ModelRegistry.load(try Checkpoint(directory: model))
            _ = try (0..<loaded.layerCount).map { try loaded.block($0) }
            Issue.record("\(mutant.testDescription) loaded as a \(loaded.layerCount)-layer model")
        } catch let error as DroptraceError {
            #expect(error.path == configURL.path || error.message.contains(mutant.key), "\(error)")
            #expect(error.message.contains(mutant.key), "does not name \(mutant.key): \(error)")
            #expect(!error.message.contains("\n"))
        }
    }

    /// V2's group-limited greedy routing without groups is refused naming n_group.
    @Test func groupLimitedGreedyNeedsGroups() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("deepseek_v2-f32", as: "model")
        let configURL = model.appendingPathComponent("config.json")
        try Self.rewrite(configURL) { $0["topk_method"] = "group_limited_greedy"; $0["n_group"] = NSNull() }
        #expect(throws: DroptraceError.self) { try ModelRegistry.load(try Checkpoint(directory: model)) }
        do { _ = try ModelRegistry.load(try Checkpoint(directory: model)) } catch let error as DroptraceError {
            #expect(error.path == configURL.path && error.message.contains("n_group"), "\(error)")
        }
    }

    /// A written null is None to transformers: false for the flags its
    /// `if`s test (checked against transformers 5.24), no value for a count.
    @Test func nullFlagsAreFalseAndANullGroupCountIsRefused() throws {
        let scratch = try ScratchDirectory()
        let windows = FixtureFiles.jsonlSequences()
        func scores(_ change: (inout [String: Any]) -> Void) throws -> [Double] {
            let model = try scratch.copyOfModel("deepseek_v3-f32", as: UUID().uuidString)
            try Self.rewrite(model.appendingPathComponent("config.json")) { change(&$0) }
            let scored = try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: model))).score(windows, calibrationPath: "c")
            return scored.attention + scored.mlp
        }
        for key in ["norm_topk_prob", "rope_interleave"] {
            #expect(try scores { $0[key] = NSNull() } == scores { $0[key] = false }, "\(key)")
            #expect(try scores { $0[key] = NSNull() } != scores { $0[key] = true }, "\(key): the fixture must tell them apart")
        }
        let model = try scratch.copyOfModel("deepseek_v3-f32", as: "null-group")
        try Self.rewrite(model.appendingPathComponent("config.json")) { $0["topk_group"] = NSNull() }
        let error = #expect(throws: DroptraceError.self) { try ModelRegistry.load(try Checkpoint(directory: model)) }
        #expect(error?.message.contains("topk_group") == true)
    }

    static func rewrite(_ url: URL, _ change: (inout [String: Any]) throws -> Void) throws {
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        try change(&config)
        try KindPreservingJSON.data(config).write(to: url)
    }

    /// YaRN as transformers' `_compute_yarn_parameters` computes it for
    /// DeepSeek-V3's released rope settings (64 rotated dimensions, factor 40
    /// over 4096 positions): every 4th frequency, printed by transformers 5.24.
    @Test func yarnFrequenciesMatchTransformers() throws {
        let json = """
            {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 40.0, "original_max_position_embeddings": 4096,
             "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}}
            """
        let settings = try JSONDecoder().decode(RopeSettings.self, from: Data(json.utf8))
        let rotary = try settings.embedding(headDim: 64, configPath: "config.json")
        let expected: [Float] = [
            1.0, 0.3162277638912201, 0.10000000149011612, 0.026879360899329185, 0.005500000435858965,
            0.0007905694073997438, 2.499999936844688e-05, 7.905694474175107e-06,
        ]
        #expect(rotary.inverseFrequencies.count == 32)
        for (i, value) in expected.enumerated() {
            let got = rotary.inverseFrequencies[4 * i]
            #expect(abs(got - value) <= 2 * value.ulp, "frequency \(4 * i): \(got) vs \(value)")
        }
        // mscale = mscale_all_dim: cos and sin unscaled, the softmax scale × (0.1 ln 40 + 1)².
        #expect(rotary.attentionScaling == 1)
        #expect(abs(try settings.softmaxScaleMagnitude(configPath: "c") - (0.1 * log(40.0) + 1)) < 1e-12)
        // Without mscales the attention factor is 0.1 ln(factor) + 1 and the softmax scale is untouched.
        let plain = try JSONDecoder().decode(RopeSettings.self, from: Data("""
            {"rope_scaling": {"type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096}}
            """.utf8))
        #expect(abs(try plain.embedding(headDim: 64, configPath: "c").attentionScaling - Float(0.1 * log(40.0) + 1)) < 1e-6)
        #expect(try plain.softmaxScaleMagnitude(configPath: "c") == 1)
        // A null factor the rotary table infers from the lengths, but DeepSeek's softmax scale reads it
        // as given (transformers: TypeError comparing None with 1).
        let inferred = try JSONDecoder().decode(RopeSettings.self, from: Data("""
            {"max_position_embeddings": 163840, "rope_scaling": {"type": "yarn", "factor": null, "mscale_all_dim": 1.0,
             "original_max_position_embeddings": 4096}}
            """.utf8))
        #expect(throws: DroptraceError.self) { try inferred.softmaxScaleMagnitude(configPath: "c") }
    }

    /// Interleaved rope pairs (x0, x1), (x2, x3)… rotated as DeepSeek does
    /// equal the de-interleaved rows rotated the rotate-half way.
    @Test func deinterleavedRopeRotatesLikeInterleavedPairs() {
        let dim = 8, position = 3
        let rotary = RotaryEmbedding(inverseFrequencies: RotaryEmbedding.defaultInverseFrequencies(base: 10_000, rotaryDim: dim), headDim: dim)
        let x: [Float] = [0.3, -1.2, 0.7, 0.25, -0.4, 1.1, 0.9, -0.6]
        // Pair j rotated by angle position · f_j, in place.
        var interleaved = x
        for j in 0..<(dim / 2) {
            let angle = Float(position) * rotary.inverseFrequencies[j]
            let a = x[2 * j], b = x[2 * j + 1]
            interleaved[2 * j] = a * cos(angle) - b * sin(angle)
            interleaved[2 * j + 1] = b * cos(angle) + a * sin(angle)
        }
        var permuted = LatentQKVProjection.deinterleavingRope(x, rowWidth: 1, ropeStarts: [0], ropeDim: dim)
        permuted.withUnsafeMutableBufferPointer { rotary.apply(to: $0.baseAddress!, rowStride: dim, headOffsets: [0], positions: [position]) }
        let expected = LatentQKVProjection.deinterleavingRope(interleaved, rowWidth: 1, ropeStarts: [0], ropeDim: dim)
        for i in 0..<dim { #expect(abs(permuted[i] - expected[i]) < 1e-6) }
    }

    /// V3's router: the correction bias chooses but never weighs, groups are
    /// scored by their best two, weights are renormalised and scaled.
    @Test func sigmoidGroupLimitedRouting() {
        // 4 experts in 2 groups; expert 3 wins only through its bias.
        let logits = Matrix(rows: 1, cols: 4, data: [2.0, 1.0, 0.0, -1.0])
        let rule = GroupLimitedTopK(
            scoring: .sigmoid, groupScore: .sumOfBestTwo, groups: 2, groupsPerToken: 1, selectionBias: [0, 0, 0, 5],
            normalizesWeights: true, scalingFactor: 2.5)
        let routing = rule.route(logits, expertsPerToken: 2)
        func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }
        // Group scores: (s0 + s1) vs (s2 + s3 + 5) → group 1; experts 3 then 2.
        #expect(routing.experts == [3, 2])
        let total = sigmoid(-1) + sigmoid(0) + 1e-20
        #expect(abs(routing.weights[0] - sigmoid(-1) / total * 2.5) < 1e-6)
        #expect(abs(routing.weights[1] - sigmoid(0) / total * 2.5) < 1e-6)
        // V2's softmax greedy: one group, no renormalisation.
        let greedy = GroupLimitedTopK(
            scoring: .softmax, groupScore: .best, groups: 1, groupsPerToken: 1, selectionBias: nil, normalizesWeights: false,
            scalingFactor: 1).route(logits, expertsPerToken: 2)
        let sum = [2.0, 1.0, 0.0, -1.0].map { exp(Float($0) - 2) }.reduce(0, +)
        #expect(greedy.experts == [0, 1])
        #expect(abs(greedy.weights[0] - 1 / sum) < 1e-6 && abs(greedy.weights[1] - exp(-1) / sum) < 1e-6)
    }

    static var fp8Fixture: URL { FixtureFiles.root.appendingPathComponent("fp8/deepseek_v3-fp8") }

    /// FP8 weights are dequantised on load (scripts/fixtures/make_fp8_fixture.py):
    /// deepseek_v3-fp8, F8_E4M3 with `weight_scale_inv` per 16 × 16 block,
    /// partial blocks at the edges (transformers' scores for the dequantised
    /// weights); llama-fp8-tensor, one scalar scale per weight with
    /// `weight_block_size: null` (refused as a grid that did not fit); and
    /// llama-fp8-ue8m0, 8 × 8 blocks with power-of-two scales stored as
    /// F8_E8M0 (refused as a dtype droptrace could not read). The last two:
    /// transformers' scores as it loads the file itself.
    @Test(arguments: ["deepseek_v3-fp8", "llama-fp8-tensor", "llama-fp8-ue8m0"])
    func fp8WeightsScoreAsTransformersDequantised(fixture: String) throws {
        let directory = FixtureFiles.root.appendingPathComponent("fp8/" + fixture)
        let model = try ModelRegistry.load(try Checkpoint(directory: directory))
        let scores = try ImportanceScorer(model: model).score(FixtureFiles.jsonlSequences(), calibrationPath: "fixture")
        let reference = try JSONSerialization.jsonObject(
            with: Data(contentsOf: directory.appendingPathComponent("reference.json"))) as! [String: Any]
        let expected = reference["float32_compute"] as! [String: [Double]]
        for (kind, values) in [("attention", scores.attention), ("mlp", scores.mlp), ("block", scores.block)] {
            let difference = zip(values, expected[kind]!).map { abs($0 - $1) }.max() ?? .infinity
            #expect(values.count == expected[kind]!.count && difference < 1e-4, "\(kind): \(difference)")
        }
    }

    /// A block size that cannot describe the scales is refused naming the
    /// key; scales whose grid does not fit the weight, naming the tensor.
    @Test func badFP8ScalesAreRefused() throws {
        let scratch = try ScratchDirectory()
        let model = scratch.path("model")
        try FileManager.default.copyItem(at: Self.fp8Fixture, to: model)
        let configURL = model.appendingPathComponent("config.json")
        try Self.rewrite(configURL) { config in
            var quantization = config["quantization_config"] as! [String: Any]
            quantization["weight_block_size"] = [0, 16]
            config["quantization_config"] = quantization
        }
        do {
            _ = try ModelRegistry.load(try Checkpoint(directory: model))
            Issue.record("weight_block_size [0, 16] was accepted")
        } catch let error as DroptraceError {
            #expect(error.path == configURL.path && error.message.contains("weight_block_size"), "\(error)")
        }
        // 32 × 32 blocks: the stored 16 × 16 grids no longer fit.
        try Self.rewrite(configURL) { config in
            var quantization = config["quantization_config"] as! [String: Any]
            quantization["weight_block_size"] = [32, 32]
            config["quantization_config"] = quantization
        }
        do {
            let loaded = try ModelRegistry.load(try Checkpoint(directory: model))
            _ = try loaded.block(0)
            Issue.record("16 × 16 scales were read as 32 × 32 blocks")
        } catch let error as DroptraceError {
            #expect(error.message.contains("_scale_inv") && !error.message.contains("\n"), "\(error)")
        }
    }

    /// A dropped FP8 model exports its FP8 weights and scales as stored (not
    /// lost, not expanded) and reloads with the dropped model's perplexity.
    @Test func fp8ExportKeepsTheQuantisedWeights() throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: Self.fp8Fixture))
        let windows = FixtureFiles.jsonlSequences()
        for plan in [DropPlan(blocks: [0, 2]), DropPlan(attention: [1], mlp: [3])] {
            let scratch = try ScratchDirectory()
            let export = scratch.path("export")
            try DroppedModelExport.write(model: model, plan: plan, to: export)
            let expected = try LanguageModelLoss.evaluate(model: model, plan: plan, windows: windows, sourcePath: "eval")
            let exported = try Checkpoint(directory: export)
            let loss = try LanguageModelLoss.evaluate(
                model: try ModelRegistry.load(exported), plan: .none, windows: windows, sourcePath: "eval")
            #expect(abs(loss.perplexity / expected.perplexity - 1) < 1e-6, "\(plan)")
            let scales = exported.storedTensorNames.filter { $0.hasSuffix("_scale_inv") }
            #expect(!scales.isEmpty)
            for name in scales {
                let weight = String(name.dropLast("_scale_inv".count))
                #expect(try exported.storedTensor(weight).dtype == .float8_e4m3, "\(weight)")
            }
        }
    }

    /// DeepSeek-V3's multi-token-prediction layer, stored after the last
    /// decoder layer, is ignored as transformers ignores it; without
    /// `num_nextn_predict_layers` it is a layer the config does not have.
    @Test func multiTokenPredictionLayersAreIgnored() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("deepseek_v3-f32", as: "model")
        let weights = model.appendingPathComponent("model.safetensors")
        let source = try Checkpoint(directory: FixtureFiles.model("deepseek_v3-f32"))
        var entries = try source.tensorNames.map { SafetensorsWriter.Entry(try source.tensor($0)) }
        entries.append(SafetensorsWriter.Entry(try source.tensor("model.layers.3.input_layernorm.weight"), renamedTo: "model.layers.4.enorm.weight"))
        try FileManager.default.removeItem(at: weights)
        try SafetensorsWriter.write(entries, to: weights)
        let configURL = model.appendingPathComponent("config.json")
        try Self.rewrite(configURL) { $0["num_nextn_predict_layers"] = 1 }
        let loaded = try ModelRegistry.load(try Checkpoint(directory: model))
        #expect(loaded.layerCount == 4)
        try Self.rewrite(configURL) { $0["num_nextn_predict_layers"] = 0 }
        do {
            _ = try ModelRegistry.load(try Checkpoint(directory: model))
            Issue.record("a fifth layer was accepted")
        } catch let error as DroptraceError {
            #expect(error.path == configURL.path && error.message.contains("num_hidden_layers"), "\(error)")
        }
    }

    /// With every attention layer dropped by the config, no tensor confirms
    /// qk_rope_head_dim and no rotary table is sized from it.
    @Test func noRotaryTableWithoutAttention() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("deepseek_v3-f32", as: "model")
        try Self.rewrite(model.appendingPathComponent("config.json")) {
            $0["drop_attn_list"] = [0, 1, 2, 3]
            $0["qk_rope_head_dim"] = 1 << 40
            $0["head_dim"] = 1 << 40  // as DeepseekV3Config writes it
        }
        let loaded = try ModelRegistry.load(try Checkpoint(directory: model))
        #expect(loaded.layerCount == 4)
    }
}
