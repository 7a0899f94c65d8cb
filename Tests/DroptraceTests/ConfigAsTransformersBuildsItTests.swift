@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import Testing

/// config.json read as transformers' config class builds it from the file:
/// an alias given alone is the key it stands for (the `num_experts` of
/// Qwen3-MoE configs written by transformers 4.x), and the keys configs omit
/// take the class's defaults (`rms_norm_eps`, `max_position_embeddings`).
@Suite struct ConfigAsTransformersBuildsItTests {
    func scores(_ fixture: EditedFixture) throws -> ModuleScores {
        try ImportanceScorer(model: try fixture.load()).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
    }

    func expectSameScores(_ a: ModuleScores, _ b: ModuleScores, _ comment: Comment, sourceLocation: SourceLocation = #_sourceLocation) {
        // A module neither scores (NaN in both) agrees; NaN in one of them does not.
        let worst = zip(a.attention + a.mlp + a.block, b.attention + b.mlp + b.block)
            .map { $0.isNaN || $1.isNaN ? ($0.isNaN && $1.isNaN ? 0 : .infinity) : abs($0 - $1) }.max() ?? .infinity
        #expect(worst < 1e-12, comment, sourceLocation: sourceLocation)
    }

    /// Every alias of the registry's config classes, on a fixture that
    /// writes the key it stands for.
    static let aliases: [(model: String, alias: String, key: String)] = [
        ("qwen3_moe-f32", "num_experts", "num_local_experts"), ("mixtral-f32", "num_experts", "num_local_experts"),
        ("gpt_oss-f32", "num_experts", "num_local_experts"), ("olmoe-f32", "num_local_experts", "num_experts"),
        ("deepseek_v2-f32", "num_experts", "n_routed_experts"), ("deepseek_v3-f32", "num_local_experts", "n_routed_experts"),
        ("gpt2-f32", "hidden_size", "n_embd"), ("gpt2-f32", "num_hidden_layers", "n_layer"),
        ("gpt2-f32", "num_attention_heads", "n_head"), ("gpt2-f32", "max_position_embeddings", "n_positions"),
    ]

    @Test(arguments: aliases)
    func aliasGivenAloneIsReadAsItsKey(_ model: String, _ alias: String, _ key: String) throws {
        #expect(ConfigValueKinds.transformers[String(model.dropLast(4))]?.aliases[alias] == key)
        let written = try EditedFixture(model)
        let renamed = try EditedFixture(model) { $0[alias] = $0.removeValue(forKey: key) }
        #expect(try String(contentsOfFile: renamed.configPath, encoding: .utf8).contains("\"\(alias)\""))
        expectSameScores(try scores(written), try scores(renamed), "\(alias) for \(key)")
    }

    /// A value the family refuses is named under the alias the file holds.
    @Test func refusedAliasValueIsNamedAsWritten() throws {
        let fixture = try EditedFixture("gpt2-f32") { $0["num_attention_heads"] = 5; $0["n_head"] = nil }
        fixture.expectRefused(naming: "\"num_attention_heads\"")
        // Also where the family names the key itself, in a wrapper's text config.
        try EditedFixture("deepseek_ocr2-f32") {
            EditedModel.set(nil, at: "text_config.n_routed_experts", in: &$0)
            EditedModel.set(3, at: "text_config.num_experts", in: &$0)
        }.expectRefused(naming: "\"text_config.num_experts\" is 3")
        // And where the class's own check reads the key through its alias (HunYuanVLTextConfig's pad_id).
        try EditedFixture("hunyuan_vl-f32") {
            EditedModel.set(nil, at: "text_config.pad_token_id", in: &$0)
            EditedModel.set(100_000, at: "text_config.pad_id", in: &$0)
        }.expectRefused(naming: "\"text_config.pad_id\" holds 100000")
    }

