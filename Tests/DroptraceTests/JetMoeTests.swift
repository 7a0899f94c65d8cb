@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// JetMoE (`jetmoe`): config refusals and JetMoeConfig's defaults, the
/// mixture of attention heads (routed query and output experts over shared
/// keys and values, then a bias) and the routed SwiGLU experts with their
/// bias, the layers' norms at 1e-6 whatever `rms_norm_eps` says, and the
/// derived head count. The scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`, `DropTests`).
@Suite struct JetMoeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("jetmoe-f32", "num_local_experts", "0"), Mutant("jetmoe-f32", "num_local_experts", "-1"),
        Mutant("jetmoe-f32", "num_local_experts", "null"),
        Mutant("jetmoe-f32", "num_local_experts", "1152921504606846976"),
        // JetMoeConfig refuses more per token than experts; torch.topk fails on fewer than 1.
        Mutant("jetmoe-f32", "num_experts_per_tok", "0"), Mutant("jetmoe-f32", "num_experts_per_tok", "-1"),
        Mutant("jetmoe-f32", "num_experts_per_tok", "5"), Mutant("jetmoe-f32", "num_experts_per_tok", "null"),
        Mutant("jetmoe-f32", "kv_channels", "0"), Mutant("jetmoe-f32", "kv_channels", "null"),
        Mutant("jetmoe-f32", "num_key_value_heads", "0"),
        Mutant("jetmoe-f32", "head_dim", "0"),
        Mutant("jetmoe-f32", "activation_function", #""swiglu""#),
        Mutant("jetmoe-f32", "rms_norm_eps", "0"),
        // Sizes the tensors contradict: the routers hold 4 rows, the heads are 2 of 12, the experts 32 wide.
        Mutant("jetmoe-f32", "num_local_experts", "8"), Mutant("jetmoe-f32", "kv_channels", "16"),
        Mutant("jetmoe-f32", "head_dim", "16"), Mutant("jetmoe-f32", "num_key_value_heads", "4"),
        Mutant("jetmoe-f32", "intermediate_size", "16"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every layer: RMSNorms at 1e-6 before both branches; the attention's
    /// queries and output projections from 2 of 4 experts per token (2 heads
    /// of 12 each, over 2 shared key/value heads), with its bias; the MLP 2
    /// of 4 SwiGLU experts of 32 by the softmax of the chosen logits, with its bias.
    @Test func blocksAreTwoMixtures() throws {
        let model = try EditedFixture("jetmoe-f32").load()
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            let branch = try #require(block.attention), mlp = try #require(block.mlp)
            for norm in [branch.inputNorm, mlp.inputNorm] {
                guard case .rms(_, let eps)? = norm else { Issue.record("layer \(layer): not an RMSNorm"); continue }
                #expect(eps == 1e-6)
            }
            guard case .headExperts(let heads) = branch.attention.projection else {
                Issue.record("layer \(layer): the attention is not a mixture of heads")
                continue
            }
            #expect(heads.queries.count == 4 && heads.outputs.count == 4 && heads.expertsPerToken == 2)
            #expect(heads.layout.numHeads == 4 && heads.layout.numKVHeads == 2 && heads.layout.headDim == 12)
            #expect(heads.keysValues.outFeatures == 48 && heads.keysValues.bias == nil && heads.router.bias == nil)
            #expect(heads.outputBias.contains { $0 != 0 }, "the fixture's attention bias is not zero")
            #expect(branch.attention.scale == 1 / Float(12).squareRoot())
            guard case .mixture(let moe) = mlp.feedForward, case .topKThenSoftmax = moe.rule,
                  case .gated(let gateUp, _, .silu) = moe.experts[0]
            else {
                Issue.record("layer \(layer): the MLP is not JetMoE's mixture")
                continue
            }
            #expect(moe.experts.count == 4 && moe.expertsPerToken == 2 && gateUp.outFeatures == 64 && moe.sharedExperts.isEmpty)
            #expect(moe.outputBias?.contains { $0 != 0 } == true, "the fixture's MLP bias is not zero")
        }
    }

    /// The attention's rows follow its router: each token's queries are its
    /// chosen experts' (head h · k + s), whatever the other rows, and its
    /// keys and values kv_proj's.
    @Test func attentionExpertsFollowTheRouter() throws {
        let model = try EditedFixture("jetmoe-f32").load()
        let attention = try #require(try model.block(1).attention?.attention)
        guard case .headExperts(let heads) = attention.projection else { throw DroptraceError("not a mixture of heads") }
        let rows = 5, d = heads.router.inFeatures
        let x = Matrix(rows: rows, cols: d, data: (0..<(rows * d)).map { Float(sin(Double($0) * 0.37)) })
        let routing = heads.route(x)
        let qkv = heads.project(x)
        // (Products of one row and of five may round their last bit apart.)
        func close(_ a: some Collection<Float>, _ b: some Collection<Float>) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) < 1e-6 }
        }
        for r in 0..<rows {
            let alone = heads.project(x.rows(r..<(r + 1)))
            #expect(close(qkv.row(r), alone.data), "row \(r) depends on the others")
        }
        // Keys and values are kv_proj's, queries the chosen experts' heads (head h · k + s).
        let one = x.rows(0..<1), alone = heads.project(one), layout = heads.layout
        #expect(close(alone.data[layout.queryWidth...], heads.keysValues(one).data))
        let query = heads.queries[routing.experts[0]](one)
        #expect(close(alone.data[0..<12], query.data[0..<12]) && close(alone.data[24..<36], query.data[12..<24]))
    }

    /// What config.json leaves out takes JetMoeConfig's defaults; its
    /// `num_attention_heads` (derived by the class, read by no forward
    /// step) does not matter whatever it says; `head_dim` is read as
    /// `kv_channels` (the class's attribute map; a disagreeing pair is
    /// refused, as for every alias); the
    /// layers' norms keep 1e-6 whatever `rms_norm_eps` says.
    @Test func omittedAndDerivedKeysAreJetMoeConfigs() throws {
        let base = try EditedFixture("jetmoe-f32").attentionScores()
        #expect(try EditedFixture("jetmoe-f32") { $0["num_attention_heads"] = 7 }.attentionScores() == base)
        #expect(try EditedFixture("jetmoe-f32") { $0["num_attention_heads"] = "x" }.attentionScores() == base)
        #expect(try EditedFixture("jetmoe-f32") { $0["num_attention_heads"] = nil }.attentionScores() == base)
        // Both spellings, disagreeing: JetMoeConfig reads head_dim, droptrace refuses the pair.
        try EditedFixture("jetmoe-f32") { $0["head_dim"] = 12; $0["kv_channels"] = 99 }.expectRefused(naming: "head_dim")
        #expect(try EditedFixture("jetmoe-f32") { $0["head_dim"] = 12; $0["kv_channels"] = nil }.attentionScores() == base)
        #expect(try EditedFixture("jetmoe-f32") { $0["rms_norm_eps"] = 0.5 }.attentionScores() == base)
        #expect(try EditedFixture("jetmoe-f32") { $0["num_experts_per_tok"] = 1 }.attentionScores() != base)
        // Absent, the experts are 8, the heads 16 of 128: the tensors refuse them.
        try EditedFixture("jetmoe-f32") { $0["num_local_experts"] = nil }.expectRefused(naming: "num_local_experts")
        try EditedFixture("jetmoe-f32") { $0["kv_channels"] = nil }.expectRefused(naming: "kv_channels")
        let two = try EditedFixture("jetmoe-f32") { $0["num_experts_per_tok"] = nil }.load()
        #expect(try mlpMixture(two, layer: 0)?.expertsPerToken == 2)
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("jetmoe-f32")
    }
}
