@testable import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// HRM-Text (`hrm_text`): two stacks of two weightless-norm Llama layers
/// run in H_cycles 2 × (L_cycles 2 + 1) invocations (`LayerLoop.Stacks`),
/// the scaled embedding and `z_L_init` as the states' starts, the gated
/// multi-head attention; HrmTextConfig's refusals and those of values its
/// model cannot run as droptrace scores it; the released fused tensors and
/// transformers' split ones; cached decoding with a cache per invocation;
/// exports of as many blocks of each stack. The scores themselves are checked against transformers
/// with every other family (`DropTests` and the reference suites), and here.
@Suite struct HrmTextTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "hrm_text-f32"

    static let mutants: [Mutant] = [
        // Stacks run no times (transformers runs them, leaving layers droptrace cannot score) or have no layers.
        Mutant(name, "H_cycles", "0"), Mutant(name, "L_cycles", "0"), Mutant(name, "L_cycles", "-1"),
        Mutant(name, "num_layers_per_stack", "0"),
        // HrmTextConfig's types and checks.
        Mutant(name, "H_cycles", "2.0"), Mutant(name, "head_dim", "null"), Mutant(name, "initializer_range", "1.5"),
        Mutant(name, "num_attention_heads", "5", key: "hidden_size"),
        // Fewer cache slots than invocations: HrmTextModel's cached forward fails.
        Mutant(name, "num_hidden_layers", "5"),
        // Sizes the tensors contradict.
        Mutant(name, "head_dim", "8"), Mutant(name, "intermediate_size", "64"), Mutant(name, "num_layers_per_stack", "3"),
        // LLM-Drop's lists, which HrmTextModel does not read.
        Mutant(name, "drop_attn_list", "[1]"),
        // More layer invocations than droptrace runs, or more than an Int counts (checked before anything is sized).
        Mutant(name, "H_cycles", "100000", key: "H_cycles"), Mutant(name, "L_cycles", "1000000000000", key: "H_cycles"),
        Mutant(name, "H_cycles", "4611686018427387904", key: "H_cycles"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// An empty stack is refused with the count config.json gives, before
    /// the weights are compared with a layer count.
    @Test(arguments: [0, -3])
    func emptyStacksAreRefusedAsWritten(_ count: Int) throws {
        let fixture = try EditedFixture(Self.name) { $0["num_layers_per_stack"] = count }
        let error = #expect(throws: DroptraceError.self) { _ = try fixture.load() }
        #expect(error?.message.contains("\"num_layers_per_stack\" is \(count):") == true, "\(String(describing: error))")
    }

    @Test func scoresMatchTransformers() throws {
        try expectScoresMatchTransformers(Self.name)
    }

    /// Layers 0, 1 are the L stack's, 2, 3 the H stack's: each cycle runs the
    /// L stack twice, then the H stack, each invocation after its entry; an L
    /// layer runs 4 passes, an H layer 2. Every layer's attention is
    /// multi-head, rotated, gated by its own gate_proj, without biases.
    @Test func stacksAsHrmTextRunsThem() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.layerCount == 4)
        let loop = try #require(model.layerLoop)
        let stacks = try #require(loop.stacks)
        #expect(stacks.low == 0..<2 && stacks.high == 2..<4 && stacks.highCycles == 2 && stacks.lowCycles == 2)
        #expect(stacks.lowStart.contains { $0 != 0 })
        #expect(model.layerSteps.count == 2 * (2 * 3 + 3))
        #expect((0..<4).map { model.passes(of: $0) } == [4, 4, 2, 2])
        for index in 0..<4 {
            let attention = try #require(try model.block(index).attention?.attention)
            #expect(attention.layout.numKVHeads == 4 && attention.layout.headDim == 16)
            #expect(attention.rotary != nil && attention.outputGate != nil && attention.output.bias == nil)
        }
    }

    /// A config as first written (num_hidden_layers the stack size, no
    /// num_layers_per_stack) is the same model; the embedding scale and the
    /// cycles move the scores, as the fixture's check showed in transformers;
    /// without embedding_scale the scale is 1 / initializer_range.
    @Test func configFormsAndFeatures() throws {
        let fixture = try scores(EditedFixture(Self.name))
        let legacy = try EditedFixture(Self.name) { config in
            config["num_layers_per_stack"] = nil
            config["num_hidden_layers"] = 2
        }
        #expect(try scores(legacy) == fixture)
        let derived = try EditedFixture(Self.name) { $0["embedding_scale"] = NSNull() }
        #expect(try scores(derived) == fixture)
        for (key, value) in [("embedding_scale", 1.0 as Any), ("H_cycles", 1), ("L_cycles", 1)] {
            #expect(try scores(EditedFixture(Self.name) { $0[key] = value }) != fixture, "\(key)")
        }
        try EditedFixture(Self.name) { config in
            config["embedding_scale"] = NSNull()
            config["initializer_range"] = 0.0
        }.expectRefused(naming: "initializer_range")
        // prefix_lm acts only with token_type_ids.
        #expect(try scores(EditedFixture(Self.name) { $0["prefix_lm"] = false }) == fixture)
    }

    /// The projections as transformers names them (gate, q, k, v apart,
    /// gate_proj and up_proj apart, self_attn.o_proj) are the released ones
    /// split: the same scores; both forms stored at once are refused. Without
    /// z_L_init (initialised to zeros by transformers) the scores move.
    @Test func transformersNamesAreTheSameModel() throws {
        let fixture = try EditedFixture(Self.name)
        let split = try fixture.scratch.copyOfModel(Self.name, as: "split")
        let stored = try SafetensorsFile(path: split.appendingPathComponent("model.safetensors").path).tensors
        try BadInputTests().rewriteWeights(split) { entries in
            var rewritten: [SafetensorsWriter.Entry] = []
            for entry in entries {
                let name = entry.name
                func parts(_ fused: String, _ names: [String]) throws -> [SafetensorsWriter.Entry] {
                    let bytes = try stored[name]!.storedBytes(), rows = entry.shape[0] / names.count
                    let size = bytes.count / names.count
                    return names.enumerated().map { index, part in
                        SafetensorsWriter.Entry(
                            name: name.replacingOccurrences(of: fused, with: part), dtype: entry.dtype, shape: [rows, entry.shape[1]],
                            bytes: bytes.subdata(in: (bytes.startIndex + index * size)..<(bytes.startIndex + (index + 1) * size)))
                    }
                }
                if name.hasSuffix("attn.gqkv_proj.weight") {
                    rewritten += try! parts("attn.gqkv_proj", ["self_attn.gate_proj", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"])
                } else if name.hasSuffix("mlp.gate_up_proj.weight") {
                    rewritten += try! parts("gate_up_proj", ["gate_proj", "up_proj"])
                } else {
                    var renamed = entry
                    renamed.name = name.replacingOccurrences(of: ".attn.o_proj.", with: ".self_attn.o_proj.")
                    rewritten.append(renamed)
                }
            }
            entries = rewritten
        }
        let model = try ModelRegistry.load(try Checkpoint(directory: split))
        let splitScores = try ImportanceScorer(model: model).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
        #expect(splitScores.attention + splitScores.mlp + splitScores.block == (try scores(fixture)))
        // Both forms of layer 0's gate | q | k | v.
        let both = try fixture.scratch.copyOfModel(Self.name, as: "both")
        try BadInputTests().rewriteWeights(both) { entries in
            var copy = entries.first { $0.name == "model.L_module.layers.0.attn.o_proj.weight" }!
            copy.name = "model.L_module.layers.0.self_attn.q_proj.weight"
            entries.append(copy)
        }
        #expect(throws: DroptraceError.self) { _ = try ModelRegistry.load(try Checkpoint(directory: both)).block(0) }
        let noStart = try fixture.scratch.copyOfModel(Self.name, as: "nostart")
        try BadInputTests().rewriteWeights(noStart) { $0.removeAll { $0.name == "model.z_L_init" } }
        let unstarted = try ModelRegistry.load(try Checkpoint(directory: noStart))
        #expect(unstarted.layerLoop?.stacks?.lowStart.allSatisfy { $0 == 0 } == true)
        let unstartedScores = try ImportanceScorer(model: unstarted).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
        #expect(unstartedScores.attention + unstartedScores.mlp + unstartedScores.block != (try scores(fixture)))
        // z_L_init stored without the prefix the other tensors have: transformers loads it all the same.
        let bare = try fixture.scratch.copyOfModel(Self.name, as: "bare")
        try BadInputTests().rewriteWeights(bare) { entries in
            let index = entries.firstIndex { $0.name == "model.z_L_init" }!
            entries[index].name = "z_L_init"
        }
        let bareModel = try ModelRegistry.load(try Checkpoint(directory: bare))
        #expect(bareModel.layerLoop?.stacks?.lowStart == (try fixture.load()).layerLoop?.stacks?.lowStart)
    }

    /// Key/value-cache decoding, one cache per invocation of each layer
    /// (transformers' slot per invocation), equals the forward pass, with
    /// either stack's layers dropped; the caches hold 2 · (4 + 4 + 2 + 2)
    /// rows of 64 keys and values per token.
    @Test func cachedDecodingHasACachePerInvocation() throws {
        let model = try EditedFixture(Self.name).load()
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 12, prefill: 7,
            plans: [.none, DropPlan(blocks: [1]), DropPlan(attention: [0], mlp: [3]), DropPlan(blocks: [2, 3]), DropPlan(blocks: [0, 1])],
            label: "hrm_text")
        #expect(try IncrementalDecoder(model: model, plan: .none, capacity: 4).cacheBytesPerToken == 12 * 2 * 64 * 4)
        #expect(try IncrementalDecoder(model: model, plan: DropPlan(attention: [0]), capacity: 4).cacheBytesPerToken == 8 * 2 * 64 * 4)
    }

    /// A plan removing as many blocks of each stack exports both stacks
    /// renumbered, num_layers_per_stack and num_hidden_layers (a slot per
    /// invocation) rewritten; the others have no checkpoint transformers
    /// loads as the model droptrace ran (one stack size for both stacks, no
    /// per-module drop lists): refused.
    @Test func exportsKeepAsManyLayersOfEachStack() throws {
        let fixture = try EditedFixture(Self.name)
        let model = try fixture.load()
        for plan in [DropPlan(blocks: [0]), DropPlan(blocks: [0, 1]), DropPlan(blocks: [0, 1, 2, 3]), DropPlan(attention: [1]), DropPlan(mlp: [3])] {
            #expect(model.exportProblem(plan) != nil)
            #expect(throws: DroptraceError.self) { try DroppedModelExport.write(model: model, plan: plan, to: fixture.scratch.path("export")) }
        }
        let config = try fixture.exportedConfig(droppingBlocks: [1, 2])
        #expect(config["num_layers_per_stack"] as? Int == 1 && config["num_hidden_layers"] as? Int == 6)
        let names = try Checkpoint(directory: fixture.scratch.path("export")).tensorNames
        #expect(names.contains("model.L_module.layers.0.attn.gqkv_proj.weight") && names.contains("model.H_module.layers.0.mlp.down_proj.weight"))
        #expect(!names.contains { $0.contains(".layers.1.") } && names.contains("model.z_L_init"))
        // A config as first written counts the stack in num_hidden_layers.
        let legacy = try EditedFixture(Self.name) { config in
            config["num_layers_per_stack"] = nil
            config["num_hidden_layers"] = 2
        }.exportedConfig(droppingBlocks: [0, 3])
        #expect(legacy["num_hidden_layers"] as? Int == 1 && legacy["num_layers_per_stack"] == nil)
        #expect(throws: DroptraceError.self) { try MergekitSlices.checkSource(model) }
    }
}
