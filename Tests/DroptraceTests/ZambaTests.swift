import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Zamba (`zamba`): Mamba-1 layers of several heads and hybrid layers
/// running the one shared transformer block (reading the stream with the
/// embeddings, then the layer's `linear`) before their mixer. The scores
/// themselves are checked against transformers with every other family
/// (`zamba-f32`: hybrid layers 2 and 4 by ZambaConfig's rule).
@Suite struct ZambaTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "zamba-f32"

    static let mutants: [Mutant] = [
        // ZambaConfig's check: the heads split mamba_expand × hidden_size (64) evenly.
        Mutant(name, "n_mamba_heads", "3"),
        Mutant(name, "n_mamba_heads", "null"),
        Mutant(name, "mamba_d_conv", "0"),
        Mutant(name, "mamba_expand", "-1"),
        Mutant(name, "mamba_dt_rank", "0"),
        Mutant(name, "mamba_dt_rank", "\"some\""),
        Mutant(name, "num_hidden_layers", "5"),
        Mutant(name, "layers_block_type", "[\"linear_attention\", \"hybrid\", \"full_attention\", \"hybrid\", \"hybrid\", \"hybrid\"]"),
        Mutant(name, "layers_block_type", "[]"),
        // The input norm and projections are that wide, but read [stream | embeddings].
        Mutant(name, "attention_hidden_size", "48"),
        Mutant(name, "attention_head_dim", "0"),
        Mutant(name, "rms_norm_eps", "0"),
        Mutant(name, "hidden_act", "\"nope\""),
        Mutant(name, "hidden_mamba_act", "\"nope\""),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Mamba layers hold their multi-head Mamba-1 mixer as their one
    /// module; hybrid layers the shared block (reading [x | x₀], no
    /// positions) as their attention and the mixer after it as their MLP.
    @Test func layersFollowTheLayerList() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.absentModules == DropPlan(mlp: [0, 1, 3, 5]))
        let sizes = MambaSizes(innerWidth: 64, stateSize: 8, convolutionKernel: 4, timeStepRank: 2, heads: 2)
        for index in [0, 1, 3, 5] {
            let block = try model.block(index)
            guard case .mamba(let mixer)? = block.attention?.mixer else {
                Issue.record("layer \(index) is not a Mamba layer")
                continue
            }
            #expect(mixer.sizes == sizes && mixer.selection.outFeatures == 2 * (2 + 16) && mixer.timeStepProjection.inFeatures == 4)
            #expect(block.mixerAfterAttention == nil && !block.attentionFeedsMixer)
        }
        for index in [2, 4] {
            let block = try model.block(index)
            let shared = try #require(block.attention)
            #expect(shared.appendsLayerInput && shared.feedForward != nil)
            #expect(shared.attention?.layout.numHeads == 4 && shared.attention?.layout.numKVHeads == 2)
            #expect(shared.attention?.layout.headDim == 16 && shared.attention?.rotary == nil)
            #expect(block.attentionFeedsMixer)
            guard case .mamba(let mixer)? = block.mixerAfterAttention?.mixer else {
                Issue.record("layer \(index) has no Mamba mixer after its shared block")
                continue
            }
            #expect(mixer.sizes == sizes)
        }
        #expect(model.perLayerEmbedding != nil)
    }

    /// Without a written list, the layers are ZambaConfig's rule's: 0 and 1
    /// Mamba, 2 hybrid, then 3 + i hybrid where i mod attn_layer_period ==
    /// attn_layer_offset, modulo as Python computes it (a negative period
    /// gives non-positive remainders); a period of 0 and an absurd layer
    /// count are refused naming their keys.
    @Test func withoutAListTheRuleGivesTheLayers() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        func unlisted(_ change: @escaping (inout [String: Any]) -> Void = { _ in }) throws -> EditedFixture {
            try EditedFixture(Self.name) {
                $0["layers_block_type"] = nil
                change(&$0)
            }
        }
        #expect(try unlisted().attentionScores() == base)
        #expect(try unlisted { $0["attn_layer_period"] = -2; $0["attn_layer_offset"] = -1 }.attentionScores() == base)
        // The rule's layers are written out in an export (as `layer_types`, the alias), so it keeps each kept layer's kind.
        let exported = try unlisted().exportedConfig(droppingBlocks: [3])
        #expect((exported["layer_types"] as? [String]) == ["linear_attention", "linear_attention", "hybrid", "hybrid", "linear_attention"])
        try unlisted { $0["attn_layer_period"] = 0 }.expectRefused(naming: "attn_layer_period")
        try unlisted { $0["num_hidden_layers"] = 1 << 40 }.expectRefused(naming: "num_hidden_layers")
        // Another period or offset makes other layers hybrid, whose weights are Mamba layers'.
        try unlisted { $0["attn_layer_offset"] = 0 }.expectRefused(naming: "attn_layer_offset")
        // "auto" is ⌈hidden_size / 16⌉ = 2, the fixture's rank.
        #expect(try EditedFixture(Self.name) { $0["mamba_dt_rank"] = "auto" }.attentionScores() == base)
    }

    /// Dropping a hybrid layer's mixer leaves the layer's input, whatever
    /// its shared block computes; dropping its shared block leaves the
    /// mixer reading the layer's input. The same in Zamba and Zamba2.
    @Test(arguments: [("zamba-f32", 2), ("zamba2-f32", 1)])
    func droppedModulesLeaveTheStream(_ name: String, _ layer: Int) throws {
        let model = try EditedFixture(name).load()
        let batch = TokenBatch(sequences: [Array(FixtureFiles.jsonlSequences()[0].prefix(12))])
        var inputs: [Int: Matrix] = [:], outputs: [Int: Matrix] = [:]
        try LayerwiseForward(model: model, plan: DropPlan(mlp: [layer])).run(batch) { step in
            inputs[step.index] = step.input
            outputs[step.index] = step.output
        }
        #expect(outputs[layer]?.data == inputs[layer]?.data)
        var full: Matrix?, withoutShared: Matrix?
        try LayerwiseForward(model: model).run(batch) { if $0.index == layer { full = $0.output } }
        try LayerwiseForward(model: model, plan: DropPlan(attention: [layer])).run(batch) { if $0.index == layer { withoutShared = $0.output } }
        #expect(full != nil && withoutShared != nil && full!.data != withoutShared!.data)
    }

    /// transformers ties a later hybrid layer's shared block to the first
    /// one's only where the checkpoint stores no copy of its own with other
    /// values, and not at all with untied embeddings: a layer runs its own
    /// stored copy, and with untied embeddings one must be stored. The same
    /// in Zamba and Zamba2.
    @Test(arguments: [("zamba-f32", 2, 4, "shared_transf"), ("zamba2-f32", 1, 3, "shared_transformer")])
    func aHybridLayerRunsItsOwnStoredBlock(_ name: String, _ firstLayer: Int, _ laterLayer: Int, _ block: String) throws {
        let base = try EditedFixture(name).attentionScores()
        let first = "model.layers.\(firstLayer).\(block).", later = "model.layers.\(laterLayer).\(block)."
        func fixture(untied: Bool = false, _ change: @escaping (inout [SafetensorsWriter.Entry]) -> Void) throws -> EditedFixture {
            let fixture = try EditedFixture(name) { if untied { $0["tie_word_embeddings"] = false } }
            try BadInputTests().rewriteWeights(fixture.model) { entries in
                if untied, var head = entries.first(where: { $0.name == "model.embed_tokens.weight" }) {
                    head.name = "lm_head.weight"
                    entries.append(head)
                }
                change(&entries)
            }
            return fixture
        }
        func copies(_ entries: [SafetensorsWriter.Entry]) -> [SafetensorsWriter.Entry] {
            entries.filter { $0.name.hasPrefix(first) }.map { entry in
                var copy = entry
                copy.name = later + entry.name.dropFirst(first.count)
                return copy
            }
        }
        // An identical copy changes nothing, tied or untied.
        #expect(try fixture { $0 += copies($0) }.attentionScores() == base)
        #expect(try fixture(untied: true) { $0 += copies($0) }.attentionScores() == base)
        // Another o_proj under the later layer is that layer's alone.
        let other = try fixture { entries in
            let shape = entries.first { $0.name == first + "self_attn.o_proj.weight" }!.shape
            let values = [Float](repeating: 0.05, count: shape.reduce(1, *))
            entries.append(.init(name: later + "self_attn.o_proj.weight", dtype: .float32, shape: shape, bytes: values.withUnsafeBytes { Data($0) }))
        }.attentionScores()
        #expect(other[firstLayer] == base[firstLayer] && abs(other[laterLayer] - base[laterLayer]) > 1e-4)
        // Untied, the later layer stores no block: refused on loading, naming its tensor.
        #expect {
            _ = try fixture(untied: true) { _ in }.load()
        } throws: { ($0 as? DroptraceError)?.message.contains(later) == true }
        // Its own copy is checked against the config on loading, as the first one's is.
        #expect {
            _ = try fixture(untied: true) { entries in
                entries += copies(entries).map { entry in
                    guard entry.name.hasSuffix("q_proj.weight") else { return entry }
                    // A row short.
                    let rows = entry.shape[0] - 1
                    return .init(name: entry.name, dtype: .float32, shape: [rows] + entry.shape.dropFirst()) {
                        let bytes = try entry.bytes()
                        return Data(bytes.prefix(bytes.count / entry.shape[0] * rows))
                    }
                }
            }.load()
        } throws: { ($0 as? DroptraceError).map { $0.message.contains(later + "self_attn.q_proj") && $0.message.contains("num_attention_heads") } == true }
    }

    /// Block-drop exports remove any layers but, with tied embeddings, the
    /// first hybrid one while a later one is kept (it stores the block the
    /// later ones are tied to) or all hybrid layers but one (transformers
    /// cannot build a tied model of one); module drops are refused
    /// (transformers' classes read no drop lists).
    @Test func exportsKeepTheStoredBlock() throws {
        let fixture = try EditedFixture(Self.name)
        let exported = try fixture.exportedConfig(droppingBlocks: [0, 3])
        #expect((exported["layers_block_type"] as? [String]) == ["linear_attention", "hybrid", "hybrid", "linear_attention"])
        #expect((exported["num_hidden_layers"] as? Int) == 4)
        let model = try fixture.load()
        #expect(model.exportProblem(DropPlan(blocks: [1, 5])) == nil && model.exportProblem(DropPlan(blocks: [2, 4])) == nil)
        #expect(model.exportProblem(DropPlan(blocks: [4]))?.contains("one hybrid layer (2)") == true)
        #expect(model.exportProblem(DropPlan(blocks: [2]))?.contains("one hybrid layer (4)") == true)
        // With layer 5 made hybrid too, the first hybrid layer is kept while later ones are.
        let three = try EditedFixture(Self.name) {
            $0["layers_block_type"] = ["linear_attention", "linear_attention", "hybrid", "linear_attention", "hybrid", "hybrid"]
        }
        try BadInputTests().rewriteWeights(three.model) { entries in
            for index in entries.indices {
                for part in ["mamba.", "input_layernorm."] where entries[index].name.hasPrefix("model.layers.5." + part) {
                    entries[index].name = "model.layers.5.mamba_decoder." + entries[index].name.dropFirst("model.layers.5.".count)
                }
            }
            var linear = entries.first { $0.name == "model.layers.4.linear.weight" }!
            linear.name = "model.layers.5.linear.weight"
            entries.append(linear)
        }
        let threeHybrid = try three.load()
        #expect(threeHybrid.exportProblem(DropPlan(blocks: [4])) == nil)
        #expect(threeHybrid.exportProblem(DropPlan(blocks: [2]))?.contains("hybrid layer 2 cannot be exported while hybrid layer 4") == true)
        // Untied, each hybrid layer loads its own stored block.
        let untied = try EditedFixture(Self.name) { $0["tie_word_embeddings"] = false }
        try BadInputTests().rewriteWeights(untied.model) { entries in
            let copies = entries.filter { $0.name.hasPrefix("model.layers.2.shared_transf.") }.map { entry in
                var copy = entry
                copy.name = "model.layers.4." + entry.name.dropFirst("model.layers.2.".count)
                return copy
            }
            entries += copies
            if var head = entries.first(where: { $0.name == "model.embed_tokens.weight" }) {
                head.name = "lm_head.weight"
                entries.append(head)
            }
        }
        let separate = try untied.load()
        #expect(separate.exportProblem(DropPlan(blocks: [2])) == nil && separate.exportProblem(DropPlan(blocks: [4])) == nil)
        #expect(model.exportProblem(DropPlan(attention: [0])) == nil)
        #expect(model.exportProblem(DropPlan(attention: [2]))?.contains("drop_attn_list") == true)
        #expect(model.exportProblem(DropPlan(mlp: [4]))?.contains("drop_attn_list") == true)
    }
}
