@testable import Architectures
@testable import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// DeepSeek-V3.2 (`deepseek_v32`): its config refusals and
/// DeepseekV32Config's defaults, and DeepSeek Sparse Attention — each query
/// attending only to the `index_topk` keys its indexer chooses, in the full
/// forward, in prefill and in key/value-cache decoding. The scores
/// themselves are checked against transformers with every other family
/// (`DropTests` and the reference suites).
@Suite struct DeepseekV32Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        // No key kept leaves a query nothing to attend to.
        Mutant("deepseek_v32-f32", "index_topk", "0"), Mutant("deepseek_v32-f32", "index_topk", "-1"),
        Mutant("deepseek_v32-f32", "index_topk", "null"), Mutant("deepseek_v32-f32", "index_n_heads", "0"),
        Mutant("deepseek_v32-f32", "index_head_dim", "0"),
        // The indexer rotates qk_rope_head_dim (8) columns of each head.
        Mutant("deepseek_v32-f32", "index_head_dim", "4"),
        Mutant("deepseek_v32-f32", "index_n_heads", "4611686018427387904"),
        // Sizes the indexer's tensors contradict.
        Mutant("deepseek_v32-f32", "index_n_heads", "16"), Mutant("deepseek_v32-f32", "index_head_dim", "32"),
        // The attention and its indexer read the query latent.
        Mutant("deepseek_v32-f32", "q_lora_rank", "null"), Mutant("deepseek_v32-f32", "q_lora_rank", "0"),
        // transformers' cache builds an indexed layer per entry.
        Mutant("deepseek_v32-f32", "layer_types", #"["full_attention", "indexed_attention", "indexed_attention", "indexed_attention"]"#),
        Mutant("deepseek_v32-f32", "layer_types", #"["indexed_attention"]"#),
        Mutant("deepseek_v32-f32", "first_k_dense_replace", "-1"), Mutant("deepseek_v32-f32", "first_k_dense_replace", "null"),
        Mutant("deepseek_v32-f32", "n_group", "3"), Mutant("deepseek_v32-f32", "num_experts_per_tok", "9"),
        Mutant("deepseek_v32-f32", "kv_lora_rank", "8"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    func scores(_ fixture: EditedFixture) throws -> [Double] {
        let scored = try ImportanceScorer(model: try fixture.load()).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
        return scored.attention + scored.mlp + scored.block
    }

    /// The fixture's index_topk (12) is shorter than its sequences: the
    /// indexer's choice moves the scores, and a top-k as long as the
    /// longest sequence is dense attention.
    @Test func indexerChoosesTheKeys() throws {
        let config = try JSONSerialization.jsonObject(
            with: Data(contentsOf: FixtureFiles.model("deepseek_v32-f32").appendingPathComponent("config.json"))) as! [String: Any]
        let topK = config["index_topk"] as! Int, longest = FixtureFiles.jsonlSequences().map(\.count).max()!
        #expect(topK < longest)
        let sparse = try scores(EditedFixture("deepseek_v32-f32"))
        let dense = try scores(EditedFixture("deepseek_v32-f32") { $0["index_topk"] = longest })
        #expect(zip(sparse, dense).map { abs($0 - $1) }.max()! > 1e-4)
        #expect(try scores(EditedFixture("deepseek_v32-f32") { $0["index_topk"] = 1_000_000 }) == dense)
    }

    /// What config.json leaves out takes DeepseekV32Config's defaults:
    /// index_topk 2048 (every key of the fixture's sequences), three dense
    /// layers (the fixture's router on layer 1 contradicts them); head_dim
    /// and rope_interleave are not read (the pairs always interleave).
    @Test func omittedKeysTakeDeepseekV32ConfigDefaults() throws {
        let longest = FixtureFiles.jsonlSequences().map(\.count).max()!
        let dense = try scores(EditedFixture("deepseek_v32-f32") { $0["index_topk"] = longest })
        #expect(try scores(EditedFixture("deepseek_v32-f32") { $0["index_topk"] = nil }) == dense)
        do {
            let model = try EditedFixture("deepseek_v32-f32") { $0["first_k_dense_replace"] = nil; $0["mlp_layer_types"] = nil }.load()
            _ = try model.block(1)
            Issue.record("layer 1 read as routed")
        } catch let error as DroptraceError {
            #expect(error.message.contains("layers.1.mlp"), "\(error)")
        }
        let base = try scores(EditedFixture("deepseek_v32-f32"))
        #expect(try scores(EditedFixture("deepseek_v32-f32") { $0["rope_interleave"] = false; $0["head_dim"] = 32 }) == base)
    }

    /// Prefill longer than index_topk, then key/value-cache decoding with
    /// the indexer's keys cached: both equal the full forward.
    @Test func prefillAndDecodingChooseTheForwardsKeys() throws {
        let model = try EditedFixture("deepseek_v32-f32").load()
        let tokens = Array(FixtureFiles.jsonlSequences()[0].prefix(30))
        let decoder = try IncrementalDecoder(model: model, plan: .none, capacity: tokens.count)
        for plan in [DropPlan.none, DropPlan(attention: [2])] {
            let expected = try LayerwiseForward(model: model, plan: plan).run(TokenBatch(sequences: [tokens]))
            let dropped = decoder.dropping(plan, capacity: tokens.count)
            let prefilled = dropped.prefill(embedded: try dropped.embedded(Array(tokens.prefix(20))))
            let row19 = expected.data[(19 * expected.cols)..<(20 * expected.cols)]
            #expect(zip(prefilled.data, row19).map { abs($0 - $1) }.max()! < 1e-4, "\(plan) prefill")
            var last = prefilled
            for position in 20..<tokens.count { last = try dropped.step(token: tokens[position], position: position) }
            #expect(zip(last.data, expected.data.suffix(expected.cols)).map { abs($0 - $1) }.max()! < 1e-4, "\(plan) decode")
        }
    }

    /// A block-dropped export keeps one indexed layer type per kept layer.
    @Test func blockDropRewritesLayerTypes() throws {
        let exported = try EditedFixture("deepseek_v32-f32").exportedConfig(droppingBlocks: [1])
        #expect(exported["layer_types"] as? [String] == Array(repeating: "indexed_attention", count: 3))
        #expect(exported["mlp_layer_types"] as? [String] == ["dense", "sparse", "sparse"])
    }
}
