@testable import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
@testable import Evaluation
import Foundation
import Scoring
import TensorEngine
import Testing
import Tokenization

/// Apertus 1.5 (`apertus1p5_text`, and `apertus1p5` read as its language
/// model): Apertus's block whose head may be pruned to the first
/// `output_vocab_size` ids while the embedding keeps `vocab_size` rows, the
/// config checks of Apertus1p5TextConfig and Apertus1p5Config, where each
/// reads its weights, and the tokens perplexity and task answers cannot
/// predict beyond the pruned head. The edited configs and weights below were
/// checked against transformers 5.25 (loads, refusals, logits).
@Suite struct Apertus1p5Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        // Apertus1p5TextConfig.validate_output_vocab_size: 1 ≤ output_vocab_size ≤ vocab_size (576; the wrapper's 528).
        Mutant("apertus1p5_text-f32", "output_vocab_size", "0"),
        Mutant("apertus1p5_text-f32", "output_vocab_size", "-1"),
        Mutant("apertus1p5_text-f32", "output_vocab_size", "577"),
        Mutant("apertus1p5-f32", "text_config.output_vocab_size", "0", key: "text_config.output_vocab_size"),
        Mutant("apertus1p5-f32", "text_config.output_vocab_size", "529", key: "text_config.output_vocab_size"),
        // Its strict field takes an integer or null only.
        Mutant("apertus1p5_text-f32", "output_vocab_size", "512.0"),
        Mutant("apertus1p5_text-f32", "output_vocab_size", "true"),
        Mutant("apertus1p5_text-f32", "output_vocab_size", "\"512\""),
        Mutant("apertus1p5-f32", "text_config.output_vocab_size", "512.0", key: "text_config.output_vocab_size"),
        // The text config is checked as Apertus1p5TextConfig checks it.
        Mutant("apertus1p5-f32", "text_config.rms_norm_eps", "1", key: "text_config.rms_norm_eps"),
        Mutant("apertus1p5-f32", "text_config.tie_word_embeddings", "null", key: "text_config.tie_word_embeddings"),
        // Apertus1p5Config's token ids and offsets are integers, never null; its sub-configs objects or null.
        Mutant("apertus1p5-f32", "image_token_offset", "null"),
        Mutant("apertus1p5-f32", "audio_token_offset", "520.0"),
        Mutant("apertus1p5-f32", "image_token_id", "null"),
        Mutant("apertus1p5-f32", "vision_config", "\"x\"", key: "vision_config"),
        // validate_architecture: the visual codes end where the audio codes begin (512 + 8 = 520) …
        Mutant("apertus1p5-f32", "image_token_offset", "513"),
        Mutant("apertus1p5-f32", "audio_token_offset", "100000000000000000000"),
        Mutant("apertus1p5-f32", "vision_config.codebook_size", "9", key: "vision_config.codebook_size"),
        // … (a null vision_config takes the class's 131072 codes) …
        Mutant("apertus1p5-f32", "vision_config", "null", key: "vision_config.codebook_size"),
        // … and the audio codes end within text_config.vocab_size (520 + 8 = 528; 4096 codes by default).
        Mutant("apertus1p5-f32", "audio_config.codebook_size", "9", key: "audio_config.codebook_size"),
        Mutant("apertus1p5-f32", "audio_config", "null", key: "audio_config.codebook_size"),
        // The sub-configs' strict classes type the codebook sizes as integers.
        Mutant("apertus1p5-f32", "vision_config.codebook_size", "8.0", key: "vision_config.codebook_size"),
        Mutant("apertus1p5-f32", "audio_config.codebook_size", "null", key: "audio_config.codebook_size"),
        // validate_backbones: the audio tokenizer is WavTokenizer's encoder; AutoConfig cannot resolve a null type.
        Mutant("apertus1p5-f32", "audio_config.model_type", "\"wavtokenizer\"", key: "audio_config.model_type"),
        Mutant("apertus1p5-f32", "audio_config.model_type", "null", key: "audio_config.model_type"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Last-position logits of the first calibration sequence.
    static func lastLogits(_ model: any LanguageModel) throws -> [Float] {
        let ids = Array(FixtureFiles.jsonlSequences()[0].prefix(12))
        let hidden = try LayerwiseForward(model: model).run(TokenBatch(sequences: [ids]))
        return try model.head().logits(Matrix(rows: 1, cols: hidden.cols, data: Array(hidden.data.suffix(hidden.cols)))).data
    }

    /// The fixture with its stored head replaced by one of `rows` rows: the
    /// stored rows first, then rows of 0.25.
    static func withHead(_ fixture: EditedFixture, rows: Int) throws -> EditedFixture {
        let stored = try Checkpoint(directory: fixture.model).tensor("lm_head.weight")
        let (kept, width) = (stored.shape[0], stored.shape[1])
        let values = try stored.floats()
        try BadInputTests().rewriteWeights(fixture.model) { entries in
            entries.removeAll { $0.name == "lm_head.weight" }
            entries.append(.init(name: "lm_head.weight", shape: [rows, width]) {
                Array(values.prefix(min(rows, kept) * width)) + Array(repeating: 0.25, count: max(0, rows - kept) * width)
            })
        }
        return fixture
    }

    /// lm_head [output_vocab_size, hidden] as stored, its logits that wide;
    /// the embedding keeps all vocab_size rows (ids past the head run as input).
    @Test(arguments: [("apertus1p5_text-f32", 576), ("apertus1p5-f32", 528)])
    func thePrunedHeadHasOutputVocabSizeRows(_ name: String, vocabulary: Int) throws {
        let fixture = try EditedFixture(name)
        let model = try fixture.load()
        #expect(model is ApertusModel)
        #expect(model.vocabularySize == vocabulary && model.outputVocabularySize == 512)
        let head = try model.head()
        #expect(head.vocabularySize == 512)
        #expect(head.projection.weight == (try Checkpoint(directory: fixture.model).tensor("lm_head.weight").floats()))
        #expect(try Self.lastLogits(model).count == 512)
        var ids = FixtureFiles.jsonlSequences()[0]
        ids[1] = vocabulary - 1
        #expect(throws: Never.self) { try LayerwiseForward(model: model).run(TokenBatch(sequences: [ids])) }
    }

    /// Apertus1p5TextConfig reads output_vocab_size equal to vocab_size as
    /// none: both then size the head [vocab_size, hidden]; a stored head of
    /// another height than the config's is refused naming the weights, as
    /// transformers fails on its size mismatch.
    @Test func anUnprunedHeadHasVocabSizeRows() throws {
        for value in [576, nil] as [Int?] {
            let fixture = try Self.withHead(
                EditedFixture("apertus1p5_text-f32") { $0["output_vocab_size"] = value.map { $0 as Any } ?? NSNull() }, rows: 576)
            let model = try fixture.load()
            #expect(model.outputVocabularySize == 576)
            #expect(try model.head().vocabularySize == 576)
            // The first 512 logits are the pruned head's.
            let pruned = try Self.lastLogits(EditedFixture("apertus1p5_text-f32").load())
            #expect(zip(try Self.lastLogits(model).prefix(512), pruned).allSatisfy { abs($0 - $1) <= 1e-5 })
        }
        let refusals = [
            try EditedFixture("apertus1p5_text-f32") { $0["output_vocab_size"] = NSNull() },
            try Self.withHead(EditedFixture("apertus1p5_text-f32"), rows: 576),
            try EditedFixture("apertus1p5-f32") { EditedModel.set(NSNull(), at: "text_config.output_vocab_size", in: &$0) },
        ]
        for fixture in refusals {
            let error = try #require(ExpertTensorTests.loadError(fixture.model))
            #expect(error.contains("model.safetensors") && error.contains("'lm_head.weight'") && !error.contains("\n"), "\(error)")
        }
    }

    /// Tied (the top-level tie_word_embeddings, which alone decides the
    /// wrapper's head), a head the checkpoint does not store is the whole
    /// embedding: vocab_size logits, whatever output_vocab_size says, as
    /// transformers ties the parameter; a stored head is read. The text
    /// config's flag does not tie the wrapper's head (default false).
    @Test func aTiedHeadIsTheWholeEmbedding() throws {
        func headless(_ name: String, _ change: @escaping (inout [String: Any]) -> Void) throws -> EditedFixture {
            let fixture = try EditedFixture(name, change)
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "lm_head.weight" } }
            return fixture
        }
        for (name, embedding) in [
            ("apertus1p5-f32", "model.language_model.embed_tokens.weight"), ("apertus1p5_text-f32", "model.embed_tokens.weight"),
        ] {
            let tied = try headless(name) { $0["tie_word_embeddings"] = true }.load()
            let rows = tied.vocabularySize
            #expect(tied.outputVocabularySize == rows)
            #expect(try tied.head().vocabularySize == rows)
            #expect(try tied.head().projection.weight == Checkpoint(directory: FixtureFiles.model(name)).tensor(embedding).floats())
            // Tied with a stored head: the stored one (transformers does not tie parameters of other values).
            let stored = try EditedFixture(name) { $0["tie_word_embeddings"] = true }.load()
            #expect(stored.outputVocabularySize == 512)
            #expect(try stored.head().vocabularySize == 512)
        }
        let textTies = try headless("apertus1p5-f32") { EditedModel.set(true, at: "text_config.tie_word_embeddings", in: &$0) }
        #expect(throws: DroptraceError.self) { try textTies.load().head() }
        #expect(throws: DroptraceError.self) { try headless("apertus1p5-f32") { $0["tie_word_embeddings"] = nil }.load().head() }
    }

    /// Apertus1p5Config builds its text config as Apertus1p5TextConfig
    /// whatever `text_config.model_type` names (transformers 5.25 runs it
    /// with the same logits); the keys the text config omits take that
    /// class's defaults (rms_norm_eps 1e-5, the fixture's).
    @Test func theWrapperReadsItsOwnTextConfigClass() throws {
        let base = try EditedFixture("apertus1p5-f32").attentionScores()
        for type in ["apertus", "llama", "apertus1p5_text"] {
            #expect(try EditedFixture("apertus1p5-f32") { EditedModel.set(type, at: "text_config.model_type", in: &$0) }
                .attentionScores() == base, "\(type)")
        }
        var withoutEps = try EditedFixture("apertus1p5-f32") { config in
            var text = config["text_config"] as! [String: Any]
            text["rms_norm_eps"] = nil
            config["text_config"] = text
        }
        #expect(try withoutEps.attentionScores() == base)
        withoutEps = try EditedFixture("apertus1p5_text-f32") { $0["rms_norm_eps"] = nil }
        #expect(try withoutEps.attentionScores() == EditedFixture("apertus1p5_text-f32").attentionScores())
    }

    /// Where transformers finds the weights: the text model under `model.`,
    /// none, or the wrapper's `model.language_model.` (its conversion
    /// mapping strips `language_model`); the wrapper under
    /// `model.language_model.` and the names the legacy conversion renames
    /// onto it. Elsewhere transformers initialises a random model: refused.
    @Test func weightsAreReadUnderTheirPrefixes() throws {
        let text = try EditedFixture("apertus1p5_text-f32").attentionScores()
        for stored in ["model.language_model.", ""] {
            let fixture = try EditedFixture("apertus1p5_text-f32")
            try BadInputTests().renameWeights(fixture.model, prefix: "model.", to: stored)
            #expect(try fixture.attentionScores() == text, "\(stored)")
        }
        let wrapper = try EditedFixture("apertus1p5-f32").attentionScores()
        for legacy in ["model.language_model.model.", "language_model.model.model."] {
            let fixture = try EditedFixture("apertus1p5-f32")
            try BadInputTests().renameWeights(fixture.model, prefix: "model.language_model.", to: legacy)
            #expect(try fixture.attentionScores() == wrapper, "\(legacy)")
        }
        // The wrapper's checkpoint with its text config for config.json: transformers loads it as
        // Apertus1p5TextForCausalLM (the tokenizers' tensors ignored), the same language model.
        let unwrapped = try EditedFixture("apertus1p5-f32") { config in
            config = config["text_config"] as! [String: Any]
            config["model_type"] = "apertus1p5_text"
        }
        #expect(try unwrapped.attentionScores() == wrapper)
        #expect(try Self.lastLogits(unwrapped.load()) == Self.lastLogits(EditedFixture("apertus1p5-f32").load()))
        for (name, from, to) in [
            ("apertus1p5_text-f32", "model.", "language_model.model."), ("apertus1p5-f32", "model.language_model.", "language_model.model."),
            ("apertus1p5-f32", "model.language_model.", "model."),
        ] {
            let fixture = try EditedFixture(name)
            try BadInputTests().renameWeights(fixture.model, prefix: from, to: to)
            let error = try #require(ExpertTensorTests.loadError(fixture.model))
            #expect(error.contains("missing tensor"), "\(name) \(to): \(error)")
        }
    }

    /// A block-drop export renumbers the section the language model's keys
    /// are in and keeps the pruned head's output_vocab_size.
    @Test func blockDropExportsKeepThePrunedHead() throws {
        let text = try EditedFixture("apertus1p5_text-f32").exportedConfig(droppingBlocks: [1])
        #expect(text["num_hidden_layers"] as? Int == 3 && text["output_vocab_size"] as? Int == 512)
        let wrapper = try EditedFixture("apertus1p5-f32").exportedConfig(droppingBlocks: [1])
        let section = try #require(wrapper["text_config"] as? [String: Any])
        #expect(section["num_hidden_layers"] as? Int == 3 && section["output_vocab_size"] as? Int == 512)
        #expect(wrapper["num_hidden_layers"] == nil && wrapper["image_token_offset"] as? Int == 512)
    }

    /// Calibration ids past the pruned head but within the embedding are
    /// scored (an input runs); perplexity refuses one it would predict
    /// (transformers' cross-entropy fails: "Target … is out of bounds"),
    /// naming the window, and takes it as a window's first token.
    @Test func perplexityRefusesLabelsBeyondThePrunedHead() throws {
        let model = try EditedFixture("apertus1p5_text-f32").load()
        var sequences = FixtureFiles.jsonlSequences()
        sequences[1][5] = 540
        let scores = try ImportanceScorer(model: model).score(sequences, calibrationPath: "calib")
        let finite = scores.attention.allSatisfy { $0.isFinite }
        #expect(finite)
        let error = try #require(throws: DroptraceError.self) {
            try LanguageModelLoss.evaluate(model: model, plan: .none, windows: sequences, sourcePath: "eval.jsonl")
        }
        #expect(error.path == "eval.jsonl" && !error.message.contains("\n"))
        #expect(error.message.hasPrefix("window 2: token id 540 is to be predicted") && error.message.contains("output_vocab_size 512"),
                "\(error)")
        var first = FixtureFiles.jsonlSequences()
        first[1][0] = 540
        #expect(try LanguageModelLoss.evaluate(model: model, plan: .none, windows: first, sourcePath: "eval.jsonl").perplexity.isFinite)
    }

    /// `drop --eval` reads the windows before any scoring and refuses one
    /// with a label past the head there, naming the file and its line.
    @Test func dropRefusesSuchEvaluationTextBeforeScoring() throws {
        let scratch = try ScratchDirectory()
        let eval = try scratch.write("{\"input_ids\": [510, 20, 30]}\n{\"input_ids\": [510, 40, 550, 7]}\n", to: "eval.jsonl")
        let result = try DroptraceCommand.run([
            "drop", FixtureFiles.model("apertus1p5_text-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--target", "attention", "--count", "1", "--eval", eval.path,
        ])
        #expect(result.status == 1, "\(result.stderr)")
        #expect(result.stderr.contains("\(eval.path): line 2: token id 550 is to be predicted"), "\(result.stderr)")
        #expect(!result.stderr.contains("scoring"), "refused only after scoring: \(result.stderr)")
    }

    /// lm-evaluation-harness gathers an answer's log-probabilities from the
    /// logits: an answer token past a (here further) pruned head is refused,
    /// naming the document, before anything is scored.
    @Test func taskAnswersBeyondThePrunedHeadAreRefused() throws {
        let fixture = try Self.withHead(EditedFixture("apertus1p5_text-f32") { $0["output_vocab_size"] = 100 }, rows: 100)
        let model = try fixture.load()
        #expect(model.outputVocabularySize == 100)
        let tokenizer = try EvaluationTokenizer.load(for: model.checkpoint, purpose: "evaluation", requestedBy: "test")
        let suite = try TaskSuite([EvaluationTests.request("piqa", shots: 0)], numFewshot: nil)
        let error = try #require(throws: DroptraceError.self) { try suite.evaluate(model: model, plan: .none, tokenizer: tokenizer) }
        #expect(error.message.contains("is beyond the model's 100 logits") && !error.message.contains("\n"), "\(error)")
    }
}
