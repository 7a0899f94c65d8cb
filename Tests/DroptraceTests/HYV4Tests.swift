@testable import Architectures
@testable import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Tencent's Hy4 (`hy_v4`): its config refusals and HYV4Config's defaults,
/// the residual stream of `hc_mult` hyper-connected streams, DeepSeek Sparse
/// Attention with the last rope columns and shared indexer layers, sinks,
/// the output gate and the clamped experts. The fixture is saved as Hy4 is
/// released (its names renamed on load, the per-layer lists left to the
/// class's rules). Hy4-VL (`hy_v4_vl-f32`) holds the same language model:
/// its text config, latent norms and M-RoPE section. The scores themselves
/// are checked against transformers with every other family (`DropTests`
/// and the reference suites).
@Suite struct HYV4Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "hy_v4-f32"
    static let vision = "hy_v4_vl-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "rms_norm_eps", "0"),
        Mutant(name, "hc_mult", "0"), Mutant(name, "hc_mult", "4611686018427387904"), Mutant(name, "hc_mult", "null"),
        Mutant(name, "hc_magnitude", "1e39"), Mutant(name, "hc_eps", "1e39"),
        // HYV4Config's docstring and HYV4Experts disagree on a limit at or below zero.
        Mutant(name, "swiglu_limit", "0"), Mutant(name, "swiglu_limit", "-1"), Mutant(name, "swiglu_limit", "1e39"),
        Mutant(name, "index_topk", "0"), Mutant(name, "index_n_heads", "0"), Mutant(name, "index_head_dim", "4"),
        Mutant(name, "q_lora_rank", "null"),
        Mutant(name, "indexer_types", #"["shared", "full", "full", "full"]"#),
        Mutant(name, "indexer_types", #"["full", "skip", "full", "full"]"#),
        Mutant(name, "indexer_types", #"["full", "full"]"#),
        Mutant(name, "layer_types", #"["full_attention", "indexed_attention", "indexed_attention", "indexed_attention"]"#),
        Mutant(name, "mlp_layer_types", #"["dense", "moe", "sparse", "sparse"]"#),
        Mutant(name, "n_routed_experts", "0"), Mutant(name, "num_experts_per_tok", "9"),
        // Sizes the tensors contradict.
        Mutant(name, "hc_mult", "2"), Mutant(name, "hc_mult", "4"), Mutant(name, "index_n_heads", "16"),
        Mutant(name, "n_routed_experts", "16"), Mutant(name, "moe_intermediate_size", "32"),
        // HYV4VLTextConfig.validate_architecture: three runs summing to qk_rope_head_dim / 2 (4 here).
        Mutant(vision, "text_config.rope_parameters.mrope_section", "[2, 1, 2]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(vision, "text_config.rope_parameters.mrope_section", "[3, 1]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(vision, "text_config.rope_parameters.mrope_section", "null", key: "text_config.rope_parameters.mrope_section"),
        Mutant(vision, "text_config.hc_mult", "0", key: "text_config.hc_mult"),
        Mutant(vision, "text_config.index_n_heads", "16", key: "index_n_heads"),
        Mutant(vision, "image_token_id", "1.5", key: "image_token_id"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Each layer's branches join 3 streams through their hyper-connections;
    /// the attention has sinks, a gate per value column (zero rows for each
    /// head's padding: v_head_dim 12 of 16) and, on the full layers, an
    /// indexer rotating each head's last 8 columns; the routed experts clamp
    /// their SwiGLU inputs at swiglu_limit, the dense and shared ones do not.
    @Test func layersAsHYV4Builds() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.streamWidth == 3 * model.hiddenSize)
        #expect(try model.head().streamCollapse?.streams == 3)
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            guard case .hyperConnected(let attentionJoin)? = block.attention?.join, case .hyperConnected(let mlpJoin)? = block.mlp?.join else {
                Issue.record("layer \(layer): a branch without its hyper-connection")
                continue
            }
            #expect(attentionJoin.streams == 3 && mlpJoin.streams == 3 && attentionJoin.postMagnitude == 2)
            let attention = try #require(block.attention?.attention)
            #expect(attention.sinkLogits?.count == 4 && attention.layout.headDim == 16)
            let gate = try #require(attention.outputGate)
            #expect(gate.outFeatures == 4 * 16 && gate.weight[(12 * model.hiddenSize)..<(16 * model.hiddenSize)].allSatisfy { $0 == 0 })
            #expect((attention.indexer != nil) == (layer < 2), "layer \(layer)")
            if let indexer = attention.indexer { #expect(indexer.ropeStart == 8 && indexer.dim == 16) }
            let feedForward = try #require(block.mlp?.feedForward)
            switch feedForward {
            case .gated(_, _, let activation): #expect(layer == 0 && activation == .silu)
            case .mixture(let moe):
                guard case .gated(_, _, let activation)? = moe.experts.first, case .gated(_, _, let shared)? = moe.sharedExperts.first else {
                    Issue.record("layer \(layer): not gated experts")
                    continue
                }
                #expect(layer > 0 && activation == .clampedInput(.silu, limit: Float(0.05)) && shared == .silu)
            default: Issue.record("layer \(layer): \(feedForward)")
            }
        }
    }

    /// The stream that enters every layer is the embedding in each stream; a
    /// dropped attention or MLP leaves the streams as they were.
    /// Hy4-VL: the text config read as HYV4VLTextConfig whatever its
    /// model_type says, the latent norms at its `rms_norm_eps` (1e-4 here;
    /// HY-V4's at 1e-6), an absent section [12, 10, 10] (which these 4
    /// rotated frequencies refuse), the head untied unless the top level ties it.
    @Test func visionWrapperReadsItsLanguageModel() throws {
        let model = try EditedFixture(Self.vision).load()
        #expect(model.layerNaming.prefix == "model.language_model.layers.")
        func latentNormEps(_ model: any LanguageModel) throws -> Float? {
            guard case .latent(let latent)? = try model.block(1).attention?.attention.projection,
                  case .rms(_, let eps) = latent.keyValueNorm else { return nil }
            return eps
        }
        #expect(try latentNormEps(model) == Float(1e-4))
        #expect(try latentNormEps(EditedFixture(Self.name).load()) == Float(1e-6))
        let base = try EditedFixture(Self.vision).attentionScores()
        #expect(try EditedFixture(Self.vision) { EditedModel.set("hy_v4", at: "text_config.model_type", in: &$0) }.attentionScores() == base)
        #expect(try EditedFixture(Self.vision) { EditedModel.set([1, 2, 1], at: "text_config.rope_parameters.mrope_section", in: &$0) }
            .attentionScores() == base)
        try EditedFixture(Self.vision) { config in
            var rope = (config["text_config"] as! [String: Any])["rope_parameters"] as! [String: Any]
            rope["mrope_section"] = nil
            EditedModel.set(rope, at: "text_config.rope_parameters", in: &config)
        }.expectRefused(naming: "[12, 10, 10]")
        let headless = try EditedFixture(Self.vision) { $0["tie_word_embeddings"] = nil }
        try BadInputTests().rewriteWeights(headless.model) { $0.removeAll { $0.name == "lm_head.weight" } }
        #expect(throws: DroptraceError.self) { try headless.load().head() }
    }

    @Test func droppedBranchLeavesTheStreams() throws {
        let model = try EditedFixture(Self.name).load()
        let batch = TokenBatch(sequences: [Array(FixtureFiles.jsonlSequences()[0].prefix(9))])
        let x = try model.embed(batch)
        #expect(x.cols == model.streamWidth)
        let width = model.hiddenSize
        for r in 0..<x.rows {
            let first = Array(x.data[(r * x.cols)..<(r * x.cols + width)])
            for n in 1..<3 { #expect(Array(x.data[(r * x.cols + n * width)..<(r * x.cols + (n + 1) * width)]) == first) }
        }
        let block = try model.block(2, skipping: DropPlan(attention: [2], mlp: [2]))
        let activations = block(x, index: 2) { mixer, input in mixer(input, batch) }
        #expect(activations.output.data == x.data)
    }

    /// What the released config.json leaves out takes HYV4Config's rules:
    /// layer 0 dense, the others sparse; indexer types full at layers 0 and
    /// 1 (and 5, 9, …), shared between. Written out, the same model.
    @Test func omittedListsTakeHYV4ConfigRules() throws {
        let written = try EditedFixture(Self.name) {
            $0["mlp_layer_types"] = ["dense", "sparse", "sparse", "sparse"]
            $0["indexer_types"] = ["full", "full", "shared", "shared"]
            $0["layer_types"] = Array(repeating: "indexed_attention", count: 4)
        }
        let base = try scores(EditedFixture(Self.name))
        #expect(try scores(written) == base)
        let naming = try EditedFixture(Self.name).load().layerNaming
        #expect(naming.perLayerLists["indexer_types"] == ["full", "full", "shared", "shared"])
        // Layer 1 shares layer 0's top-k instead (its indexer's tensors left unread, as transformers leaves them).
        let oneFull = try scores(EditedFixture(Self.name) { $0["indexer_types"] = ["full", "shared", "shared", "shared"] })
        #expect(oneFull != base)
        // num_key_value_heads is overwritten by num_attention_heads; rope_interleave and head_dim are not read.
        #expect(try scores(EditedFixture(Self.name) { $0["num_key_value_heads"] = 2; $0["rope_interleave"] = false; $0["head_dim"] = 99 }) == base)
    }

    /// Dropping layer 1's attention (the last full indexer before the shared
    /// layers 2 and 3) keeps its indexer running for them; an attention-drop
    /// export, which would leave it out, is refused; dropping block 1 leaves
    /// the shared layers layer 0's choice.
    @Test func sharedIndexerLayersKeepTheirSource() throws {
        let model = try EditedFixture(Self.name).load()
        let block = try model.block(1, skipping: DropPlan(attention: [1]))
        #expect(block.attention == nil && block.sharingProducer?.attention?.storesOnly == true)
        #expect(model.exportProblem(DropPlan(attention: [1]))?.contains("indexer_types") == true)
        #expect(model.exportProblem(DropPlan(blocks: [1])) == nil)
        let exported = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [1])
        #expect(exported["indexer_types"] as? [String] == ["full", "shared", "shared"])
        #expect(exported["mlp_layer_types"] as? [String] == ["dense", "sparse", "sparse"])
    }

    /// An export without layer 0's attention (LLM-Drop's format: its
    /// tensors, `attn_hc` among them, left out) reads back as the model with
    /// that attention dropped.
    @Test func attentionDropExportReadsBack() throws {
        let fixture = try EditedFixture(Self.name)
        let export = fixture.scratch.path("export")
        let model = try fixture.load(), plan = DropPlan(attention: [0])
        try DroppedModelExport.write(model: model, plan: plan, to: export)
        let reread = try ModelRegistry.load(try Checkpoint(directory: export))
        #expect(reread.configuredDrops == plan)
        let sequences = FixtureFiles.jsonlSequences()
        let dropped = try ImportanceScorer(model: model).score(sequences, calibrationPath: "calib", dropping: plan)
        let exported = try ImportanceScorer(model: reread).score(sequences, calibrationPath: "calib")
        #expect(exported.mlp == dropped.mlp && exported.block == dropped.block)
    }

    /// Hyper-connection tensors of another shape than `hc_mult` gives are
    /// refused on loading, naming config.json and the tensor (as transformers
    /// renames it on load).
    @Test func misshapenHyperConnectionTensorsAreRefused() throws {
        for (name, shape, renamed) in [
            ("model.hc_pre.hc_head.hc_head_scale", [2], "model.hc_head.hc_scale"),
            ("model.layers.0.hc_pre.hc_attn_layer.hc_scale", [3], "model.layers.0.attn_hc.scale"),
        ] {
            let fixture = try EditedFixture(Self.name)
            try BadInputTests().rewriteWeights(fixture.model) { entries in
                let index = entries.firstIndex { $0.name == name }!
                entries[index] = SafetensorsWriter.Entry(
                    name: name, dtype: .float32, shape: shape, bytes: Data(count: 4 * shape.reduce(1, *)))
            }
            fixture.expectRefused(naming: renamed)
        }
    }

    /// Router and experts of one layer against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers(Self.name, unordered: true)
    }

    /// Prefill, then key/value-cache decoding with the indexer's keys cached, equal the full forward.
    @Test func prefillAndDecodingMatchTheForward() throws {
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture(Self.name).load(), tokens: 30, prefill: 20, plans: [.none, DropPlan(mlp: [2]), DropPlan(attention: [1])],
            label: Self.name)
    }
}
