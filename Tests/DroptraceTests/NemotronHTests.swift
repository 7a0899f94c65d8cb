import Architectures
import CheckpointIO
import DroptraceSupport
@testable import Dropping
import Foundation
import Scoring
import TensorEngine
import Testing

/// Nemotron-H (`nemotron_h`): one module per layer — a Mamba-2 mixer or
/// attention (the attention modules), a ReLU² MLP or a mixture of experts
/// (the MLP modules) — from `layers_block_type` or the legacy
/// `hybrid_override_pattern`, with NemotronHConfig's defaults and legacy
/// keys. The fixture's scores are checked against transformers with every
/// other family; here: what the layer list means, that a drop of a layer's
/// only module removes the layer, and the refusals.
@Suite struct NemotronHTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "nemotron_h-f32"
    /// Nemotron 3 Super's latent experts (`moe_latent_size` 24 of 48 columns).
    static let latentName = "nemotron_h_latent-f32"
    /// The fixture's layers_block_type as a pattern.
    static let pattern = "M-*EM-ME"

    static let mutants: [Mutant] = [
        Mutant(name, "mamba_num_heads", "0"),
        // The torch path pads the scan to whole chunks: modulo by zero, a negative view.
        Mutant(name, "chunk_size", "0"), Mutant(name, "chunk_size", "-1"), Mutant(name, "mamba_chunk_size", "0"),
        Mutant(name, "mamba_head_dim", "9223372036854775807"),
        Mutant(name, "n_groups", "4"),
        Mutant(name, "ssm_state_size", "null"),
        Mutant(name, "conv_kernel", "0"),
        Mutant(name, "time_step_min", "\"x\""),
        Mutant(name, "time_step_limit", "null"),
        Mutant(name, "time_step_limit", "[0.0]"),
        Mutant(name, "mamba_dt_limit", "[0.0, 1.0, 2.0]"),
        // The legacy key is type-checked as its field; bounds beyond float32 fail in torch.clamp.
        Mutant(name, "mamba_dt_limit", "[1, 2]"),
        Mutant(name, "mamba_d_conv", "4.0"),
        Mutant(name, "time_step_limit", "[0.0, 1e39]"),
        Mutant(name, "layer_norm_epsilon", "0"),
        Mutant(name, "layers_block_type", "[\"linear_attention\", \"mamba2\"]"),
        Mutant(name, "layers_block_type", "[]"),
        Mutant(name, "n_routed_experts", "0"),
        Mutant(name, "n_group", "3"),
        Mutant(name, "topk_group", "0"),
        Mutant(name, "num_experts_per_tok", "9"),
        Mutant(name, "moe_latent_size", "0"),
        Mutant(latentName, "moe_latent_size", "9223372036854775807"),
        Mutant(name, "moe_shared_expert_intermediate_size", "0"),
        Mutant(name, "mlp_hidden_act", "\"x\""),
        Mutant(name, "mamba_hidden_act", "\"x\""),
        // Nemotron 3 Nano Omni: its text config as NemotronHConfig checks it, the wrapper's own keys.
        Mutant(omni, "text_config.mamba_num_heads", "0", key: "text_config.mamba_num_heads"),
        Mutant(omni, "text_config.layers_block_type", "[]", key: "text_config.layers_block_type"),
        Mutant(omni, "text_config.mamba_dt_limit", "[1, 2]", key: "text_config.mamba_dt_limit"),
        Mutant(omni, "text_config.n_group", "3", key: "text_config.n_group"),
        Mutant(omni, "text_config.num_nextn_predict_layers", "1.0", key: "text_config.num_nextn_predict_layers"),
        Mutant(omni, "text_config.model_type", "\"llama\"", key: "text_config.model_type"),
        Mutant(omni, "video_temporal_patch_size", "3"),
        Mutant(omni, "video_temporal_patch_size", "2.0"),
        Mutant(omni, "vision_config.video_temporal_patch_size", "1", key: "vision_config.video_temporal_patch_size"),
        Mutant(omni, "vision_config.video_temporal_patch_size", "null", key: "vision_config.video_temporal_patch_size"),
        Mutant(omni, "image_token_id", "5.0"),
    ]

    /// Nemotron 3 Nano Omni (`nemotron_h_omni`) around the same layout.
    static let omni = "nemotron_h_omni-f32"

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Mixer layers have no MLP module and MLP layers no attention module;
    /// the Mamba-2 mixers have the fixture's sizes and clamp Δ to
    /// `time_step_limit` (transformers ≥ 5.25; `time_step_min` only
    /// initialises), or to the legacy `mamba_dt_limit` written over it.
    @Test func everyLayerHasOneModule() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.absentModules == DropPlan(attention: [1, 3, 5, 7], mlp: [0, 2, 4, 6]))
        for index in 0..<model.layerCount {
            let block = try model.block(index)
            #expect((block.attention == nil) == (index % 2 == 1) && (block.mlp == nil) == (index % 2 == 0), "layer \(index)")
        }
        guard case .mamba2(let mixer)? = try model.block(0).attention?.mixer else {
            Issue.record("layer 0 is not a Mamba-2 layer")
            return
        }
        #expect(mixer.heads == Mamba2Heads(heads: 6, headDim: 8, groups: 2, stateSize: 8, convolutionKernel: 4))
        #expect(mixer.timeStepLimit.lower == 1.0 && mixer.timeStepLimit.upper == .infinity)
        let legacy = try EditedFixture(Self.name) { $0["mamba_dt_limit"] = [0.5, 2.0]; $0["time_step_min"] = 1.5 }.load()
        guard case .mamba2(let limited)? = try legacy.block(0).attention?.mixer else {
            Issue.record("layer 0 is not a Mamba-2 layer")
            return
        }
        #expect(limited.timeStepLimit.lower == 0.5 && limited.timeStepLimit.upper == 2.0)
        // Attention without position embeddings.
        #expect(try #require(try model.block(2).attention?.attention).rotary == nil)
    }

    /// `hybrid_override_pattern` (as the released configs give the layers),
    /// `layer_types` (the config class's alias) and transformers' legacy
    /// names ("mamba", "attention") describe the same model as
    /// `layers_block_type`; num_hidden_layers, which the config class
    /// ignores, does not count; a pattern character it does not know is
    /// refused naming the key.
    @Test func theLayerListsDescribeTheSameModel() throws {
        let scores = try EditedFixture(Self.name).attentionScores()
        let types = ["mamba", "mlp", "attention", "moe", "linear_attention", "mlp", "mamba", "moe"]
        let variants: [(inout [String: Any]) -> Void] = [
            { $0["layers_block_type"] = nil; $0["hybrid_override_pattern"] = Self.pattern },
            { $0["layers_block_type"] = nil; $0["layer_types"] = types },
            { $0["layers_block_type"] = types; $0["num_hidden_layers"] = 3 },
        ]
        for change in variants {
            let edited = try EditedFixture(Self.name, change).attentionScores()
            #expect(edited.count == scores.count && zip(edited, scores).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) })
        }
        try EditedFixture(Self.name) { $0["layers_block_type"] = nil; $0["hybrid_override_pattern"] = "M-*QM-ME" }
            .expectRefused(naming: "hybrid_override_pattern")
        // A list that contradicts the weights names its key.
        try EditedFixture(Self.name) { $0["layers_block_type"] = nil; $0["hybrid_override_pattern"] = "-M*EM-ME" }
            .expectRefused(naming: "hybrid_override_pattern")
    }

    /// NemotronHConfig reads the legacy `mamba_n_groups` over `n_groups`.
    @Test func legacyKeysWin() throws {
        try EditedFixture(Self.name) { $0["mamba_n_groups"] = 4 }.expectRefused(naming: "n_groups")
        #expect(try EditedFixture(Self.name) { $0["n_groups"] = 4; $0["mamba_n_groups"] = 2 }.load().layerCount == 8)
    }

    /// A drop of a layer's only module removes the layer from the export:
    /// the layer list (or pattern) keeps the other layers' entries and no
    /// LLM-Drop list is written, so transformers loads it as it is.
    @Test func droppingALayersModuleExportsTheLayerRemoved() throws {
        for usesPattern in [false, true] {
            let fixture = try EditedFixture(Self.name) { config in
                if usesPattern { config["layers_block_type"] = nil; config["hybrid_override_pattern"] = Self.pattern }
            }
            let model = try fixture.load()
            let plan = DropPlan(attention: [2], mlp: [3])
            #expect(model.exportedPlan(plan) == DropPlan(blocks: [2, 3]))
            let export = fixture.scratch.path("export-\(usesPattern)")
            try DroppedModelExport.write(model: model, plan: plan, to: export)
            let config = try JSONSerialization.jsonObject(with: Data(contentsOf: export.appendingPathComponent("config.json"))) as! [String: Any]
            if usesPattern {
                #expect(config["hybrid_override_pattern"] as? String == "M-M-ME")
            } else {
                #expect(config["layers_block_type"] as? [String]
                    == ["linear_attention", "mlp", "linear_attention", "mlp", "linear_attention", "moe"])
            }
            #expect(config[DropPlan.attentionKey] == nil && config[DropPlan.mlpKey] == nil)
            let reloaded = try ModelRegistry.load(try Checkpoint(directory: export))
            #expect(reloaded.layerCount == 6)
        }
    }

    /// Drops choose among the modules the layers have: four mixer layers
    /// and four MLP layers, each counted on its own.
    @Test func dropsChooseAmongTheModulesTheLayersHave() throws {
        let model = try EditedFixture(Self.name).load()
        let absent = model.absentModules
        #expect(throws: DroptraceError.self) { try DropSelection.check(.attention, count: 4, layers: 8, absent: absent) }
        try DropSelection.check(.attention, count: 3, layers: 8, absent: absent)
        try DropSelection.check(.block, count: 7, layers: 8, absent: absent)
        let scores = try ImportanceScorer(model: model).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
        for target in [DropTarget.attention, .mlp, .joint] {
            let plan = try DropSelection.oneShot(target, count: 3, scores: scores, configured: model.unavailableModules)
            #expect(plan.attention.isDisjoint(with: absent.attention) && plan.mlp.isDisjoint(with: absent.mlp), "\(target): \(plan)")
            #expect(plan.attention.count + plan.mlp.count == 3)
        }
    }

    /// Prefill then one token at a time carries each Mamba-2 layer's state
    /// and each attention layer's cache, also with modules dropped.
    @Test func cachedDecodingMatchesTheForward() throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(Self.name)))
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12,
            plans: [.none, DropPlan(attention: [0]), DropPlan(attention: [2]), DropPlan(mlp: [3]), DropPlan(blocks: [1, 4])],
            label: Self.name)
    }

    @Test(arguments: [name, latentName, omni])
    func scoresMatchTransformersClosely(_ fixture: String) throws {
        try expectScoresMatchTransformers(fixture)
    }

    /// Nemotron 3 Nano Omni (NemotronH_Omni_Reasoning_V3) reads its
    /// NemotronHForCausalLM: the text config's keys (or the legacy
    /// `llm_config`'s where `text_config` is absent or null), the weights as
    /// save_pretrained writes them (`language_model.backbone.`, which
    /// transformers renames `language_model.model.`, read alike), the head
    /// `language_model.lm_head`, never tied (its missing head is refused,
    /// however the flags say, where transformers would draw it at random;
    /// a top-level `lm_head` is refused: the wrapper does not read it). The
    /// vision tower is never read: the scores are the same without
    /// vision_config (absent or null: 2 for its video_temporal_patch_size,
    /// the top level's default) and without the tower's tensors; so they are
    /// with the text config's multi-token-prediction layers (never built
    /// into the causal LM) and tie flags changed.
    @Test func omniReadsItsLanguageModel() throws {
        let fixture = try EditedFixture(Self.omni)
        let model = try fixture.load()
        #expect(model.layerCount == 8 && model.hiddenSize == 48)
        #expect(model.absentModules == DropPlan(attention: [1, 3, 5, 7], mlp: [0, 2, 4, 6]))
        // Every score, NaN (a layer without the module) in the same places.
        func scores(_ fixture: EditedFixture) throws -> [String] {
            let scores = try ImportanceScorer(model: try fixture.load()).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
            return (scores.attention + scores.mlp + scores.block).map { "\($0)" }
        }
        let base = try scores(fixture)
        let edits: [(inout [String: Any]) -> Void] = [
            { $0["vision_config"] = nil }, { $0["vision_config"] = NSNull() },
            { $0["llm_config"] = $0["text_config"]; $0["text_config"] = nil },
            { $0["llm_config"] = $0["text_config"]; $0["text_config"] = NSNull() },
            { $0["llm_config"] = ["model_type": "llama"] },
            { EditedModel.set(0, at: "text_config.num_nextn_predict_layers", in: &$0) },
            { EditedModel.set(true, at: "text_config.tie_word_embeddings", in: &$0); $0["tie_word_embeddings"] = true },
            { EditedModel.set(nil, at: "text_config.model_type", in: &$0) },
        ]
        for edit in edits {
            #expect(try scores(EditedFixture(Self.omni, edit)) == base)
        }
        // The legacy name's text config is checked as text_config's.
        try EditedFixture(Self.omni) { config in
            config["llm_config"] = config["text_config"]
            config["text_config"] = nil
            EditedModel.set(0, at: "llm_config.mamba_num_heads", in: &config)
        }.expectRefused(naming: "llm_config.mamba_num_heads")
        func rewritten(_ change: @escaping (inout [SafetensorsWriter.Entry]) -> Void) throws -> EditedFixture {
            let edited = try EditedFixture(Self.omni)
            try BadInputTests().rewriteWeights(edited.model, change)
            return edited
        }
        let renamed = try rewritten { entries in
            entries = entries.map { entry in
                guard entry.name.hasPrefix("language_model.backbone.") else { return entry }
                var renamed = entry
                renamed.name = "language_model.model." + entry.name.dropFirst("language_model.backbone.".count)
                return renamed
            }
        }
        #expect(try scores(renamed) == base)
        let withoutTowers = try rewritten { $0.removeAll { !$0.name.hasPrefix("language_model.") } }
        #expect(try scores(withoutTowers) == base)
        for edit in [{ (config: inout [String: Any]) in EditedModel.set(true, at: "text_config.tie_word_embeddings", in: &config) }, { _ in }] {
            let headless = try rewritten { $0.removeAll { $0.name == "language_model.lm_head.weight" } }
            try BadInputTests().rewriteConfig(headless.model, edit)
            #expect(throws: DroptraceError.self) { _ = try headless.load().head() }
        }
        let strayHead = try rewritten { entries in
            var head = entries.first { $0.name == "language_model.lm_head.weight" }!
            head.name = "lm_head.weight"
            entries.append(head)
        }
        let error = #expect(throws: DroptraceError.self) { try strayHead.load() }
        #expect(error?.message.contains("'lm_head.weight'") == true, "\(String(describing: error))")
    }

    /// A block-dropped export of the omni model edits its text config's layer
    /// list and keeps the released tensor names (`language_model.backbone.`),
    /// which transformers reads; decoding carries each layer's state.
    @Test func omniExportsAndDecodes() throws {
        let config = try EditedFixture(Self.omni).exportedConfig(droppingBlocks: [2, 3])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["layers_block_type"] as? [String] == ["linear_attention", "mlp", "linear_attention", "mlp", "linear_attention", "moe"])
        #expect(config["layers_block_type"] == nil && config[DropPlan.attentionKey] == nil)
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(Self.omni)))
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12, plans: [.none, DropPlan(attention: [2]), DropPlan(mlp: [3]), DropPlan(blocks: [1, 4])],
            label: Self.omni)
    }

    /// The latent experts' projections are loaded with their biases, and
    /// decoding carries the state through them too.
    @Test func latentExpertsRunBetweenTheirProjections() throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(Self.latentName)))
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 16, prefill: 10, plans: [.none, DropPlan(mlp: [3])], label: Self.latentName)
    }

    /// Experts stored as transformers holds them, `mixer.experts.up_proj`
    /// [experts, inner, width] and `down_proj` [experts, width, inner] (a
    /// state dict saved without save_pretrained's reverse conversion), score
    /// as the per-expert tensors save_pretrained writes; both forms in one
    /// layer are refused.
    @Test(arguments: ["nemotron_h-f32", "nemotron_h_latent-f32"])
    func fusedExpertsReadAsPerExpert(_ name: String) throws {
        // Every score, NaN (a layer without the module) in the same places.
        func scores(_ fixture: EditedFixture) throws -> [String] {
            let scores = try ImportanceScorer(model: try fixture.load()).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
            return (scores.attention + scores.mlp + scores.block).map { "\($0)" }
        }
        let base = try scores(EditedFixture(name))
        let fused = try EditedFixture(name)
        let stored = try Checkpoint(directory: fused.model)
        var both = ""
        try BadInputTests().rewriteWeights(fused.model) { entries in
            let perExpert = entries.map(\.name).filter { $0.contains(".mixer.experts.") }
            let layers = Set(perExpert.map { String($0[..<$0.range(of: "experts.")!.upperBound]) })
            entries.removeAll { perExpert.contains($0.name) }
            for layer in layers.sorted() {
                for projection in ["up_proj", "down_proj"] {
                    let names = perExpert.filter { $0.hasPrefix(layer) && $0.hasSuffix(projection + ".weight") }
                        .sorted { Int($0.dropFirst(layer.count).prefix { $0 != "." })! < Int($1.dropFirst(layer.count).prefix { $0 != "." })! }
                    let shape = try! stored.tensor(names[0]).shape
                    entries.append(SafetensorsWriter.Entry(name: layer + projection, shape: [names.count] + shape) {
                        try names.flatMap { try stored.tensor($0).floats() }
                    })
                }
                both = both.isEmpty ? layer : both
            }
        }
        #expect(try scores(fused) == base)
        let mixed = try EditedFixture(name)
        try BadInputTests().rewriteWeights(mixed.model) { entries in
            let up = try! Checkpoint(directory: fused.model).tensor(both + "up_proj")
            entries.append(SafetensorsWriter.Entry(up))
        }
        let error = #expect(throws: DroptraceError.self) { try mixed.load() }
        #expect(error?.message.contains("experts are stored partly fused ('\(both)up_proj') and partly per expert") == true, "\(String(describing: error))")
    }
}
