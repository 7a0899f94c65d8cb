import Architectures
import CheckpointIO
import DroptraceSupport
@testable import Dropping
import Foundation
import Scoring
import TensorEngine
import Testing

/// Gemma 3n's layers as Gemma3nTextConfig resolves them, its multimodal
/// wrapper and its refusals; the scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`).
@Suite struct Gemma3nTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let name = "gemma3n_text-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "altup_num_inputs", "0"),
        Mutant(name, "altup_active_idx", "3"),
        Mutant(name, "altup_active_idx", "-4"),
        Mutant(name, "laurel_rank", "0"),
        Mutant(name, "hidden_size_per_layer_input", "-1"),
        Mutant(name, "vocab_size_per_layer_input", "0"),
        // Sharing needs an earlier layer of each type (layers s s f s s f) and none past the first.
        Mutant(name, "num_kv_shared_layers", "4"),
        Mutant(name, "num_kv_shared_layers", "6"),
        Mutant(name, "num_kv_shared_layers", "-1"),
        Mutant(name, "activation_sparsity_pattern", "0.95"),
        Mutant(name, "activation_sparsity_pattern", "[0.95, 0.95, 0.0, 0.0, 0.0]"),
        // Gemma3nTextConfig takes floats only.
        Mutant(name, "activation_sparsity_pattern", "[0.95, 0.95, 0, 0, 0, 0]"),
        // Past 1 transformers' cut is NaN, and so is every output.
        Mutant(name, "activation_sparsity_pattern", "[1.5, 0.0, 0.0, 0.0, 0.0, 0.0]"),
        Mutant(name, "intermediate_size", "[64, 64, 64, 48, 48]"),
        Mutant(name, "intermediate_size", "[64, 64, 64, 48, 48, 0]", key: "intermediate_size[5]"),
        Mutant(name, "final_logit_softcapping", "-1"),
        // transformers' logits / 0 · 0: every logit 0.
        Mutant(name, "final_logit_softcapping", "0.0"),
        Mutant(name, "final_logit_softcapping", "null"),
        Mutant(name, "final_logit_softcapping", "8"),
        Mutant(name, "num_attention_heads", "3"),
        Mutant(name, "sliding_window", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The fixture's layout: three AltUp streams, LAuReL of rank 4 beside
    /// each attention, per-layer inputs of width 8, layers 4 and 5 reusing
    /// the keys and values of layers 3 (sliding) and 2 (full), the first two
    /// MLPs sparse at Φ⁻¹(0.95), MLP widths per layer.
    @Test func layersAsGemma3nBuildsThem() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.streamWidth == 3 * 32 && model.scoredColumns == 0..<32)
        let blocks = try (0..<6).map { try model.block($0) }
        #expect(blocks.map { $0.attention?.attention.keyValueSharing } == [nil, nil, .store(layer: 2), .store(layer: 3), .reuse(layer: 3), .reuse(layer: 2)])
        #expect(blocks.allSatisfy { $0.altUp?.streams == 3 && $0.perLayerInput?.gate.outFeatures == 8 })
        func mlp(_ block: TransformerBlock) -> (width: Int, cut: Float?)? {
            switch block.mlp?.feedForward {
            case .gated(_, let down, _)?: (down.inFeatures, nil)
            case .sparseGated(_, let down, _, let cut)?: (down.inFeatures, cut)
            default: nil
            }
        }
        #expect(blocks.map { mlp($0)?.width } == [64, 64, 64, 48, 48, 48])
        #expect(blocks.map { mlp($0)?.cut == nil } == [false, false, true, true, true, true])
        // torch.distributions.Normal(0, 1).icdf(0.95) in float32.
        #expect(abs(mlp(blocks[0])!.cut! - 1.6448536) < 1e-6)
        for block in blocks {
            guard case .learnedAugmented(let laurel)? = block.attention?.join else {
                Issue.record("no LAuReL beside the attention")
                continue
            }
            #expect(laurel.left.outFeatures == 4)
        }
    }

    /// The stream projections are read one by one: a stream count no
    /// checkpoint holds stops at the first missing one, with nothing sized by it.
    @Test func absurdStreamCountStopsAtTheFirstMissingProjection() throws {
        let fixture = try EditedFixture(Self.name) { $0["altup_num_inputs"] = 1_000_000_000 }
        #expect { _ = try fixture.load() } throws: { ($0 as? DroptraceError)?.message.contains("altup_projections.2") == true }
    }

    /// A dropped attention of a storing layer still makes the keys and
    /// values its sharing layer reuses; dropping every earlier layer of a
    /// type refuses the plan.
    @Test func droppedStoringAttentionKeepsTheKeysAndValues() throws {
        let model = try EditedFixture(Self.name).load()
        let block = try model.block(3, skipping: DropPlan(attention: [3]))
        #expect(block.attention == nil && block.sharingProducer?.attention.keyValueSharing == .storeOnly(layer: 3))
        let moved = try model.attentionSharing(skipping: DropPlan(blocks: [3])).keysValues
        #expect(moved[1] == .store(layer: 1) && moved[4] == .reuse(layer: 1))
        #expect(model.exportProblem(DropPlan(blocks: [2])) != nil)
        #expect(model.exportProblem(DropPlan(blocks: [0])) == nil)
        #expect(model.exportProblem(DropPlan(attention: [3])) == nil && model.exportProblem(DropPlan(attention: [5])) == nil)
    }

    /// Key/value-cache decoding (`drop`'s speed measurement) equals the
    /// forward with the modules dropped: on the AltUp streams, with the
    /// shared layers reading the cache of the layer they reuse, a store-only
    /// layer (sliding layer 3, full layer 2) filling its cache, and the
    /// per-layer inputs looked up per token.
    @Test func storeOnlyAndSharedLayersDecodeAsTheForward() throws {
        let model = try EditedFixture(Self.name).load()
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12,
            plans: [.none, DropPlan(attention: [3]), DropPlan(attention: [2, 3]), DropPlan(attention: [3, 4, 5]),
                    DropPlan(attention: [2], mlp: [3]), DropPlan(blocks: [1]), DropPlan(attention: [3], blocks: [4])],
            label: Self.name)
    }

    /// An export dropping the attention of a storing layer keeps its key and
    /// value weights and reads back as the dropped model: its perplexity is
    /// the source's with the drop, and it decodes as its own forward under
    /// further drops — the store-only layer keeping its cache, or none where
    /// a dropped block leaves no layer to reuse its keys and values.
    @Test func storeOnlyExportsReadBackAndDecode() throws {
        // A decoder of a model whose config drops the attention keeps it dropped under another plan.
        let configured = try EditedFixture(Self.name) { $0["drop_attn_list"] = [3] }.load()
        let kept = try configured.block(3, skipping: .none)
            .dropping(DropPlan(mlp: [1]), at: 3, sharing: try configured.attentionSharing(skipping: DropPlan(mlp: [1])))
        #expect(kept.attention == nil && kept.sharingProducer?.attention.keyValueSharing == .storeOnly(layer: 3))
        let unused = try configured.block(3, skipping: .none)
            .dropping(DropPlan(blocks: [4]), at: 3, sharing: try configured.attentionSharing(skipping: DropPlan(blocks: [4])))
        #expect(unused.attention == nil && unused.sharingProducer == nil)
        // A configured drop of a layer a dropped block makes store keys and values (layer 1, for layer 4).
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture(Self.name) { $0["drop_attn_list"] = [1] }.load(), tokens: 20, prefill: 12,
            plans: [DropPlan(blocks: [3])], label: "\(Self.name) configured attention drop")
        let scratch = try ScratchDirectory()
        let source = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(Self.name)))
        let windows = [Array(FixtureFiles.jsonlSequences()[0].prefix(24))]
        for (n, plan) in [DropPlan(attention: [3]), DropPlan(attention: [2, 3, 4])].enumerated() {
            let export = scratch.path("export-\(n)")
            try DroppedModelExport.write(model: source, plan: plan, to: export)
            let exported = try ModelRegistry.load(try Checkpoint(directory: export))
            let expected = try LanguageModelLoss.evaluate(model: source, plan: plan, windows: windows, sourcePath: "eval")
            let readBack = try LanguageModelLoss.evaluate(model: exported, plan: .none, windows: windows, sourcePath: "eval")
            #expect(abs(readBack.perplexity / expected.perplexity - 1) < 1e-6, "\(plan)")
            try expectCachedDecodingMatchesTheForward(
                exported, tokens: 20, prefill: 12,
                plans: [.none, DropPlan(mlp: [1]), DropPlan(attention: [5]), DropPlan(blocks: [4]), DropPlan(blocks: [4, 5])],
                label: "\(Self.name) export \(plan)")
        }
        // An export without a layer's key and value weights cannot make them where a dropped block would need them.
        try DroppedModelExport.write(model: source, plan: DropPlan(attention: [1]), to: scratch.path("export-unstored"))
        let exported = try ModelRegistry.load(try Checkpoint(directory: scratch.path("export-unstored")))
        let decoder = try IncrementalDecoder(model: exported, plan: .none, capacity: 8)
        #expect(throws: DroptraceError.self) { _ = try decoder.dropping(DropPlan(blocks: [3]), capacity: 8) }
    }

    /// A dropped module leaves the active stream as it was for that module,
    /// the rest of the layer running: the attention's and MLP's scores are
    /// NaN and the other scores move; a dropped block leaves every stream.
    @Test func droppedModulesLeaveTheirStreams() throws {
        let model = try EditedFixture(Self.name).load()
        let sequences = FixtureFiles.jsonlSequences()
        let full = try ImportanceScorer(model: model).score(sequences, calibrationPath: "calib")
        let dropped = try ImportanceScorer(model: model).score(sequences, calibrationPath: "calib", dropping: DropPlan(attention: [1], mlp: [2]))
        #expect(dropped.attention[1].isNaN && dropped.mlp[2].isNaN && !dropped.block[1].isNaN)
        #expect(dropped.attention[0] == full.attention[0])
        let block = try ImportanceScorer(model: model).score(sequences, calibrationPath: "calib", dropping: DropPlan(blocks: [1]))
        #expect(block.block[1].isNaN && block.blockGap[0][1] == block.blockGap[0][0])
    }

    /// `gemma3n` (its language model under `model.language_model.`, sizes
    /// under `text_config`; scored against transformers with the others):
    /// a token id its model embeds as vision or audio is refused.
    @Test func multimodalCheckpointRefusesMediaTokens() throws {
        let sequences = FixtureFiles.jsonlSequences()
        let top = try #require(sequences.joined().max())
        let fixture = try EditedFixture("gemma3n-f32") { $0["audio_config"] = ["vocab_offset": top] }
        let model = try fixture.load()
        #expect(model.layerNaming.prefix == "model.language_model.layers.")
        #expect(throws: DroptraceError.self) {
            _ = try ImportanceScorer(model: model).score(sequences, calibrationPath: "calib")
        }
        _ = try ImportanceScorer(model: model).score([[1, 2, top - 1]], calibrationPath: "calib")
    }

    /// Width 0 (`hidden_size_per_layer_input`): transformers' per-layer
    /// branch adds zeros, its tensors zero-sized, stored so or absent (the
    /// same scores, transformers 5.25's); tables holding values do not load
    /// into it: refused.
    @Test func perLayerInputsOfWidthZero() throws {
        let fixture = try EditedFixture(Self.name) { $0["hidden_size_per_layer_input"] = 0 }
        fixture.expectRefused(naming: "hidden_size_per_layer_input")
        let parts = ["embed_tokens_per_layer", "per_layer_model_projection", "per_layer_projection_norm", "per_layer_input_gate", "per_layer_projection."]
        let zeroSized = try EditedFixture(Self.name) { $0["hidden_size_per_layer_input"] = 0 }
        try BadInputTests().rewriteWeights(zeroSized.model) { entries in
            for index in entries.indices where parts.contains(where: entries[index].name.contains) {
                var shape = entries[index].shape
                shape[entries[index].name.contains("per_layer_projection.") || entries[index].name.contains("embed_tokens_per_layer") ? shape.count - 1 : 0] = 0
                entries[index] = SafetensorsWriter.Entry(name: entries[index].name, dtype: .float32, shape: shape, bytes: Data())
            }
        }
        let absent = try EditedFixture(Self.name) { $0["hidden_size_per_layer_input"] = 0 }
        try BadInputTests().rewriteWeights(absent.model) { entries in entries.removeAll { entry in parts.contains(where: entry.name.contains) } }
        let scores = try zeroSized.attentionScores()
        #expect(try absent.attentionScores() == scores)
        let transformers = [0.3163233960602696, 0.1028731864914334, 0.061680913384994596, 0.04206774916323219, 0.03541021782751985, 0.03953744810532278]
        #expect(zip(scores, transformers).allSatisfy { abs($0 - $1) < 1e-5 })
    }

    /// A sparsity of 1 cuts the gate at +∞ (the MLP adds zeros, as in
    /// transformers 5.25); one at most 0 leaves the MLP dense, as 0 does.
    /// A negative logit cap gives the positive one's logits.
    @Test func sparsityAndCapsTransformersRuns() throws {
        let sequences = FixtureFiles.jsonlSequences()
        func scores(_ change: @escaping (inout [String: Any]) -> Void) throws -> ModuleScores {
            try ImportanceScorer(model: try EditedFixture(Self.name, change).load()).score(sequences, calibrationPath: "calib")
        }
        let full = try scores { $0["activation_sparsity_pattern"] = [1.0, 0.95, 0.0, 0.0, 0.0, 0.0] }
        #expect(full.mlp[0] == 0)
        let transformers = [0.3163233960602696, 0.1138577676305591, 0.06429898436912684, 0.04539775764166154, 0.040988328750335645, 0.040956541300218086]
        #expect(zip(full.attention, transformers).allSatisfy { abs($0 - $1) < 1e-5 })
        #expect(try scores { $0["activation_sparsity_pattern"] = [-0.5, 0.95, 0.0, 0.0, 0.0, 0.0] }.attention
            == scores { $0["activation_sparsity_pattern"] = [0.0, 0.95, 0.0, 0.0, 0.0, 0.0] }.attention)
        let batch = TokenBatch(sequences: [Array(sequences[0].prefix(8))])
        func logits(_ cap: Double) throws -> [Float] {
            let model = try EditedFixture(Self.name) { $0["final_logit_softcapping"] = cap }.load()
            return try model.head().logits(LayerwiseForward(model: model).run(batch)).data
        }
        #expect(try logits(-8.0) == logits(8.0))
    }

    /// A block-drop export spells out the kept layers' sparsities (the class's
    /// rule would sparsify others), widths, types and shared-layer count.
    @Test func blockDropExportKeepsTheLayersLists() throws {
        let fixture = try EditedFixture(Self.name) { $0["activation_sparsity_pattern"] = NSNull() }
        let config = try fixture.exportedConfig(droppingBlocks: [0])
        #expect(config["num_hidden_layers"] as? Int == 5 && config["num_kv_shared_layers"] as? Int == 2)
        #expect((config["intermediate_size"] as? [Int]) == [64, 64, 48, 48, 48])
        #expect((config["activation_sparsity_pattern"] as? [Double]) == [0, 0, 0, 0, 0])
    }
}
