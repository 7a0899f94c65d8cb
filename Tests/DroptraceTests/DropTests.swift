import Architectures
import CheckpointIO
import DroptraceSupport
@testable import Dropping
import Foundation
import Scoring
import TensorEngine
import Testing
import Tokenization

/// Dropping against transformers with the same modules removed
/// (Fixtures/drop_reference.json, scripts/fixtures/make_drop_references.py).
@Suite struct DropTests {
    static let reference: [String: Any] = {
        let data = try! Data(contentsOf: FixtureFiles.root.appendingPathComponent("drop_reference.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    static func section(_ name: String) -> [String: Any] { reference[name] as! [String: Any] }
    static var evalModels: [String] { section("eval").keys.sorted() }
    static var selectionModels: [String] { section("selection").keys.sorted() }

    static func ints(_ value: Any?) -> [Int] { (value as? [Any] ?? []).map { ($0 as! NSNumber).intValue } }
    static func doubles(_ value: Any?) -> [Double] { (value as? [Any] ?? []).map { ($0 as? NSNumber)?.doubleValue ?? .nan } }

    static func plan(_ config: [String: Any]) -> DropPlan {
        DropPlan(attention: Set(ints(config["drop_attention"])), mlp: Set(ints(config["drop_mlp"])), blocks: Set(ints(config["drop_blocks"])))
    }

    func load(_ model: String) throws -> any LanguageModel {
        try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(model)))
    }

    /// A block the checkpoint's own drop lists already drop whole is an
    /// identity: --consecutive skips over it and counts only blocks the
    /// model still has (it chose that block, dropping nothing new).
    @Test func consecutiveBlocksSkipBlocksTheCheckpointAlreadyDrops() throws {
        // cos(h_i, h_{i+n}) for 5 layers (row i, column n − 1); block 3 is an identity: h_3 = h_4.
        let gaps: [[Double]] = [
            [0.90, 0.80, 0.70, 0.70, 0.60], [0.91, 0.85, 0.85, 0.80], [0.92, 0.92, 0.95], [1.00, 0.75], [0.93],
        ]
        let scores = ModuleScores(attention: [0.1, 0.1, 0.1, 0, 0.1], mlp: [0.1, 0.1, 0.1, 0, 0.1],
                                  block: [0.1, 0.09, 0.08, 0, 0.07], blockGap: gaps)
        let configured = DropPlan(attention: [3], mlp: [3])
        #expect(try DropSelection.consecutiveBlocks(count: 1, scores: scores).blocks == [3])
        #expect(try DropSelection.consecutiveBlocks(count: 1, scores: scores, configured: configured).blocks == [4])
        // Blocks 2 and 4 are adjacent once 3 is gone: h_2 to h_5, 0.95, beats 1 and 2 (0.85).
        #expect(try DropSelection.consecutiveBlocks(count: 2, scores: scores, configured: configured).blocks == [2, 4])
        #expect(try DropSelection.consecutiveBlocks(count: 3, scores: scores, configured: configured).blocks == [1, 2, 4])
        #expect(throws: DroptraceError.self) { try DropSelection.consecutiveBlocks(count: 4, scores: scores, configured: configured) }
    }

    @Test(arguments: DropTests.section("logits").keys.sorted())
    func lmHeadLogitsMatchTransformers(model name: String) throws {
        let entry = (Self.section("logits")[name] as! [String: Any])
        let ids = Self.ints(entry["input_ids"])
        let expected = Self.doubles(entry["last_position_logits"])
        let model = try load(name)
        let hidden = try LayerwiseForward(model: model).run(TokenBatch(sequences: [ids]))
        let last = Matrix(rows: 1, cols: hidden.cols, data: Array(hidden.data.suffix(hidden.cols)))
        let logits = try model.head().logits(last).data
        let worst = zip(logits, expected).map { abs(Double($0) - $1) }.max() ?? .infinity
        #expect(logits.count == expected.count && worst < 1e-4, "\(name): max logit difference \(worst)")
    }

    @Test(arguments: DropTests.evalModels)
    func perplexityMatchesTransformersWithModulesRemoved(model name: String) throws {
        let entry = Self.section("eval")[name] as! [String: Any]
        let windows = (entry["windows"] as! [[Any]]).map { $0.map { ($0 as! NSNumber).intValue } }
        let model = try load(name)
        let full = try LanguageModelLoss.evaluate(model: model, plan: .none, windows: windows, sourcePath: "eval")
        let expectedFull = (entry["full"] as! NSNumber).doubleValue
        #expect(abs(full.perplexity / expectedFull - 1) < 1e-4, "\(name) full: \(full.perplexity) vs \(expectedFull)")
        #expect(full.predictedTokens == (entry["predicted_tokens"] as! NSNumber).intValue)
        for config in entry["configs"] as! [[String: Any]] {
            let dropped = try LanguageModelLoss.evaluate(model: model, plan: Self.plan(config), windows: windows, sourcePath: "eval")
            let expected = (config["perplexity"] as! NSNumber).doubleValue
            #expect(abs(dropped.perplexity / expected - 1) < 1e-4, "\(name) \(config["name"]!): \(dropped.perplexity) vs \(expected)")
            #expect(dropped.perplexity != full.perplexity)
        }
    }

    @Test(arguments: DropTests.selectionModels)
    func selectionFollowsLLMDropOnTransformersScores(model name: String) throws {
        let entry = Self.section("selection")[name] as! [String: Any]
        let model = try load(name)
        let scorer = ImportanceScorer(model: model)
        let calibration = FixtureFiles.jsonlSequences()
        let full = try scorer.score(calibration, calibrationPath: "calib")
        // Modules the model cannot run without are passed over, by droptrace as by the script.
        var feasible: DropSelection.Feasibility { .init(problem: model.planProblem) }
        for case_ in entry["cases"] as! [[String: Any]] {
            let k = (case_["k"] as! NSNumber).intValue
            let oneShot = case_["one_shot"] as! [String: Any]
            #expect(try DropSelection.oneShot(.attention, count: k, scores: full, feasibility: feasible).attention == Set(Self.ints(oneShot["attention"])))
            #expect(try DropSelection.oneShot(.mlp, count: k, scores: full, feasibility: feasible).mlp == Set(Self.ints(oneShot["mlp"])))
            #expect(try DropSelection.oneShot(.block, count: k, scores: full, feasibility: feasible).blocks == Set(Self.ints(oneShot["block"])))
            let joint = try DropSelection.oneShot(.joint, count: k, scores: full, feasibility: feasible)
            let expectedJoint = oneShot["joint"] as! [String: Any]
            #expect(joint.attention == Set(Self.ints(expectedJoint["drop_attention"])) && joint.mlp == Set(Self.ints(expectedJoint["drop_mlp"])))
            // (The layers without either module, Mllama's cross-attention layers, skipped as `drop` skips them.)
            let consecutive = try DropSelection.consecutiveBlocks(
                count: k, scores: full, configured: model.unavailableModules, feasibility: feasible)
            #expect(consecutive.blocks == Set(Self.ints((oneShot["block_consecutive"] as! [String: Any])["drop_blocks"])))

            let iterative = case_["iterative"] as! [String: Any]
            let differs = case_["iterative_differs"] as! [String: Bool]
            for target in DropTarget.allCases {
                let expected = iterative[target.rawValue] as! [String: Any]
                let (plan, steps) = try DropSelection.iterative(target, count: k, layers: model.layerCount, feasibility: feasible) {
                    try scorer.score(calibration, calibrationPath: "calib", dropping: $0)
                }
                #expect(plan == Self.plan(expected), "\(name) k=\(k) iterative \(target)")
                for (step, expectedStep) in zip(steps, expected["steps"] as! [[String: Any]]) {
                    let scores = expectedStep["scores"] as! [String: Any]
                    for (mine, theirs) in [(step.attention, scores["attention"]), (step.mlp, scores["mlp"]), (step.block, scores["block"])] {
                        let worst = zip(mine, Self.doubles(theirs)).map { $0.isNaN && $1.isNaN ? 0 : abs($0 - $1) }.max()!
                        #expect(worst < 1e-4, "\(name) k=\(k) iterative \(target) rescored: \(worst)")
                    }
                }
                let oneShotPlan = target == .joint ? joint : try DropSelection.oneShot(target, count: k, scores: full, feasibility: feasible)
                #expect((plan != oneShotPlan) == differs[target.rawValue]!, "\(name) k=\(k) \(target): iterative vs one-shot")
            }
        }
    }

    /// An export path naming an existing file (the source's own weights, say)
    /// or a non-empty directory is refused, and what is there is kept.
    /// A count that would drop everything says what it would drop ("every block", not "every block layer").
    @Test(arguments: [(DropTarget.attention, 5, "every attention layer"), (.mlp, 5, "every MLP layer"), (.block, 5, "every block"),
                      (.joint, 10, "every attention and MLP module")])
    func aCountThatDropsEverythingIsRefused(target: DropTarget, count: Int, words: String) {
        let error = #expect(throws: DroptraceError.self) { try DropSelection.check(target, count: count, layers: 5) }
        #expect(error?.message == "--count \(count) would drop \(words) of the model; choose fewer")
    }

    /// A joint drop keeps one attention and one MLP layer: counts that
    /// cannot are refused before any scoring (they were refused after it,
    /// an iterative drop's rescoring passes included).
    @Test func aJointCountThatLeavesNoAttentionOrNoMLPIsRefusedUpFront() throws {
        let error = #expect(throws: DroptraceError.self) { try DropSelection.check(.joint, count: 9, layers: 5) }
        #expect(error?.message == "--count 9 would drop every attention or every MLP layer of the model; a joint drop "
            + "keeps at least one of each: choose at most 8")
        try DropSelection.check(.joint, count: 8, layers: 5)
    }

