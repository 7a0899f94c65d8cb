import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// OPT's pre-LN (`opt-f32`) and post-LN (`opt_postln-f32`, OPT-350m's
/// `do_layer_norm_before: false`) blocks, its embedding projections and the
/// keys OPTConfig reads. `ScoringReferenceTests` checks the scores of both
/// fixtures with every other family; here they are held to float32's
/// rounding.
@Suite struct OptTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("opt-f32", "num_attention_heads", "5"),
        Mutant("opt-f32", "ffn_dim", "0"),
        Mutant("opt-f32", "word_embed_proj_dim", "0"),
        Mutant("opt-f32", "word_embed_proj_dim", "40"),
        Mutant("opt-f32", "max_position_embeddings", "4611686018427387904"),
        Mutant("opt-f32", "hidden_size", "4294967296"),
        // OPTDecoderLayer hands `dropout` to torch's functional dropout, which refuses it even when not training.
        Mutant("opt_postln-f32", "dropout", "1.5"),
        Mutant("opt_postln-f32", "do_layer_norm_before", "0"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score of both fixtures, JSONL and text calibration, within
    /// 1e-7 of transformers' (measured: 1.7e-8 pre-LN, 3.9e-9 post-LN).
    @Test(arguments: ["opt-f32", "opt_postln-f32"])
    func scoresMatchTransformersClosely(model name: String) throws {
        try expectScoresMatchTransformers(name)
    }

    /// Pre-LN: each norm before its sublayer, the decoder's final norm, and
    /// project_in / project_out around the 64-wide stream (48-wide
    /// embedding). Post-LN: each norm after its add, owned by its branch, no
    /// final norm.
    @Test func normsSitWhereDoLayerNormBeforeSays() throws {
        let pre = try EditedFixture("opt-f32").load()
        let preBlock = try pre.block(1)
        #expect(preBlock.attention?.inputNorm != nil && preBlock.attention?.residualNorm == nil)
        #expect(preBlock.mlp?.inputNorm != nil && preBlock.mlp?.residualNorm == nil)
        let preHead = try pre.head()
        #expect(preHead.norm != nil && preHead.projectOut?.inFeatures == 64 && preHead.projection.inFeatures == 48)

        let post = try EditedFixture("opt_postln-f32").load()
        let postBlock = try post.block(1)
        #expect(postBlock.attention?.inputNorm == nil && postBlock.attention?.residualNorm != nil)
        #expect(postBlock.mlp?.inputNorm == nil && postBlock.mlp?.residualNorm != nil)
        #expect(try post.head().norm == nil)
        #expect(post.layerNaming.attention == ["self_attn.", "self_attn_layer_norm."])
        #expect(post.layerNaming.mlp == ["fc1.", "fc2.", "final_layer_norm."])
        #expect(post.layerNaming.prefix == "model.decoder.layers.")
    }

    /// A post-LN block with its attention dropped skips the attention's
    /// norm too: the MLP reads the block's input.
    @Test func droppedPostLNBranchSkipsItsNorm() throws {
        let model = try EditedFixture("opt_postln-f32").load()
        let x = try model.embed(TokenBatch(sequences: [Array(FixtureFiles.jsonlSequences()[0].prefix(6))]))
        let dropped = try model.block(2, skipping: DropPlan(attention: [2]))
        #expect(dropped.attention == nil)
        let step = dropped(x, index: 2) { _, _ in Issue.record("attended"); return x }
        #expect(step.mlpInput.data == x.data)
        let mlp = try #require(dropped.mlp)
        let norm = try #require(mlp.residualNorm)
        let expected = norm(x.adding(mlp(x)))
        #expect(step.output.data == expected.data)
    }

    /// OPTConfig's defaults: pre-LN, a final norm unless
    /// `_remove_final_layer_norm`, biases, affine LayerNorms, a tied head.
    @Test func defaultsOfOPTConfig() throws {
        let model = try EditedFixture("opt-f32") {
            for key in ["do_layer_norm_before", "_remove_final_layer_norm", "enable_bias", "layer_norm_elementwise_affine",
                        "tie_word_embeddings", "activation_function"] {
                $0[key] = nil
            }
        }.load()
        let block = try model.block(0)
        guard case .fused(let qkv)? = block.attention?.attention.projection else {
            Issue.record("no fused q/k/v projection")
            return
        }
        #expect(qkv.bias?.count == 3 * 64 && block.attention?.inputNorm != nil)
        #expect(try model.head().norm != nil && model.head().vocabularySize == 512)
        let removed = try EditedFixture("opt-f32") { $0["_remove_final_layer_norm"] = true }.load()
        #expect(try removed.head().norm == nil)
        // Without a stored head an untied model is refused, naming lm_head.
        let untied = try EditedFixture("opt-f32") { $0["tie_word_embeddings"] = false }.load()
        let error = #expect(throws: DroptraceError.self) { try untied.head() }
        #expect(error?.message.contains("lm_head") == true, "\(String(describing: error))")
    }

    /// `enable_bias: false` reads no biases, `layer_norm_elementwise_affine:
    /// false` no norm weights: LayerNorms that only normalise.
    @Test func biasesAndNormParametersFollowTheirKeys() throws {
        let model = try EditedFixture("opt-f32") {
            $0["enable_bias"] = false
            $0["layer_norm_elementwise_affine"] = false
        }.load()
        let block = try model.block(0)
        guard case .fused(let qkv)? = block.attention?.attention.projection,
              case .plain(let up, let down, _)? = block.mlp?.feedForward,
              case .layer(let weight, let bias, _)? = block.attention?.inputNorm
        else {
            Issue.record("not OPT's block")
            return
        }
        #expect(qkv.bias == nil && block.attention?.attention.output.bias == nil && up.bias == nil && down.bias == nil)
        #expect(weight.allSatisfy { $0 == 1 } && bias.allSatisfy { $0 == 0 })
    }

    /// Position p reads row p + 2 of embed_positions.
    @Test func positionsReadTwoRowsOn() throws {
        let model = try EditedFixture("opt_postln-f32").load()
        let checkpoint = try Checkpoint(directory: FixtureFiles.model("opt_postln-f32"))
        let table = try checkpoint.tensor("model.decoder.embed_positions.weight", shape: [258, 48]).floats()
        let a = try model.embed(TokenBatch(token: 7, position: 3)), b = try model.embed(TokenBatch(token: 7, position: 4))
        // Same token, one position on: the embeddings differ by rows 6 and 5 of the table.
        let width = 48
        let difference: [Float] = zip(b.data, a.data).map { $0 - $1 }
        let expected: [Float] = (0..<width).map { table[6 * width + $0] - table[5 * width + $0] }
        let worst = zip(difference, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= 1e-5)
    }
}
