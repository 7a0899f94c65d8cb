@testable import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Qwen4-Exp's text model (`qwen4_exp_text`) and its multimodal wrapper
/// (`qwen4_exp`, read as its language model): the gated residuals of 3
/// streams, the QSA indexer choosing the indexed layers' key blocks, the
/// hashed n-gram per-layer embeddings entering layers 0 and 2 (belonging to
/// the block), the Gated DeltaNet's sigmoid output gate; Qwen4ExpTextConfig's
/// refusals, the stored hash buffers, and exports transformers loads back.
/// The scores themselves are checked against transformers with every other
/// family (`DropTests` and the reference suites); so is key/value-cache
/// decoding of JSONL sequence 0 (`DropTests.incrementalDecodingMatchesTheFullForward`).
@Suite struct Qwen4ExpTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "qwen4_exp_text-f32"
    static let wrapper = "qwen4_exp-f32"

    /// Values Qwen4ExpTextConfig refuses, or on which its model fails.
    static let mutants: [Mutant] = [
        Mutant(name, "hc_count", "1"), Mutant(name, "hc_count", "0"), Mutant(name, "hc_count", "3.0"),
        Mutant(name, "output_gate_type", "\"gelu\""),
        Mutant(name, "layer_types", "[\"linear_attention\", \"sliding_attention\", \"linear_attention\", \"indexed_attention\"]"),
        Mutant(name, "layer_types", "[\"linear_attention\", \"indexed_attention\", \"linear_attention\"]"),
        Mutant(name, "indexer_kv_heads", "2"), Mutant(name, "indexer_budget", "6"), Mutant(name, "indexer_budget", "null"),
        Mutant(name, "indexer_head_dim", "4"), Mutant(name, "indexer_n_heads", "0"), Mutant(name, "indexer_compress_ratio", "-4"),
        Mutant(name, "ple_layer_ids", "[2]"), Mutant(name, "ple_layer_ids", "[0]"), Mutant(name, "ple_layer_ids", "[5]"),
        Mutant(name, "ple_embed_dim", "10"),
        Mutant(name, "ngram_size", "1"), Mutant(name, "heads_per_ngram", "0"),
        // Sizes whose products overflow, and values past what the hashing reads, refused before anything is computed from them.
        Mutant(name, "hc_count", "4611686018427387904"), Mutant(name, "indexer_head_dim", "4611686018427387904"),
        Mutant(name, "indexer_n_heads", "9223372036854775807"),
        Mutant(name, "heads_per_ngram", "4611686018427387904", key: "ple_embed_dim"), Mutant(name, "heads_per_ngram", "-9223372036854775808"),
        Mutant(name, "ngram_size", "9223372036854775807", key: "ple_embed_dim"), Mutant(name, "ngram_size", "-9223372036854775808"),
        Mutant(name, "make_ngram_vocab_size_divisible_by", "9223372036854775807"), Mutant(name, "seed", "-9223372036854775808"),
        Mutant(name, "ngram_vocab_size_base", "-9223372036854775808"),
        Mutant(name, "eos_token_id", "null"), Mutant(name, "eos_token_id", "[]"),
        Mutant(name, "ple_conv_kernel_size", "0"), Mutant(name, "make_ngram_vocab_size_divisible_by", "0"),
        Mutant(name, "num_experts_per_tok", "5"),
        // The wrapper: Qwen4ExpConfig's own keys, its text config as Qwen4ExpTextConfig checks it, and a
        // text model_type under which transformers does not convert the stored weights (it runs another model).
        Mutant(wrapper, "tie_word_embeddings", "null"), Mutant(wrapper, "tie_word_embeddings", "1"),
        Mutant(wrapper, "image_token_id", "5.0"),
        Mutant(wrapper, "text_config.hc_count", "1", key: "text_config.hc_count"),
        Mutant(wrapper, "text_config.ple_layer_ids", "[2]", key: "text_config.ple_layer_ids"),
        Mutant(wrapper, "text_config.eos_token_id", "null", key: "text_config.eos_token_id"),
        Mutant(wrapper, "text_config.model_type", "\"llama\"", key: "text_config.model_type"),
        Mutant(wrapper, "text_config.model_type", "null", key: "text_config.model_type"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every branch joins the 3 streams by its gated residual and the head
    /// collapses them by the final mixer; layers 1 and 3 attend to the 2
    /// key blocks of 4 their indexer keeps, layers 0 and 2 (ple_layer_ids
    /// 1 and 3) begin with the n-gram per-layer embedding, which a dropped
    /// attention or MLP keeps; the Gated DeltaNet's gate is a sigmoid.
    @Test func layersAsQwen4ExpBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.streamWidth == 3 * model.hiddenSize)
        #expect(try model.head().streamCollapse != nil)
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            guard case .gatedResidual(let attentionJoin)? = block.attention?.join, case .gatedResidual? = block.mlp?.join else {
                Issue.record("layer \(layer): a branch without its gated residual")
                continue
            }
            #expect(attentionJoin.streams == 3)
            #expect((block.entryBranch != nil) == (layer % 2 == 0))
            if layer % 2 == 1 {
                let indexer = try #require(block.attention?.mixer.softmaxAttention?.blockIndexer)
                #expect(indexer.budget == 8 && indexer.compression == 4 && indexer.blocksKept == 2 && indexer.heads == 8)
            } else {
                guard case .gatedDeltaNet(let mixer)? = block.attention?.mixer else {
                    Issue.record("layer \(layer) is not a Gated DeltaNet layer")
                    continue
                }
                #expect(mixer.outputGateActivation == .sigmoid)
                #expect(try model.block(layer, skipping: DropPlan(attention: [layer], mlp: [layer])).entryBranch != nil)
            }
        }
    }

    /// Values transformers reads as the fixture's: layer_types' released
    /// spelling "full_attention", an eos list (its first id), ple_layer_ids
    /// unsorted with repeats; and values it honours: norm_topk_prob false.
    @Test func equivalentSpellingsAsTransformersReadsThem() throws {
        let base = try scores(EditedFixture(Self.name))
        let released = ["linear_attention", "full_attention", "linear_attention", "full_attention"]
        #expect(try scores(EditedFixture(Self.name) { $0["layer_types"] = released }) == base)
        #expect(try scores(EditedFixture(Self.name) { $0["eos_token_id"] = [12, 5] }) == base)
        #expect(try scores(EditedFixture(Self.name) { $0["ple_layer_ids"] = [3, 1, 1] }) == base)
        #expect(try scores(EditedFixture(Self.name) { $0["norm_topk_prob"] = false }) != base)
        // The output gate falls back on hidden_act, which must then be sigmoid or silu.
        try EditedFixture(Self.name) { $0["output_gate_type"] = NSNull(); $0["hidden_act"] = "gelu" }.expectRefused(naming: "hidden_act")
    }

    /// The analytic FLOPs of a decoding step read the keys the QSA indexer
    /// keeps, whatever the context: only its scoring of the pooled blocks
    /// (one per indexer_compress_ratio keys) grows with the context.
    @Test func decodingFLOPsReadTheKeptKeys() throws {
        let model = try EditedFixture(Self.name).load()
        let indexers = try (0..<model.layerCount).compactMap { try model.block($0).attention?.mixer.softmaxAttention?.blockIndexer }
        #expect(!indexers.isEmpty)
        let growth = try SpeedMeasurement.decodeFLOPs(model: model, plan: .none, context: 2000)
            - SpeedMeasurement.decodeFLOPs(model: model, plan: .none, context: 1000)
        #expect(growth == indexers.reduce(0) { $0 + 2 * Double(1000 / $1.compression * $1.heads * $1.dim) })
    }

    /// Without `partial_rotary_factor` the whole head is rotated
    /// (Qwen4ExpTextRotaryEmbedding's and Qwen4ExpTextConfig's default 1.0,
    /// not Qwen 3.5's 0.25), with rope_parameters null too; a rotation wider
    /// than indexer_head_dim is then refused, as Qwen4ExpTextConfig refuses it.
    @Test func absentPartialRotaryFactorRotatesTheWholeHead() throws {
        func rope(_ factor: Double?) -> (inout [String: Any]) -> Void {
            { config in
                var rope = config["rope_parameters"] as! [String: Any]
                rope["partial_rotary_factor"] = factor
                config["rope_parameters"] = rope
            }
        }
        let whole = try scores(EditedFixture(Self.name, rope(1)))
        #expect(try scores(EditedFixture(Self.name, rope(nil))) == whole)
        #expect(try scores(EditedFixture(Self.name) { $0["rope_parameters"] = NSNull() }) == whole)
        #expect(try scores(EditedFixture(Self.name, rope(0.25))) != whole)
        try EditedFixture(Self.name) { rope(nil)(&$0); $0["indexer_head_dim"] = 8 }.expectRefused(naming: "indexer_head_dim")
    }

    /// transformers hashes with the stored buffers (layer_multipliers, the
    /// tables' vocabulary sizes and offsets, int64), building only absent
    /// ones from the config: another seed beside them changes nothing (as in
    /// transformers 5.25: logits equal); an ngram_vocab_size_base giving
    /// tables of other sizes than stored is refused (a huge one before any
    /// prime is sought), naming config.json, as
    /// is a stored head lying past its table and a shard count the table's
    /// shards contradict.
    @Test func storedHashBuffersWin() throws {
        #expect(try scores(EditedFixture(Self.name) { $0["seed"] = 99 }) == scores(EditedFixture(Self.name)))
        let fixture = try EditedFixture(Self.name) { $0["ngram_vocab_size_base"] = 71 }
        #expect(throws: DroptraceError.self) { _ = try fixture.load().block(0) }
        // Tables of more rows than stored: refused before any prime is sought past the base.
        let huge = try EditedFixture(Self.name) { $0["ngram_vocab_size_base"] = 1 << 31 }
        let error = #expect(throws: DroptraceError.self) { _ = try huge.load().block(0) }
        #expect(error?.message.contains("stores 272 rows") == true, "\(String(describing: error))")
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel(Self.name)
        let original = try Checkpoint(directory: directory)
        let offsets = "model.layers.0.ple.ple_embedding.ngram_heads_offsets"
        let past: [Int64] = [0, 61, 128, 1000]
        let entries = try original.storedTensorNames.map { name in
            name == offsets
                ? SafetensorsWriter.Entry(name: name, dtype: .int64, shape: [4], bytes: past.withUnsafeBytes { Data($0) })
                : SafetensorsWriter.Entry(try original.storedTensor(name))
        }
        let file = directory.appendingPathComponent(Checkpoint.singleFileName)
        try FileManager.default.removeItem(at: file)
        try SafetensorsWriter.write(entries, to: file)
        do {
            _ = try ModelRegistry.load(try Checkpoint(directory: directory)).block(0)
            Issue.record("a stored n-gram head past its table was read")
        } catch let error as DroptraceError {
            #expect(error.message.contains("offset 1000") && error.message.contains("272 rows") && !error.message.contains("\n"), "\(error)")
        }
        let split = try EditedFixture(Self.name) { $0["split_ngram_parts"] = 3 }
        #expect(throws: DroptraceError.self) { _ = try split.load().block(0) }
        #expect(throws: DroptraceError.self) { _ = try EditedFixture(Self.name) { $0["split_ngram_parts"] = 1 }.load().block(0) }
    }

    /// A block drop moving a kept PLE layer to another place in
    /// ple_layer_ids (whose table transformers sizes otherwise) is refused
    /// for export; other block drops renumber ple_layer_ids.
    @Test func exportsKeepEveryPLELayerAtItsPlace() throws {
        let model = try EditedFixture(Self.name).load()
        let problem = model.exportProblem(DropPlan(blocks: [0]))
        #expect(problem?.contains("ple_layer_ids") == true && problem?.contains("layer 2") == true, "\(String(describing: problem))")
        for blocks: Set<Int> in [[1], [2], [3], [2, 3], [1, 2, 3]] { #expect(model.exportProblem(DropPlan(blocks: blocks)) == nil) }
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [1])
        #expect(config["ple_layer_ids"] as? [Int] == [1, 2] && config["num_hidden_layers"] as? Int == 3)
        #expect(config["layer_types"] as? [String] == ["linear_attention", "linear_attention", "indexed_attention"])
        #expect(try EditedFixture(Self.name).exportedConfig(droppingBlocks: [2])["ple_layer_ids"] as? [Int] == [1])
    }

    /// Cached decoding (as `drop` times it) gives the batched forward's
    /// states on JSONL sequence 2, whose eos tokens (12, at 7, 9 and 16)
    /// restart the n-gram history: from a prefill of 6 rows, each step
    /// crossing the eos tokens and the indexers' block boundaries (every
    /// 4th token, blocks chosen from the 12th on); from one of 14, the
    /// prefill choosing blocks itself. With the attention of a PLE layer
    /// dropped (its PLE kept), an indexed layer's attention or block
    /// dropped, a PLE layer's block dropped, and an MLP dropped.
    @Test func cachedDecodingMatchesTheForward() throws {
        let model = try EditedFixture(Self.name).load()
        let tokens = Array(FixtureFiles.jsonlSequences()[2].prefix(24))
        #expect(tokens.indices.filter { tokens[$0] == 12 } == [7, 9, 16])
        let plans = [
            DropPlan.none, DropPlan(attention: [0]), DropPlan(attention: [1]), DropPlan(attention: [1, 3]), DropPlan(blocks: [0]),
            DropPlan(blocks: [1]), DropPlan(attention: [3], mlp: [2]), DropPlan(blocks: [2, 3]),
        ]
        for prefill in [6, 14] {
            try expectCachedDecodingMatchesTheForward(model, tokens: 24, prefill: prefill, plans: plans, label: Self.name, sequence: 2)
        }
    }

    /// The wrapper (Qwen4ExpForConditionalGeneration) reads its language
    /// model as qwen4_exp_text's: the text config's keys, the weights under
    /// model.language_model., the head tied by the top-level
    /// tie_word_embeddings alone (the fixture's text config says false; the
    /// top level's false or absent leaves the head untied, whose missing
    /// lm_head is refused, where transformers would draw it at random).
    /// The vision tower is never read: the scores are the same without
    /// vision_config (null or absent) and without the model.visual. tensors;
    /// a value Qwen4ExpVisionConfig refuses is refused naming it (transformers
    /// builds the tower's config on every load); the scores are the same with keys
    /// transformers ignores at the top level, the text config's model_type
    /// omitted (Qwen4ExpConfig's text class is fixed) and its flag true.
    @Test func wrapperReadsItsLanguageModel() throws {
        let fixture = try EditedFixture(Self.wrapper)
        let model = try fixture.load()
        #expect(model is Qwen4ExpModel && model.streamWidth == 3 * model.hiddenSize)
        #expect(try (0..<4).map { try model.block($0).entryBranch != nil } == [true, false, true, false])
        #expect(try model.head().vocabularySize == 512)
        let base = try scores(fixture)
        let edits: [(inout [String: Any]) -> Void] = [
            { $0["vision_config"] = nil }, { $0["vision_config"] = NSNull() },
            { $0["eos_token_id"] = 5; $0["hc_count"] = 1 },
            { EditedModel.set(nil, at: "text_config.model_type", in: &$0) },
            { EditedModel.set(true, at: "text_config.tie_word_embeddings", in: &$0) },
            { EditedModel.set([12, 5], at: "text_config.eos_token_id", in: &$0) },
        ]
        for edit in edits {
            #expect(try scores(EditedFixture(Self.wrapper, edit)) == base)
        }
        let refused = #expect(throws: DroptraceError.self) {
            try EditedFixture(Self.wrapper) { EditedModel.set("x", at: "vision_config.depth", in: &$0) }.load()
        }
        #expect(refused?.message.contains("\"vision_config.depth\" holds \"x\"") == true)
        let withoutVision = try EditedFixture(Self.wrapper)
        let file = withoutVision.model.appendingPathComponent(Checkpoint.singleFileName)
        let original = try Checkpoint(directory: withoutVision.model)
        let kept = try original.tensorNames.filter { !$0.hasPrefix("model.visual.") }.map { SafetensorsWriter.Entry(try original.tensor($0)) }
        #expect(kept.count < original.tensorNames.count)
        try FileManager.default.removeItem(at: file)
        try SafetensorsWriter.write(kept, to: file)
        #expect(try scores(withoutVision) == base)
        let untied: [(inout [String: Any]) -> Void] = [{ $0["tie_word_embeddings"] = false }, { $0["tie_word_embeddings"] = nil }]
        for edit in untied {
            #expect(throws: DroptraceError.self) { _ = try EditedFixture(Self.wrapper, edit).load().head() }
        }
    }

    /// A block-dropped export of the wrapper renumbers its text config
    /// (ple_layer_ids one-indexed, layer_types), the top level as it was.
    @Test func wrapperExportsEditTheTextConfig() throws {
        let config = try EditedFixture(Self.wrapper).exportedConfig(droppingBlocks: [1])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["ple_layer_ids"] as? [Int] == [1, 2] && text["num_hidden_layers"] as? Int == 3)
        #expect(text["layer_types"] as? [String] == ["linear_attention", "linear_attention", "indexed_attention"])
        #expect(config["ple_layer_ids"] == nil && config["num_hidden_layers"] == nil && config["tie_word_embeddings"] as? Bool == true)
    }
}