    /// A kind of module no layer has (a Mamba stack's MLP) is refused by
    /// name for the targets that would choose from it, up front.
    @Test(arguments: [DropTarget.mlp, .joint])
    func aTargetNoLayerHasIsRefusedByName(target: DropTarget) throws {
        let absent = DropPlan(mlp: Set(0..<4))
        let error = #expect(throws: DroptraceError.self) { try DropSelection.check(target, count: 1, layers: 4, absent: absent) }
        #expect(error?.message == "no layer of the model has an MLP module to drop; choose another --target (block drops whole layers)")
        try DropSelection.check(.attention, count: 1, layers: 4, absent: absent)
        try DropSelection.check(.block, count: 1, layers: 4, absent: absent)
    }

    /// A checkpoint whose config.json drops modules already (LLM-Drop's
    /// lists): those are never chosen again, their NaN importance no longer
    /// scatters the ranking, and counts are of the modules left (MLP 2
    /// dropped, `--count 2` chose MLPs 0 and 1, the least redundant; a list
    /// dropping MLP 0 had it "dropped" again and nothing removed).
    @Test func modulesTheConfigDropsAreNeverChosen() throws {
        let scores = ModuleScores(
            attention: [0.04, 0.02, .nan, .nan, 0.03], mlp: [0.33, 0.013, .nan, 0.0025, 0.0017],
            block: [0.2, 0.1, 0.05, 0.3, 0.4], blockGap: Array(repeating: Array(repeating: .nan, count: 5), count: 5))
        let configured = DropPlan(attention: [2, 3], mlp: [2])
        #expect(try DropSelection.oneShot(.mlp, count: 2, scores: scores, configured: configured).mlp == [3, 4])
        #expect(try DropSelection.oneShot(.attention, count: 2, scores: scores, configured: configured).attention == [1, 4])
        // Layer 2's attention and MLP are both gone: it is a dropped block already.
        #expect(try DropSelection.oneShot(.block, count: 1, scores: scores, configured: configured).blocks == [1])
        let joint = try DropSelection.oneShot(.joint, count: 2, scores: scores, configured: configured)
        #expect(joint.mlp == [3, 4] && joint.attention.isEmpty)
        let iterative = try DropSelection.iterative(.mlp, count: 2, layers: 5, configured: configured) { _ in scores }
        #expect(iterative.plan.mlp == [3, 4])
        let error = #expect(throws: DroptraceError.self) {
            try DropSelection.oneShot(.attention, count: 3, scores: scores, configured: configured, checkpoint: "ck")
        }
        #expect(error?.description == "ck: --count 3 would drop every attention layer of the model left (its config.json drops the others); choose fewer")
        // A joint drop may not take every attention (or MLP) layer either, as --target attention may not:
        // 6 of the 7 modules left cannot leave one of each, whatever the scores ...
        let joint6 = #expect(throws: DroptraceError.self) {
            try DropSelection.oneShot(.joint, count: 6, scores: scores, configured: configured, checkpoint: "ck")
        }
        #expect(joint6?.message == "--count 6 would drop every attention or every MLP layer of the model left (its config.json "
            + "drops the others); a joint drop keeps at least one of each: choose at most 5")
        // ... and a count that could is refused when the scores rank every attention layer lowest.
        let attentionLowest = ModuleScores(
            attention: [0.001, 0.002, 0.003, 0.004, 0.005], mlp: [0.5, 0.4, 0.3, 0.2, 0.1], block: [0.2, 0.1, 0.05, 0.3, 0.4],
            blockGap: Array(repeating: Array(repeating: .nan, count: 5), count: 5))
        let joint5 = #expect(throws: DroptraceError.self) {
            try DropSelection.oneShot(.joint, count: 5, scores: attentionLowest, checkpoint: "ck")
        }
        #expect(joint5?.message == "this joint drop of 5 modules would drop every attention layer of the model; choose fewer")
    }

    @Test func exportNeverReplacesWhatIsThere() throws {
        let scratch = try ScratchDirectory()
        let model = try load("llama-f32")
        let file = scratch.path("model.safetensors"), directory = scratch.path("full")
        try Data("weights".utf8).write(to: file)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try Data("kept".utf8).write(to: directory.appendingPathComponent("notes.txt"))
        for (target, words) in [(file, "not a directory"), (directory, "not empty")] {
            let error = #expect(throws: DroptraceError.self) {
                try DroppedModelExport.write(model: model, plan: DropPlan(attention: [1]), to: target)
            }
            #expect(error?.message.contains(words) == true, "\(String(describing: error))")
        }
        #expect(try Data(contentsOf: file) == Data("weights".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["notes.txt"])
    }

    /// GPT-2 with `scale_attn_by_inverse_layer_idx` divides layer i's scores
    /// by i + 1: a block-dropped export moves layers, so their query
    /// projections are rescaled to keep each layer's scale (otherwise the
    /// export is another model than the one whose perplexity drop reports).
    @Test func exportKeepsGPT2sInverseLayerIndexScale() throws {
        let fixture = try EditedFixture("gpt2-f32") { $0["scale_attn_by_inverse_layer_idx"] = true }
        let model = try fixture.load()
        let plan = DropPlan(blocks: [1])
        let windows = FixtureFiles.jsonlSequences()
        let expected = try LanguageModelLoss.evaluate(model: model, plan: plan, windows: windows, sourcePath: "eval")
        let export = fixture.scratch.path("export")
        try DroppedModelExport.write(model: model, plan: plan, to: export)
        let exported = try ModelRegistry.load(try Checkpoint(directory: export))
        let loss = try LanguageModelLoss.evaluate(model: exported, plan: .none, windows: windows, sourcePath: "eval")
        #expect(abs(loss.perplexity / expected.perplexity - 1) < 1e-6, "\(loss.perplexity) vs \(expected.perplexity)")
        let unscaled = try LanguageModelLoss.evaluate(
            model: try EditedFixture("gpt2-f32").load(), plan: plan, windows: windows, sourcePath: "eval")
        #expect(abs(unscaled.perplexity / expected.perplexity - 1) > 1e-4, "the fixture must tell the scales apart")
    }

    @Test(arguments: [DropTarget.attention, .joint, .block])
    func exportRoundTripsWithTheSamePerplexity(target: DropTarget) throws {
        let scratch = try ScratchDirectory()
        let model = try load("llama-f32")
        let plan: DropPlan = switch target {
        case .block: DropPlan(blocks: [1, 3])
        case .joint: DropPlan(attention: [1], mlp: [4])
        default: DropPlan(attention: [1, 3])
        }
        let windows = FixtureFiles.jsonlSequences()
        let expected = try LanguageModelLoss.evaluate(model: model, plan: plan, windows: windows, sourcePath: "eval")
        let export = scratch.path("export")
        try DroppedModelExport.write(model: model, plan: plan, to: export)

        let exported = try ModelRegistry.load(try Checkpoint(directory: export))
        let loss = try LanguageModelLoss.evaluate(model: exported, plan: .none, windows: windows, sourcePath: "eval")
        #expect(abs(loss.perplexity / expected.perplexity - 1) < 1e-6)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: export.appendingPathComponent("config.json"))) as! [String: Any]
        let names = try Checkpoint(directory: export).tensorNames
        if target == .block {
            #expect((config["num_hidden_layers"] as! NSNumber).intValue == 3)
            #expect(config["drop_attn_list"] == nil)
            #expect(names.contains("model.layers.2.self_attn.q_proj.weight") && !names.contains { $0.hasPrefix("model.layers.3.") })
        } else {
            #expect(Self.ints(config["drop_attn_list"]) == plan.attention.sorted())
            #expect(!names.contains("model.layers.1.self_attn.q_proj.weight") && !names.contains("model.layers.1.input_layernorm.weight"))
            #expect(names.contains("model.layers.1.mlp.up_proj.weight"))
        }
        #expect(FileManager.default.fileExists(atPath: export.appendingPathComponent("tokenizer.json").path))
        #expect(throws: (any Error).self) { try DroppedModelExport.write(model: model, plan: plan, to: export) }
    }

    /// Doge's CDMoE routes each token by logits transformers lays across the
    /// whole sequence in a full pass, by its own when decoding (as transformers
    /// runs both): its decoding differs from its full forward by design.
    static let routesAcrossTheSequence: Set<String> = ["doge-f32"]

    /// LongRoPE rotates by its long factors once a forward call reaches
    /// original_max_position_embeddings (16 here), its short ones below:
    /// transformers picks the set per call, so cached decoding past that
    /// length keeps the keys it rotated with the short factors and differs
    /// from a full forward by design. Such fixtures are decoded within it.
    static let switchesFrequenciesAt: [String: Int] = ["phi4_multimodal-f32": 16]

    @Test(arguments: FixtureFiles.familyFixtures.filter { !routesAcrossTheSequence.contains($0) })
    func incrementalDecodingMatchesTheFullForward(model name: String) throws {
        let model = try load(name)
        let tokens = Array(FixtureFiles.jsonlSequences()[0].prefix(Self.switchesFrequenciesAt[name] ?? 24))
        for plan in [DropPlan.none, DropPlan(attention: [1]), DropPlan(blocks: [0])] {
            let full = try LayerwiseForward(model: model, plan: plan).run(TokenBatch(sequences: [tokens]))
            let decoder = try IncrementalDecoder(model: model, plan: plan, capacity: tokens.count)
            var last = Matrix(zeros: 1, full.cols)
            for (position, token) in tokens.enumerated() { last = try decoder.step(token: token, position: position) }
            let expected = full.data.suffix(full.cols)
            let worst = zip(last.data, expected).map { abs($0 - $1) }.max()!
            #expect(worst < 1e-4, "\(name) \(plan): \(worst)")
        }
    }

    @Test func droppingAttentionSavesFLOPsAndCache() throws {
        let model = try load("llama-f32")
        let windows = FixtureFiles.jsonlSequences()
        var options = SpeedOptions()
        options.lengths = [8]
        options.policy.maxRounds = 1
        let speed = try SpeedMeasurement.compare(model: model, plan: DropPlan(attention: [1, 3]), tokens: windows[0], options: options)
        let (full, dropped) = (speed.full, speed.dropped)
        #expect(dropped.kvCacheBytesPerToken * 5 == full.kvCacheBytesPerToken * 3)
        #expect(dropped.flopsPerToken < full.flopsPerToken)
        #expect(full.kvCacheBytesPerToken == 5 * 2 * 2 * 12 * 4)
    }

    /// A cache holds more than keys and values where the attention keeps
    /// more per token: a sparse-attention indexer's keys (DeepSeek-V3.2's
    /// `index_head_dim` 16 on 4 layers; MiniMax-M3's `sparse_index_dim` 16
    /// on its 3 sparse layers; Qwen4-Exp's QSA a pooled key of 16 per 4
    /// tokens on its 2 indexed layers: 16 bytes a token each) and Doge's
    /// key biases (2 key/value heads on 4 layers), all Float32.
    @Test(arguments: [("deepseek_v32-f32", 4 * 16 * 4), ("minimax_m3_vl_text-f32", 3 * 16 * 4), ("qwen4_exp_text-f32", 2 * 16), ("doge-f32", 4 * 2 * 4)])
    func cachesCountWhatTheyHoldPerToken(model name: String, beyondKeysAndValues: Int) throws {
        let model = try load(name)
        let keysValues = try (0..<model.layerCount).compactMap { try model.block($0).attention?.attention?.layout }
            .reduce(0) { $0 + 2 * $1.numKVHeads * $1.headDim * 4 }
        let decoder = try IncrementalDecoder(model: model, plan: .none, capacity: 4)
        #expect(decoder.cacheBytesPerToken == keysValues + beyondKeysAndValues)
    }

    /// Options that cannot go together are invalid usage (64); counts the
    /// model cannot take and export paths already taken are bad input (1),
    /// named, and refused before any scoring.
    @Test func badArgumentsAreRefused() throws {
        let scratch = try ScratchDirectory()
        let calibration = FixtureFiles.calibrationJSONL.path
        let model = FixtureFiles.model("llama-f32").path
        let taken = scratch.path("taken")
        try FileManager.default.createDirectory(at: taken, withIntermediateDirectories: true)
        _ = try scratch.write("kept", to: "taken/notes.txt")
        let cases: [([String], Int32, String)] = [
            (["--target", "attention", "--count", "6"], 1, "\(model): --count 6 is larger than"),
            (["--target", "block", "--count", "5"], 1, "every"),
            (["--target", "joint", "--count", "10"], 1, "every"),
            // A joint drop keeps one attention and one MLP layer: refused before the iterative rescoring, not after it.
            (["--target", "joint", "--count", "9", "--iterative"], 1, "\(model): --count 9 would drop every attention or every MLP layer"),
            // Perplexity's windows are read before any scoring, as task files are.
            (["--target", "attention", "--count", "1", "--eval", scratch.path("missing.jsonl").path], 1,
             "\(scratch.path("missing.jsonl").path): "),
            (["--target", "heads", "--count", "1"], 64, "heads"),
            (["--target", "attention", "--count", "2", "--consecutive"], 64, "--consecutive applies to --target block only"),
            (["--target", "block", "--count", "2", "--consecutive", "--iterative"], 64, "cannot be combined"),
            (["--target", "block", "--count", "2", "--block-metric", "angular_distance"], 64, "--block-metric applies"),
            (["--target", "mlp", "--count", "0"], 64, "at least 1"),
            (["--target", "attention", "--count", "1", "--export", taken.path], 1, "\(taken.path): export directory exists and is not empty"),
            // Where no directory can be made (a virtual file system, a file for a parent): found only when the
            // export was written, after every measurement.
            (["--target", "attention", "--count", "1", "--export", "/proc/droptrace-export"], 1,
             "/proc/droptrace-export: cannot create the export under /proc: "),
            (["--target", "attention", "--count", "1", "--export", scratch.path("taken/notes.txt/pruned").path], 1,
             "cannot create the export under \(scratch.path("taken/notes.txt").path): "),
        ]
        for (arguments, status, phrase) in cases {
            let result = try DroptraceCommand.run(["drop", model, "--calibration", calibration] + arguments)
            #expect(result.status == status, "\(arguments): \(result.stderr)")
            #expect(result.stderr.contains(phrase), "\(arguments): \(result.stderr)")
            #expect(!result.stderr.contains("scoring"), "\(arguments): refused only after scoring")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: taken.path) == ["notes.txt"])
    }

    /// An export into the checkpoint dropped from (training rotates it away
    /// with save_total_limit) is refused like trace's output inside a
    /// checkpoint, also through a link and as the checkpoint itself, before
    /// any scoring; an empty path (the current directory) is invalid usage.
    @Test func exportInsideTheSourceCheckpointIsRefused() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "ck")
        let link = scratch.path("link")
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: "ck")
        // `deep/..` is the checkpoint to the kernel (the link first, then its parent), not the scratch directory.
        try FileManager.default.createDirectory(at: model.appendingPathComponent("sub"), withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: scratch.path("deep").path, withDestinationPath: "ck/sub")
        let before = try FileManager.default.contentsOfDirectory(atPath: model.path).sorted()
        let cases: [(String, Int32, String)] = [
            (model.appendingPathComponent("pruned").path, 1, "lies inside \(model.path), the checkpoint the modules are dropped from"),
            (link.appendingPathComponent("a/pruned").path, 1, "lies inside \(model.path), the checkpoint the modules are dropped from"),
            (scratch.url.path + "/deep/../pruned", 1, "lies inside \(model.path), the checkpoint the modules are dropped from"),
            (model.path, 1, "is \(model.path), the checkpoint the modules are dropped from"),
            ("", 64, "an empty argument follows \"--export\": no option or argument of droptrace takes an empty value"),
        ]
        for (export, status, phrase) in cases {
            let result = try DroptraceCommand.run([
                "drop", model.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block", "--count", "1",
                "--export", export, "--speed-max-rounds", "1",
            ])
            #expect(result.status == status, "\(export): \(result.stderr)")
            #expect(result.stderr.contains(export.isEmpty ? phrase : "\(export): \(phrase)"), "\(export): \(result.stderr)")
            #expect(!result.stderr.contains("scoring"), "\(export): refused only after scoring")
        }
        // Given as its weight file, the checkpoint is still its directory (config.json is there).
        let weights = model.appendingPathComponent("model.safetensors")
        let export = model.appendingPathComponent("pruned").path
        let result = try DroptraceCommand.run([
            "drop", weights.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block", "--count", "1",
            "--export", export, "--speed-max-rounds", "1",
        ])
        #expect(result.status == 1 && result.stderr.contains("\(export): lies inside \(model.path), the checkpoint"), "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: model.path).sorted() == before)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).sorted() == ["ck", "deep", "link"])
    }

    /// An export of dropped modules says what plain transformers makes of it
    /// (random weights in their place); one of dropped blocks loads as it is.
    @Test(arguments: [("attention", true), ("mlp", true), ("block", false)])
    func moduleExportsSayHowToLoadThem(target: String, says: Bool) throws {
        let scratch = try ScratchDirectory()
        let result = try DroptraceCommand.run([
            "drop", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", target,
            "--count", "1", "--export", scratch.path("export").path, "--speed-max-rounds", "1", "--threads", "1",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("plain transformers does not read drop_attn_list / drop_mlp_list") == says, "\(result.stderr)")
    }

    /// A final norm scaled by 1e30 overflows the logits: both perplexities
    /// are infinite and the SDR from them undefined. JSON has null for them
    /// (it has no infinity; strings where numbers go break readers), and
    /// the table says inf and n/a.
    @Test func nonFiniteNumbersAreNullInJSONAndSpelledOutInTheTable() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "model")
        let weights = model.appendingPathComponent("model.safetensors")
        let source = try SafetensorsFile(path: weights.path)
        let entries = try source.tensors.values.sorted { $0.name < $1.name }.map { slice in
            guard slice.name == "model.norm.weight" else { return SafetensorsWriter.Entry(name: slice.name, shape: slice.shape) { try slice.floats() } }
            let scaled = try slice.floats().map { $0 * 1e30 }
            return SafetensorsWriter.Entry(name: slice.name, shape: slice.shape) { scaled }
        }
        try SafetensorsWriter.encode(entries).write(to: weights)
        // Four of five blocks dropped: decoding is faster beyond noise, so the SDR is computed (from infinities).
        let arguments = [
            "drop", model.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block", "--count", "4",
            "--eval", FixtureFiles.calibrationText.path, "--seq-len", "32",
        ]
        let result = try DroptraceCommand.run(arguments + ["--json"])
        try #require(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        let perplexity = try #require(json["perplexity"] as? [String: Any])
        #expect(perplexity["full"] is NSNull && perplexity["dropped"] is NSNull, "\(perplexity)")
        try #require(json["decode_verdict"] as? String == "faster", "no SDR to check: \(json["decode_verdict"] ?? "")")
        #expect(json["sdr"] is NSNull, "\(json["sdr"] ?? "absent")")
        #expect(!result.stdout.contains("\"inf\"") && !result.stdout.contains("\"nan\""), "\(result.stdout)")

        let table = try DroptraceCommand.run(arguments)
        try #require(table.status == 0, "\(table.stderr)")
        let lines = table.stdout.split(separator: "\n")
        #expect(lines.contains { $0.hasPrefix("perplexity") && $0.split(separator: " ") == ["perplexity", "inf", "inf"] }, "\(table.stdout)")
        #expect(table.stdout.contains("on perplexity): n/a (perplexity not finite)"), "\(table.stdout)")
        #expect(!table.stdout.contains("-nan") && !table.stdout.contains(": nan"), "\(table.stdout)")
    }

    @Test func dropCommandPrintsJSON() throws {
        let scratch = try ScratchDirectory()
        let result = try DroptraceCommand.run([
            "drop", FixtureFiles.model("gpt2-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--target", "attention", "--count", "2", "--eval", FixtureFiles.calibrationText.path, "--seq-len", "32",
            "--task", "piqa=" + FixtureFiles.root.appendingPathComponent("tasks/piqa.jsonl").path, "--json",
            "--export", scratch.path("out").path, "--speed-max-rounds", "1",
        ])
        try #require(result.status == 0, "\(result.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect(json["target"] as? String == "attention" && (json["count"] as? NSNumber)?.intValue == 2)
        #expect((json["dropped_attention"] as? [Any])?.count == 2 && (json["dropped_mlp"] as? [Any])?.isEmpty == true)
        let perplexity = json["perplexity"] as! [String: Any]
        #expect(perplexity["full"] is NSNumber && perplexity["dropped"] is NSNumber)
        #expect((json["similarities"] as! [String: Any]).keys.sorted() == ["attention", "block", "mlp"])
        #expect((json["tasks"] as? [String: Any])?["piqa"] != nil && json["average"] != nil && json["speed"] != nil)
        #expect(FileManager.default.fileExists(atPath: scratch.path("out/config.json").path))
    }
}
