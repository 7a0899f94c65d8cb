import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// ERNIE 4.5's and Helium's defaults and the keys their transformers
/// classes read; the scores themselves are checked against transformers
/// with every other family (`ScoringReferenceTests`).
@Suite struct InterleavedRotaryFamiliesTests {
    /// ERNIE's `use_bias` covers every projection (null: none); Helium's
    /// `attention_bias` q/k/v only, `mlp_bias` the MLP.
    @Test func biasesFollowEachClassesKeys() throws {
        #expect(try blockZeroBiases(EditedFixture("ernie4_5-f32")) == (true, true, true))
        #expect(try blockZeroBiases(EditedFixture("ernie4_5-f32") { $0["use_bias"] = NSNull() }) == (false, false, false))
        #expect(try blockZeroBiases(EditedFixture("helium-f32")) == (true, false, true))
        #expect(try blockZeroBiases(EditedFixture("helium-f32") { $0["attention_bias"] = nil; $0["mlp_bias"] = nil }) == (false, false, false))
    }

    /// Without `tie_word_embeddings` ERNIE ties its head (the fixture stores
    /// none), Helium does not; a Helium head_dim other than hidden_size /
    /// heads is refused (its o_proj takes hidden_size inputs).
    @Test func defaultsOfEachClass() throws {
        #expect(try EditedFixture("ernie4_5-f32") { $0["tie_word_embeddings"] = nil }.load().head().vocabularySize == 512)
        let untied = try EditedFixture("helium-f32") { $0["tie_word_embeddings"] = nil }.load()
        #expect(try untied.head().vocabularySize == 512)
        let error = #expect(throws: DroptraceError.self) { try EditedFixture("helium-f32") { $0["head_dim"] = 16 }.load() }
        #expect(error?.message.contains("HeliumAttention's o_proj") == true, "\(String(describing: error))")
    }
}
