import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Cohere's parallel block off one bias-free LayerNorm, its interleaved
/// rotary, per-head q/k norms with weights of their own, and `logit_scale`.
@Suite struct CohereTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("cohere-f32", "layer_norm_eps", "0"),
        // CohereConfig types both `float | None`; its model computes with them.
        Mutant("cohere-f32", "layer_norm_eps", "null"),
        Mutant("cohere-f32", "logit_scale", "null"),
        Mutant("cohere-f32", "logit_scale", "1e39"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Both branches read the one input_layernorm, mean-centred without a
    /// bias; the q/k norms have one weight vector per head.
    @Test func normsAndParallelBlock() throws {
        let block = try EditedFixture("cohere-f32").load().block(1)
        guard case .parallel = block.residual,
            case .layer(let w1, let b1, _)? = block.attention?.inputNorm, case .layer(let w2, _, _)? = block.mlp?.inputNorm
        else {
            Issue.record("not a parallel block off LayerNorms")
            return
        }
        #expect(w1 == w2 && b1.allSatisfy { $0 == 0 })
        guard case .eachHead(.layer(let q, _, _), .layer(let k, _, _))? = block.attention?.attention.queryKeyNorm else {
            Issue.record("no per-head q/k norms with weights of their own")
            return
        }
        #expect(q.count == 4 * 12 && k.count == 2 * 12)
        #expect(q[0..<12] != q[12..<24])
        let plain = try EditedFixture("cohere-f32") { $0["use_qk_norm"] = NSNull() }.load().block(1)
        #expect(plain.attention?.attention.queryKeyNorm == nil)
    }

    /// Logits are multiplied by logit_scale (0.0625 in the fixture), so
    /// perplexity depends on it.
    @Test func logitsAreMultipliedByLogitScale() throws {
        let scaled = try EditedFixture("cohere-f32").load(), raw = try EditedFixture("cohere-f32") { $0["logit_scale"] = 1.0 }.load()
        let ids = Array(FixtureFiles.jsonlSequences()[0].prefix(12))
        func lastLogits(_ model: any LanguageModel) throws -> [Float] {
            let hidden = try LayerwiseForward(model: model).run(TokenBatch(sequences: [ids]))
            return try model.head().logits(Matrix(rows: 1, cols: hidden.cols, data: Array(hidden.data.suffix(hidden.cols)))).data
        }
        let a = try lastLogits(scaled), b = try lastLogits(raw)
        #expect(a.count == b.count && zip(a, b).allSatisfy { $0 == $1 * 0.0625 })
        #expect(zip(a, b).contains { abs($0 - $1) > 0.1 })
    }

    /// cohere2: sliding layers rotate within the window, full layers take no
    /// positions; without layer_types every 4th layer is full (the
    /// `sliding_window_pattern` default), and no q/k norms are read, whatever
    /// config.json says of `use_qk_norm`.
    @Test func cohere2FullLayersTakeNoPositions() throws {
        func layers(_ fixture: EditedFixture) throws -> [(window: Int?, rotates: Bool, normed: Bool)] {
            let model = try fixture.load()
            return try (0..<4).map { index in
                let attention = try #require(try model.block(index).attention?.attention)
                return (attention.slidingWindow, attention.rotary != nil, attention.queryKeyNorm != nil)
            }
        }
        let given = try layers(EditedFixture("cohere2-f32") { $0["use_qk_norm"] = true })
        #expect(given.map(\.window) == [8, nil, 8, nil] && given.map(\.rotates) == [true, false, true, false])
        #expect(given.allSatisfy { !$0.normed })
        let derived = try layers(EditedFixture("cohere2-f32") { $0["layer_types"] = nil })
        #expect(derived.map(\.window) == [8, 8, 8, nil] && derived.map(\.rotates) == [true, true, true, false])
        // Cohere2Config computes head_dim itself, and requires a window (its model builds a sliding mask).
        for (edit, phrase) in [
            ({ (config: inout [String: Any]) in config["head_dim"] = 16 }, "head_dim 16: Cohere2Config replaces it"),
            ({ (config: inout [String: Any]) in config["sliding_window"] = NSNull() }, "sliding_window is null"),
            ({ (config: inout [String: Any]) in config["layer_types"] = nil; config["sliding_window_pattern"] = 0 }, "give layer_types"),
        ] {
            let error = #expect(throws: DroptraceError.self) { try EditedFixture("cohere2-f32", edit).load() }
            #expect(error?.message.contains(phrase) == true, "\(String(describing: error))")
        }
    }

    /// Without `tie_word_embeddings` the head is the embedding, as
    /// CohereConfig ties it by default (the fixture stores no lm_head).
    @Test func headIsTiedByDefault() throws {
        let model = try EditedFixture("cohere-f32") { $0["tie_word_embeddings"] = nil }.load()
        #expect(try model.head().vocabularySize == 512)
        let untied = try EditedFixture("cohere-f32") { $0["tie_word_embeddings"] = false }.load()
        let error = #expect(throws: DroptraceError.self) { try untied.head() }
        #expect(error?.message.contains("lm_head") == true, "\(String(describing: error))")
    }
}
