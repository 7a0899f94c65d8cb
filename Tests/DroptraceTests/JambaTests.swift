import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Jamba (`jamba`): attention on the layers attn_layer_period and
/// attn_layer_offset pick, a Mamba-1 mixer with RMSNorms on dt, B and C on
/// the others; routed experts on the layers expert_layer_period and
/// expert_layer_offset pick, a SwiGLU MLP elsewhere; JambaConfig's defaults.
/// The fixture: layers 0, 1 and 3 Mamba, 2 attention; 1 and 3 routed.
@Suite struct JambaTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "jamba-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "attn_layer_period", "0"),
        Mutant(name, "attn_layer_offset", "4"),
        Mutant(name, "attn_layer_offset", "-1"),
        Mutant(name, "expert_layer_period", "-2"),
        Mutant(name, "expert_layer_offset", "2"),
        Mutant(name, "num_experts", "-1"),
        Mutant(name, "num_experts", "3"),
        Mutant(name, "num_experts_per_tok", "5"),
        Mutant(name, "num_experts_per_tok", "0"),
        Mutant(name, "mamba_d_state", "0"),
        Mutant(name, "mamba_d_state", "9223372036854775807"),
        Mutant(name, "mamba_d_conv", "0"),
        Mutant(name, "mamba_expand", "-1"),
        Mutant(name, "mamba_expand", "9223372036854775807"),
        Mutant(name, "mamba_dt_rank", "0"),
        Mutant(name, "mamba_dt_rank", "4"),
        Mutant(name, "mamba_dt_rank", "\"big\""),
        Mutant(name, "mamba_dt_rank", "null"),
        Mutant(name, "mamba_dt_rank", "9223372036854775807"),
        Mutant(name, "rms_norm_eps", "0"),
        Mutant(name, "num_local_experts", "8"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layer 2 is attention without positions, the others Mamba mixers of
    /// the fixture's sizes (dt rank "auto": ⌈48 / 16⌉); 1 and 3 route 2 of 4
    /// experts by their unrenormalised softmax, 0 and 2 are SwiGLU MLPs.
    @Test func layersFollowThePeriodsAndOffsets() throws {
        let model = try EditedFixture(Self.name).load()
        for index in [0, 1, 3] {
            guard case .mamba(let mixer)? = try model.block(index).attention?.mixer else {
                Issue.record("layer \(index) is not a Mamba layer")
                continue
            }
            #expect(mixer.sizes == MambaSizes(innerWidth: 96, stateSize: 8, convolutionKernel: 4, timeStepRank: 3))
            #expect(mixer.convolutionBias != nil && mixer.timeStepNorm != nil && mixer.inputNorm != nil && mixer.outputNorm != nil)
        }
        let attention = try #require(try model.block(2).attention?.attention)
        #expect(attention.rotary == nil)
        for index in [1, 3] {
            guard case .mixture(let moe)? = try model.block(index).mlp?.feedForward else {
                Issue.record("layer \(index) is not routed")
                continue
            }
            #expect(moe.experts.count == 4 && moe.expertsPerToken == 2)
            guard case .softmaxTopK(renormalize: false) = moe.rule else {
                Issue.record("layer \(index) renormalises its top-k weights")
                continue
            }
        }
        for index in [0, 2] {
            guard case .gated? = try model.block(index).mlp?.feedForward else {
                Issue.record("layer \(index) is not a dense SwiGLU")
                continue
            }
        }
    }

    /// JambaConfig's defaults: attention every 8th layer from 4 (none of
    /// the fixture's four, so layer 2 needs Mamba weights it lacks), experts
    /// every 2nd from 1; with one expert every layer is dense (JambaMLP).
    @Test func defaultsAreJambaConfigs() throws {
        #expect(throws: DroptraceError.self) {
            try EditedFixture(Self.name) {
                $0["attn_layer_period"] = nil
                $0["attn_layer_offset"] = nil
            }.load().block(2)
        }
        let defaultExperts = try EditedFixture(Self.name) {
            $0["expert_layer_period"] = nil
            $0["expert_layer_offset"] = nil
        }.load()
        guard case .mixture? = try defaultExperts.block(1).mlp?.feedForward else {
            Issue.record("layer 1 is not routed by default")
            return
        }
        // One expert: JambaConfig gives every layer 1, and JambaMLP (dense weights layer 1 lacks).
        #expect(throws: DroptraceError.self) { try EditedFixture(Self.name) { $0["num_experts"] = 1 }.load().block(1) }
        // num_local_experts stands for num_experts.
        let aliased = try EditedFixture(Self.name) {
            $0["num_experts"] = nil
            $0["num_local_experts"] = 4
        }.load()
        guard case .mixture(let moe)? = try aliased.block(3).mlp?.feedForward else {
            Issue.record("layer 3 is not routed with num_local_experts")
            return
        }
        #expect(moe.experts.count == 4)
    }

    /// A block-drop export rewrites both periods and offsets so that every
    /// kept layer keeps its kind, and the export loads as the same layers.
    @Test func exportKeepsEveryKeptLayersKind() throws {
        let fixture = try EditedFixture(Self.name)
        // Kept 1, 2, 3: Mamba/routed, attention/dense, Mamba/routed.
        let exported = try fixture.exportedConfig(droppingBlocks: [0])
        #expect((exported["num_hidden_layers"] as? Int) == 3)
        #expect((exported["attn_layer_period"] as? Int) == 2 && (exported["attn_layer_offset"] as? Int) == 1)
        #expect((exported["expert_layer_period"] as? Int) == 2 && (exported["expert_layer_offset"] as? Int) == 0)
        // Kept 0, 2, 3: the one routed layer is the last.
        let other = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [1])
        #expect((other["attn_layer_period"] as? Int) == 2 && (other["attn_layer_offset"] as? Int) == 1)
        #expect((other["expert_layer_period"] as? Int) == 3 && (other["expert_layer_offset"] as? Int) == 2)
    }

    /// Kept layers whose kinds no period and offset give are refused
    /// before anything is written: without block 2 the routed layers are
    /// 1 and 2 of 0, 1, 2 (renumbered), which no rule picks.
    @Test func exportRefusesKindsNoPeriodGives() throws {
        let fixture = try EditedFixture(Self.name)
        let model = try fixture.load()
        #expect(model.exportProblem(DropPlan(blocks: [1, 2])) == nil)
        let problem = try #require(model.exportProblem(DropPlan(blocks: [2])))
        #expect(problem.contains("expert_layer_period") && problem.contains("expert_layer_offset"))
        #expect(throws: DroptraceError.self) {
            try DroppedModelExport.write(model: model, plan: DropPlan(blocks: [2]), to: fixture.scratch.path("export"))
        }
        #expect(!FileManager.default.fileExists(atPath: fixture.scratch.path("export").path))
        // Eight layers, attention on 1, 3, 5, 7: without block 4, on 1, 3, 4, 6 of the renumbered seven.
        let rule = PeriodicLayers(periodKey: "attn_layer_period", offsetKey: "attn_layer_offset", period: 2, offset: 1, layers: 8)
        #expect(rule.fitting(removing: [4]) == nil)
        #expect(rule.fitting(removing: [3, 4]).map { [$0.period, $0.offset] } == [2, 1])
        #expect(rule.fitting(removing: [0]).map { [$0.period, $0.offset] } == [2, 0])
        // None picked: an offset past the last layer.
        #expect(rule.fitting(removing: [1, 3, 5, 7]).map { [$0.period, $0.offset] } == [5, 4])
    }

    /// Prefill then one token at a time carries each Mamba layer's last
    /// convolution inputs and state: the result is the batched forward's,
    /// also with a Mamba or an attention layer's module dropped.
    @Test func cachedDecodingMatchesTheForward() throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(Self.name)))
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12,
            plans: [.none, DropPlan(attention: [1]), DropPlan(attention: [2]), DropPlan(blocks: [0]), DropPlan(mlp: [3])],
            label: Self.name)
    }

    /// Fused 3-D experts (`feed_forward.experts.gate_up_proj` / `down_proj`,
    /// transformers' modules) score exactly as the per-expert tensors
    /// `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike(
            Self.name, from: "feed_forward.experts.", router: "feed_forward.router", fusedRouter: "feed_forward.router",
            fused: "feed_forward.experts.")
    }

    /// Every score of the fixture close to transformers'.
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.name)
    }
}
