@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// XGLM (`xglm-f32`): fairseq's pre-LN layer shared with OPT, the scaled
/// embedding, the sinusoid table read at position + 2 with its
/// `pad_token_id` row zeroed, and the keys XGLMConfig reads.
/// `ScoringReferenceTests` checks the fixture's scores with every other
/// family; here they are held to float32's rounding.
@Suite struct XglmTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("xglm-f32", "attention_heads", "5"),
        Mutant("xglm-f32", "num_attention_heads", "5"),
        Mutant("xglm-f32", "ffn_dim", "0"),
        // get_embedding divides log(10000) by d_model // 2 - 1.
        Mutant("xglm-f32", "d_model", "2"),
        Mutant("xglm-f32", "d_model", "3"),
        Mutant("xglm-f32", "max_position_embeddings", "9223372036854775807"),
        // Inside the vocabulary, outside the table of 256 + 2 rows whose row pad_token_id is zeroed.
        Mutant("xglm-f32", "pad_token_id", "258"),
        Mutant("xglm-f32", "pad_token_id", "-259"),
        // XGLM hands each to torch's functional dropout, which refuses them even when not training.
        Mutant("xglm-f32", "dropout", "1.5"),
        Mutant("xglm-f32", "attention_dropout", "-0.5"),
        Mutant("xglm-f32", "activation_dropout", "2"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score, JSONL and text calibration, within 1e-7 of transformers'.
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers("xglm-f32")
    }

    /// Prefill, then key/value-cache decoding (each step's position read
    /// from the sinusoid): both equal the full forward.
    @Test func prefillAndDecodingMatchTheForward() throws {
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture("xglm-f32").load(), tokens: 12, prefill: 5, plans: [.none, DropPlan(attention: [2]), DropPlan(mlp: [1])],
            label: "xglm-f32")
    }

    /// Rows of XGLMSinusoidalPositionalEmbedding.get_embedding(260, 6, 1) and
    /// get_embedding(8, 7) as transformers 5.25 computes them (float32):
    /// sin of each frequency, then cos, a zero column at odd widths, the
    /// padding row all zeros.
    @Test func sinusoidRowsAreTransformers() {
        let rows = XglmModel.sinusoids(rows: [0, 1, 2, 5, 257], width: 6, zeroedRow: 1)
        let expected: [[Float]] = [
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 0, 0, 0],
            [0.9092974066734314, 0.019998665899038315, 0.0001999999803956598, -0.416146844625473, 0.9998000264167786, 1],
            [-0.9589242935180664, 0.04997916519641876, 0.0004999999655410647, 0.28366219997406006, 0.9987502694129944, 0.9999998807907104],
            [-0.5733571648597717, 0.5409722924232483, 0.025697167962789536, 0.8193055391311646, -0.8410404324531555, 0.9996697902679443],
        ]
        for (index, row) in expected.enumerated() {
            for (got, want) in zip(rows.row(index), row) { #expect(abs(got - want) <= 1e-6, "row \(index): \(got) vs \(want)") }
        }
        let odd = XglmModel.sinusoids(rows: [3], width: 7, zeroedRow: nil)
        let oddExpected: [Float] = [0.14112000167369843, 0.029995499178767204, 0.0002999999560415745, -0.9899924993515015, 0.9995500445365906, 0.9999999403953552, 0]
        for (got, want) in zip(odd.row(0), oddExpected) { #expect(abs(got - want) <= 1e-6, "\(got) vs \(want)") }
        // get_embedding(n, 1): no frequency, one zero column.
        #expect(XglmModel.sinusoids(rows: [3], width: 1, zeroedRow: nil).data == [0])
    }

    /// Position p reads row p + 2; a `pad_token_id` of 5 zeroes the row of
    /// position 3, −1 the table's last (position 255), and the token
    /// embedding is scaled by √d_model unless `scale_embedding` is false.
    @Test func embeddingIsScaledTokensPlusSinusoidAtPositionPlusTwo() throws {
        let ids = Array(FixtureFiles.jsonlSequences()[0].prefix(6)), batch = TokenBatch(sequences: [ids])
        let model = try EditedFixture("xglm-f32").load() as! XglmModel
        let tokens = try gatherRows(try model.weights.tensor("embed_tokens.weight", [512, 64]), ids: ids, width: 64)
        let scaled = tokens.scaled(by: 8)
        #expect(try model.embed(batch).data == scaled.adding(XglmModel.sinusoids(rows: Array(2..<8), width: 64, zeroedRow: 1)).data)
        let padded = try EditedFixture("xglm-f32") { $0["pad_token_id"] = 5 }.load().embed(batch)
        #expect(Array(padded.row(3)) == Array(scaled.row(3)))
        #expect(Array(padded.row(2)) == Array(try model.embed(batch).row(2)))
        let last = try EditedFixture("xglm-f32") { $0["pad_token_id"] = -1 }.load()
        #expect(Array(try last.embed(TokenBatch(token: ids[5], position: 255)).row(0)) == Array(scaled.row(5)))
        #expect(Array(try last.embed(TokenBatch(token: ids[4], position: 254)).row(0)) != Array(scaled.row(4)))
        let unscaled = try EditedFixture("xglm-f32") { $0["scale_embedding"] = false }.load().embed(batch)
        #expect(unscaled.data == tokens.adding(XglmModel.sinusoids(rows: Array(2..<8), width: 64, zeroedRow: 1)).data)
    }

    /// XGLMConfig's defaults: GELU, the scaled embedding, pad_token_id 1
    /// (null zeroes no row), a tied head; the layer is OPT's pre-LN layer
    /// with biases, under `model.layers.`, counted by `num_layers`.
    @Test func defaultsOfXGLMConfig() throws {
        let model = try EditedFixture("xglm-f32") {
            for key in ["activation_function", "scale_embedding", "pad_token_id", "tie_word_embeddings"] { $0[key] = nil }
        }.load()
        let fixture = try EditedFixture("xglm-f32").load()
        let batch = TokenBatch(sequences: [Array(FixtureFiles.jsonlSequences()[0].prefix(4))])
        #expect(try model.embed(batch).data == fixture.embed(batch).data)
        let block = try model.block(0)
        guard case .fused(let qkv)? = block.attention?.attention.projection, case .plain(let up, _, let activation)? = block.mlp?.feedForward else {
            Issue.record("not fairseq's block")
            return
        }
        #expect(qkv.bias?.count == 3 * 64 && up.bias?.count == 128 && activation == .gelu)
        #expect(block.attention?.inputNorm != nil && block.attention?.residualNorm == nil)
        #expect(try model.head().norm != nil && model.head().vocabularySize == 512)
        #expect(model.layerNaming.prefix == "model.layers." && model.layerNaming.layerCountKeys == ["num_layers"])
        let unpadded = try EditedFixture("xglm-f32") { $0["pad_token_id"] = NSNull() }.load()
        #expect(try unpadded.embed(batch).data == fixture.embed(batch).data)
        let untied = try EditedFixture("xglm-f32") { $0["tie_word_embeddings"] = false }.load()
        let error = #expect(throws: DroptraceError.self) { try untied.head() }
        #expect(error?.message.contains("lm_head") == true, "\(String(describing: error))")
    }
}