    /// Aliases of the classes wrappers build their text config as (their own,
    /// an AutoConfig's, a type the wrapper renames first: Kimi K2.5's
    /// `kimi_k2`), on a fixture that writes the key each stands for; a float
    /// is scaled so that the class's default would differ.
    static let textConfigAliases: [(model: String, alias: String, key: String)] = [
        ("deepseek_ocr2-f32", "num_experts", "n_routed_experts"), ("hunyuan_vl-f32", "attention_head_dim", "head_dim"),
        ("hunyuan_vl-f32", "org_vocab_size", "vocab_size"), ("minimax_m3_vl-f32", "num_experts", "num_local_experts"),
        ("kimi_k25-f32", "num_local_experts", "n_routed_experts"), ("molmo2-f32", "layer_norm_eps", "rms_norm_eps"),
        ("lfm3_vl-f32", "rms_norm_eps", "norm_eps"), ("step3p7-f32", "moe_num_experts", "n_routed_experts"),
    ]

    @Test(arguments: textConfigAliases)
    func textConfigAliasGivenAloneIsReadAsItsKey(_ model: String, _ alias: String, _ key: String) throws {
        func value(_ config: [String: Any]) -> Any {
            let written = (config["text_config"] as! [String: Any])[key]!
            return (written as? Double).map { $0 == $0.rounded() ? written : $0 * 10 } ?? written
        }
        let written = try EditedFixture(model) { EditedModel.set(value($0), at: "text_config." + key, in: &$0) }
        let renamed = try EditedFixture(model) { config in
            let scaled = value(config)
            EditedModel.set(nil, at: "text_config." + key, in: &config)
            EditedModel.set(scaled, at: "text_config." + alias, in: &config)
        }
        #expect(try Checkpoint(directory: renamed.model).sectionAliases["text_config"]?[alias] == key)
        expectSameScores(try scores(written), try scores(renamed), "text_config.\(alias) for \(key)")
    }

    /// Of two aliases of one key written without it, the later in the file
    /// is read, as transformers sets them in turn (the edited configs are
    /// written with sorted keys: `num_local_experts` last): Param2MoEConfig's
    /// and SarvamMoEConfig's `num_experts` and `num_local_experts`; in a
    /// sub-config, Step3p7TextConfig's table aliases `moe_num_experts` and
    /// `num_local_experts` (its family then reads `moe_num_experts` over
    /// both, as the class's `__post_init__` does).
    @Test(arguments: ["param2moe-f32", "sarvam_moe-f32"])
    func laterOfTwoAliasesIsRead(_ model: String) throws {
        func aliases(earlier: Int, later: Int) throws -> EditedFixture {
            try EditedFixture(model) { config in
                config["n_routed_experts"] = nil
                config["num_experts"] = earlier
                config["num_local_experts"] = later
            }
        }
        let experts = 8
        #expect(try aliases(earlier: experts + 3, later: experts).attentionScores() == (try EditedFixture(model).attentionScores()))
        #expect(throws: DroptraceError.self) { try aliases(earlier: experts, later: experts + 3).load() }
    }

    @Test func laterOfTwoAliasesIsReadInASubConfig() throws {
        let fixture = try EditedFixture("step3p7-f32") { config in
            EditedModel.set(nil, at: "text_config.n_routed_experts", in: &config)
            EditedModel.set(7, at: "text_config.moe_num_experts", in: &config)
            EditedModel.set(4, at: "text_config.num_local_experts", in: &config)
        }
        let object = try Checkpoint(directory: fixture.model).configObject(ConfigSection("text_config"))
        #expect(object["n_routed_experts"] as? Int == 4)
    }

    /// transformers 5 builds its cache from `layer_types` in every family,
    /// also where the model reads no such list: a type other than full or
    /// sliding attention, or sliding layers where the config sets no window,
    /// fails there (these were scored as full attention, exit 0). A list it
    /// can build changes nothing in such a family.
    @Test(arguments: ["llama-f32", "starcoder2-f32", "qwen3_moe-f32", "gpt2-f32", "phi3-f32", "olmo2-f32"])
    func layerTypesTransformersCannotBuildAreRefusedInEveryFamily(_ model: String) throws {
        let layers = try EditedFixture(model).load().layerCount
        // Linear-attention and conv layers have no key/value update, "moe" ones are placeholders that
        // refuse one, "dense" has no cache layer at all, chunked ones need attention_chunk_size.
        for type in ["linear_attention", "conv", "moe", "dense", "chunked_attention"] {
            try EditedFixture(model) { $0["layer_types"] = [type] + Array(repeating: "full_attention", count: layers - 1) }
                .expectRefused(naming: "unsupported layer type \"\(type)\" in layer_types")
        }
    }

