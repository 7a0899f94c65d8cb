@testable import Architectures
@testable import Dropping
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Ling's hybrid (`bailing_hybrid`): Kimi Delta Attention and gated latent
/// attention layers, dense and routed MLPs, BailingHybridConfig's defaults
/// and refusals, the released tensor names and transformers' own. The
/// scores themselves are checked against transformers with every other
/// family (`DropTests` and the reference suites).
@Suite struct BailingHybridTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "bailing_hybrid-f32"

    static let mutants: [Mutant] = [
        // The causal-mask mapping has no other kind (KeyError).
        Mutant(name, "layer_types", #"["linear_attention", "sliding_attention", "linear_attention", "full_attention"]"#),
        Mutant(name, "layer_types", #"["linear_attention", "full_attention", "linear_attention"]"#),
        Mutant(name, "mlp_layer_types", #"["dense", "moe", "sparse", "sparse"]"#),
        // Widths the tensors contradict.
        Mutant(name, "linear_head_dim", "8"), Mutant(name, "linear_num_heads", "3", key: "linear_num_heads"),
        Mutant(name, "qk_rope_head_dim", "6"), Mutant(name, "num_experts", "9"),
        // Latent attention gives every head its own keys and values.
        Mutant(name, "num_key_value_heads", "2"),
        Mutant(name, "kda_lower_bound", "1e308"), Mutant(name, "linear_conv_kernel_dim", "0"), Mutant(name, "linear_conv_kernel_dim", "3"),
        // Not fields of BailingHybridConfig: only integers size the linear attention.
        Mutant(name, "linear_head_dim", "12.0"), Mutant(name, "linear_num_heads", "null"), Mutant(name, "linear_conv_kernel_dim", "4.0"),
        // Both spellings of one setting, with different values.
        Mutant(name, "num_local_experts", "9", key: "num_"),
        // One SwiGLU limit per decoder layer, finite.
        Mutant(limitsName, "expert_swiglu_limit_list", "[0.0, 0.3, 0.0]"),
        Mutant(limitsName, "share_expert_swiglu_limit_list", "[0.0, 0.2, 0.3, 0.0, 0.0]"),
        Mutant(limitsName, "expert_swiglu_limit_list", "[0.0, 1e300, 0.0, 0.25]"),
        Mutant(limitsName, "swiglu_limits", "[0.0, 0.3, 0.0, 0.5]", key: "swiglu_limits"),
    ]
    /// A block-drop export keeps the kept layers' SwiGLU limits (one per
    /// layer, as BailingHybridConfig requires), under the key written.
    @Test func blockDropExportsKeepTheKeptLayersLimits() throws {
        let fixture = try EditedFixture(Self.limitsName) {
            $0["swiglu_limits_shared"] = $0.removeValue(forKey: "share_expert_swiglu_limit_list")
        }
        let model = try fixture.load(), scratch = try ScratchDirectory(), out = scratch.path("export")
        try DroppedModelExport.write(model: model, plan: DropPlan(blocks: [2]), to: out)
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json"))) as? [String: Any])
        #expect(config["expert_swiglu_limit_list"] as? [Double] == [0, 0.3, 0.25])
        #expect(config["swiglu_limits_shared"] as? [Double] == [0, 0.2, 0])
        _ = try ModelRegistry.load(try Checkpoint(directory: out))
    }

    /// transformers 5.25's low-rank query and per-layer SwiGLU limits.
    static let limitsName = "bailing_hybrid_limits-f32"

    /// The limits clip each layer's experts as configured (0: none; layer
    /// 0's dense MLP never); the attribute-map spellings `swiglu_limits` and
    /// `swiglu_limits_shared` are read as the fields, and no limits at all
    /// is the model without clipping.
    @Test func swigluLimitsClipTheExperts() throws {
        let scores = try EditedFixture(Self.limitsName).attentionScores()
        let aliased = try EditedFixture(Self.limitsName) {
            $0["swiglu_limits"] = $0.removeValue(forKey: "expert_swiglu_limit_list")
            $0["swiglu_limits_shared"] = $0.removeValue(forKey: "share_expert_swiglu_limit_list")
        }
        #expect(try aliased.attentionScores() == scores)
        let unclipped = try EditedFixture(Self.limitsName) {
            $0["expert_swiglu_limit_list"] = nil
            $0["share_expert_swiglu_limit_list"] = NSNull()
        }
        #expect(try unclipped.attentionScores() != scores)
        let zeros = try EditedFixture(Self.limitsName) { $0["expert_swiglu_limit_list"] = [0.0, 0.0, 0.0, 0.0]; $0["share_expert_swiglu_limit_list"] = [0, 0, 0, 0] }
        #expect(try zeros.attentionScores() == unclipped.attentionScores())
    }

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers 0 and 2 are Kimi Delta Attention (4 heads of 12, one decay per
    /// key channel by the safe gate, the sigmoid output gate), 1 and 3 gated
    /// latent attention; layer 0's MLP dense, the others routed.
    @Test func layersAsBailingHybridBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            let branch = try #require(block.attention)
            if case .gatedDeltaNet(let mixer) = branch.mixer {
                #expect(index % 2 == 0)
                #expect(mixer.heads == GatedDeltaNetHeads(keyHeads: 4, valueHeads: 4, keyDim: 12, valueDim: 12, convolutionKernel: 4, decayPerChannel: true))
                #expect(mixer.decay == .boundedSigmoid(lowerBound: -5) && mixer.outputGateActivation == .sigmoid)
            } else {
                #expect(index % 2 == 1 && branch.attention?.outputGate != nil)
            }
            guard case .mixture? = block.mlp?.feedForward else {
                #expect(index == 0)
                continue
            }
            #expect(index > 0)
        }
    }

    /// What config.json leaves out takes BailingHybridConfig's values: the
    /// safe gate; the linear heads' width from head_dim (here the rope
    /// width, 8, as transformers saves it: the tensors refuse it); the layer
    /// kinds by layer_group_size (6: every layer linear, refused by layer 1's
    /// latent tensors).
    @Test func omittedKeysTakeBailingHybridConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["kda_safe_gate"] = nil }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["kda_safe_gate"] = false }.attentionScores() != base)
        #expect(try EditedFixture(Self.name) { $0["kda_lower_bound"] = -4.0 }.attentionScores() != base)
        try EditedFixture(Self.name) { $0["linear_head_dim"] = nil }.expectRefused(naming: "linear_head_dim")
        try EditedFixture(Self.name) { $0["layer_types"] = nil; $0["layer_group_size"] = nil }
            .expectRefused(naming: "makes layer 1 a linear_attention layer")
        try EditedFixture(Self.name) { $0["layer_types"] = nil; $0["layer_group_size"] = 0 }.expectRefused(naming: "layer_group_size")
    }

    /// The fixture holds the released names, as transformers saves them; the
    /// same model under transformers' own names scores the same; both
    /// embeddings stored are refused.
    @Test func readsReleasedAndRenamedTensorNames() throws {
        let fixture = try EditedFixture(Self.name)
        let base = try fixture.attentionScores()
        let checkpoint = try Checkpoint(directory: fixture.model)
        for name in ["model.word_embeddings.weight", "model.layers.0.attention.q_conv1d.weight", "model.layers.0.attention.dense.weight",
                     "model.layers.0.attention.A_log", "model.layers.1.mlp.gate.expert_bias"] {
            #expect(checkpoint.hasTensor(name), "\(name)")
        }
        var fused: [Int: [Float]] = [:]
        for layer in [0, 2] {
            fused[layer] = try ["q", "k", "v"].flatMap { try checkpoint.storedTensor("model.layers.\(layer).attention.\($0)_conv1d.weight").floats() }
        }
        let renamed = try fixture.scratch.copyOfModel(Self.name, as: "renamed")
        try BadInputTests().rewriteWeights(renamed) { entries in
            entries.removeAll { $0.name.contains("_conv1d") }
            for index in entries.indices {
                var name = entries[index].name.replacingOccurrences(of: "word_embeddings", with: "embed_tokens")
                    .replacingOccurrences(of: ".attention.", with: ".self_attn.").replacingOccurrences(of: ".dense.", with: ".o_proj.")
                    .replacingOccurrences(of: "expert_bias", with: "e_score_correction_bias")
                for part in ["f_proj", "A_log", "dt_bias"] { name = name.replacingOccurrences(of: "self_attn.\(part)", with: "self_attn.forget_gate.\(part)") }
                entries[index].name = name
            }
            for (layer, taps) in fused {
                let bytes = taps.withUnsafeBufferPointer { Data(buffer: $0) }
                entries.append(SafetensorsWriter.Entry(name: "model.layers.\(layer).self_attn.conv1d.weight", dtype: .float32, shape: [144, 1, 4], bytes: bytes))
            }
        }
        let renamedScores = try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: renamed)))
            .score(FixtureFiles.jsonlSequences(), calibrationPath: "calib").attention
        #expect(renamedScores == base)

        let doubled = try fixture.scratch.copyOfModel(Self.name, as: "doubled")
        try BadInputTests().rewriteWeights(doubled) { entries in
            var copy = entries.first { $0.name == "model.word_embeddings.weight" }!
            copy.name = "model.embed_tokens.weight"
            entries.append(copy)
        }
        #expect(throws: DroptraceError.self) { _ = try ModelRegistry.load(try Checkpoint(directory: doubled)) }
    }

    /// BailingHybridForCausalLM ties nothing: with tie_word_embeddings true
    /// the stored lm_head is still the head, and without one the load is refused.
    @Test func headIsNeverTied() throws {
        let model = try EditedFixture(Self.name) { $0["tie_word_embeddings"] = true }.load()
        let untied = try EditedFixture(Self.name).load()
        #expect(try model.head().projection.weight == untied.head().projection.weight)
        let fixture = try EditedFixture(Self.name) { $0["tie_word_embeddings"] = true }
        try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name == "lm_head.weight" } }
        #expect(throws: DroptraceError.self) { _ = try fixture.load().head() }
    }

    /// standardize_rope_params runs before the stored model_max_length is
    /// set: a scaled rope without its original length takes the class's
    /// max_position_embeddings (262144), not the stored 256.
    @Test func scaledRopeTakesTheClassDefaultLength() throws {
        func scores(_ rope: [String: Any]) throws -> [Double] { try EditedFixture(Self.name) { $0["rope_parameters"] = rope }.attentionScores() }
        let yarn: [String: Any] = ["rope_type": "yarn", "rope_theta": 10_000.0, "factor": 4.0]
        let original = yarn.merging(["original_max_position_embeddings": 262_144]) { $1 }
        #expect(try scores(yarn) == scores(original))
        #expect(try scores(yarn) != scores(yarn.merging(["original_max_position_embeddings": 256]) { $1 }))
    }

    /// Block-drop exports spell out the kept layers' kinds and MLP types.
    @Test func blockDropExportsSpellOutTheKeptLayers() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0, 3])
        #expect(config["layer_types"] as? [String] == ["full_attention", "linear_attention"])
        #expect(config["mlp_layer_types"] as? [String] == ["sparse", "sparse"])
    }
}
