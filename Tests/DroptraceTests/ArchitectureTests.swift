import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Features of single architectures that the parameterised reference tests
/// only see through their effect on the scores.
@Suite struct ArchitectureTests {
    func load(_ directory: URL) throws -> any LanguageModel {
        try ModelRegistry.load(try Checkpoint(directory: directory))
    }

    static func floats(_ value: Any?) -> [[Float]] {
        (value as! [[Any]]).map { $0.map { ($0 as! NSNumber).floatValue } }
    }

    // MARK: Rotary keys at the top level

    /// Each family's config class reads the 4.x top-level base and rotary
    /// fraction under its own names (transformers 5.23,
    /// `convert_rope_params_to_dict`): GPTNeoXConfig `rotary_emb_base` and
    /// `rotary_pct`, every other `rope_theta` and `partial_rotary_factor`;
    /// the other spelling is ignored, so the scores stay those of the plain
    /// config (a value that is no valid setting, a fraction of 10.6, is
    /// still refused as a broken config). droptrace read both (gpt_neox scored with rope_theta 500 was
    /// up to 8e-4 off transformers).
    @Test(arguments: [
        ("gpt_neox-v4", #"{"rope_theta": 500, "partial_rotary_factor": 0.5}"#, #"{"rotary_pct": 0.5, "rotary_emb_base": 500}"#),
        ("llama-v4", #"{"rotary_emb_base": 500, "rotary_pct": 0.5}"#, #"{"rope_theta": 500}"#),
    ])
    func topLevelRotaryKeysAreReadAsTheFamilyReadsThem(model name: String, ignored: String, read: String) throws {
        let sequences = FixtureFiles.jsonlSequences()
        func scores(_ added: String?) throws -> [Double] {
            let scratch = try ScratchDirectory()
            let directory = try scratch.copyOfModel(name)
            if let added {
                let url = directory.appendingPathComponent("config.json")
                var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
                for (key, value) in try JSONSerialization.jsonObject(with: Data(added.utf8)) as! [String: Any] { config[key] = value }
                try JSONSerialization.data(withJSONObject: config).write(to: url)
            }
            return try ImportanceScorer(model: try load(directory)).score(sequences, calibrationPath: "calib").attention
        }
        let plain = try scores(nil)
        #expect(try scores(ignored) == plain, "keys this family's config class does not read")
        #expect(try scores(read) != plain, "the family's own key is read")
    }

    // MARK: Mixtral

    /// Router and experts of one layer against transformers' own MoE block,
    /// on transformers' own input to it (reference.json `routing_check`).
    @Test func mixtralRoutingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("mixtral-f32")
    }

    /// Experts fused under the original module name (`block_sparse_moe.`),
    /// which transformers renames to `mlp.` before loading the fused
    /// parameters, score as the per-expert tensors (checked against
    /// transformers 5.23 for Mixtral, MiniMax-M2 and PhiMoE).
    @Test(arguments: ["mixtral-f32", "minimax_m2-f32", "phimoe-f32"])
    func fusedExpertsUnderTheOriginalModuleName(_ name: String) throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel(name)
        try fuseExperts(
            in: directory, from: "block_sparse_moe.experts.", router: "block_sparse_moe.gate", names: ("w1", "w3", "w2"),
            fusedRouter: "block_sparse_moe.gate", fused: "block_sparse_moe.experts.")
        let sequences = FixtureFiles.jsonlSequences()
        let expected = try ImportanceScorer(model: try load(FixtureFiles.model(name))).score(sequences, calibrationPath: "calib")
        let scores = try ImportanceScorer(model: try load(directory)).score(sequences, calibrationPath: "calib")
        #expect(ReferenceScores(attention: expected.attention, mlp: expected.mlp, block: expected.block, blockGap: expected.blockGap)
            .maxDifference(attention: scores.attention, mlp: scores.mlp, block: scores.block, blockGap: scores.blockGap) < 1e-7)
    }

    /// The router and the experts are each found under either module name
    /// (a router moved to `mlp.gate` beside per-expert tensors under
    /// `block_sparse_moe.` scores the same); a tensor under both names is one
    /// key stored twice to transformers, refused (transformers fails on a
    /// duplicated expert).
    @Test func mixtralRouterAndExpertsUnderEitherModuleName() throws {
        let scratch = try ScratchDirectory()
        let moved = try scratch.copyOfModel("mixtral-f32", as: "moved")
        try BadInputTests().rewriteWeights(moved) { entries in
            for index in entries.indices where entries[index].name.hasSuffix(".block_sparse_moe.gate.weight") {
                entries[index].name = entries[index].name.replacingOccurrences(of: ".block_sparse_moe.", with: ".mlp.")
            }
        }
        let sequences = FixtureFiles.jsonlSequences()
        let expected = try ImportanceScorer(model: try load(FixtureFiles.model("mixtral-f32"))).score(sequences, calibrationPath: "calib")
        #expect(try ImportanceScorer(model: try load(moved)).score(sequences, calibrationPath: "calib").mlp == expected.mlp)
        let twice = try scratch.copyOfModel("mixtral-f32", as: "twice")
        let expert = try Checkpoint(directory: twice).tensor("model.layers.0.block_sparse_moe.experts.0.w1.weight")
        try BadInputTests().rewriteWeights(twice) { $0.append(SafetensorsWriter.Entry(expert, renamedTo: "model.layers.0.mlp.experts.0.w1.weight")) }
        let error = #expect(throws: DroptraceError.self) { try load(twice) }
        #expect(error?.message.contains("is stored twice, also as 'model.layers.0.mlp.experts.0.w1.weight'") == true, "\(String(describing: error))")
    }

    /// Experts stored fused (`mlp.experts.gate_up_proj` / `down_proj`,
    /// router `mlp.gate`) give exactly the scores of per-expert tensors.
    @Test func mixtralFusedExpertTensorsLoadLikePerExpertOnes() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("mixtral-f32")
        try fuseExperts(in: directory, from: "block_sparse_moe.experts.", router: "block_sparse_moe.gate", names: ("w1", "w3", "w2"))

        let fused = try load(directory)
        #expect(!(try Checkpoint(directory: directory).tensorNames.contains { $0.contains("block_sparse_moe") }))
        let sequences = FixtureFiles.jsonlSequences()
        let expected = try ImportanceScorer(model: try load(FixtureFiles.model("mixtral-f32"))).score(sequences, calibrationPath: "calib")
        let scores = try ImportanceScorer(model: fused).score(sequences, calibrationPath: "calib")
        // Equal up to the summation order BLAS happens to use.
        let difference = ReferenceScores(
            attention: expected.attention, mlp: expected.mlp, block: expected.block, blockGap: expected.blockGap
        ).maxDifference(attention: scores.attention, mlp: scores.mlp, block: scores.block, blockGap: scores.blockGap)
        #expect(difference < 1e-7, "fused experts change the scores by \(difference)")

        // Dropping the MLP of a fused checkpoint removes router and experts.
        let export = scratch.path("export")
        try DroppedModelExport.write(model: fused, plan: DropPlan(mlp: [1]), to: export)
        let names = try Checkpoint(directory: export).tensorNames
        #expect(!names.contains { $0.hasPrefix("model.layers.1.mlp.") || $0.hasPrefix("model.layers.1.post_attention_layernorm.") })
        #expect(names.contains("model.layers.2.mlp.experts.gate_up_proj") && names.contains("model.layers.1.self_attn.q_proj.weight"))
    }

    // MARK: Export round trips

    /// A dropped model written out and read back gives the same perplexity,
    /// for every registered family's tensor naming, and loses exactly the
    /// dropped modules' tensors (whole layers where a drop leaves a layer of
    /// one module nothing: nemotron_h's layer 3). Where later layers read
    /// layer 1's attention (Kolibri 1.1's key/value source and indexer, the
    /// top-k Hy4's shared indexer layers reuse),
    /// whose export is refused (`exportProblem`, checked with the family),
    /// the first attention after it that none reads is dropped instead.
    /// Where a kept layer cannot move to another index (DiffLlama's λ_init
    /// follows the index; Beam's residual adds scale by it; ModernBERT
    /// decoder's layer 0 has no attention norm), or where removing block 2 would leave a sharing layer no
    /// earlier layer of its type (Gemma 3n's fixtures, whose only full layer
    /// below the sharing ones is 2), blocks the family can export are
    /// removed instead of 0 and 2.
    /// Where a stored layer holds several of the model's (LongCat-Flash's
    /// two sublayers), only whole stored layers export: the first one's
    /// blocks are dropped (`LongcatFlashTests` checks the refusals).
    /// Zamba2 exports removed Mamba layers only (`Zamba2Tests` checks the
    /// refusals): its Mamba layers 0 and 3 of `zamba2_blocks-f32` are.
    /// HRM-Text exports as many removed blocks of each stack only
    /// (`HrmTextTests` checks the refusals): blocks 0 and 2 are layer 0 of each.
    @Test(arguments: FixtureFiles.familyFixtures)
    func exportRoundTrips(model name: String) throws {
        let model = try load(FixtureFiles.model(name))
        let windows = FixtureFiles.jsonlSequences()
        let sublayers = model.layerNaming.sublayers
        let blocksOnly = sublayers > 1 || ["zamba", "zamba2", "hrm_text"].contains(model.modelType)
        let attention = blocksOnly ? 1 : try #require((1..<model.layerCount).first { model.exportProblem(DropPlan(attention: [$0], mlp: [3])) == nil })
        #expect(attention == 1 || ["kolibri1_1-f32", "hy_v4-f32", "hy_v4_vl-f32"].contains(name), "\(name): layer 1's attention export is refused")
        let plans: [DropPlan]
        if sublayers > 1 {
            plans = [DropPlan(blocks: Set(0..<sublayers))]
        } else {
            let blocks = try #require([[0, 2], [1, 3], [2, 3], [0, 3]].map { DropPlan(blocks: Set($0)) }.first { model.exportProblem($0) == nil })
            #expect(
                blocks == DropPlan(blocks: [0, 2]) || ["diffllama-f32", "beam-f32", "modernbert-decoder-f32", "gemma3n_text-f32", "gemma3n-f32", "zamba-f32", "zamba2_blocks-f32"].contains(name),
                "\(name): removing blocks 0 and 2 is refused")
            plans = blocksOnly ? [blocks] : [DropPlan(attention: [attention], mlp: [3]), blocks]
        }
        for plan in plans {
            let scratch = try ScratchDirectory()
            let export = scratch.path("export")
            try DroppedModelExport.write(model: model, plan: plan, to: export)
            let expected = try LanguageModelLoss.evaluate(model: model, plan: plan, windows: windows, sourcePath: "eval")
            let exported = try load(export)
            let loss = try LanguageModelLoss.evaluate(model: exported, plan: .none, windows: windows, sourcePath: "eval")
            #expect(abs(loss.perplexity / expected.perplexity - 1) < 1e-6, "\(name) \(plan)")
            let original = try Checkpoint(directory: FixtureFiles.model(name)).tensorNames
            let names = try Checkpoint(directory: export).tensorNames
            let naming = model.layerNaming
            // The export's names by its own naming (HRM-Text's stacks are the kept ones' size).
            func layer(_ name: String) -> Int? { exported.layerNaming.split(name)?.layer }
            let removedBlocks = model.exportedPlan(plan).blocks.count
            if removedBlocks == 0 {
                let removed = Set(original).subtracting(names)
                #expect(!removed.isEmpty && removed.allSatisfy { layer($0) == attention || layer($0) == 3 })
                #expect(!names.contains { name in
                    guard let (index, rest) = naming.split(name) else { return false }
                    return (index == attention && naming.attentionParts(attention).contains { rest.hasPrefix($0) })
                        || (index == 3 && naming.mlpParts(3).contains { rest.hasPrefix($0) })
                })
                #expect(exported.configuredDrops == DropPlan(attention: [attention], mlp: [3]))
            } else {
                #expect(exported.layerCount == model.layerCount - removedBlocks)
                #expect(names.count < original.count && !names.contains { layer($0) == (model.layerCount - removedBlocks) / sublayers })
            }
        }
    }

    /// Gemma-2 configs from before `layer_types` (even layers slide) keep each
    /// layer's window when blocks are removed and the rest renumbered.
    /// A `mistral` config with `layer_types` (Ministral-8B as published) is
    /// what transformers' AutoModel loads as `ministral`: windows only on the
    /// sliding layers, not on every layer as MistralModel would.
    @Test func mistralWithLayerTypesIsReadAsMinistral() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("ministral-f32")
        try rewriteConfig(directory) { $0["model_type"] = "mistral" }
        let sequences = FixtureFiles.jsonlSequences()
        let expected = try ImportanceScorer(model: try load(FixtureFiles.model("ministral-f32"))).score(sequences, calibrationPath: "calib")
        let scores = try ImportanceScorer(model: try load(directory)).score(sequences, calibrationPath: "calib")
        #expect(scores.attention == expected.attention && scores.mlp == expected.mlp)
        try rewriteConfig(directory) { $0.removeValue(forKey: "layer_types") }
        let allSliding = try ImportanceScorer(model: try load(directory)).score(sequences, calibrationPath: "calib")
        #expect(allSliding.attention != expected.attention, "the fixture's window must change the scores for this test to tell")
    }

    /// transformers' Ministral, Gemma-2, Gemma-3, OLMo-3, gpt-oss and
    /// Qwen2-MoE (with use_sliding_window) models build a sliding-window
    /// mask for every model, and fail without a window ("Could not find a
    /// `sliding_window` argument") even when every layer attends fully; a
    /// mistral config with layer_types loads as ministral. droptrace scored
    /// them as full attention. Mistral itself, with one mask, runs them.
    @Test(arguments: [
        "ministral-f32", "mistral-f32", "gemma2-f32", "gemma3_text-f32", "gemma3-f32", "gpt_oss-f32", "olmo3-f32", "qwen2_moe-f32",
    ])
    func nullWindowIsRefusedWhereTransformersAlwaysBuildsTheSlidingMask(model: String) throws {
        func fullAttention(_ config: inout [String: Any]) {
            config["layer_types"] = Array(repeating: "full_attention", count: config["num_hidden_layers"] as! Int)
            config["sliding_window"] = NSNull()
        }
        let fixture = try EditedFixture(model) { config in
            if var text = config["text_config"] as? [String: Any] {
                fullAttention(&text)
                config["text_config"] = text
            } else {
                fullAttention(&config)
            }
        }
        fixture.expectRefused(naming: "sliding_window")
        fixture.expectRefused(naming: "cannot run: it builds a sliding-window mask for every model")
        let mistral = try EditedFixture("mistral-f32") { $0["sliding_window"] = NSNull() }
        #expect(try mistral.load().layerCount == 4)
    }

    /// A key config.json omits takes its config class's default (checked
    /// against transformers 5.24): the model is the one with the default
    /// written out, down to the same scores, perplexity or refusal.
    @Test(arguments: [
        ("gemma2-f32", "query_pre_attn_scalar", "256"), ("gemma2-f32", "attn_logit_softcapping", "50.0"),
        ("gemma2-f32", "final_logit_softcapping", "30.0"), ("gemma2-f32", "sliding_window", "4096"),
        ("gemma2-f32", "head_dim", "256"), ("gemma-f32", "head_dim", "256"), ("qwen3-f32", "head_dim", "128"),
    ])
    func omittedKeyIsTheConfigClassDefault(fixture: String, key: String, value: String) throws {
        let scratch = try ScratchDirectory()
        let written = try EditedModel.copy(fixture, in: scratch, as: "written", [(key, value)])
        let omitted = try EditedModel.copy(fixture, in: scratch, as: "omitted", [(key, nil)])
        #expect(outcome(omitted) == outcome(written), "\(fixture) without \(key)")
    }

    /// Scores and perplexity of the model in `directory`, or its refusal.
    func outcome(_ directory: URL) -> String {
        do {
            let model = try load(directory)
            let windows = FixtureFiles.jsonlSequences()
            let scores = try ImportanceScorer(model: model).score(windows, calibrationPath: "calib")
            let loss = try LanguageModelLoss.evaluate(model: model, plan: .none, windows: windows, sourcePath: "eval")
            return "\(scores.attention) \(scores.mlp) \(loss.perplexity)"
        } catch {
            return "\(error)".replacingOccurrences(of: directory.path, with: "")
        }
    }

    /// Keys the family's transformers classes never read change nothing:
    /// Mistral's and Ministral's projections have no biases and Qwen2's MLP
    /// none, whatever `attention_bias` / `mlp_bias` say (bias tensors in the
    /// file are left unread, as transformers leaves unexpected keys).
    @Test(arguments: [
        ("mistral-f32", "attention_bias"), ("mistral-f32", "mlp_bias"), ("ministral-f32", "attention_bias"),
        ("ministral-f32", "mlp_bias"), ("qwen2-f32", "attention_bias"), ("qwen2-f32", "mlp_bias"),
    ])
    func biasFlagsTheClassDoesNotReadChangeNothing(fixture: String, key: String) throws {
        let scratch = try ScratchDirectory()
        let original = try EditedModel.copy(fixture, in: scratch, as: "original", [])
        let flagged = try EditedModel.copy(fixture, in: scratch, as: "flagged", [(key, "true")])
        #expect(outcome(flagged) == outcome(original), "\(fixture) with \(key) true")
        #expect(!outcome(original).contains("rror"))
    }

    /// Only phi3's and gpt_neox's transformers models read
    /// `partial_rotary_factor`; the others rotate the whole head with the
    /// default rope (checked against transformers 5.24), and cannot run a
    /// scaled rope type with it (their forward fails on the table's width).
    @Test func partialRotaryFactorIsReadOnlyByTheFamiliesThatReadIt() throws {
        let scratch = try ScratchDirectory()
        let windows = FixtureFiles.jsonlSequences()
        for (fixture, key) in [("mistral-f32", "partial_rotary_factor"), ("qwen3-f32", "rope_parameters.partial_rotary_factor")] {
            let directory = try EditedModel.copy(fixture, in: scratch, as: fixture, [(key, "0.5")])
            let expected = try ImportanceScorer(model: try load(FixtureFiles.model(fixture))).score(windows, calibrationPath: "calib")
            let scores = try ImportanceScorer(model: try load(directory)).score(windows, calibrationPath: "calib")
            #expect(scores.attention == expected.attention, "\(fixture) \(key)")
        }
        // llama-f32 rotates with rope_type llama3.
        let scaled = try scratch.copyOfModel("llama-f32")
        try rewriteConfig(scaled) { $0["partial_rotary_factor"] = 0.5 }
        let error = #expect(throws: DroptraceError.self) { try load(scaled) }
        #expect(error?.message.contains("partial_rotary_factor") == true && error?.message.contains("llama3") == true)
    }

    @Test func gemma2ExportSpellsOutLayerTypes() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("gemma2-f32")
        try rewriteConfig(directory) { $0.removeValue(forKey: "layer_types") }
        let model = try load(directory)
        let windows = FixtureFiles.jsonlSequences()
        let withRule = try LanguageModelLoss.evaluate(model: model, plan: .none, windows: windows, sourcePath: "eval")
        let reference = try LanguageModelLoss.evaluate(model: try load(FixtureFiles.model("gemma2-f32")), plan: .none, windows: windows, sourcePath: "eval")
        #expect(abs(withRule.perplexity / reference.perplexity - 1) < 1e-6)

        let plan = DropPlan(blocks: [0])
        let export = scratch.path("export")
        try DroppedModelExport.write(model: model, plan: plan, to: export)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: export.appendingPathComponent("config.json"))) as! [String: Any]
        #expect(config["layer_types"] as? [String] == ["full_attention", "sliding_attention", "full_attention"])
        let expected = try LanguageModelLoss.evaluate(model: model, plan: plan, windows: windows, sourcePath: "eval")
        let loss = try LanguageModelLoss.evaluate(model: try load(export), plan: .none, windows: windows, sourcePath: "eval")
        #expect(abs(loss.perplexity / expected.perplexity - 1) < 1e-6)
    }

    // MARK: Gemma-2 soft caps

    /// The reference logits are soft-capped: without the cap the head is far off.
    @Test func gemma2FinalLogitSoftcapIsApplied() throws {
        let entry = DropTests.section("logits")["gemma2-f32"] as! [String: Any]
        let ids = DropTests.ints(entry["input_ids"])
        let expected = DropTests.doubles(entry["last_position_logits"])
        let model = try load(FixtureFiles.model("gemma2-f32"))
        let head = try model.head()
        #expect(head.logitSoftcap == 8)
        let hidden = try LayerwiseForward(model: model).run(TokenBatch(sequences: [ids]))
        let last = Matrix(rows: 1, cols: hidden.cols, data: Array(hidden.data.suffix(hidden.cols)))
        let uncapped = OutputHead(norm: head.norm, projection: head.projection).logits(last).data
        let capped = head.logits(last).data
        let worst = { (logits: [Float]) in zip(logits, expected).map { abs(Double($0) - $1) }.max()! }
        #expect(worst(capped) < 1e-4)
        #expect(worst(uncapped) > 1e-2)
        #expect(capped.allSatisfy { abs($0) < 8 })
    }

    // MARK: Bad configurations

    func expectError(_ name: String, mentioning words: [String], _ change: (inout [String: Any]) -> Void) throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel(name)
        try rewriteConfig(directory, change)
        do {
            _ = try load(directory)
            Issue.record("\(name): bad config accepted")
        } catch let error as DroptraceError {
            let line = error.description
            #expect(!line.contains("\n") && line.contains("config.json"), "\(line)")
            for word in words { #expect(line.contains(word), "\(line) does not mention \(word)") }
        }
    }

    @Test func badConfigurationsAreRefused() throws {
        try expectError("mixtral-f32", mentioning: ["num_experts_per_tok", "5"]) { $0["num_experts_per_tok"] = 5 }
        try expectError("gemma2-f32", mentioning: ["layer_types", "3"]) {
            $0["layer_types"] = ["sliding_attention", "full_attention", "sliding_attention"]
        }
        try expectError("gemma2-f32", mentioning: ["chunked_attention"]) {
            $0["layer_types"] = ["sliding_attention", "full_attention", "chunked_attention", "full_attention"]
        }
        try expectError("gemma2-f32", mentioning: ["attn_logit_softcapping"]) { $0["attn_logit_softcapping"] = 0 }
        try expectError("olmo-f32", mentioning: ["clip_qkv"]) { $0["clip_qkv"] = -1 }
        try expectError("olmo2-f32", mentioning: ["num_key_value_heads"]) { $0["num_key_value_heads"] = 3 }
    }

    @Test func missingExpertTensorNamesIt() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel("mixtral-f32")
        let original = try Checkpoint(directory: directory)
        let entries = try original.tensorNames.filter { $0 != "model.layers.2.block_sparse_moe.experts.3.w2.weight" }
            .map { SafetensorsWriter.Entry(try original.tensor($0)) }
        let file = directory.appendingPathComponent(Checkpoint.singleFileName)
        try FileManager.default.removeItem(at: file)
        try SafetensorsWriter.write(entries, to: file)
        let model = try load(directory)
        _ = try model.block(1)
        do {
            _ = try model.block(2)
            Issue.record("missing expert accepted")
        } catch let error as DroptraceError {
            #expect(error.description.contains("experts.3.w2.weight"), "\(error)")
        }
    }

    func rewriteConfig(_ model: URL, _ change: (inout [String: Any]) -> Void) throws {
        let url = model.appendingPathComponent("config.json")
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        change(&object)
        try KindPreservingJSON.data(object).write(to: url)
    }
}
