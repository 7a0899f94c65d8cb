import Architectures
import CheckpointIO
import DroptraceSupport
@testable import Dropping
import Foundation
import Scoring
import TensorEngine
import Testing

/// Gemma 4's per-layer heads, its rope types and its refusals as
/// Gemma4TextConfig reads them; the scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`).
@Suite struct Gemma4Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    /// The E2B/E4B layout: per-layer inputs (width 8) and key/value sharing
    /// (layers 3–5 reuse layer 1's and 2's keys and values), double-wide MLPs.
    static let pleName = "gemma4_ple-f32"

    static let mutants: [Mutant] = [
        Mutant("gemma4_text-f32", "rms_norm_eps", "0"),
        Mutant("gemma4_text-f32", "final_logit_softcapping", "-1"),
        // Per-layer inputs configured for a checkpoint without their tables.
        Mutant("gemma4_text-f32", "hidden_size_per_layer_input", "16"),
        Mutant("gemma4_text-f32", "hidden_size_per_layer_input", "-1"),
        // Sharing needs an earlier layer of each sharing layer's type (layers s, f, s, f).
        Mutant("gemma4_text-f32", "num_kv_shared_layers", "3"),
        Mutant("gemma4_text-f32", "num_kv_shared_layers", "4"),
        Mutant("gemma4_text-f32", "num_kv_shared_layers", "-1"),
        Mutant("gemma4_text-f32", "num_kv_shared_layers", "null"),
        Mutant(pleName, "vocab_size_per_layer_input", "100"),
        Mutant(pleName, "vocab_size_per_layer_input", "null"),
        Mutant(pleName, "vocab_size_per_layer_input", "0"),
        Mutant(pleName, "hidden_size_per_layer_input", "9223372036854775807"),
        Mutant(pleName, "num_hidden_layers", "5", key: "layer_types"),
        // The MoE block needs its sizes, which Gemma4TextConfig leaves None.
        Mutant("gemma4_text-f32", "enable_moe_block", "true", key: "num_experts"),
        Mutant("gemma4_moe-f32", "num_experts", "0"),
        Mutant("gemma4_moe-f32", "num_experts", "null"),
        Mutant("gemma4_moe-f32", "num_experts", "\"four\""),
        Mutant("gemma4_moe-f32", "num_experts", "4000000000000000000", key: "num_experts"),
        Mutant("gemma4_moe-f32", "top_k_experts", "0"),
        Mutant("gemma4_moe-f32", "top_k_experts", "5"),
        Mutant("gemma4_moe-f32", "top_k_experts", "null"),
        Mutant("gemma4_moe-f32", "moe_intermediate_size", "-1"),
        Mutant("gemma4_moe-f32", "moe_intermediate_size", "null"),
        Mutant("gemma4_moe-f32", "moe_intermediate_size", "1.5"),
        Mutant("gemma4_text-f32", "use_bidirectional_attention", "\"all\""),
        Mutant("gemma4_text-f32", "per_layer_config.1.head_dim", "0"),
        Mutant("gemma4_text-f32", "per_layer_config.1.head_dim", "\"wide\""),
        Mutant("gemma4_text-f32", "per_layer_config.1.sliding_window", "4"),
        Mutant("gemma4_text-f32", "per_layer_config.1", "[16]", key: "per_layer_config"),
        Mutant("gemma4_text-f32", "per_layer_config.9", "{\"head_dim\": 16}", key: "per_layer_config"),
        // One full layer with other heads than the other: one rotary table per type cannot fit both.
        Mutant("gemma4_text-f32", "per_layer_config.3.num_key_value_heads", "2", key: "per_layer_config"),
        Mutant("gemma4_text-f32", "rope_parameters.full_attention.partial_rotary_factor", "2"),
        Mutant("gemma4_text-f32", "rope_parameters.full_attention.partial_rotary_factor", "null"),
        Mutant("gemma4_text-f32", "rope_parameters.full_attention.factor", "0"),
        Mutant("gemma4_text-f32", "rope_parameters.full_attention.rope_type", "\"yarn\"", key: "rope_type"),
        Mutant("gemma4_text-f32", "rope_parameters.sliding_attention.rope_theta", "-1"),
        Mutant("gemma4_text-f32", "rope_parameters.sliding_attention", "null", key: "rope_parameters"),
        Mutant("gemma4-f32", "text_config.global_head_dim", "0"),
        Mutant("gemma4-f32", "text_config.global_head_dim", "7"),
        Mutant("gemma4-f32", "text_config.global_head_dim", "null"),
        Mutant("gemma4-f32", "text_config.num_global_key_value_heads", "3"),
        Mutant("gemma4-f32", "text_config.num_global_key_value_heads", "-1"),
        Mutant("gemma4-f32", "text_config.hidden_size_per_layer_input", "8"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The E2B/E4B layout as Gemma4TextConfig resolves it: layers 3–5
    /// reuse the keys and values of the last earlier layer of their type
    /// (1 sliding, 2 full), projecting queries only, with MLPs twice as
    /// wide; every layer ends with its per-layer input branch.
    @Test func perLayerInputsAndSharingAsGemma4Builds() throws {
        let model = try EditedFixture(Self.pleName).load()
        let blocks = try (0..<6).map { try model.block($0) }
        let sharing = blocks.map { $0.attention?.attention.keyValueSharing }
        #expect(sharing == [nil, .store(layer: 1), .store(layer: 2), .reuse(layer: 1), .reuse(layer: 1), .reuse(layer: 2)])
        for block in blocks[3...] {
            let attention = try #require(block.attention?.attention)
            #expect(attention.projection.outFeatures == attention.layout.queryWidth)
        }
        func mlpWidth(_ block: TransformerBlock) -> Int? {
            guard case .gated(_, let down, _) = block.mlp?.feedForward else { return nil }
            return down.inFeatures
        }
        #expect(blocks.map(mlpWidth) == [64, 64, 64, 128, 128, 128])
        #expect(blocks.allSatisfy { $0.perLayerInput?.gate.outFeatures == 8 && $0.sharingProducer == nil })
        #expect(model.perLayerEmbedding?.width == 8)
    }

    /// Dropping a storing layer's attention keeps its keys and values for
    /// the layers that reuse them (it drops the attention's output, what its
    /// score measures); dropping its block moves them to the last earlier
    /// kept layer of the type, as transformers resolves an export without
    /// the block; dropping every layer of a type refuses the plan.
    @Test func droppedStoringLayersKeepOrMoveTheKeysAndValues() throws {
        let model = try EditedFixture(Self.pleName).load()
        let attentionDropped = try model.attentionSharing(skipping: DropPlan(attention: [1])).keysValues
        #expect(attentionDropped[1] == .storeOnly(layer: 1) && attentionDropped[3] == .reuse(layer: 1))
        let block = try model.block(1, skipping: DropPlan(attention: [1]))
        #expect(block.attention == nil && block.sharingProducer?.attention.keyValueSharing == .storeOnly(layer: 1))
        #expect(block.sharingProducer?.attention.projection.outFeatures == 2 * 2 * 8)
        let blockDropped = try model.attentionSharing(skipping: DropPlan(blocks: [1])).keysValues
        #expect(blockDropped[0] == .store(layer: 0) && blockDropped[3] == .reuse(layer: 0) && blockDropped[5] == .reuse(layer: 2))
        #expect(throws: DroptraceError.self) { _ = try model.attentionSharing(skipping: DropPlan(blocks: [2])) }
        #expect(throws: DroptraceError.self) { _ = try model.block(3, skipping: DropPlan(blocks: [0, 1])) }
    }

    /// A selection passes over a block whose drop would leave the sharing
    /// layers of its type no earlier layer (here block 2, the only full
    /// layer below them) for the next one, and says so; once the sharing
    /// layers of its type are dropped too, it may go.
    @Test func selectionPassesOverBlocksTheSharingLayersNeed() throws {
        let model = try EditedFixture(Self.pleName).load()
        let gaps = (0..<6).map { [Double](repeating: 0.5, count: 6 - $0) }
        var scores = ModuleScores(
            attention: [Double](repeating: 0.1, count: 6), mlp: [Double](repeating: 0.1, count: 6),
            block: [0.5, 0.2, 0.1, 0.3, 0.4, 0.6], blockGap: gaps)
        let feasibility = DropSelection.Feasibility(problem: model.planProblem)
        #expect(try DropSelection.oneShot(.block, count: 2, scores: scores, feasibility: feasibility).blocks == [1, 3])
        #expect(feasibility.passedOver.map(\.module) == [Module(kind: .block, layer: 2)])
        #expect(feasibility.passedOver[0].reason.contains("num_kv_shared_layers"))
        let iterative = try DropSelection.iterative(.block, count: 2, layers: 6, feasibility: .init(problem: model.planProblem)) { _ in scores }
        #expect(iterative.plan.blocks == [1, 3])
        #expect(try DropSelection.oneShot(.block, count: 5, scores: scores, feasibility: .init(problem: model.planProblem)).blocks == [0, 1, 3, 4, 5])
        #expect(try model.attentionSharing(skipping: DropPlan(blocks: [2, 5])).keysValues.compactMap { $0 } == [.store(layer: 1), .reuse(layer: 1), .reuse(layer: 1)])
        // Consecutive blocks: the most similar run (1–2) would take block 2; the next best is chosen.
        scores.blockGap[1][1] = 0.9
        scores.blockGap[3][1] = 0.8
        #expect(try DropSelection.consecutiveBlocks(count: 2, scores: scores).blocks == [1, 2])
        #expect(try DropSelection.consecutiveBlocks(count: 2, scores: scores, feasibility: .init(problem: model.planProblem)).blocks == [3, 4])
    }

    /// Key/value-cache decoding equals the full forward with the sharing
    /// layers reading the cache of the layer they reuse, a store-only layer
    /// filling its cache, and the per-layer inputs looked up per token.
    @Test func sharingAndPerLayerInputsDecodeAsTheFullForward() throws {
        let model = try EditedFixture(Self.pleName).load()
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12,
            plans: [.none, DropPlan(attention: [1]), DropPlan(attention: [2, 4]), DropPlan(mlp: [3]), DropPlan(blocks: [1]),
                    DropPlan(blocks: [0, 4]), DropPlan(attention: [0], blocks: [1])],
            label: Self.pleName)
    }

    /// Exports of the E2B/E4B layout read back as the dropped model: a
    /// block drop keeps the kept layers' pieces of the per-layer embeddings
    /// and counts the kept sharing layers (`num_kv_shared_layers`), so
    /// transformers resolves the same layers to reuse; an attention drop of
    /// a layer whose keys and values are reused keeps their weights, and the
    /// export decodes as its forward.
    @Test func exportsLoadAsTheDroppedModel() throws {
        let scratch = try ScratchDirectory()
        let source = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(Self.pleName)))
        let windows = [Array(FixtureFiles.jsonlSequences()[0].prefix(24))]
        for (n, plan) in [DropPlan(blocks: [0, 4]), DropPlan(attention: [1, 4]), DropPlan(blocks: [1])].enumerated() {
            let export = scratch.path("export-\(n)")
            try DroppedModelExport.write(model: source, plan: plan, to: export)
            let checkpoint = try Checkpoint(directory: export)
            let expected = try LanguageModelLoss.evaluate(model: source, plan: plan, windows: windows, sourcePath: "eval")
            let exported = try LanguageModelLoss.evaluate(
                model: try ModelRegistry.load(checkpoint), plan: .none, windows: windows, sourcePath: "eval")
            #expect(abs(exported.perplexity / expected.perplexity - 1) < 1e-6, "\(plan)")
            let config = try JSONSerialization.jsonObject(with: Data(contentsOf: export.appendingPathComponent("config.json"))) as! [String: Any]
            let names = Set(checkpoint.storedTensorNames)
            switch n {
            case 0:
                #expect(config["num_hidden_layers"] as? Int == 4 && config["num_kv_shared_layers"] as? Int == 2)
                #expect(try checkpoint.storedTensor("model.embed_tokens_per_layer.weight").shape == [512, 32])
                #expect(try checkpoint.storedTensor("model.per_layer_model_projection.weight").shape == [32, 32])
            case 1:
                #expect(names.isSuperset(of: ["model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight",
                                              "model.layers.1.self_attn.k_norm.weight", "model.layers.1.input_layernorm.weight"]))
                #expect(names.isDisjoint(with: ["model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.o_proj.weight",
                                                "model.layers.4.self_attn.q_proj.weight", "model.layers.4.input_layernorm.weight"]))
                // Read back, layer 1's attention stays dropped: it only stores, or nothing once no kept layer reuses it.
                try expectCachedDecodingMatchesTheForward(
                    try ModelRegistry.load(checkpoint), tokens: 20, prefill: 12, plans: [.none, DropPlan(mlp: [0]), DropPlan(blocks: [3, 4])],
                    label: "\(Self.pleName) export \(plan)")
            default:
                #expect(config["num_hidden_layers"] as? Int == 5 && config["num_kv_shared_layers"] as? Int == 3)
            }
        }
        // An export transformers could not resolve is refused before writing.
        #expect(throws: DroptraceError.self) { try DroppedModelExport.write(model: source, plan: DropPlan(blocks: [2]), to: scratch.path("none")) }
        #expect(!FileManager.default.fileExists(atPath: scratch.path("none").path))
    }

    /// Gemma4TextConfig's default per_layer_input width is 256: a config that omits it has per-layer inputs.
    @Test func omittedPerLayerInputWidthIsRefused() throws {
        try EditedFixture("gemma4_text-f32") { $0["hidden_size_per_layer_input"] = nil }
            .expectRefused(naming: "hidden_size_per_layer_input")
    }

    /// The heads as transformers 5 saves them (`per_layer_config`) and as the
    /// released configs name them (`global_head_dim`,
    /// `num_global_key_value_heads`) are one model.
    @Test func globalHeadKeysGiveTheSavedPerLayerConfig() throws {
        let saved = try EditedFixture("gemma4_text-f32")
        let released = try EditedFixture("gemma4_text-f32") {
            $0["per_layer_config"] = nil
            $0["global_head_dim"] = 16
            $0["num_global_key_value_heads"] = 1
        }
        #expect(try saved.attentionScores() == released.attentionScores())
        // Without attention_k_eq_v, num_global_key_value_heads is not read (the weights then do not fit).
        let unshared = try EditedFixture("gemma4_text-f32") {
            $0["per_layer_config"] = nil
            $0["global_head_dim"] = 16
            $0["num_global_key_value_heads"] = 1
            $0["attention_k_eq_v"] = false
        }
        #expect(throws: DroptraceError.self) { _ = try unshared.load().block(1) }
    }

    /// Sliding layers: heads of head_dim with v_proj, every pair rotating;
    /// full layers: heads of the per-layer width, values from k_proj (the
    /// value rows repeat the key rows), the proportional rope rotating half
    /// the pairs; scores unscaled; layer_scalar on the block.
    @Test func layersAsGemma4Builds() throws {
        let model = try EditedFixture("gemma4_text-f32").load()
        let sliding = try #require(try model.block(0).attention?.attention)
        let full = try #require(try model.block(1).attention?.attention)
        #expect(sliding.layout.headDim == 8 && sliding.layout.numKVHeads == 2 && sliding.slidingWindow == 8)
        #expect(full.layout.headDim == 16 && full.layout.numKVHeads == 1 && full.slidingWindow == nil)
        #expect(sliding.scale == 1 && full.scale == 1 && full.valueNorm != nil)
        let slidingFrequencies = try #require(sliding.rotary?.inverseFrequencies)
        let fullFrequencies = try #require(full.rotary?.inverseFrequencies)
        #expect(slidingFrequencies.count == 4 && !slidingFrequencies.contains(0))
        #expect(fullFrequencies.count == 8 && fullFrequencies.prefix(4).allSatisfy { $0 > 0 } && fullFrequencies.suffix(4).allSatisfy { $0 == 0 })
        // Exponents over the whole head: base^(-2/16) for the second pair.
        #expect(fullFrequencies[1] == 1 / powf(1_000_000, 2 / 16))
        guard case .fused(let qkv) = full.projection else {
            Issue.record("not a fused projection")
            return
        }
        let width = full.layout.keyWidth * qkv.inFeatures, keys = full.layout.queryWidth * qkv.inFeatures
        #expect(Array(qkv.weight[keys..<(keys + width)]) == Array(qkv.weight[(keys + width)...]))
        #expect(try model.block(0).outputScale != nil)
    }

    /// Without layer_types every sixth layer is full and the last one always.
    @Test func defaultLayerTypesEndFull() throws {
        let model = try EditedFixture("gemma4_text-f32") {
            $0["layer_types"] = nil
            $0["per_layer_config"] = nil
            $0["global_head_dim"] = 16
        }.load()
        #expect(model.layerNaming.layerTypes == ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"])
        let forced = try EditedFixture("gemma4_text-f32") {
            $0["layer_types"] = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"]
            $0["per_layer_config"] = nil
            $0["global_head_dim"] = 16
        }.load()
        #expect(forced.layerNaming.layerTypes?.last == "full_attention")
    }

    /// A block-drop export renumbers per_layer_config with the layers; one
    /// that would leave a sliding layer last is refused (transformers would
    /// make it full).
    @Test func exportsRenumberPerLayerConfig() throws {
        let fixture = try EditedFixture("gemma4_text-f32")
        let config = try fixture.exportedConfig(droppingBlocks: [0])
        let perLayer = try #require(config["per_layer_config"] as? [String: Any])
        #expect(Set(perLayer.keys) == ["0", "2"])
        #expect(config["layer_types"] as? [String] == ["full_attention", "sliding_attention", "full_attention"])
        let model = try fixture.load()
        #expect(model.exportProblem(DropPlan(blocks: [3])) != nil)
        #expect(model.exportProblem(DropPlan(blocks: [2])) == nil)
    }

    /// `gemma4`'s head is tied by the top-level tie_word_embeddings, default true.
    @Test func multimodalHeadTiedByTopLevel() throws {
        #expect(try EditedFixture("gemma4-f32") { $0["tie_word_embeddings"] = nil }.load().head().vocabularySize == 512)
        let untied = try EditedFixture("gemma4-f32") { $0["tie_word_embeddings"] = false }
        #expect(throws: DroptraceError.self) { _ = try untied.load().head() }
    }

    /// `use_bidirectional_attention: "vision"` (the larger releases') makes
    /// vision tokens attend both ways and text causally: on text it is the
    /// causal model ("all" is refused, `mutants`).
    @Test func visionBidirectionalIsCausalOnText() throws {
        let base = try EditedFixture("gemma4_text-f32").attentionScores()
        #expect(try EditedFixture("gemma4_text-f32") { $0["use_bidirectional_attention"] = "vision" }.attentionScores() == base)
        try EditedFixture("gemma4_text-f32") { $0["use_bidirectional_attention"] = "both" }
            .expectRefused(naming: "use_bidirectional_attention")
    }

    /// The multimodal checkpoints embed their image, video and audio
    /// placeholder ids as `text_config.pad_token_id` (as Gemma4Model does:
    /// the scores of the calibration with the pad in their place), and
    /// their model fails on every forward without a pad id.
    @Test func multimodalPlaceholdersEmbedAsThePad() throws {
        let sequences = FixtureFiles.jsonlSequences()
        let id = sequences[0][3]
        let placeholder = try EditedFixture("gemma4_unified-f32") { $0["audio_token_id"] = id }
        let padded = sequences.map { $0.map { $0 == id ? 0 : $0 } }
        let plain = try EditedFixture("gemma4_unified-f32").load()
        #expect(try ImportanceScorer(model: placeholder.load()).score(sequences, calibrationPath: "calib").attention
            == ImportanceScorer(model: plain).score(padded, calibrationPath: "calib").attention)
        #expect(try ImportanceScorer(model: plain).score(sequences, calibrationPath: "calib").attention
            != ImportanceScorer(model: plain).score(padded, calibrationPath: "calib").attention)
        try EditedFixture("gemma4-f32") {
            var text = $0["text_config"] as! [String: Any]
            text["pad_token_id"] = NSNull()
            $0["text_config"] = text
        }.expectRefused(naming: "pad_token_id")
    }

    /// transformers 5 renames no `language_model.model.` weights onto a
    /// Gemma 4 model (it loads them as missing, a random model): refused.
    @Test(arguments: ["gemma4-f32", "gemma4_unified-f32"])
    func languageModelModelPrefixIsRefused(_ name: String) throws {
        let fixture = try EditedFixture(name)
        try BadInputTests().renameWeights(fixture.model, prefix: "model.language_model.", to: "language_model.model.")
        #expect(throws: DroptraceError.self) { _ = try fixture.load().block(0) }
    }

    /// Gemma 4 unified's config class has no per-layer inputs and no MoE
    /// block: transformers builds neither whatever config.json says, so
    /// those keys change nothing (in `gemma4_text` they are read, or refused
    /// without the weights, `mutants`); its window defaults to 1024.
    @Test func unifiedReadsNoPerLayerInputsOrExperts() throws {
        let plain = try EditedFixture("gemma4_unified_text-f32")
        let stray = try EditedFixture("gemma4_unified_text-f32") {
            $0["hidden_size_per_layer_input"] = 16
            $0["vocab_size_per_layer_input"] = "junk"
            $0["enable_moe_block"] = true
            $0["num_experts"] = 0
        }
        #expect(try stray.attentionScores() == plain.attentionScores())
        let multimodal = try EditedFixture("gemma4_unified-f32") {
            var text = $0["text_config"] as! [String: Any]
            text["hidden_size_per_layer_input"] = 16
            text["enable_moe_block"] = true
            text["sliding_window"] = nil
            $0["text_config"] = text
            $0["tie_word_embeddings"] = nil
        }
        let model = try multimodal.load()
        #expect(try model.block(0).attention?.attention.slidingWindow == 1024)
        #expect(try model.block(0).perLayerInput == nil && model.block(0).mlp?.inputNorm != nil)
        // Gemma4UnifiedConfig ties the head by default.
        #expect(try model.head().vocabularySize == 512)
    }

    /// The MoE block (`enable_moe_block`): the MLP branch is the dense MLP
    /// and the experts side by side, each between its own norms, summed and
    /// normalised by post_feedforward_layernorm; the router reads the
    /// branch's input itself, normalises it its own way and scales each
    /// chosen expert's weight by per_expert_scale; a dropped MLP drops both.
    @Test func moeBlockAsGemma4Builds() throws {
        let model = try EditedFixture("gemma4_moe-f32").load()
        let branch = try #require(try model.block(0).mlp)
        #expect(branch.inputNorm == nil && branch.outputNorm != nil)
        guard case .parallel(let parts) = branch.feedForward, parts.count == 2,
              case .gated = parts[0].feedForward, case .mixture(let experts) = parts[1].feedForward else {
            Issue.record("not the dense MLP beside the experts")
            return
        }
        #expect(parts.allSatisfy { $0.inputNorm != nil && $0.outputNorm != nil })
        #expect(!parts[0].routesRawInput && parts[1].routesRawInput)
        #expect(experts.experts.count == 4 && experts.expertsPerToken == 2)
        let routerNorm = try #require(experts.routerNorm)
        #expect(routerNorm.rootScale == Float(pow(32.0, -0.5)) && routerNorm.scale.count == 32)
        let scales = try #require(experts.expertScales)
        #expect(scales.count == 4)

        let x = Matrix(rows: 3, cols: 32, data: (0..<96).map { Float(sin(Double($0) * 0.7)) })
        // The weights are the renormalised top-k times per_expert_scale.
        let routing = experts.route(x)
        let unscaled = MixtureOfExperts(
            router: experts.router, experts: experts.experts, expertsPerToken: 2, routerNorm: routerNorm).route(x)
        #expect(routing.experts == unscaled.experts)
        #expect(routing.weights == zip(unscaled.weights, unscaled.experts).map { $0 * scales[$1] })
        for r in 0..<3 { #expect(abs(unscaled.weights[2 * r] + unscaled.weights[2 * r + 1] - 1) < 1e-6) }
        // The router reads the raw input, the experts their normalised input.
        let expertNorm = try #require(parts[1].inputNorm)
        let normed = expertNorm(x)
        #expect(experts(normed, routerInput: x).data != experts(normed).data)

        let dropped = try model.block(0, skipping: DropPlan(mlp: [0]))
        #expect(dropped.mlp == nil && dropped.attention != nil)
    }

    /// The MoE block through the key/value cache: each decoded token's
    /// output equals the full forward's, with and without the MLP dropped.
    @Test func moeBlockDecodesAsTheFullForward() throws {
        let model = try EditedFixture("gemma4_moe-f32").load()
        let tokens = Array(FixtureFiles.jsonlSequences()[0].prefix(24))
        for plan in [DropPlan.none, DropPlan(mlp: [1]), DropPlan(blocks: [0])] {
            let full = try LayerwiseForward(model: model, plan: plan).run(TokenBatch(sequences: [tokens]))
            let decoder = try IncrementalDecoder(model: model, plan: plan, capacity: tokens.count)
            var last = Matrix(zeros: 1, full.cols)
            for (position, token) in tokens.enumerated() { last = try decoder.step(token: token, position: position) }
            let worst = zip(last.data, full.data.suffix(full.cols)).map { abs($0 - $1) }.max()!
            #expect(worst < 1e-4, "\(plan): \(worst)")
        }
    }
}
