@testable import Architectures
@testable import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// LongCat-Flash (`longcat_flash`): config refusals and LongcatFlashConfig's
/// reading of `num_hidden_layers`, the layers as the decoder layers'
/// attention sublayers (2i and 2i + 1), the shortcut MoE added with the
/// second sublayer's MLP and reading the first one's post-attention norm,
/// its zero-computation experts, the latent scales, and the exports
/// transformers can load (whole decoder layers only). The scores themselves,
/// dropped modules included, are checked against transformers with every
/// other family (`ScoringReferenceTests`, `DropTests`).
@Suite struct LongcatFlashTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "longcat_flash-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "num_layers", "0"), Mutant(name, "num_layers", "-1"), Mutant(name, "num_layers", "null"),
        // LongcatFlashConfig halves a written num_hidden_layers (floor): 1 leaves no decoder layer.
        Mutant(name, "num_hidden_layers", "1"), Mutant(name, "num_hidden_layers", "0"), Mutant(name, "num_hidden_layers", "-3"),
        Mutant(name, "num_layers", "1000000000"),
        Mutant(name, "q_lora_rank", "null"), Mutant(name, "q_lora_rank", "0"),
        Mutant(name, "kv_lora_rank", "0"), Mutant(name, "qk_rope_head_dim", "7"),
        // The rotary table is head_dim wide; the split of each head is qk_nope_head_dim + qk_rope_head_dim.
        Mutant(name, "head_dim", "16"), Mutant(name, "qk_head_dim", "20"),
        Mutant(name, "num_key_value_heads", "2"),
        Mutant(name, "n_routed_experts", "0"), Mutant(name, "zero_expert_num", "-1"), Mutant(name, "zero_expert_num", "null"),
        Mutant(name, "zero_expert_num", "9223372036854775807"),
        Mutant(name, "moe_topk", "0"), Mutant(name, "moe_topk", "7"), Mutant(name, "expert_ffn_hidden_size", "0"),
        Mutant(name, "routed_scaling_factor", "0"), Mutant(name, "rms_norm_eps", "0"), Mutant(name, "ffn_hidden_size", "0"),
        Mutant(name, "hidden_act", #""swiglu""#),
        // Sizes the tensors contradict: 2 decoder layers, routers of 4 + 2 rows, experts 16 wide, MLPs 64, latents 24 and 16.
        Mutant(name, "num_layers", "3"), Mutant(name, "num_hidden_layers", "6"),
        Mutant(name, "n_routed_experts", "5"), Mutant(name, "zero_expert_num", "3"),
        Mutant(name, "expert_ffn_hidden_size", "8"), Mutant(name, "ffn_hidden_size", "32"),
        Mutant(name, "q_lora_rank", "12"), Mutant(name, "kv_lora_rank", "8"), Mutant(name, "v_head_dim", "8"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layer 2i + s is decoder layer i's sublayer s: its attention
    /// `self_attn.s` (the latent norms scaled by √(48 / 24) and √(48 / 16)),
    /// its MLP `mlps.s`; layer 2i leaves its MLP's input for the MoE, which
    /// layer 2i + 1's MLP holds with `post_attention_layernorm.0`: 2 of 4
    /// experts and 2 zero-computation ones, softmax scores × 1.5, the
    /// correction bias choosing only.
    @Test func sublayersAreLayers() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.layerCount == 4)
        let checkpoint = model.checkpoint
        for index in 0..<4 {
            let block = try model.block(index)
            let mlp = try #require(block.mlp), attention = try #require(block.attention?.attention)
            #expect(block.leavesMLPInput == (index % 2 == 0))
            guard case .latent(let latent) = attention.projection, case .lowRank(_, .rms(let queryNorm, _), _) = latent.query,
                  case .rms(let keyValueNorm, _) = latent.keyValueNorm
            else {
                Issue.record("layer \(index): not a low-rank latent attention")
                continue
            }
            let p = "model.layers.\(index / 2).self_attn.\(index % 2)."
            let storedQuery = try checkpoint.tensor(p + "q_a_layernorm.weight").floats()
            let storedKeyValue = try checkpoint.tensor(p + "kv_a_layernorm.weight").floats()
            #expect(zip(queryNorm, storedQuery).allSatisfy { $0 == $1 * Float(2.0.squareRoot()) })
            #expect(zip(keyValueNorm, storedKeyValue).allSatisfy { $0 == $1 * Float(3.0.squareRoot()) })
            guard index % 2 == 1 else {
                #expect(mlp.shortcut == nil)
                continue
            }
            let shortcut = try #require(mlp.shortcut)
            guard case .rms(let norm, _) = shortcut.inputNorm, case .mixture(let moe) = shortcut.feedForward,
                  case .groupLimited(let rule) = moe.rule
            else {
                Issue.record("layer \(index): the shortcut is not LongCat-Flash's MoE")
                continue
            }
            #expect(norm == (try checkpoint.tensor("model.layers.\(index / 2).post_attention_layernorm.0.weight").floats()))
            #expect(moe.experts.count == 4 && moe.identityExperts == 2 && moe.expertsPerToken == 2 && moe.router.outFeatures == 6)
            #expect(!rule.normalizesWeights && rule.scalingFactor == 1.5 && rule.groups == 1)
            if case .softmax = rule.scoring {} else { Issue.record("layer \(index): not a softmax router") }
            #expect(rule.selectionBias?.contains { $0 != 0 } == true, "the fixture's correction bias is zero")
        }
    }

    /// A zero-computation expert gives the token back times its weight: a
    /// row routed only to them comes out as itself times their weights' sum.
    @Test func zeroExpertsReturnTheirInput() throws {
        let model = try EditedFixture(Self.name).load()
        guard case .mixture(let moe)? = try model.block(1).mlp?.shortcut?.feedForward else {
            Issue.record("no shortcut MoE")
            return
        }
        let d = moe.router.inFeatures
        let x = Matrix(rows: 64, cols: d, data: (0..<(64 * d)).map { Float(sin(Double($0) * 0.21)) })
        let routing = moe.route(x), output = moe(x)
        var seen = false
        for r in 0..<x.rows {
            let slots = (0..<2).map { (routing.experts[r * 2 + $0], routing.weights[r * 2 + $0]) }
            guard slots.allSatisfy({ $0.0 >= 4 }) else { continue }
            seen = true
            let weight = slots.reduce(Float(0)) { $0 + $1.1 }
            #expect(zip(output.row(r), x.row(r)).allSatisfy { abs($0 - $1 * weight) < 1e-6 })
        }
        // Rows routed partly to zero experts are covered by the routing reference; these are the pure ones.
        #expect(seen, "no row was routed to zero experts alone")
    }

    /// The analytic FLOPs count a pick of a zero-computation expert as no
    /// compute: of the k = 2 picks, 2 · 4 / (4 + 2) reach the 4 routed experts.
    @Test func zeroExpertsCostNoFLOPs() throws {
        let model = try EditedFixture(Self.name).load()
        guard case .mixture(let moe)? = try model.block(1).mlp?.shortcut?.feedForward else {
            Issue.record("no shortcut MoE")
            return
        }
        let expert = SpeedMeasurement.cost(moe.experts[0])
        #expect(expert == 2 * 48 * 32 + 2 * 16 * 48)
        #expect(SpeedMeasurement.cost(.mixture(moe)) == 2 * 48 * 6 + Double(2 * 4) / 6 * expert)
    }

    /// A written num_hidden_layers counts the sublayers and sets num_layers
    /// to half of it (floor), whatever num_layers says; the export writes
    /// the count back under the key config.json gives it.
    @Test func numHiddenLayersIsHalvedAsTheConfigClassDoes() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["num_hidden_layers"] = 4; $0["num_layers"] = 99 }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["num_hidden_layers"] = 5 }.attentionScores() == base)
        let written = try EditedFixture(Self.name) { $0["num_hidden_layers"] = 4 }
        #expect(try written.exportedConfig(droppingBlocks: [0, 1])["num_hidden_layers"] as? Int == 2)
        #expect(try EditedFixture(Self.name).exportedConfig(droppingBlocks: [2, 3])["num_layers"] as? Int == 1)
    }

    /// The MoE reads the stream layer 2i's MLP reads: dropping block 2i is
    /// dropping its attention and its MLP (the MoE then reads the stream
    /// entering layer 2i, normalised as before); dropping layer 2i + 1's MLP
    /// drops the MoE with it, dropping layer 2i's leaves the MoE running.
    @Test func dropsMoveTheShortcutAsDesigned() throws {
        let model = try EditedFixture(Self.name).load()
        let batch = TokenBatch(sequences: Array(FixtureFiles.jsonlSequences().prefix(2)))
        func output(_ plan: DropPlan) throws -> [Float] { try LayerwiseForward(model: model, plan: plan).run(batch).data }
        #expect(try output(DropPlan(blocks: [0])) == output(DropPlan(attention: [0], mlp: [0])))
        #expect(try output(DropPlan(blocks: [2])) == output(DropPlan(attention: [2], mlp: [2])))
        let full = try output(.none)
        #expect(try output(DropPlan(mlp: [0])) != full)
        // Without layer 1's MLP the MoE goes too: layer 0's MLP then changes nothing the MoE reads.
        let moeless = try output(DropPlan(mlp: [1]))
        #expect(moeless != full)
    }

    /// Exports: both sublayers of a decoder layer go as that decoder layer
    /// (the later one renamed into its place, num_layers 1); any other plan
    /// is refused before anything is written, naming config.json.
    @Test func exportsRemoveWholeDecoderLayers() throws {
        let fixture = try EditedFixture(Self.name)
        let model = try fixture.load()
        #expect(model.exportProblem(DropPlan(blocks: [0, 1])) == nil)
        #expect(model.exportProblem(DropPlan(blocks: [0, 1, 2, 3])) == nil)
        for plan in [DropPlan(blocks: [1]), DropPlan(blocks: [1, 2]), DropPlan(attention: [0]), DropPlan(mlp: [3]), DropPlan(attention: [2], blocks: [0, 1])] {
            let problem = try #require(model.exportProblem(plan), "\(plan) is not refused")
            #expect(problem.contains("decoder layer"))
        }
        let export = fixture.scratch.path("export")
        try DroppedModelExport.write(model: model, plan: DropPlan(blocks: [0, 1]), to: export)
        let exported = try Checkpoint(directory: export)
        #expect(exported.tensorNames.contains("model.layers.0.mlp.router.classifier.weight"))
        #expect(!exported.tensorNames.contains { $0.hasPrefix("model.layers.1.") })
        #expect(try exported.tensor("model.layers.0.mlps.1.up_proj.weight").floats()
            == model.checkpoint.tensor("model.layers.1.mlps.1.up_proj.weight").floats())
        let reloaded = try ModelRegistry.load(exported)
        #expect(reloaded.layerCount == 2)
        do {
            try DroppedModelExport.write(model: model, plan: DropPlan(blocks: [1]), to: fixture.scratch.path("refused"))
            Issue.record("a single sublayer's block was exported")
        } catch let error as DroptraceError {
            #expect(error.path == fixture.configPath && error.message.contains("decoder layer"))
        }
    }

    /// Router and experts against transformers' shortcut MoE of decoder layer 1 (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers(Self.name, unordered: true)
    }
}
