@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// MiniCPM3 (`minicpm3`): DeepSeek-V2's latent attention rotating by halves
/// in Llama's blocks with MiniCPM's embedding, branch and head scalings,
/// MiniCPM3Config's defaults and refusals. The scores themselves are checked
/// against transformers with every other family (`DropTests` and the
/// reference suites).
@Suite struct MiniCPM3Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "minicpm3-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "scale_emb", "null"), Mutant(name, "scale_emb", "1e39"), Mutant(name, "scale_depth", "1e39"),
        // MiniCPM3ForCausalLM divides by hidden_size / dim_model_base.
        Mutant(name, "dim_model_base", "0"),
        // Latent attention gives every query head its own keys and values.
        Mutant(name, "num_key_value_heads", "2"),
        Mutant(name, "qk_rope_head_dim", "7"), Mutant(name, "v_head_dim", "0"), Mutant(name, "kv_lora_rank", "null"),
        // Widths the tensors contradict.
        Mutant(name, "v_head_dim", "8"), Mutant(name, "q_lora_rank", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Embeddings × 3.5, branches × 1.4 / √4, the head dividing by 48 / 12.
    @Test func scalingsAsMiniCPM3Applies() throws {
        let model = try EditedFixture(Self.name).load()
        let block = try model.block(0)
        #expect(block.attention?.outputScale == Float(1.4 / 2) && block.mlp?.outputScale == Float(1.4 / 2))
        #expect(try model.head().logitDivisor == 4)
        let batch = TokenBatch(sequences: [[3, 4]])
        let scaled = try model.embed(batch)
        let plain = try EditedFixture(Self.name) { $0["scale_emb"] = 1 }.load().embed(batch)
        #expect(zip(scaled.data, plain.data).allSatisfy { $0 == $1 * 3.5 })
    }

    /// What config.json leaves out or writes null takes MiniCPM3Config's
    /// values: v_head_dim hidden_size / heads; scale_depth √L (branches × 1);
    /// dim_model_base hidden_size (no division). It reads neither
    /// `rope_interleave` nor `head_dim` (set to qk_rope_head_dim).
    @Test func omittedKeysTakeMiniCPM3ConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["v_head_dim"] = NSNull() }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["v_head_dim"] = nil }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["rope_interleave"] = true; $0["head_dim"] = 99 }.attentionScores() == base)
        let unscaled = try EditedFixture(Self.name) { $0["scale_depth"] = NSNull() }
        #expect(try unscaled.load().block(0).attention?.outputScale == 1)
        #expect(try unscaled.attentionScores() != base)
        #expect(try EditedFixture(Self.name) { $0["dim_model_base"] = NSNull() }.load().head().logitDivisor == 1)
    }

    /// An export without blocks 0 and 2 writes scale_depth × √(2 / 4), so the
    /// two kept layers still join their branches × 1.4 / √4; a null one stays null.
    @Test func blockDropExportKeepsTheBranchScale() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0, 2])
        let scaleDepth = try #require(config["scale_depth"] as? Double)
        #expect(Float(scaleDepth / 2.0.squareRoot()) == Float(1.4 / 2))
        let unscaled = try EditedFixture(Self.name) { $0["scale_depth"] = NSNull() }.exportedConfig(droppingBlocks: [0, 2])
        #expect(unscaled["scale_depth"] is NSNull)
    }
}
