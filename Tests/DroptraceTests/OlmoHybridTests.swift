@testable import Architectures
import CheckpointIO
import Scoring
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// OLMo-Hybrid (`olmo_hybrid`): Gated DeltaNet and post-norm attention
/// layers, OlmoHybridConfig's defaults and refusals, OLMo-core's saved
/// tensor names and the norm that changes branch with the layer type. The
/// scores themselves are checked against transformers with every other
/// family (`DropTests` and the reference suites).
@Suite struct OlmoHybridTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "olmo_hybrid-f32"

    static let mutants: [Mutant] = [
        // OlmoHybridConfig wants both kinds of layer.
        Mutant(name, "layer_types", "[\"full_attention\", \"full_attention\", \"full_attention\", \"full_attention\"]"),
        Mutant(name, "layer_types", "[\"linear_attention\", \"sliding_attention\", \"full_attention\", \"linear_attention\"]"),
        Mutant(name, "linear_num_value_heads", "3"), Mutant(name, "linear_num_key_heads", "0"),
        Mutant(name, "linear_conv_kernel_dim", "0"), Mutant(name, "linear_allow_neg_eigval", "1"),
        // Widths the tensors contradict.
        Mutant(name, "linear_key_head_dim", "4"), Mutant(name, "linear_conv_kernel_dim", "3"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers 0 and 3 are pre-norm Gated DeltaNet layers with β doubled;
    /// 1 and 2 post-norm attention layers without input norms.
    @Test func layersAsOlmoHybridBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            let branch = try #require(block.attention)
            if case .gatedDeltaNet(let mixer) = branch.mixer {
                #expect([0, 3].contains(index) && mixer.betaScale == 2 && mixer.heads.keyHeads == 2 && mixer.heads.valueHeads == 4)
                #expect(branch.inputNorm != nil && branch.outputNorm == nil)
            } else {
                #expect([1, 2].contains(index) && branch.inputNorm == nil && branch.outputNorm != nil && block.mlp?.outputNorm != nil)
            }
        }
    }

    /// What config.json leaves out takes OlmoHybridConfig's values: the
    /// layer types by its rule (every fourth layer attention, here only the
    /// last: layer 3 has no attention weights, refused), heads of
    /// num_attention_heads, key width int(0.75 · hidden / heads) = 9, value
    /// width twice that, β doubled.
    @Test func omittedKeysTakeOlmoHybridConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["linear_allow_neg_eigval"] = nil }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["linear_allow_neg_eigval"] = false }.attentionScores() != base)
        try EditedFixture(Self.name) { $0["layer_types"] = nil }.expectRefused(naming: "layer 1 a linear_attention layer")
        try EditedFixture(Self.name) { $0["linear_num_key_heads"] = nil; $0["linear_num_value_heads"] = nil }
            .expectRefused(naming: "linear_num_key_heads")
        try EditedFixture(Self.name) { $0["linear_key_head_dim"] = NSNull() }.expectRefused(naming: "linear_key_head_dim")
    }

    /// The fixture holds OLMo-core's names, as transformers saves them; the
    /// same model under transformers' own names scores the same; both names
    /// of one tensor are refused.
    @Test func readsSavedAndRenamedTensorNames() throws {
        let fixture = try EditedFixture(Self.name)
        let base = try fixture.attentionScores()
        let checkpoint = try Checkpoint(directory: fixture.model)
        #expect(checkpoint.hasTensor("model.layers.0.attention_layer_norm.weight"))
        #expect(checkpoint.hasTensor("model.layers.1.feedforward_layer_norm.weight"))
        let convolution = try (["q", "k", "v"].map { "model.layers.0.linear_attn.\($0)_conv1d.weight" }).map { try checkpoint.storedTensor($0).shape[0] }
        #expect(convolution.reduce(0, +) == 64)

        let renamed = try fixture.scratch.copyOfModel(Self.name, as: "renamed")
        var fused: [Int: [Float]] = [:]
        for layer in [0, 3] {
            fused[layer] = try ["q", "k", "v"].flatMap { try checkpoint.storedTensor("model.layers.\(layer).linear_attn.\($0)_conv1d.weight").floats() }
        }
        try BadInputTests().rewriteWeights(renamed) { entries in
            entries.removeAll { $0.name.contains("_conv1d") }
            for index in entries.indices {
                entries[index].name = entries[index].name.replacingOccurrences(of: "attention_layer_norm", with: "input_layernorm")
                    .replacingOccurrences(of: "feedforward_layer_norm", with: "post_attention_layernorm")
            }
            for (layer, taps) in fused {
                let bytes = taps.withUnsafeBufferPointer { Data(buffer: $0) }
                entries.append(SafetensorsWriter.Entry(name: "model.layers.\(layer).linear_attn.conv1d.weight", dtype: .float32, shape: [64, 1, 4], bytes: bytes))
            }
        }
        let renamedScores = try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: renamed)))
            .score(FixtureFiles.jsonlSequences(), calibrationPath: "calib").attention
        // Both names of one tensor: transformers would keep whichever it read last.
        let doubled = try fixture.scratch.copyOfModel(Self.name, as: "doubled")
        try BadInputTests().rewriteWeights(doubled) { entries in
            let norm = entries.first { $0.name == "model.layers.0.attention_layer_norm.weight" }!
            var copy = norm
            copy.name = "model.layers.0.input_layernorm.weight"
            entries.append(copy)
        }
        #expect(throws: DroptraceError.self) {
            _ = try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: doubled)))
                .score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
        }
        #expect(renamedScores == base)
    }
}

extension OlmoHybridTests {
    /// Block drops that leave one kind of layer cannot be exported (transformers'
    /// OlmoHybridConfig refuses them); others spell out the kept layers' types.
    @Test func blockDropExportsKeepBothKinds() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.exportProblem(DropPlan(blocks: [0, 3]))?.contains("leaves only full_attention layers") == true)
        #expect(model.exportProblem(DropPlan(blocks: [1, 2]))?.contains("leaves only linear_attention layers") == true)
        #expect(model.exportProblem(DropPlan(blocks: [0, 2])) == nil)
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0, 2])
        #expect(config["layer_types"] as? [String] == ["full_attention", "linear_attention"])
    }
}
