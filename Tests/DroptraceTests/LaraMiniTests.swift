@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Lara Mini (`lara_mini`): Gated DeltaNet, sliding and NoPE full layers,
/// softmax routing beside an ungated shared expert, LaraMiniConfig's
/// defaults and refusals, the released tensor names and transformers' own.
/// The scores themselves are checked against transformers with every other
/// family (`DropTests` and the reference suites).
@Suite struct LaraMiniTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "lara_mini-f32"

    static let mutants: [Mutant] = [
        // No mask for other kinds (chunked_attention fails on attention_chunk_size, the others on the mask mapping).
        Mutant(name, "layer_types", #"["linear_attention", "sliding_attention", "linear_attention", "chunked_attention"]"#),
        Mutant(name, "layer_types", #"["linear_attention", "sliding_attention", "linear_attention"]"#),
        // Kinds the weights contradict.
        Mutant(name, "layer_types", #"["sliding_attention", "linear_attention", "linear_attention", "full_attention"]"#),
        Mutant(name, "sliding_window", "0"), Mutant(name, "sliding_window", "null"),
        Mutant(name, "head_dim", "12"), Mutant(name, "head_dim", "null"), Mutant(name, "num_key_value_heads", "3"),
        // Each key head serves a whole group of value heads (validate_architecture).
        Mutant(name, "linear_num_value_heads", "3"), Mutant(name, "linear_num_key_heads", "0"),
        // Gated DeltaNet widths the tensors contradict.
        Mutant(name, "linear_key_head_dim", "12"), Mutant(name, "linear_value_head_dim", "4"),
        Mutant(name, "linear_conv_kernel_dim", "3"), Mutant(name, "linear_num_value_heads", "8"),
        // Every layer routes: no experts cannot run; counts the router and experts contradict.
        Mutant(name, "num_experts", "0"), Mutant(name, "num_experts", "9"), Mutant(name, "num_experts_per_tok", "9"),
        Mutant(name, "moe_intermediate_size", "12"), Mutant(name, "shared_expert_intermediate_size", "-1"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers 0 and 2 are Gated DeltaNets (2 key heads, 4 value heads of
    /// 8); layer 1 slides within 8 tokens and rotates, layer 3 attends fully
    /// without positions, both with per-head q/k norms and biases; every MLP
    /// routes by the renormalised softmax beside an ungated shared expert.
    @Test func layersAsLaraMiniBuildsThem() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            let branch = try #require(block.attention)
            if case .gatedDeltaNet(let net) = branch.mixer {
                #expect(index % 2 == 0)
                #expect(net.heads == GatedDeltaNetHeads(keyHeads: 2, valueHeads: 4, keyDim: 8, valueDim: 8, convolutionKernel: 4))
            } else {
                let attention = try #require(branch.attention)
                #expect(index == 1 || index == 3)
                #expect((attention.rotary != nil) == (index == 1) && attention.slidingWindow == (index == 1 ? 8 : nil))
                #expect(attention.layout.headDim == 16 && attention.output.bias != nil && attention.outputGate == nil)
                guard case .perHead? = attention.queryKeyNorm else {
                    Issue.record("layer \(index) has no per-head q/k norms")
                    continue
                }
            }
            guard case .mixture(let moe)? = block.mlp?.feedForward, case .softmaxTopK(let renormalize) = moe.rule else {
                Issue.record("layer \(index) is not routed by softmax top-k")
                continue
            }
            #expect(renormalize && moe.experts.count == 8 && moe.expertsPerToken == 2)
            #expect(moe.sharedExperts.count == 1 && moe.sharedExpertGate == nil)
        }
        let unnormalised = try EditedFixture(Self.name) { $0["norm_topk_prob"] = false }.load()
        guard case .mixture(let moe)? = try unnormalised.block(0).mlp?.feedForward, case .softmaxTopK(false) = moe.rule else {
            Issue.record("norm_topk_prob false still renormalises")
            return
        }
    }

    /// What config.json leaves out takes LaraMiniConfig's values: the layer
    /// types by the period-5 rule (the fixture's own), the window 512 (no
    /// window on these sequences), `norm_topk_prob` true, a tied head;
    /// heads of 128, 8 key and 16 value heads and 128 experts the tensors
    /// refuse. `intermediate_size`, not a field of the class, is not read; a
    /// block-drop export spells out the kept layers' types.
    @Test func omittedKeysTakeLaraMiniConfigDefaults() throws {
        let fixture = try EditedFixture(Self.name)
        let base = try fixture.attentionScores()
        let ruled = try EditedFixture(Self.name) { $0["layer_types"] = nil }
        #expect(try ruled.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["norm_topk_prob"] = nil; $0["intermediate_size"] = 0 }.attentionScores() == base)
        let wide = try EditedFixture(Self.name) { $0["sliding_window"] = nil }.attentionScores()
        let unwindowed = try EditedFixture(Self.name) { $0["sliding_window"] = 4096 }.attentionScores()
        #expect(wide != base && wide == unwindowed)
        let tied = try EditedFixture(Self.name) { $0["tie_word_embeddings"] = nil }.load()
        #expect(try tied.head().projection.weight == (try fixture.load().head().projection.weight))
        #expect(throws: DroptraceError.self) { _ = try EditedFixture(Self.name) { $0["tie_word_embeddings"] = false }.load().head() }
        try EditedFixture(Self.name) { $0["head_dim"] = nil }.expectRefused(naming: "head_dim")
        try EditedFixture(Self.name) { $0["linear_num_key_heads"] = nil; $0["linear_num_value_heads"] = nil }
            .expectRefused(naming: "linear_num_key_heads")
        try EditedFixture(Self.name) { $0["num_experts"] = nil }.expectRefused(naming: "num_experts")
        let exported = try ruled.exportedConfig(droppingBlocks: [0])
        #expect(exported["layer_types"] as? [String] == ["sliding_attention", "linear_attention", "full_attention"])
        #expect(exported["num_hidden_layers"] as? Int == 3)
    }

    /// The fixture holds the released names, as transformers saves them
    /// (`linear_attn.in_proj`, `linear_attn.out_norm`); the same model under
    /// transformers' own (the four projections transformers splits
    /// `in_proj` into, `linear_attn.norm`) scores the same (transformers
    /// 5.25 loads those names with the same logits). Both forms of one
    /// layer's projection, or of its norm, are refused.
    @Test func readsReleasedAndTransformersTensorNames() throws {
        let fixture = try EditedFixture(Self.name)
        let base = try fixture.attentionScores()
        let checkpoint = try Checkpoint(directory: fixture.model)
        for layer in [0, 2] {
            #expect(checkpoint.storedTensorNames.contains("model.layers.\(layer).linear_attn.in_proj.weight"))
            #expect(checkpoint.storedTensorNames.contains("model.layers.\(layer).linear_attn.norm.weight"), "out_norm read as norm")
        }
        // Rows q | k | v (64), z (32), b (4), a (4) of 48 columns.
        var fused: [Int: [Float]] = [:]
        for layer in [0, 2] { fused[layer] = try checkpoint.storedTensor("model.layers.\(layer).linear_attn.in_proj.weight").floats() }
        let split = try fixture.scratch.copyOfModel(Self.name, as: "split")
        try BadInputTests().rewriteWeights(split) { entries in
            entries.removeAll { $0.name.hasSuffix("linear_attn.in_proj.weight") }
            for index in entries.indices {
                entries[index].name = entries[index].name.replacingOccurrences(of: "linear_attn.out_norm.", with: "linear_attn.norm.")
            }
            for (layer, values) in fused {
                var start = 0
                for (part, rows) in [("qkv", 64), ("z", 32), ("b", 4), ("a", 4)] {
                    let piece = Array(values[(start * 48)..<((start + rows) * 48)])
                    entries.append(SafetensorsWriter.Entry(name: "model.layers.\(layer).linear_attn.in_proj_\(part).weight", shape: [rows, 48]) { piece })
                    start += rows
                }
            }
        }
        let splitScores = try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: split)))
            .score(FixtureFiles.jsonlSequences(), calibrationPath: "calib").attention
        #expect(splitScores == base)

        let bothProjections = try fixture.scratch.copyOfModel(Self.name, as: "both-projections")
        try BadInputTests().rewriteWeights(bothProjections) { entries in
            let piece = Array(fused[0]![0..<(4 * 48)])
            entries.append(SafetensorsWriter.Entry(name: "model.layers.0.linear_attn.in_proj_a.weight", shape: [4, 48]) { piece })
        }
        let error = #expect(throws: DroptraceError.self) { _ = try ModelRegistry.load(try Checkpoint(directory: bothProjections)).block(0) }
        #expect(error?.message.contains("'model.layers.0.linear_attn.in_proj.weight' and 'model.layers.0.linear_attn.in_proj_a.weight' are both stored") == true)

        let bothNorms = try fixture.scratch.copyOfModel(Self.name, as: "both-norms")
        try BadInputTests().rewriteWeights(bothNorms) { entries in
            var copy = entries.first { $0.name == "model.layers.2.linear_attn.out_norm.weight" }!
            copy.name = "model.layers.2.linear_attn.norm.weight"
            entries.append(copy)
        }
        #expect(throws: DroptraceError.self) { _ = try ModelRegistry.load(try Checkpoint(directory: bothNorms)) }
    }
}
