import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// StarCoder2's config keys: LayerNorms with biases (`norm_epsilon`), one
/// window on every layer, biases by `use_bias`, the head tied by default.
@Suite struct Starcoder2Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("starcoder2-f32", "norm_epsilon", "0"),
        Mutant("starcoder2-f32", "norm_epsilon", "-1e-5"),
        // A window of 0 leaves a query no key to attend to.
        Mutant("starcoder2-f32", "sliding_window", "0"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The fixture's window of 8 is on every layer (Starcoder2Model builds
    /// one sliding mask for all of them); `null` removes it everywhere.
    @Test func slidingWindowIsOnEveryLayer() throws {
        let model = try EditedFixture("starcoder2-f32").load()
        let windows = try (0..<model.layerCount).map { try model.block($0).attention?.attention.slidingWindow }
        #expect(windows == Array(repeating: 8, count: model.layerCount))
        let unwindowed = try EditedFixture("starcoder2-f32") { $0["sliding_window"] = NSNull() }.load()
        #expect(try (0..<model.layerCount).allSatisfy { try unwindowed.block($0).attention?.attention.slidingWindow == nil })
    }

    /// Norms are LayerNorms with their stored biases, and `use_bias: false`
    /// reads no projection bias (transformers ignores the stored ones).
    @Test func layerNormsAndBiases() throws {
        let block = try EditedFixture("starcoder2-f32").load().block(0)
        guard case .layer(_, let bias, _)? = block.attention?.inputNorm else {
            Issue.record("input_layernorm is not a LayerNorm")
            return
        }
        #expect(bias.contains { $0 != 0 })
        guard case .plain(let up, _, .geluTanh)? = block.mlp?.feedForward else {
            Issue.record("the MLP is not c_proj(gelu_pytorch_tanh(c_fc x))")
            return
        }
        #expect(up.bias != nil)
        let unbiased = try EditedFixture("starcoder2-f32") { $0["use_bias"] = false }.load().block(0)
        guard case .plain(let plainUp, _, _)? = unbiased.mlp?.feedForward else { return }
        #expect(plainUp.bias == nil)
    }

    /// Without `tie_word_embeddings` the head is the embedding, as
    /// Starcoder2Config ties it by default (the fixture stores no lm_head).
    @Test func headIsTiedByDefault() throws {
        let model = try EditedFixture("starcoder2-f32") { $0["tie_word_embeddings"] = nil }.load()
        #expect(try model.head().vocabularySize == 512)
        let untied = try EditedFixture("starcoder2-f32") { $0["tie_word_embeddings"] = false }.load()
        let error = #expect(throws: DroptraceError.self) { try untied.head() }
        #expect(error?.message.contains("lm_head") == true, "\(String(describing: error))")
    }
}