    @Test func slidingLayersWhereTheModelReadsNoListNeedAWindowAndChangeNothing() throws {
        let layers = try EditedFixture("llama-f32").load().layerCount
        let sliding = Array(repeating: "sliding_attention", count: layers)
        try EditedFixture("llama-f32") { $0["layer_types"] = sliding }.expectRefused(naming: "sliding_window set no window")
        let windowed = try EditedFixture("llama-f32") { $0["layer_types"] = sliding; $0["sliding_window"] = 2 }
        #expect(try windowed.attentionScores() == (try EditedFixture("llama-f32").attentionScores()))
    }

    /// A multimodal wrapper's language model is quantised as a plain one is (transformers reads both).
    @Test func quantisationInsideTextConfigIsRefusedAsAtTheTopLevel() throws {
        try EditedFixture("gemma3-f32") { config in
            var text = config["text_config"] as! [String: Any]
            text["quantization_config"] = ["quant_method": "gptq", "bits": 4]
            config["text_config"] = text
        }.expectRefused(naming: "\"text_config.quantization_config.quant_method\" is \"gptq\"")
    }

    /// LongRoPE over an odd rotary width (phi3's heads are 12 wide; 0.99
    /// of them is 11): Phi3Config refuses the lists first, as not one factor
    /// per rotated pair (transformers would then want ⌊d/2⌋ factors per list
    /// and rotate ⌈d/2⌉ pairs, so no list runs).
    @Test func longRopeOverAnOddRotaryWidthIsRefused() throws {
        try EditedFixture("phi3_longrope-f32", rope: "partial_rotary_factor", 0.99)
            .expectRefused(naming: "rope short_factor has 6 entries; Phi3Config wants 5")
    }

    /// DeepSeek's softmax scale reads the YaRN factor as given: a null one fails transformers.
    @Test func deepSeekWithANullYarnFactorIsRefused() throws {
        try EditedFixture("deepseek_v3-f32", rope: "factor", NSNull()).expectRefused(naming: "rope \"factor\" is null")
    }

    /// Ministral's head_dim defaults to None, which its model reads as the
    /// head width: a config without one cannot be built (TypeError in
    /// transformers 5.23).
    @Test func ministralWithoutHeadDimIsRefused() throws {
        try EditedFixture("ministral-f32") { $0["head_dim"] = nil }.expectRefused(naming: "\"head_dim\"")
    }

    /// transformers' dynamic, YaRN and LongRoPE initialisers read
    /// `config.head_dim` with getattr's default, so a None there (a null
    /// kept by the class, or MixtralConfig's default) fails them
    /// (TypeError, checked with transformers 5.23); Llama's class computes
    /// the width from a null, and linear rope takes it either way.
    @Test func scaledRopeWithoutAHeadWidthIsRefusedAsTransformersFails() throws {
        let yarn: [String: Any] = ["rope_type": "yarn", "factor": 4.0, "rope_theta": 10_000.0]
        let dynamic: [String: Any] = ["rope_type": "dynamic", "factor": 2.0, "rope_theta": 10_000.0]
        let linear: [String: Any] = ["rope_type": "linear", "factor": 2.0, "rope_theta": 10_000.0]
        // The mixtral fixture writes "head_dim": null.
        try EditedFixture("mixtral-f32") { $0["rope_parameters"] = yarn }.expectRefused(naming: "\"head_dim\" is null")
        try EditedFixture("mixtral-f32") { $0["rope_parameters"] = dynamic; $0["head_dim"] = nil }
            .expectRefused(naming: "\"head_dim\" is absent")
        try EditedFixture("qwen2-f32") { $0["rope_parameters"] = dynamic; $0["head_dim"] = NSNull() }
            .expectRefused(naming: "\"head_dim\" is null")
        for (model, rope) in [("mixtral-f32", linear), ("llama-f32", dynamic)] {
            let fixture = try EditedFixture(model) { $0["rope_parameters"] = rope; $0["head_dim"] = NSNull() }
            #expect(try fixture.load().layerCount >= 1, "\(model)")
        }
    }

