@testable import Architectures
import CheckpointIO
import DroptraceSupport
@testable import Dropping
import Foundation
import Scoring
import TensorEngine
import Testing

/// Llama 3.2 Vision (`mllama`, read as its language model, and its text model
/// `mllama_text_model`): the cross-attention layers transformers skips on
/// text kept unscored at their stored indices, the self-attention layers as
/// Llama's, the embedding's 8 extra rows, the head never tied, refusals,
/// cached decoding and exports. The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct MllamaTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "mllama-f32"
    static let textName = "mllama_text_model-f32"

    static func text(_ key: String, _ value: String) -> Mutant {
        Mutant(name, "text_config." + key, value, key: "text_config." + key)
    }

    static func vision(_ key: String, _ value: String) -> Mutant {
        Mutant(name, "vision_config." + key, value, key: "vision_config." + key)
    }

    /// Values MllamaConfig refuses, its model fails on, or droptrace does
    /// not run: each refused naming its key.
    static let mutants: [Mutant] = [
        // Indices naming no layer (transformers ignores them), one listed twice, every layer (none would run on text).
        text("cross_attention_layers", "[0, 6]"), text("cross_attention_layers", "[-1, 4]"),
        text("cross_attention_layers", "[0, 4, 0]"), text("cross_attention_layers", "[0, 1, 2, 3, 4, 5]"),
        text("cross_attention_layers", "[0, 9223372036854775807]"),
        // Kinds MllamaTextConfig refuses (strict list[int]).
        text("cross_attention_layers", "[0.0, 4]"), text("cross_attention_layers", "[true]"), text("cross_attention_layers", "4"),
        Mutant(textName, "cross_attention_layers", "[5]"), Mutant(textName, "cross_attention_layers", "[2, 2]"),
        Mutant(textName, "cross_attention_layers", "[0, 1, 2, 3, 4]"),
        // A rotary table wider or narrower than the heads (hidden_size / num_attention_heads): transformers fails.
        text("head_dim", "8"), Mutant(textName, "head_dim", "16"),
        // Key/value heads that do not divide the query heads; sizes the tensors contradict.
        text("num_key_value_heads", "3"), text("hidden_size", "40"), text("vocab_size", "520"),
        // The embedding's vocab_size + 8 rows past 64 bits; a layer count past what droptrace reads.
        text("vocab_size", "9223372036854775807"), Mutant(textName, "vocab_size", "9223372036854775800"),
        text("num_hidden_layers", "9223372036854775807"),
        // A pad_token_id past the embedding's vocab_size + 8 rows (torch's padding_idx assertion).
        text("pad_token_id", "520"), Mutant(textName, "pad_token_id", "-521"),
        // What MllamaForConditionalGeneration's constructor fails on: image_size // patch_size with a
        // patch of 0 or a list, heads of 0 (ZeroDivisionError), a negative width, and max_num_tiles
        // other than 4 with the default aspect ratios (validate_architecture).
        vision("patch_size", "0"), vision("image_size", "[28, 28]"), vision("patch_size", "[14, 14]"),
        vision("attention_heads", "0"), vision("num_attention_heads", "0"), vision("hidden_size", "-1"),
        vision("max_num_tiles", "2"),
        // Kinds MllamaVisionConfig's strict fields refuse (its aspect ratios are lists of integer lists).
        vision("supported_aspect_ratios", "[1, 2]"), vision("num_hidden_layers", "1.5"), vision("intermediate_layers_indices", "\"x\""),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Values transformers runs, read alike: a pad_token_id among the
    /// embedding's 8 extra rows, max_num_tiles 2 with aspect ratios of its
    /// own, a vision_config of null (the class's defaults), another
    /// text_config.model_type (MllamaConfig builds MllamaTextConfig whatever
    /// it says) and keys MllamaTextConfig does not read (attention_bias).
    @Test func valuesTransformersRunsAreReadAlike() throws {
        let base = try scores(EditedFixture(Self.name))
        /// Whether the scores are `base`'s, the unscored layers' NaNs alike.
        func edited(_ change: @escaping (inout [String: Any]) -> Void) throws -> Bool {
            let scores = try scores(EditedFixture(Self.name, change))
            return scores.count == base.count && zip(scores, base).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) }
        }
        #expect(try edited { config in
            var text = config["text_config"] as! [String: Any]
            text["pad_token_id"] = 515
            text["model_type"] = "llama"
            text["attention_bias"] = true
            text["mlp_bias"] = true
            config["text_config"] = text
            config["vision_config"] = NSNull()
        })
        #expect(try edited { config in
            var vision = config["vision_config"] as! [String: Any]
            vision["max_num_tiles"] = 2
            vision["supported_aspect_ratios"] = [[1, 1], [1, 2]]
            config["vision_config"] = vision
        })
        // MllamaTextConfig's rope base, 500000, where rope_parameters gives none.
        #expect(try edited { config in
            var text = config["text_config"] as! [String: Any]
            var rope = text["rope_parameters"] as! [String: Any]
            rope["rope_theta"] = nil
            text["rope_parameters"] = rope
            config["text_config"] = text
        })
        #expect(try !edited { config in
            var text = config["text_config"] as! [String: Any]
            var rope = text["rope_parameters"] as! [String: Any]
            rope["rope_theta"] = 10000.0
            text["rope_parameters"] = rope
            config["text_config"] = text
        })
    }

    /// Layers 0 and 4 (cross-attention, skipped on text) have neither module
    /// and are never scored; the others are Llama's: 4 query heads over 2
    /// key/value heads of 12, rotated whole, a SwiGLU MLP, no biases.
    @Test func layersAsTransformersRunsThemOnText() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.layerCount == 6)
        #expect(model.absentModules == DropPlan(attention: [0, 4], mlp: [0, 4]))
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            if [0, 4].contains(layer) {
                #expect(block.attention == nil && block.mlp == nil && model.lacksBothModules(layer))
                continue
            }
            let attention = try #require(block.attention?.mixer.softmaxAttention)
            #expect(attention.layout.numHeads == 4 && attention.layout.numKVHeads == 2 && attention.layout.headDim == 12)
            #expect(attention.rotary?.rotaryDim == 12 && attention.slidingWindow == nil)
            guard case .gated(_, let down, let activation)? = block.mlp?.feedForward else {
                Issue.record("layer \(layer): not a gated MLP")
                continue
            }
            #expect(activation == .silu && down.bias == nil)
        }
        let scores = try ImportanceScorer(model: model).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
        for layer in 0..<model.layerCount {
            let unscored = [scores.attention[layer], scores.mlp[layer], scores.block[layer]].allSatisfy(\.isNaN)
            #expect(unscored == [0, 4].contains(layer), "layer \(layer)")
        }
        // Never run, a skipped layer's one-block gap is unmeasured; the stream passes it unchanged.
        #expect(scores.blockGap[4][0].isNaN && abs(scores.blockGap[3][1] - scores.blockGap[3][0]) < 1e-7)
    }

    /// The embedding has vocab_size + 8 rows, whose ids embed; the head
    /// vocab_size. Neither class ties them, whatever tie_word_embeddings
    /// says: a checkpoint without its head is refused.
    @Test func vocabularyAndHead() throws {
        for name in [Self.name, Self.textName] {
            let model = try EditedFixture(name).load()
            #expect(model.vocabularySize == 520 && model.outputVocabularySize == 512)
            var sequence = FixtureFiles.jsonlSequences()[0]
            sequence[3] = 519
            _ = try ImportanceScorer(model: model).score([sequence], calibrationPath: "calib")
            let fixture = try EditedFixture(name) { config in
                config["tie_word_embeddings"] = true
                if var text = config["text_config"] as? [String: Any] {
                    text["tie_word_embeddings"] = true
                    config["text_config"] = text
                }
            }
            try BadInputTests().rewriteWeights(fixture.model) { entries in entries.removeAll { $0.name.hasSuffix("lm_head.weight") } }
            #expect(throws: DroptraceError.self) { _ = try fixture.load().head() }
        }
        // Without cross_attention_layers the class's default list applies: layer 3 of the text
        // model, whose stored layer is a self-attention layer, is refused naming the weights.
        let fixture = try EditedFixture(Self.textName) { $0["cross_attention_layers"] = nil }
        #expect { _ = try fixture.load() } throws: { "\($0)".contains("layers.3.cross_attn_attn_gate") }
    }

    /// The cross-attention layers' tensors, which text never reads, are
    /// confirmed as transformers loads them: another shape is refused naming
    /// the tensor (these were scored).
    @Test(arguments: [
        "cross_attn.q_proj.weight", "cross_attn.k_proj.weight", "cross_attn.v_proj.weight", "cross_attn.o_proj.weight",
        "cross_attn.q_norm.weight", "cross_attn.k_norm.weight", "cross_attn_mlp_gate", "mlp.gate_proj.weight",
        "mlp.down_proj.weight", "input_layernorm.weight", "post_attention_layernorm.weight",
    ])
    func misshapenCrossAttentionTensorsAreRefused(_ tensor: String) throws {
        let name = "language_model.model.layers.4.\(tensor)"
        let fixture = try EditedFixture(Self.name)
        try BadInputTests().rewriteWeights(fixture.model) { entries in
            let index = try #require(entries.firstIndex { $0.name == name })
            entries[index] = SafetensorsWriter.Entry(name: name, dtype: .float32, shape: [3, 3], bytes: Data(count: 36))
        }
        #expect { _ = try fixture.load() } throws: { "\($0)".contains("layers.4.\(tensor)") && "\($0)".contains("[3, 3]") }
    }

    /// Drops never choose a cross-attention layer: block counts are of the
    /// layers transformers runs, and a plan leaves the cross-attention layers in.
    @Test func dropsChooseTheLayersTransformersRuns() throws {
        let model = try EditedFixture(Self.name).load()
        let scores = try ImportanceScorer(model: model).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
        for target in [DropTarget.attention, .mlp, .block, .joint] {
            let plan = try DropSelection.oneShot(target, count: 3, scores: scores, configured: model.unavailableModules)
            #expect(plan.attention.union(plan.mlp).union(plan.blocks).isDisjoint(with: [0, 4]), "\(target)")
        }
        let consecutive = try DropSelection.consecutiveBlocks(count: 3, scores: scores, configured: model.unavailableModules)
        #expect(consecutive.blocks.isDisjoint(with: [0, 4]) && consecutive.blocks.count == 3)
        #expect(throws: DroptraceError.self) {
            try DropSelection.check(.block, count: 4, layers: model.layerCount, configured: model.configuredDrops, absent: model.absentModules)
        }
        #expect(model.exportedPlan(DropPlan(blocks: [2, 3])) == DropPlan(blocks: [2, 3]))
    }

    /// Key/value-cache decoding equals the batched forward, past the
    /// skipped layers, with modules and blocks dropped.
    @Test func cachedDecodingMatchesTheForward() throws {
        for name in [Self.name, Self.textName] {
            let model = try EditedFixture(name).load()
            try expectCachedDecodingMatchesTheForward(
                model, tokens: 20, prefill: 12,
                plans: [.none, DropPlan(attention: [1]), DropPlan(blocks: [3]), DropPlan(mlp: [model.layerCount - 1]), DropPlan(blocks: [1, 3])],
                label: name)
        }
    }

    /// A block-drop export keeps the cross-attention layers and renumbers
    /// cross_attention_layers as transformers loads them (transformers 5.25
    /// loads these exports with the original's logits minus those layers).
    @Test func blockDropExport() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [2, 3])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 4)
        #expect(text["cross_attention_layers"] as? [Int] == [0, 2])
        let textModel = try EditedFixture(Self.textName).exportedConfig(droppingBlocks: [1])
        #expect(textModel["num_hidden_layers"] as? Int == 4 && textModel["cross_attention_layers"] as? [Int] == [1])
        // The export reads back as the model without those layers.
        let fixture = try EditedFixture(Self.name)
        let export = fixture.scratch.path("export")
        try DroppedModelExport.write(model: try fixture.load(), plan: DropPlan(blocks: [2, 3]), to: export)
        let exported = try ModelRegistry.load(try Checkpoint(directory: export))
        #expect(exported.absentModules == DropPlan(attention: [0, 2], mlp: [0, 2]))
        // A mergekit passthrough would keep cross_attention_layers as written: refused.
        #expect { try MergekitSlices.checkSource(try fixture.load()) } throws: {
            "\($0)".contains("cross_attention_layers") && !"\($0)".contains("\n")
        }
    }
}
