@testable import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Testing

/// RWKV-4 (`rwkv-f32`): six blocks of time mixing 32 wide and channel
/// mixing 160 wide beside the hidden 48, the first block's `pre_ln` on the
/// embeddings, the stream halved after blocks 1, 3 and 5 (`rescale_every` 2).
@Suite struct RwkvTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "rwkv-f32"

    static let mutants: [Mutant] = [
        // The widths are confirmed by the tensors; RwkvConfig's kinds and ranges.
        Mutant(name, "attention_hidden_size", "33", key: "attention_hidden_size"),
        Mutant(name, "attention_hidden_size", "null", key: "hidden_size"),
        Mutant(name, "intermediate_size", "192", key: "intermediate_size"),
        Mutant(name, "intermediate_size", "null", key: "4 × hidden_size"),
        Mutant(name, "attention_hidden_size", "0", key: "attention_hidden_size"),
        Mutant(name, "layer_norm_epsilon", "0.0", key: "layer_norm_epsilon"),
        Mutant(name, "rescale_every", "2.5", key: "rescale_every"),
        Mutant(name, "num_hidden_layers", "7", key: "num_hidden_layers"),
        Mutant(name, "hidden_size", "64", key: "hidden_size"),
        Mutant(name, "context_length", "0", key: "context_length"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score within 1e-7 of transformers' (rescaled as RwkvModel runs at inference).
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.name)
    }

    /// The widths and the position limit come from RwkvConfig's keys:
    /// `context_length` is its `max_position_embeddings`.
    @Test func widthsAndPositionsFollowTheConfig() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.maxPositions == 256)
        let block = try model.block(0)
        guard case .rwkvTimeMixing(let mixing)? = block.attention?.mixer, case .rwkvChannelMixing(let channels)? = block.mlp?.feedForward else {
            Issue.record("block 0 is not RWKV's")
            return
        }
        #expect(mixing.width == 32 && mixing.hidden == 48 && channels.key.outFeatures == 160)
    }

    /// Decoding one token at a time carries the time mixing's last row and
    /// WKV state and the channel mixing's last row as the batched forward
    /// computes them, with modules and blocks dropped (block 0's `pre_ln`
    /// stays; removing block 1 moves the halvings).
    @Test func cachedDecodingMatchesTheForward() throws {
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture(Self.name).load(), tokens: 12, prefill: 5,
            plans: [.none, DropPlan(attention: [0, 2]), DropPlan(mlp: [1, 4]), DropPlan(blocks: [0]), DropPlan(blocks: [1, 2])],
            label: Self.name)
    }

    /// An export without block 0 gives its `pre_ln` to the first kept block,
    /// where transformers builds it; the other blocks move down.
    @Test func exportWithoutBlockZeroKeepsTheEmbeddingNorm() throws {
        let fixture = try EditedFixture(Self.name)
        let export = fixture.scratch.path("export")
        try DroppedModelExport.write(model: try fixture.load(), plan: DropPlan(blocks: [0]), to: export)
        let original = try Checkpoint(directory: fixture.model), exported = try Checkpoint(directory: export)
        let names = exported.tensorNames
        #expect(names.filter { $0.contains("pre_ln") }.sorted() == ["rwkv.blocks.0.pre_ln.bias", "rwkv.blocks.0.pre_ln.weight"])
        #expect(try exported.tensor("rwkv.blocks.0.pre_ln.weight").floats() == original.tensor("rwkv.blocks.0.pre_ln.weight").floats())
        #expect(try exported.tensor("rwkv.blocks.0.ln1.weight").floats() == original.tensor("rwkv.blocks.1.ln1.weight").floats())
        #expect(!names.contains { $0.hasPrefix("rwkv.blocks.5.") })
        // Dropping block 0's modules keeps the norm in place.
        let modules = fixture.scratch.path("modules")
        try DroppedModelExport.write(model: try fixture.load(), plan: DropPlan(attention: [0], mlp: [0]), to: modules)
        let kept = try Checkpoint(directory: modules).tensorNames
        #expect(kept.contains("rwkv.blocks.0.pre_ln.weight") && !kept.contains { $0.hasPrefix("rwkv.blocks.0.ln1.") || $0.hasPrefix("rwkv.blocks.0.attention.") })
    }
}