    /// LongRoPE without a factor takes max_position_embeddings over the
    /// original length, as transformers does, in every family (DeepSeek,
    /// GPT-NeoX and gpt-oss read their rope settings apart and refused it).
    /// (The fixtures rotate 2, 4 and 6 pairs of each head over 256 positions.)
    @Test(arguments: [("gpt_neox-f32", 2), ("deepseek_v3-f32", 4), ("llama-f32", 6)])
    func longRopeWithoutAFactorTakesTheLengthsRatio(_ model: String, pairs: Int) throws {
        let plain = try EditedFixture(model)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: plain.configPath))) as! [String: Any]
        let positions = config["max_position_embeddings"] as! Int
        func rope(factor: Double?) -> [String: Any] {
            var rope: [String: Any] = [
                "rope_type": "longrope", "rope_theta": 10_000.0, "original_max_position_embeddings": positions / 4,
                "short_factor": Array(repeating: 1.0, count: pairs), "long_factor": Array(repeating: 2.0, count: pairs),
            ]
            if let factor { rope["factor"] = factor }
            if let share = (config["rope_parameters"] as? [String: Any])?["partial_rotary_factor"] { rope["partial_rotary_factor"] = share }
            return rope
        }
        let implied = try EditedFixture(model) { $0["rope_parameters"] = rope(factor: nil) }
        let written = try EditedFixture(model) { $0["rope_parameters"] = rope(factor: 4) }
        expectSameScores(try scores(written), try scores(implied), "\(model) longrope without a factor")
    }

    /// transformers gives every set of rotary settings a top-level
    /// `partial_rotary_factor` it lacks (standardize_rope_params): each of
    /// Gemma-3's per-type sets, and Apertus's default settings too, whose
    /// scaled types then cannot run it (failing at the forward pass, checked
    /// with transformers 5.23). A fraction of 1 changes nothing.
    @Test func topLevelRotaryFractionReachesEverySetOfRopeSettings() throws {
        let byType: [String: Any] = [
            "full_attention": ["rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0],
            "sliding_attention": ["rope_type": "default", "rope_theta": 10_000.0],
        ]
        try EditedFixture("gemma3_text-f32") { $0["rope_parameters"] = byType; $0["partial_rotary_factor"] = 0.5 }
            .expectRefused(naming: "partial_rotary_factor 0.5 with rope type \"linear\"")
        try EditedFixture("apertus-f32") { $0["rope_parameters"] = nil; $0["partial_rotary_factor"] = 0.5 }
            .expectRefused(naming: "partial_rotary_factor 0.5 with rope type \"llama3\"")
        let whole = try EditedFixture("apertus-f32") { $0["rope_parameters"] = nil; $0["partial_rotary_factor"] = 1.0 }
        let unsaid = try EditedFixture("apertus-f32") { $0["rope_parameters"] = nil }
        expectSameScores(try scores(unsaid), try scores(whole), "apertus, partial_rotary_factor 1")
    }

    /// Each default of `omittedDefaults`, on its family's fixture: leaving
    /// the key out scores as writing the class's default, or is refused
    /// alike (gpt2's default 1024 `n_positions` against the fixture's 128
    /// position embeddings, LlamaConfig's 11008 `intermediate_size` against
    /// the fixture's MLP, which transformers cannot load either). A
    /// wrapper's text config class (`qwen3_vl.text_config`) on the
    /// wrapper's fixture, in its `text_config`, or at the top level where
    /// the wrapper's config is flat (the Qwen2-VL fixture).
    static let omitted: [(model: String, path: String)] = ConfigValueKinds.omittedDefaults.keys.sorted().flatMap { classKey in
        // (An omni model's text config class, nested in its thinker's: `qwen2_5_omni.thinker_config.text_config`.)
        let modelType = String(classKey.prefix { $0 != "." })
        // The text config under its legacy name where the fixture writes that (Unlimited OCR's `language_config`).
        let config = try? FixtureFiles.config(modelType + "-f32")
        let section = classKey == modelType ? nil : String(classKey.dropFirst(modelType.count + 1)).replacing(
            "text_config", with: ConfigValueKinds.legacyTextConfigKeys[modelType].flatMap { config?[$0] != nil ? $0 : nil } ?? "text_config")
        let nested = section.map { ConfigValueKinds.nestedTextConfigs[modelType] == $0 } == true
            || (section.map { config?[$0] } ?? nil) != nil
        return ConfigValueKinds.omittedDefaults[classKey]!.keys.sorted().map { (modelType + "-f32", (nested ? section! + "." : "") + $0) }
    }

    @Test(arguments: omitted)
    func omittedKeyTakesTheClassDefault(_ model: String, _ path: String) throws {
        let modelType = String(model.dropLast(4)), key = String(path.split(separator: ".").last!)
        let section = path.split(separator: ".").dropLast().joined(separator: ".")
        let classKey = !section.isEmpty ? modelType + "." + (section == ConfigValueKinds.legacyTextConfigKeys[modelType] ? "text_config" : section)
            : ConfigValueKinds.flatTextConfigs.contains(modelType) ? modelType + ".text_config" : modelType
        let text = try #require(ConfigValueKinds.omittedDefaults[classKey]?[key])
        let value = try JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed)
        let left = try EditedFixture(model) { EditedModel.set(nil, at: path, in: &$0) }
        let defaulted = try EditedFixture(model) { EditedModel.set(value, at: path, in: &$0) }
        // (At the top level: Gemma 4's per_layer_config names num_key_value_heads per layer.)
        var written = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: left.configPath))) as? [String: Any]
        if !section.isEmpty { written = written?[section] as? [String: Any] }
        #expect(written?[key] == nil)
        do {
            let expected = try scores(defaulted)
            expectSameScores(expected, try scores(left), "\(path) left out")
        } catch let refused as DroptraceError {
            let error = #expect(throws: DroptraceError.self) { try scores(left) }
            #expect(error?.message == refused.message)
        }
    }

    /// The defaults are those of transformers 5.23's classes (spot checks).
    @Test func defaultsAreTheClasses() {
        #expect(ConfigValueKinds.omittedDefaults["llama"] == ["intermediate_size": "11008", "max_position_embeddings": "2048", "rms_norm_eps": "1e-06"])
        #expect(ConfigValueKinds.omittedDefaults["gpt_neox"]?["layer_norm_eps"] == "1e-05")
        #expect(ConfigValueKinds.omittedDefaults["gpt2"] == ["layer_norm_epsilon": "1e-05", "n_positions": "1024"])
        // Classes whose num_key_value_heads default is a number of their own, not the heads' count.
        #expect(ConfigValueKinds.omittedDefaults["starcoder2"]?["num_key_value_heads"] == "2")
        #expect(ConfigValueKinds.omittedDefaults["mistral"]?["num_key_value_heads"] == "8")
        // Multimodal wrappers keep the sizes in text_config: a class of their own (gemma3's, the Qwen and
        // GLM vision-language models': `<model_type>.text_config`; llama4's is llama4_text's class, qwen3_5's
        // qwen3_5_text's, cohere_compass's cohere_compass_text's), or mistral3's the class of the text
        // config's model_type, whose defaults apply.
        #expect(ConfigValueKinds.omittedDefaults["llama4_text"]?["num_local_experts"] == "16")
        #expect(ConfigValueKinds.omittedDefaults["qwen3_5_moe_text"]?["num_experts_per_tok"] == "8")
        #expect(ConfigValueKinds.omittedDefaults["cohere_compass_text"]?["intermediate_size"] == "22528")
        #expect(ConfigValueKinds.omittedDefaults["qwen2_vl.text_config"]?["rms_norm_eps"] == "1e-05")
        #expect(ConfigValueKinds.omittedDefaults["qwen3_vl_moe.text_config"]?["num_experts_per_tok"] == "4")
        for modelType in ModelRegistry.supportedModelTypes {
            let textType = ConfigValueKinds.textConfigModelTypes[modelType] ?? modelType
            // (glm46v's text config class is glm4v's own, as the kinds check resolves it.)
            let defaults = ConfigValueKinds.omittedDefaults[textType] ?? ConfigValueKinds.omittedDefaults[modelType + ".text_config"]
                ?? ConfigValueKinds.textConfigClass(of: modelType, text: []).flatMap { ConfigValueKinds.omittedDefaults[$0] }
                // (qwen2_5_omni's text config is its thinker's: thinker_config.text_config.)
                ?? ConfigValueKinds.nestedTextConfigs[modelType].flatMap { ConfigValueKinds.omittedDefaults[modelType + "." + $0] }
            #expect(defaults != nil, "\(modelType)")
        }
    }
}
