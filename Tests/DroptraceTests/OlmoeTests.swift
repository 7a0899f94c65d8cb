import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import ScoreStore
import Testing

/// OLMoE's config keys, its q/k norm then clip order, and its routing
/// without renormalisation.
@Suite struct OlmoeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("olmoe-f32", "clip_qkv", "-1.5"),
        Mutant("olmoe-f32", "num_experts", "0"),
        Mutant("olmoe-f32", "num_experts", "5"),
        Mutant("olmoe-f32", "num_experts", "1152921504606846976"),
        Mutant("olmoe-f32", "num_local_experts", "3"),
        Mutant("olmoe-f32", "num_experts_per_tok", "0"),
        Mutant("olmoe-f32", "num_experts_per_tok", "5"),
        // q_norm is [hidden_size]: head_dim must make heads × head_dim = hidden.
        Mutant("olmoe-f32", "head_dim", "16"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// `clip_qkv` 0, which transformers accepts: q, k and v clamp to 0, so
    /// attention adds nothing to the residual stream (importance exactly 0)
    /// and the MLPs still score; droptrace refused it.
    @Test(arguments: ["olmo-f32", "olmoe-f32"])
    func clipQKVZeroSilencesAttention(fixture: String) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel(fixture)
        let config = model.appendingPathComponent("config.json")
        // Written as a float (JSONSerialization would write 0, which the config classes refuse).
        let text = try String(contentsOf: config, encoding: .utf8)
        try #require(text.contains(#""clip_qkv": 0.5"#))
        try text.replacingOccurrences(of: #""clip_qkv": 0.5"#, with: #""clip_qkv": 0.0"#).write(to: config, atomically: true, encoding: .utf8)
        let output = scratch.path("scores.h5")
        let scored = try DroptraceCommand.run(["score", model.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--output", output.path])
        try #require(scored.status == 0, "\(scored.stderr)")
        let row = try #require(try ScoreFile.read(from: output).rows.first)
        #expect(row.attention.allSatisfy { $0 == 0 }, "\(row.attention)")
        #expect(row.mlp.allSatisfy { $0 > 0 })
    }

    /// `norm_topk_prob` false (OLMoE's default): each token's weights are its
    /// experts' softmax probabilities over all experts, summing to less than 1.
    @Test func topKWeightsAreNotRenormalised() throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model("olmoe-f32")))
        guard case .mixture(let moe)? = try model.block(0).mlp?.feedForward else {
            Issue.record("olmoe's MLP is not a mixture of experts")
            return
        }
        let width = model.hiddenSize, tokens = 5
        var generator = SystemRandomNumberGenerator()
        let x = Matrix(rows: tokens, cols: width, data: (0..<(tokens * width)).map { _ in Float.random(in: -1...1, using: &generator) })
        let logits = moe.router(x), count = moe.experts.count, k = moe.expertsPerToken
        let routing = moe.route(x)
        for token in 0..<tokens {
            let row = logits.data[(token * count)..<((token + 1) * count)]
            let top = row.max()!
            let sum = row.reduce(Float(0)) { $0 + exp($1 - top) }
            let weights = routing.weights[(token * k)..<((token + 1) * k)]
            for (slot, expert) in routing.experts[(token * k)..<((token + 1) * k)].enumerated() {
                #expect(abs(weights[token * k + slot] - exp(row[token * count + expert] - top) / sum) < 1e-6)
            }
            #expect(weights.reduce(0, +) < 1)
        }
    }

    /// q and k are clipped after their norms (OLMoE's order): norm weights
    /// of 10 push normalised values far past the clip, which still bounds them.
    @Test func clipFollowsTheQueryKeyNorm() {
        let layout = QKVLayout(numHeads: 2, numKVHeads: 1, headDim: 2)
        let hidden = 4, clip: Float = 1.5
        // q | k | v each read the input's leading columns.
        let weight = (0..<layout.width).flatMap { row in (0..<hidden).map { $0 == row % hidden ? Float(1) : 0 } }
        let attention = SelfAttention(
            qkv: Linear(weight: weight, bias: nil, inFeatures: hidden, outFeatures: layout.width), layout: layout, rotary: nil,
            output: Linear(weight: [Float](repeating: 0, count: hidden * layout.queryWidth), bias: nil, inFeatures: layout.queryWidth, outFeatures: hidden),
            scale: 1, clip: clip,
            queryKeyNorm: .acrossHeads(
                query: .rms(weight: [Float](repeating: 10, count: layout.queryWidth), eps: 1e-5),
                key: .rms(weight: [Float](repeating: 10, count: layout.keyWidth), eps: 1e-5)))
        let x = Matrix(rows: 2, cols: hidden, data: [0.1, -0.2, 0.3, 0.05, 3, -4, 0.5, 2])
        let projected = attention.projectedQKV(x, positions: [0, 1])
        #expect(projected.data.allSatisfy { abs($0) <= clip })
        // Normalised, then clipped: the first query of row 0 (0.1 of rms ≈ 0.19) is 10 · 0.53, clipped to 1.5.
        #expect(projected.data[0] == clip)
    }

    /// llama.cpp's `olmoe` GGUF (experts stacked in 3-D `ffn_*_exps`, router
    /// `ffn_gate_inp`; scripts/fixtures/make_gguf_qwen3_olmoe_fixtures.py)
    /// scores as the safetensors fixture does.
    @Test func ggufScoresLikeTheSafetensorsCheckpoint() throws {
        try expectGGUFScoresLike("olmoe-f32.gguf", safetensors: FixtureFiles.model("olmoe-f32"), modelType: "olmoe")
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("olmoe-f32")
    }

    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike("olmoe-f32")
    }
}
