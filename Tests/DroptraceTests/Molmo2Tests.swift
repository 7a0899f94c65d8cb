@testable import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Testing

/// Molmo2 (`molmo2`) read as its language model, Molmo2TextModel: the two
/// q/k norm layouts, pre- and post-norm, the scaled and unscaled rotary
/// tables by `rope_scaling_layers`, the embedding's extra rows, the head
/// never tied, the released and transformers' tensor names alike. The
/// scores themselves are checked against transformers with every other
/// family (`DropTests` and the reference suites); the edited configs below
/// were checked against transformers 5.25 too.
@Suite struct Molmo2Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let fixture = "molmo2-f32"
    static let olmo = "molmo2_olmo-f32"

    static let mutants: [Mutant] = [
        // Molmo2TextConfig.validate_architecture.
        Mutant(fixture, "text_config.qk_norm_type", "\"x\"", key: "text_config.qk_norm_type"),
        Mutant(fixture, "text_config.additional_vocab_size", "-1", key: "text_config.additional_vocab_size"),
        // Molmo2TextConfig's, Molmo2VisionConfig's and Molmo2AdapterConfig's kinds.
        Mutant(fixture, "text_config.qk_norm_type", "null", key: "text_config.qk_norm_type"),
        Mutant(fixture, "text_config.norm_after", "1", key: "text_config.norm_after"),
        Mutant(fixture, "text_config.rope_scaling_layers", "[1.5]", key: "text_config.rope_scaling_layers"),
        Mutant(fixture, "text_config.additional_vocab_size", "16.0", key: "text_config.additional_vocab_size"),
        Mutant(fixture, "text_config.head_dim", "null", key: "text_config.head_dim"),
        Mutant(fixture, "vision_config.num_hidden_layers", "1.5", key: "vision_config.num_hidden_layers"),
        Mutant(fixture, "adapter_config.hidden_size", "16.0", key: "adapter_config.hidden_size"),
        Mutant(fixture, "text_config", "[]", key: "text_config"),
        // Molmo2Config.validate_architecture: the adapter reads layers the vision tower has.
        Mutant(fixture, "adapter_config.vision_feature_layer", "[1]", key: "adapter_config.vision_feature_layer"),
        Mutant(fixture, "adapter_config.vision_feature_layer", "[-2]", key: "adapter_config.vision_feature_layer"),
        // Sizes the tensors contradict.
        Mutant(fixture, "text_config.additional_vocab_size", "8", key: "text_config.additional_vocab_size"),
        Mutant(fixture, "text_config.hidden_size", "64", key: "text_config.hidden_size"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// molmo2-f32: per-head q/k norms, heads of the written head_dim 16
    /// (not 48 / 4), YaRN on layers 1 and 3 only, the default rotation at
    /// the same base 5e5 on layers 0 and 2, pre-norm; molmo2_olmo-f32: q/k
    /// norms across heads, heads of 12, post-norm (no input norms, one norm
    /// at the end of each branch), linear scaling on layers 0 and 2.
    @Test func readsEachLayout() throws {
        let model = try EditedFixture(Self.fixture).load()
        #expect(model is Molmo2Model)
        let attention = try (0..<4).map { try #require(try model.block($0).attention?.attention) }
        #expect(attention[0].layout.headDim == 16 && attention[0].layout.numHeads == 4 && attention[0].layout.numKVHeads == 2)
        guard case .perHead? = attention[0].queryKeyNorm else { Issue.record("not per head"); return }
        let plain = 1 / pow(500_000.0, 2.0 / 16)
        let frequencies = attention.map { Double($0.rotary!.inverseFrequencies[1]) }
        #expect(abs(frequencies[0] / plain - 1) < 1e-6 && abs(frequencies[2] / plain - 1) < 1e-6)
        #expect(frequencies[1] == frequencies[3] && abs(frequencies[1] / plain - 1) > 1e-3)
        #expect(attention[1].rotary!.attentionScaling != 1 && attention[0].rotary!.attentionScaling == 1)
        #expect(try model.block(0).attention?.inputNorm != nil)

        let olmo = try EditedFixture(Self.olmo).load()
        let olmoAttention = try (0..<4).map { try #require(try olmo.block($0).attention?.attention) }
        #expect(olmoAttention[0].layout.headDim == 12)
        guard case .acrossHeads? = olmoAttention[0].queryKeyNorm else { Issue.record("not across heads"); return }
        let olmoFrequencies = olmoAttention.map { Double($0.rotary!.inverseFrequencies[1]) }
        #expect(abs(olmoFrequencies[1] / (1 / pow(10_000.0, 2.0 / 12)) - 1) < 1e-6)
        #expect(abs(olmoFrequencies[0] / (1 / pow(10_000.0, 2.0 / 12)) - 0.5) < 1e-6)
        #expect(olmoFrequencies[0] == olmoFrequencies[2] && olmoFrequencies[1] == olmoFrequencies[3])
        let block = try olmo.block(0)
        #expect(block.attention?.inputNorm == nil && block.attention?.outputNorm != nil)
        #expect(block.mlp?.inputNorm == nil && block.mlp?.outputNorm != nil)
    }

    /// The released config spelling (the aliases `layer_norm_eps`,
    /// `qkv_bias`, 4.x `rope_theta` / `rope_scaling`) scores as the fixture;
    /// `rope_scaling_layers` entries naming no layer select none; the text
    /// config's model_type is not read. Every layer scaled (null), or a
    /// flipped `norm_after`, scores otherwise (all as in transformers 5.25).
    @Test func readsAsTransformersDoes() throws {
        let text = "text_config"
        let base = try scores(EditedFixture(Self.fixture))
        func edited(_ name: String = Self.fixture, _ change: @escaping (inout [String: Any]) -> Void) throws -> [Double] {
            try scores(EditedFixture(name, change))
        }
        #expect(try edited { config in
            var section = config[text] as! [String: Any]
            section["layer_norm_eps"] = section.removeValue(forKey: "rms_norm_eps")
            section["qkv_bias"] = section.removeValue(forKey: "attention_bias")
            let rope = section.removeValue(forKey: "rope_parameters") as! [String: Any]
            section["rope_theta"] = rope["rope_theta"]
            section["rope_scaling"] = rope.filter { $0.key != "rope_theta" }
            config[text] = section
        } == base)
        #expect(try edited { EditedModel.set([1, 3, 7, -1], at: text + ".rope_scaling_layers", in: &$0) } == base)
        #expect(try edited { EditedModel.set("qwen3", at: text + ".model_type", in: &$0) } == base)
        #expect(try edited { EditedModel.set(nil, at: text + ".rope_scaling_layers", in: &$0) } != base)
        #expect(try edited { EditedModel.set(true, at: text + ".norm_after", in: &$0) } != base)
        let olmo = try scores(EditedFixture(Self.olmo))
        #expect(try edited(Self.olmo) { EditedModel.set(false, at: text + ".norm_after", in: &$0) } != olmo)
    }

    /// No class ties the head (none declares tied weights): whatever the
    /// top-level and text flags say, the stored head is read, and without
    /// it the checkpoint is refused (transformers would initialise it).
    @Test func headIsNeverTied() throws {
        let base = try scores(EditedFixture(Self.fixture))
        for top in [true, false, nil] as [Bool?] {
            for text in [true, false, nil] as [Bool?] {
                func flags(_ config: inout [String: Any]) {
                    config["tie_word_embeddings"] = top
                    EditedModel.set(text, at: "text_config.tie_word_embeddings", in: &config)
                }
                #expect(try scores(EditedFixture(Self.fixture, flags)) == base)
                let headless = try EditedFixture(Self.fixture, flags)
                try BadInputTests().rewriteWeights(headless.model) { $0.removeAll { $0.name == "lm_head.weight" } }
                #expect(throws: DroptraceError.self) { try headless.load().head() }
            }
        }
    }

    /// The fixtures store the released names (save_pretrained writes them
    /// back): `model.transformer.`, the fused `att_proj` and `ff_proj` (up
    /// rows first) and the embedding as `wte.embedding` + `wte.new_embedding`.
    /// The same weights under transformers' own names (save_pretrained with
    /// save_original_format=False) score bit for bit alike; both forms of
    /// one tensor stored are refused.
    @Test func readsReleasedAndTransformersNames() throws {
        for name in [Self.fixture, Self.olmo] {
            let base = try scores(EditedFixture(name))
            let renamed = try EditedFixture(name)
            let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: renamed.configPath))) as! [String: Any]
            let text = config["text_config"] as! [String: Any]
            let (heads, kvHeads, headDim) = (text["num_attention_heads"] as! Int, text["num_key_value_heads"] as! Int, text["head_dim"] as! Int)
            try BadInputTests().rewriteWeights(renamed.model) { entries in
                entries = try Self.transformersNames(entries, rows: ["att_proj": [heads * headDim, kvHeads * headDim, kvHeads * headDim]])
            }
            let names = try SafetensorsFile(path: renamed.model.appendingPathComponent("model.safetensors").path).tensors.keys
            #expect(names.contains("model.language_model.embed_tokens.weight") && names.contains("model.language_model.layers.0.mlp.up_proj.weight"))
            #expect(!names.contains { $0.hasPrefix("model.transformer.") })
            #expect(try scores(renamed) == base)
            let both = try EditedFixture(name)
            try BadInputTests().rewriteWeights(both.model) { entries in
                let embedding = try Self.transformersNames(entries, rows: [:]).first { $0.name == "model.language_model.embed_tokens.weight" }!
                entries.append(embedding)
            }
            #expect(throws: DroptraceError.self) { try both.load() }
        }
    }

    /// `entries` (the released names) under transformers' names: the
    /// fused tensors split by `rows` (att_proj's q, k, v rows) or halved
    /// (ff_proj: up, then gate), the embedding's pieces joined.
    static func transformersNames(_ entries: [SafetensorsWriter.Entry], rows: [String: [Int]]) throws -> [SafetensorsWriter.Entry] {
        let renames = [
            ("model.transformer.blocks.", "model.language_model.layers."), ("model.transformer.ln_f.", "model.language_model.norm."),
            (".attn_norm.", ".input_layernorm."), (".ff_norm.", ".post_attention_layernorm."), (".attn_out.", ".o_proj."),
            (".ff_out.", ".down_proj."),
        ]
        func floats(_ entry: SafetensorsWriter.Entry) throws -> [Float] {
            let data = try entry.bytes()
            var values = [Float](repeating: 0, count: data.count / MemoryLayout<Float>.size)
            _ = values.withUnsafeMutableBytes { data.copyBytes(to: $0) }
            return values
        }
        func entry(_ name: String, _ values: [Float], _ shape: [Int]) -> SafetensorsWriter.Entry {
            SafetensorsWriter.Entry(name: name, dtype: .float32, shape: shape, bytes: values.withUnsafeBytes { Data($0) })
        }
        var result: [SafetensorsWriter.Entry] = []
        var pieces: [String: SafetensorsWriter.Entry] = [:]
        for original in entries {
            var name = original.name
            for (old, new) in renames { name = name.replacingOccurrences(of: old, with: new) }
            if name.hasSuffix("wte.embedding") || name.hasSuffix("wte.new_embedding") {
                pieces[name] = original
                continue
            }
            let width = original.shape.last!
            if name.hasSuffix("att_proj.weight") || name.hasSuffix("att_proj.bias"), let split = rows["att_proj"] {
                let values = try floats(original), step = original.shape.count == 2 ? width : 1
                var start = 0
                for (part, count) in zip(["q_proj", "k_proj", "v_proj"], split) {
                    let shape = original.shape.count == 2 ? [count, width] : [count]
                    result.append(entry(
                        name.replacingOccurrences(of: "att_proj", with: part), Array(values[(start * step)..<((start + count) * step)]), shape))
                    start += count
                }
                continue
            }
            if name.hasSuffix("ff_proj.weight") {
                let values = try floats(original), half = original.shape[0] / 2
                result.append(entry(name.replacingOccurrences(of: "ff_proj", with: "up_proj"), Array(values[..<(half * width)]), [half, width]))
                result.append(entry(name.replacingOccurrences(of: "ff_proj", with: "gate_proj"), Array(values[(half * width)...]), [half, width]))
                continue
            }
            var renamed = original
            renamed.name = name
            result.append(renamed)
        }
        if let first = pieces["model.transformer.wte.embedding"], let second = pieces["model.transformer.wte.new_embedding"] {
            result.append(entry(
                "model.language_model.embed_tokens.weight", try floats(first) + floats(second),
                [first.shape[0] + second.shape[0], first.shape[1]]))
        }
        return result
    }

    /// A block-drop export renumbers `rope_scaling_layers`, so each kept
    /// layer keeps its table (mergekit has no definition of Molmo2: a
    /// passthrough is refused; how one would read the list is in
    /// MergekitPassthroughTests).
    @Test func exportRenumbersTheScaledLayers() throws {
        let exported = try EditedFixture(Self.fixture).exportedConfig(droppingBlocks: [1])
        let text = exported["text_config"] as! [String: Any]
        #expect(text["rope_scaling_layers"] as? [Int] == [2])
        #expect(text["num_hidden_layers"] as? Int == 3)
        let olmo = try EditedFixture(Self.olmo).exportedConfig(droppingBlocks: [1])
        #expect((olmo["text_config"] as! [String: Any])["rope_scaling_layers"] as? [Int] == [0, 1])
        #expect { try MergekitSlices.checkSource(try EditedFixture(Self.fixture).load()) } throws: {
            "\($0)".contains("has no definition of Molmo2ForConditionalGeneration")
        }
    }
}
