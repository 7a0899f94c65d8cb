import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Youtu-LLM: DeepSeek-V3's latent attention with a dense MLP in every
/// layer, YoutuConfig's defaults; the scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`).
@Suite struct YoutuTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("youtu-f32", "rms_norm_eps", "0.0"),
        Mutant("youtu-f32", "kv_lora_rank", "0"),
        Mutant("youtu-f32", "qk_rope_head_dim", "7"),
        Mutant("youtu-f32", "q_lora_rank", "-1"),
        Mutant("youtu-f32", "num_key_value_heads", "2"),
        Mutant("youtu-f32", "rope_interleave", "\"yes\""),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every layer's MLP is the dense SwiGLU, whatever mixture-of-experts
    /// keys config.json carries (YoutuConfig does not read them); the
    /// attention is latent; the head is tied unless config.json unties it.
    @Test func everyLayerIsDense() throws {
        let model = try EditedFixture("youtu-f32") {
            $0["first_k_dense_replace"] = 1
            $0["n_routed_experts"] = 8
            $0["tie_word_embeddings"] = nil
        }.load()
        for layer in 0..<4 {
            let block = try model.block(layer)
            guard case .gated? = block.mlp?.feedForward, case .latent? = block.attention?.attention.projection else {
                Issue.record("layer \(layer): not a latent attention with a dense gated MLP")
                return
            }
        }
        #expect(try model.head().vocabularySize == 512)
        let export = try EditedFixture("youtu-f32").exportedConfig(droppingBlocks: [1])
        #expect(export["first_k_dense_replace"] == nil && export["num_hidden_layers"] as? Int == 3)
    }

    /// rope_interleave (true unless given; null is false) decides which
    /// pairs of the rope part rotate.
    @Test func ropeInterleaveIsRead() throws {
        let windows = FixtureFiles.jsonlSequences()
        func scores(_ value: Any?) throws -> [Double] {
            let model = try EditedFixture("youtu-f32") { $0["rope_interleave"] = value }.load()
            return try ImportanceScorer(model: model).score(windows, calibrationPath: "c").attention
        }
        let absent = try scores(nil)
        #expect(try absent == scores(true))
        #expect(try scores(NSNull()) == scores(false))
        #expect(try absent != scores(false))
    }
}
