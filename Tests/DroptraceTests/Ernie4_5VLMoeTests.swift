@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// ERNIE 4.5 VL (`ernie4_5_vl_moe`) read as its language model: config
/// refusals and Ernie4_5_VLMoeTextConfig's defaults, `mlp_layer_types`, the
/// text experts stored as released (transposed router, [2, experts]
/// correction biases, text then vision experts per expert) and as
/// transformers' modules name them, the M-RoPE section, the head's tying and
/// the MLP types an export spells out. The scores themselves are checked
/// against transformers with every other family (`ScoringReferenceTests`, `DropTests`).
@Suite struct Ernie4_5VLMoeTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "ernie4_5_vl_moe-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "text_config.rms_norm_eps", "0", key: "text_config.rms_norm_eps"),
        Mutant(name, "text_config.moe_num_experts", "0", key: "text_config.moe_num_experts"),
        Mutant(name, "text_config.moe_num_experts", "null", key: "text_config.moe_num_experts"),
        Mutant(name, "text_config.moe_num_experts", "4611686018427387904", key: "text_config.moe_num_experts"),
        Mutant(name, "text_config.moe_k", "0", key: "text_config.moe_k"), Mutant(name, "text_config.moe_k", "9", key: "text_config.moe_k"),
        Mutant(name, "text_config.moe_num_shared_experts", "null", key: "text_config.moe_num_shared_experts"),
        Mutant(name, "text_config.moe_norm_min", "null", key: "text_config.moe_norm_min"),
        // Ernie4_5_VLMoeMoeBlock reads the text and the vision experts' widths.
        Mutant(name, "text_config.moe_intermediate_size", "[16]", key: "text_config.moe_intermediate_size"),
        Mutant(name, "text_config.moe_intermediate_size", "[0, 8]", key: "text_config.moe_intermediate_size[0]"),
        Mutant(name, "text_config.moe_intermediate_size", "[16, -1]", key: "text_config.moe_intermediate_size[1]"),
        // A missing layer's entry fails building it; an unknown one would build a dense MLP over routed weights.
        Mutant(name, "text_config.mlp_layer_types", "[\"dense\", \"sparse\"]", key: "text_config.mlp_layer_types"),
        Mutant(name, "text_config.mlp_layer_types", "[\"dense\", \"moe\", \"sparse\", \"dense\"]", key: "text_config.mlp_layer_types"),
        // Sections the rotary embedding cannot pre-rotate, split or pair.
        Mutant(name, "text_config.rope_parameters.mrope_section", "[2, 2]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(name, "text_config.rope_parameters.mrope_section", "[1, 3, 2]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(name, "text_config.rope_parameters.mrope_section", "[3, 3, 0]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(name, "text_config.rope_parameters.mrope_section", "[2, 2, 3]", key: "text_config.rope_parameters.mrope_section"),
        Mutant(name, "text_config.rope_parameters.rope_type", "\"linear\"", key: "rope type"),
        // Two spellings of one setting that disagree.
        Mutant(name, "text_config.num_experts", "4", key: "moe_num_experts"),
        // Sizes the tensors contradict: the router, the text experts' width, the vision experts'.
        Mutant(name, "text_config.moe_num_experts", "16", key: "text_config.moe_num_experts"),
        Mutant(name, "text_config.moe_num_experts", "4", key: "text_config.moe_num_experts"),
        Mutant(name, "text_config.moe_intermediate_size", "[32, 8]", key: "text_config.moe_intermediate_size[0]"),
        Mutant(name, "text_config.moe_intermediate_size", "[16, 16]", key: "text_config.moe_intermediate_size[1]"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The fixture edited in its text_config.
    static func edited(_ change: @escaping (inout [String: Any]) -> Void) throws -> EditedFixture {
        try EditedFixture(name) { config in
            var text = config["text_config"] as! [String: Any]
            change(&text)
            config["text_config"] = text
        }
    }

    /// Layers 1 and 2 route (mlp_layer_types) with the text experts: the
    /// softmax router read from the released [hidden, experts] tensor, the
    /// correction bias from row 0 of the stored [2, experts], moe_norm_min,
    /// one biased shared expert; the attention rotates interleaved pairs of
    /// the plain frequencies with biases on every projection.
    @Test func textExpertsAsReleased() throws {
        let fixture = try EditedFixture(Self.name), model = try fixture.load()
        let text = try FixtureFiles.config(Self.name)["text_config"] as! [String: Any]
        let mixtures = try Ernie4_5MoeTests.mixtures(model)
        #expect(mixtures.map { $0 != nil } == [false, true, true, false])
        let checkpoint = try Checkpoint(directory: fixture.model)
        for (layer, moe) in mixtures.enumerated() {
            guard let moe else { continue }
            let rule = try #require(groupLimitedRule(moe))
            #expect(moe.experts.count == 8 && moe.expertsPerToken == 2 && rule.scoring == .softmax)
            #expect(rule.denominatorFloor == Float(text["moe_norm_min"] as! Double))
            let biases = try checkpoint.tensor("model.layers.\(layer).mlp.moe_statics.e_score_correction_bias").floats()
            #expect(rule.selectionBias == Array(biases.prefix(8)) && Array(biases.prefix(8)) != Array(biases.suffix(8)))
            // The router as stored, transposed: logits of a one-hot input are the stored row.
            let stored = try checkpoint.tensor("model.layers.\(layer).mlp.gate.weight").floats()
            var unit = Matrix(rows: 1, cols: 48, data: [Float](repeating: 0, count: 48))
            unit.data[5] = 1
            #expect(moe.router(unit).data == Array(stored[(5 * 8)..<(6 * 8)]))
            guard case .gated(_, let down, _)? = moe.sharedExperts.first, moe.sharedExperts.count == 1 else {
                Issue.record("not one gated shared expert")
                continue
            }
            #expect(down.bias != nil && down.inFeatures == 16)
        }
        let rotary = try #require(try model.block(0).attention?.attention.rotary)
        let plain = (0..<6).map { 1 / pow(500_000, Double(2 * $0) / 12) }
        #expect(zip(rotary.inverseFrequencies, plain).allSatisfy { abs(Double($0) - $1) <= 1e-6 * $1 })
        let biases = try blockZeroBiases(fixture)
        #expect(biases.qkv && biases.output && biases.mlp)
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers(Self.name, unordered: true)
    }

    /// The routed layers stored as transformers' modules name them
    /// (`mlp.text_moe.gate`, its [1, experts] correction bias, fused experts;
    /// the vision experts under `mlp.vision_moe.`) score exactly as released.
    @Test func moduleNamesScoreAsReleased() throws {
        let scratch = try ScratchDirectory()
        let directory = try scratch.copyOfModel(Self.name)
        try Self.storeAsModules(directory)
        let names = try Checkpoint(directory: directory).tensorNames
        #expect(names.contains("model.layers.1.mlp.text_moe.experts.gate_up_proj") && !names.contains("model.layers.1.mlp.gate.weight"))
        let sequences = FixtureFiles.jsonlSequences()
        let released = try ImportanceScorer(model: try EditedFixture(Self.name).load()).score(sequences, calibrationPath: "calib")
        let modules = try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: directory))).score(sequences, calibrationPath: "calib")
        #expect(modules.attention == released.attention && modules.mlp == released.mlp && modules.block == released.block)
    }

    /// A layer whose vision experts are missing or of another width, or
    /// whose vision router has another shape, is refused, as transformers
    /// cannot split the experts into the two halves or load the router.
    @Test func visionExpertsAreChecked() throws {
        // A missing expert, one of another width, the vision router of another shape.
        let changes: [(String, String, (inout [SafetensorsWriter.Entry]) -> Void)] = [
            ("model.layers.2.mlp.experts.15.up_proj.weight", "experts.15.up_proj", { $0.removeAll { $0.name == "model.layers.2.mlp.experts.15.up_proj.weight" } }),
            ("model.layers.1.mlp.experts.8.down_proj.weight", "experts.8.down_proj", { $0.removeAll { $0.name == "model.layers.1.mlp.experts.8.down_proj.weight" } }),
            ("model.layers.1.mlp.gate.weight_1", "gate.weight_1", { entries in
                let i = entries.firstIndex { $0.name == "model.layers.1.mlp.gate.weight_1" }!
                entries[i].shape = [8, 48]
            }),
        ]
        for (drop, named, change) in changes {
            let fixture = try EditedFixture(Self.name)
            try rewriteTensors(fixture.model, change)
            do {
                _ = try fixture.load()
                Issue.record("loaded with \(drop) changed")
            } catch let error as DroptraceError {
                #expect(error.message.contains(named) && !error.message.contains("\n"), "\(error)")
            }
        }
    }

    /// What text_config leaves out takes Ernie4_5_VLMoeTextConfig's
    /// defaults: layer 0 dense and the others routed, the [22, 22, 20]
    /// section (which a 12-wide head cannot pair), base 500000. The head
    /// is tied by the top level's tie_word_embeddings alone.
    @Test func omittedKeysAndTying() throws {
        // Without routed layers the expert keys are not checked, a huge count included (layer 1 then lacks its dense MLP).
        let dense = try Self.edited { $0["mlp_layer_types"] = ["dense", "dense", "dense", "dense"]; $0["moe_num_experts"] = Int.max }
        #expect(throws: DroptraceError.self) { _ = try dense.load().block(1) }
        let routed = try Self.edited { $0["mlp_layer_types"] = nil }
        // Layer 3 routes by default, and the fixture stores a dense MLP there.
        #expect(throws: DroptraceError.self) { try routed.load().block(3) }
        try Self.edited { text in
            var rope = text["rope_parameters"] as! [String: Any]
            rope["mrope_section"] = nil
            text["rope_parameters"] = rope
        }.expectRefused(naming: "text_config.rope_parameters.mrope_section")
        let untiedText = try Self.edited { $0["tie_word_embeddings"] = false }
        #expect(try untiedText.attentionScores() == EditedFixture(Self.name).attentionScores())
        // Untied by the top level: the stored weights hold no lm_head.
        #expect(throws: DroptraceError.self) { try EditedFixture(Self.name) { $0["tie_word_embeddings"] = false }.load().head() }
    }

    /// An export without some blocks spells out the kept layers' MLP types in text_config.
    @Test func blockDropSpellsOutMLPTypes() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["mlp_layer_types"] as? [String] == ["sparse", "sparse", "dense"] && text["num_hidden_layers"] as? Int == 3)
    }

    /// Rewrites `directory`'s routed layers under transformers' module names.
    static func storeAsModules(_ directory: URL) throws {
        let original = try Checkpoint(directory: directory)
        let (experts, hidden) = (8, 48)
        try rewriteTensors(directory) { entries in
            for layer in [1, 2] {
                let p = "model.layers.\(layer).mlp."
                func floats(_ name: String) throws -> [Float] { try original.tensor(p + name).floats() }
                /// `values` [rows, cols] as [cols, rows].
                func transposed(_ values: [Float], rows: Int, cols: Int) -> [Float] {
                    (0..<(rows * cols)).map { i in values[(i % rows) * cols + i / rows] }
                }
                func stacked(_ range: Range<Int>) throws -> (gateUp: [Float], down: [Float]) {
                    (try range.flatMap { try floats("experts.\($0).gate_proj.weight") + floats("experts.\($0).up_proj.weight") },
                     try range.flatMap { try floats("experts.\($0).down_proj.weight") })
                }
                entries.removeAll { $0.name.hasPrefix(p + "gate.") || $0.name.hasPrefix(p + "experts.") || $0.name.hasPrefix(p + "moe_statics.") }
                let biases = try floats("moe_statics.e_score_correction_bias")
                for (module, router, range, width) in [("text_moe.", "gate.weight", 0..<experts, 16), ("vision_moe.", "gate.weight_1", experts..<(2 * experts), 8)] {
                    let (gateUp, down) = try stacked(range)
                    entries += [
                        .floats(p + module + "gate.weight", [experts, hidden], transposed(try floats(router), rows: hidden, cols: experts)),
                        .floats(p + module + "gate.moe_statics.e_score_correction_bias", [1, experts], Array(biases[range])),
                        .floats(p + module + "experts.gate_up_proj", [experts, 2 * width, hidden], gateUp),
                        .floats(p + module + "experts.down_proj", [experts, hidden, width], down),
                    ]
                }
            }
        }
    }
}

extension SafetensorsWriter.Entry {
    /// A float32 tensor of `values`.
    static func floats(_ name: String, _ shape: [Int], _ values: [Float]) -> Self {
        Self(name: name, dtype: .float32, shape: shape, bytes: values.withUnsafeBufferPointer { Data(buffer: $0) })
    }
}

/// Rewrites the single-file checkpoint in `directory` with `change` applied to its tensors.
func rewriteTensors(_ directory: URL, _ change: (inout [SafetensorsWriter.Entry]) throws -> Void) throws {
    let original = try Checkpoint(directory: directory)
    var entries = try original.tensorNames.map { SafetensorsWriter.Entry(try original.tensor($0)) }
    try change(&entries)
    let file = directory.appendingPathComponent(Checkpoint.singleFileName)
    try FileManager.default.removeItem(at: file)
    try SafetensorsWriter.write(entries, to: file)
}
