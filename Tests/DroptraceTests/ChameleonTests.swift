@testable import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Testing

/// Chameleon (`chameleon-f32`, Chameleon-7B's pre-norm blocks;
/// `chameleon_swin-f32`, Chameleon-30B's norms after the branches, with
/// biases): per-head LayerNorm-ed queries and keys, 16 image tokens
/// (ids 176–191) named by `vocabulary_map` whose logits are masked.
@Suite struct ChameleonTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let names = ["chameleon-f32", "chameleon_swin-f32"]

    static let mutants: [Mutant] = [
        // ChameleonModel cannot be built without the map; an image token outside the vocabulary; the sizes.
        Mutant("chameleon-f32", "vocabulary_map", "null", key: "vocabulary_map"),
        Mutant("chameleon-f32", "vocabulary_map", "{\"IMGIMGAZ\": 600}", key: "vocabulary_map"),
        Mutant("chameleon-f32", "vocabulary_map", "{\"IMGIMGAZ\": \"x\"}", key: "vocabulary_map"),
        Mutant("chameleon-f32", "hidden_size", "50", key: "hidden_size"),
        Mutant("chameleon-f32", "rms_norm_eps", "0.0", key: "rms_norm_eps"),
        Mutant("chameleon_swin-f32", "swin_norm", "1", key: "swin_norm"),
        Mutant("chameleon_swin-f32", "num_key_value_heads", "3", key: "num_key_value_heads"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score within 1e-7 of transformers', both layer kinds.
    @Test(arguments: names)
    func scoresMatchTransformersClosely(name: String) throws {
        try expectScoresMatchTransformers(name)
    }

    /// The head never predicts an image token: their logits are float32's
    /// lowest value, the others' as the projection gives them.
    @Test func imageTokensAreNeverPredicted() throws {
        let model = try EditedFixture("chameleon-f32").load()
        let head = try model.head()
        #expect(head.suppressedTokens == Array(176..<192))
        let hidden = try LayerwiseForward(model: model, plan: .none).run(TokenBatch(sequences: [Array(FixtureFiles.jsonlSequences()[0].prefix(4))]))
        let logits = head.logits(hidden)
        for r in 0..<logits.rows {
            let row = logits.row(r)
            #expect((176..<192).allSatisfy { row[row.startIndex + $0] == -.greatestFiniteMagnitude })
            #expect(row.enumerated().filter { !(176..<192).contains($0.offset) }.allSatisfy { $0.element > -1e30 })
        }
    }

    /// Chameleon-30B's layers normalise each branch's output instead of its
    /// input; decoding token by token matches the forward with drops.
    @Test(arguments: names)
    func cachedDecodingMatchesTheForward(name: String) throws {
        let model = try EditedFixture(name).load()
        let block = try model.block(0)
        let swin = name == "chameleon_swin-f32"
        #expect((block.attention?.inputNorm == nil) == swin && (block.attention?.outputNorm == nil) != swin)
        #expect((block.mlp?.inputNorm == nil) == swin && (block.mlp?.outputNorm == nil) != swin)
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 10, prefill: 4, plans: [.none, DropPlan(attention: [1]), DropPlan(blocks: [0, 2])], label: name)
    }
}
