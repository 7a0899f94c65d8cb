@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Ergo (`ergo`): config refusals and ErgoConfig's defaults, the released
/// spellings (`local_attention_window`, flat rope parameters), the residual
/// gates, the fused attention rotating interleaved pairs on its sliding
/// layers only, the dense then sigmoid-routed ReLU² experts with their own
/// norms, and what an export spells out. The scores themselves are checked
/// against transformers with every other family (`ScoringReferenceTests`,
/// `DropTests`).
@Suite struct ErgoTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("ergo-f32", "rms_norm_eps", "0"),
        Mutant("ergo-f32", "num_experts", "0"), Mutant("ergo-f32", "num_experts", "null"),
        Mutant("ergo-f32", "num_experts", "4611686018427387904"),
        Mutant("ergo-f32", "num_experts_per_tok", "0"), Mutant("ergo-f32", "num_experts_per_tok", "9"),
        Mutant("ergo-f32", "moe_intermediate_size", "0"), Mutant("ergo-f32", "shared_intermediate_size", "0"),
        Mutant("ergo-f32", "first_dense_intermediate_size", "0"),
        Mutant("ergo-f32", "moe_routed_scaling_factor", "null"),
        Mutant("ergo-f32", "local_attention_window", "0"), Mutant("ergo-f32", "local_attention_window", "null"),
        // Its square root is not real (transformers' tensor of it is complex).
        Mutant("ergo-f32", "global_attention_scale", "-2.0"),
        // ErgoConfig derives layer_types as (i + 1) % n.
        Mutant("ergo-f32", "global_attention_every_n_layers", "0"),
        Mutant("ergo-f32", "mlp_layer_types", #"["dense", "sparse"]"#),
        Mutant("ergo-f32", "mlp_layer_types", #"["dense", "moe", "sparse", "sparse"]"#),
        Mutant("ergo-f32", "layer_types", #"["sliding_attention", "chunked_attention", "full_attention", "full_attention"]"#),
        // Sizes the tensors contradict.
        Mutant("ergo-f32", "num_experts", "16"), Mutant("ergo-f32", "moe_intermediate_size", "32"),
        Mutant("ergo-f32", "shared_intermediate_size", "48"), Mutant("ergo-f32", "first_dense_intermediate_size", "64"),
        Mutant("ergo-f32", "num_key_value_heads", "4"), Mutant("ergo-f32", "num_dense_blocks", "2"),
        // The rotary table is head_dim wide, ErgoAttention's heads hidden_size / num_attention_heads.
        Mutant("ergo-f32", "head_dim", "16"),
        // A nested rope_parameters without an entry for a type in use fails in ErgoRotaryEmbedding.
        Mutant("ergo-f32", "rope_parameters", #"{"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}"#,
               key: "rope_parameters.full_attention"),
        // A scaled rotation's narrower table fails in ErgoAttention.
        Mutant("ergo-f32", "rope_parameters", #"{"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5}"#,
               key: "partial_rotary_factor"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The gate's two factors: σ(w) and √(1 + σ(w)) · e^(−softplus(w)/2),
    /// softplus returning w itself above 20 as torch's does.
    @Test func residualGateMixes() {
        let gate = ResidualGate(weight: [0, 30, -3])
        #expect(gate.branchScale[0] == 0.5 && abs(gate.residualScale[0] - Float((1.5 / 2).squareRoot())) < 1e-7)
        #expect(abs(gate.residualScale[1] - Float(2.0.squareRoot() * exp(-15.0))) < 1e-12)
        let joined = gate.join(Matrix(rows: 1, cols: 3, data: [1, 1, 1]), Matrix(rows: 1, cols: 3, data: [2, 2, 2]))
        #expect(joined.data == (0..<3).map { gate.branchScale[$0] * 2 + gate.residualScale[$0] * 1 })
    }

    /// Every branch has its input and output RMSNorms and joins through its
    /// gate; the attention is one fused projection with per-head q/k norms,
    /// rotating (in float64 angles) and windowed on the sliding layers only;
    /// layer 0's MLP is dense ReLU², the others route by sigmoid plus the
    /// stored correction bias, renormalised and scaled, over experts that
    /// each end at their own RMSNorm, beside the normed shared expert.
    @Test func gatedSandwichBlocksThenNormedExperts() throws {
        let model = try EditedFixture("ergo-f32").load() as! ErgoModel, config = try FixtureFiles.config("ergo-f32")
        #expect(model.layerTypes == ["sliding_attention", "full_attention", "sliding_attention", "full_attention"])
        #expect(model.mlpTypes == ["dense", "sparse", "sparse", "sparse"])
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            let branch = try #require(block.attention), mlp = try #require(block.mlp)
            #expect(branch.inputNorm != nil && branch.outputNorm != nil && mlp.inputNorm != nil && mlp.outputNorm != nil)
            for join in [branch.join, mlp.join] {
                guard case .gated? = join else { Issue.record("layer \(layer): no residual gate"); continue }
            }
            let attention = branch.attention!
            guard case .perHead? = attention.queryKeyNorm, case .fused(let qkv) = attention.projection else {
                Issue.record("layer \(layer): no per-head q/k norms")
                continue
            }
            #expect(qkv.bias == nil && attention.output.bias == nil && attention.outputGate == nil)
            let sliding = model.layerTypes[layer] == "sliding_attention"
            #expect(attention.slidingWindow == (sliding ? config["local_attention_window"] as? Int : nil))
            #expect((attention.rotary != nil) == sliding, "layer \(layer): only sliding layers rotate")
            #expect(attention.rotary.map(\.anglesInDouble) ?? true)
            let moe = try mlpMixture(model, layer: layer)
            guard layer >= 1 else {
                guard case .plain(_, _, .reluSquared) = mlp.feedForward else {
                    Issue.record("layer 0's MLP is not a dense ReLU² MLP")
                    continue
                }
                continue
            }
            let mixture = try #require(moe, "layer \(layer) routes")
            let rule = try #require(groupLimitedRule(mixture))
            #expect(mixture.experts.count == 8 && mixture.expertsPerToken == 2 && mixture.sharedExperts.count == 1)
            #expect(rule.scoring == .sigmoid && rule.groups == 1 && rule.normalizesWeights && rule.scalingFactor == 2.5)
            #expect(rule.selectionBias?.contains { $0 != 0 } == true, "the fixture's correction bias is not zero")
            for expert in mixture.experts + mixture.sharedExperts {
                guard case .parallel(let parts) = expert, parts.count == 1, parts[0].inputNorm == nil, parts[0].outputNorm != nil,
                      case .plain(_, _, .reluSquared) = parts[0].feedForward
                else {
                    Issue.record("layer \(layer): an expert without its output norm")
                    break
                }
            }
        }
    }

    /// The released spellings and the forms transformers saves are one
    /// model: `local_attention_window` or `sliding_window`, flat rope
    /// parameters (the sliding layers', the full ones without positions) or
    /// nested ones with a null full entry, layer and MLP types derived or
    /// spelled out. A nested entry for the full layers makes them rotate.
    @Test func releasedAndSavedSpellingsAreOneModel() throws {
        let released = try EditedFixture("ergo-f32").attentionScores()
        let saved = try EditedFixture("ergo-f32") {
            $0["sliding_window"] = $0.removeValue(forKey: "local_attention_window")
            $0["rope_parameters"] = ["sliding_attention": $0["rope_parameters"]!, "full_attention": NSNull()]
            $0["layer_types"] = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
            $0["mlp_layer_types"] = ["dense", "sparse", "sparse", "sparse"]
        }.attentionScores()
        #expect(saved == released)
        // rope_scaling, when set, stands for rope_parameters (convert_rope_params_to_dict).
        let scaling = try EditedFixture("ergo-f32") { $0["rope_scaling"] = $0.removeValue(forKey: "rope_parameters") }.attentionScores()
        #expect(scaling == released)
        let rotating = try EditedFixture("ergo-f32") {
            let sliding = $0["rope_parameters"]!
            $0["rope_parameters"] = ["sliding_attention": sliding, "full_attention": sliding]
            $0["layer_types"] = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
        }.load() as! ErgoModel
        #expect(Set(rotating.rotaries.keys) == ["sliding_attention", "full_attention"])
    }

    /// What config.json leaves out takes ErgoConfig's defaults: every fourth
    /// layer full, the first dense, no global scale, base 1e6 (a top-level
    /// `rope_theta` otherwise), √8 routed scaling, epsilon 1e-12; a written
    /// `tie_word_embeddings` is not read (ErgoForCausalLM never ties).
    @Test func omittedKeysTakeErgoConfigDefaults() throws {
        let model = try EditedFixture("ergo-f32") {
            for key in ["global_attention_every_n_layers", "num_dense_blocks", "global_attention_scale", "moe_routed_scaling_factor",
                        "rms_norm_eps", "rope_parameters"] { $0[key] = nil }
        }.load() as! ErgoModel
        #expect(model.layerTypes == ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"])
        #expect(model.mlpTypes == ["dense", "sparse", "sparse", "sparse"])
        #expect(model.config.globalAttentionScale == nil && model.config.rmsNormEps == 1e-12)
        let rule = try #require(groupLimitedRule(try mlpMixture(model, layer: 1)))
        #expect(rule.scalingFactor == Float(8.0.squareRoot()))
        let frequencies = try #require(model.rotaries["sliding_attention"]).inverseFrequencies
        #expect(frequencies == RotaryEmbedding.defaultInverseFrequencies(base: 1_000_000, rotaryDim: 12))
        let based = try EditedFixture("ergo-f32") { $0["rope_parameters"] = nil; $0["rope_theta"] = 500.0 }.load() as! ErgoModel
        #expect(based.rotaries["sliding_attention"]?.inverseFrequencies == RotaryEmbedding.defaultInverseFrequencies(base: 500, rotaryDim: 12))
        // A null rope_theta is copied into the entry as None, which ErgoRotaryEmbedding fails on; a null
        // partial_rotary_factor is not copied (the default rotation would ignore it anyway).
        try EditedFixture("ergo-f32") { $0["rope_parameters"] = nil; $0["rope_theta"] = NSNull() }.expectRefused(naming: "rope_theta")
        #expect(try EditedFixture("ergo-f32") { $0["partial_rotary_factor"] = NSNull() }.attentionScores() == EditedFixture("ergo-f32").attentionScores())
        let base = try EditedFixture("ergo-f32").attentionScores()
        #expect(try EditedFixture("ergo-f32") { $0["tie_word_embeddings"] = true }.attentionScores() == base)
        #expect(try EditedFixture("ergo-f32") { $0["global_attention_scale"] = nil }.attentionScores() != base)
    }

    /// An export without some blocks spells out the kept layers' attention
    /// and MLP types, which config.json leaves to the class's rules.
    @Test func blockDropSpellsOutTheKeptTypes() throws {
        let config = try EditedFixture("ergo-f32").exportedConfig(droppingBlocks: [0])
        #expect(config["layer_types"] as? [String] == ["full_attention", "sliding_attention", "full_attention"])
        #expect(config["mlp_layer_types"] as? [String] == ["sparse", "sparse", "sparse"])
    }

    /// transformers saves Ergo under the released names, which its conversion
    /// mapping renames on load and, for the router and the shared expert,
    /// transposes ([in, out]): the fixture holds them so. The names and
    /// layouts transformers holds its modules under score alike; a tensor
    /// stored in both forms is refused, as is a per-expert tensor (the
    /// mapping collects none).
    @Test func releasedAndTransformersWeightNamesScoreAlike() throws {
        let base = try EditedFixture("ergo-f32").attentionScores()
        func transposed(_ entry: SafetensorsWriter.Entry, named name: String) throws -> SafetensorsWriter.Entry {
            let (rows, columns) = (entry.shape[0], entry.shape[1])
            let file = FixtureFiles.model("ergo-f32").appendingPathComponent("model.safetensors").path
            let values = try SafetensorsFile(path: file).tensors[entry.name]!.floats()
            return SafetensorsWriter.Entry(name: name, shape: [columns, rows]) {
                (0..<(rows * columns)).map { values[($0 % rows) * columns + $0 / rows] }
            }
        }
        let renamed = try EditedFixture("ergo-f32")
        try BadInputTests().rewriteWeights(renamed.model) { entries in
            entries = entries.map { entry in
                for (saved, own) in [("feed_forward.gate_kernel", "mlp.gate.linear.weight"),
                                     ("feed_forward.shared_up_proj", "mlp.shared_experts.up_proj.weight"),
                                     ("feed_forward.shared_down_proj", "mlp.shared_experts.down_proj.weight")]
                where entry.name.hasSuffix(saved) {
                    return try! transposed(entry, named: "model." + entry.name.replacingOccurrences(of: saved, with: own))
                }
                return entry
            }
        }
        #expect(try renamed.attentionScores() == base)
        let both = try EditedFixture("ergo-f32")
        try BadInputTests().rewriteWeights(both.model) { entries in
            let router = entries.first { $0.name == "layers.1.feed_forward.gate_kernel" }!
            entries.append(try! transposed(router, named: "model.layers.1.mlp.gate.linear.weight"))
        }
        #expect(ExpertTensorTests.loadError(both.model)?.contains("are both stored, which transformers reads as one parameter") == true)
        let split = try EditedFixture("ergo-f32")
        try BadInputTests().rewriteWeights(split.model) { entries in
            entries.removeAll { $0.name == "layers.1.feed_forward.down_proj" }
            entries.append(SafetensorsWriter.Entry(name: "model.layers.1.mlp.experts.0.down_proj.weight", shape: [2, 2]) { [1, 2, 3, 4] })
        }
        #expect(ExpertTensorTests.loadError(split.model)?.hasSuffix(
            "tensor 'model.layers.1.mlp.experts.0.down_proj.weight' stores one expert, but transformers collects such tensors into "
                + #"its fused experts only where the conversion mapping of the model type says so, and that of "ergo" does not "#
                + "(it would initialise the experts randomly): store them fused") == true,
            "\(ExpertTensorTests.loadError(split.model) ?? "loads")")
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("ergo-f32", unordered: true)
    }
}
