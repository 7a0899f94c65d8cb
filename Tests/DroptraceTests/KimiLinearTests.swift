@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Kimi Linear (`kimi_linear`): Kimi Delta Attention with low-rank decay
/// and gate projections, latent attention without positions, routed MLPs,
/// KimiLinearConfig's release-form keys (`linear_attn_config`), the
/// released tensor names and transformers' own. The scores themselves are
/// checked against transformers with every other family (`DropTests` and
/// the reference suites).
@Suite struct KimiLinearTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "kimi_linear-f32"

    static let mutants: [Mutant] = [
        // 1-based layer numbers Python cannot index the list with, or that leave a layer without a kind.
        Mutant(name, "linear_attn_config.full_attn_layers", "[5]", key: "linear_attn_config.full_attn_layers"),
        Mutant(name, "linear_attn_config.kda_layers", "[1, 2]", key: "linear_attn_config"),
        Mutant(name, "linear_attn_config.head_dim", "null", key: "linear_attn_config.head_dim"),
        // linear_attn_config is read with dict.get: only integers size the linear attention.
        Mutant(name, "linear_attn_config.head_dim", "12.0", key: "linear_attn_config.head_dim"),
        // Widths the tensors contradict.
        Mutant(name, "linear_attn_config.head_dim", "8", key: "linear_head_dim"),
        Mutant(name, "linear_attn_config.num_heads", "3", key: "linear_num_heads"),
        Mutant(name, "linear_attn_config.short_conv_kernel_size", "3", key: "linear_conv_kernel_dim"),
        Mutant(name, "q_lora_rank", "null"), Mutant(name, "num_experts", "9"),
        Mutant(name, "layer_types", #"["linear_attention", "linear_attention", "sliding_attention", "linear_attention"]"#),
        // Both spellings of one setting, with different values.
        Mutant(name, "num_experts_per_tok", "3", key: "num_experts_per_"),
        // KimiLinearConfig compares layer indices with it, and validates the rope parameters it never uses.
        Mutant(name, "first_k_dense_replace", "null"), Mutant(name, "rope_parameters", "\"x\""),
        // A layer 0 routed by it has no router in the weights (transformers would draw one at random).
        Mutant(name, "first_k_dense_replace", "0", key: "\"first_k_dense_replace\" makes layer 0 a sparse layer"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers 1, 2 and 4 (1-based) are Kimi Delta Attention with the softplus
    /// decay per key channel and the sigmoid output gate; layer 3 latent
    /// attention without positions; layer 0's MLP dense, the others routed.
    @Test func layersAsKimiLinearBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            let branch = try #require(block.attention)
            if case .gatedDeltaNet(let mixer) = branch.mixer {
                #expect(index != 2)
                #expect(mixer.heads == GatedDeltaNetHeads(keyHeads: 4, valueHeads: 4, keyDim: 12, valueDim: 12, convolutionKernel: 4, decayPerChannel: true))
                #expect(mixer.decay == .softplus && mixer.outputGateActivation == .sigmoid)
            } else {
                let attention = try #require(branch.attention)
                guard case .latent(let latent) = attention.projection else {
                    Issue.record("layer \(index) is not latent attention")
                    continue
                }
                #expect(index == 2 && latent.rotary == nil)
            }
            guard case .mixture? = block.mlp?.feedForward else {
                #expect(index == 0)
                continue
            }
            #expect(index > 0)
        }
    }

    /// The layer kinds and sizes as KimiLinearConfig resolves them: the
    /// same lists under `layer_types` and the fields score the same; without
    /// either, every fourth layer from layer 4 is full (here none: layer 2's
    /// latent tensors refuse it), and the heads are 32 of 128 (refused).
    @Test func releaseFormKeysResolveAsKimiLinearConfig() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        let fields = try EditedFixture(Self.name) {
            $0["linear_attn_config"] = nil
            $0["layer_types"] = ["linear_attention", "linear_attention", "full_attention", "linear_attention"]
            $0["linear_head_dim"] = 12
            $0["linear_num_heads"] = 4
            $0["linear_conv_kernel_dim"] = 4
            $0["mlp_layer_types"] = ["dense", "sparse", "sparse", "sparse"]
        }
        #expect(try fields.attentionScores() == base)
        // A negative number counts from the end, as Python indexes the list.
        let negative = try EditedFixture(Self.name) { config in
            var lists = config["linear_attn_config"] as! [String: Any]
            lists["full_attn_layers"] = [0]
            lists["kda_layers"] = [1, 2, 3]
            config["linear_attn_config"] = lists
        }
        negative.expectRefused(naming: "makes layer 2 a linear_attention layer")
        try EditedFixture(Self.name) { $0["linear_attn_config"] = nil }.expectRefused(naming: "makes layer 2 a linear_attention layer")
        try EditedFixture(Self.name) {
            $0["linear_attn_config"] = nil
            $0["layer_types"] = ["linear_attention", "linear_attention", "full_attention", "linear_attention"]
        }.expectRefused(naming: "linear_num_heads")
    }

    /// The fixture holds the names `save_pretrained` writes; the same model
    /// under transformers' own names (experts fused: w1 | w3 as gate_up_proj,
    /// w2 as down_proj) scores the same.
    @Test func readsReleasedAndRenamedTensorNames() throws {
        let fixture = try EditedFixture(Self.name)
        let base = try fixture.attentionScores()
        let checkpoint = try Checkpoint(directory: fixture.model)
        for name in ["model.layers.0.block_sparse_moe.gate_proj.weight", "model.layers.0.self_attn.q_conv1d.weight",
                     "model.layers.0.self_attn.A_log", "model.layers.1.block_sparse_moe.experts.0.w1.weight"] {
            #expect(checkpoint.hasTensor(name), "\(name)")
        }
        var fused: [Int: [Float]] = [:]
        for layer in [0, 1, 3] {
            fused[layer] = try ["q", "k", "v"].flatMap { try checkpoint.storedTensor("model.layers.\(layer).self_attn.\($0)_conv1d.weight").floats() }
        }
        var experts: [Int: (gateUp: [Float], down: [Float])] = [:]
        for layer in 1...3 {
            let p = "model.layers.\(layer).block_sparse_moe.experts."
            let gateUp = try (0..<8).flatMap { e in try ["w1", "w3"].flatMap { try checkpoint.storedTensor(p + "\(e).\($0).weight").floats() } }
            experts[layer] = (gateUp, try (0..<8).flatMap { try checkpoint.storedTensor(p + "\($0).w2.weight").floats() })
        }
        let renamed = try fixture.scratch.copyOfModel(Self.name, as: "renamed")
        try BadInputTests().rewriteWeights(renamed) { entries in
            entries.removeAll { $0.name.contains("_conv1d") || $0.name.contains(".experts.") }
            for index in entries.indices {
                var name = entries[index].name.replacingOccurrences(of: ".block_sparse_moe.", with: ".mlp.")
                for part in ["f_a_proj", "f_b_proj", "A_log", "dt_bias"] {
                    name = name.replacingOccurrences(of: "self_attn.\(part)", with: "self_attn.forget_gate.\(part)")
                }
                entries[index].name = name
            }
            for (layer, taps) in fused {
                let bytes = taps.withUnsafeBufferPointer { Data(buffer: $0) }
                entries.append(SafetensorsWriter.Entry(name: "model.layers.\(layer).self_attn.conv1d.weight", dtype: .float32, shape: [144, 1, 4], bytes: bytes))
            }
            for (layer, fused) in experts {
                let p = "model.layers.\(layer).mlp.experts."
                for (name, values, shape) in [("gate_up_proj", fused.gateUp, [8, 32, 48]), ("down_proj", fused.down, [8, 48, 16])] {
                    let bytes = values.withUnsafeBufferPointer { Data(buffer: $0) }
                    entries.append(SafetensorsWriter.Entry(name: p + name, dtype: .float32, shape: shape, bytes: bytes))
                }
            }
        }
        let renamedModel = try ModelRegistry.load(try Checkpoint(directory: renamed))
        let renamedScores = try ImportanceScorer(model: renamedModel).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib").attention
        #expect(renamedScores == base)
    }

    /// Block-drop exports spell out the kept layers' kinds and MLP types.
    @Test func blockDropExportsSpellOutTheKeptLayers() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0, 3])
        #expect(config["layer_types"] as? [String] == ["linear_attention", "full_attention"])
        #expect(config["mlp_layer_types"] as? [String] == ["sparse", "sparse"])
    }
}
