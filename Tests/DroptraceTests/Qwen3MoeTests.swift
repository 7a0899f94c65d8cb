import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import Testing

/// Qwen3-MoE's mixture-of-experts keys: which layers are sparse, the expert
/// count under either of its names, and both expert tensor layouts.
@Suite struct Qwen3MoeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    /// transformers 5 writes the expert count as `num_local_experts`.
    static let mutants: [Mutant] = [
        Mutant("qwen3_moe-f32", "num_local_experts", "-1"),
        Mutant("qwen3_moe-f32", "num_local_experts", "5"),
        Mutant("qwen3_moe-f32", "num_local_experts", "1152921504606846976"),
        Mutant("qwen3_moe-f32", "num_experts", "3"),
        Mutant("qwen3_moe-f32", "num_experts_per_tok", "0"),
        Mutant("qwen3_moe-f32", "num_experts_per_tok", "5"),
        Mutant("qwen3_moe-f32", "decoder_sparse_step", "0"),
        Mutant("qwen3_moe-f32", "moe_intermediate_size", "0"),
        Mutant("qwen3_moe-f32", "moe_intermediate_size", "17"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        if mutant.path == "moe_intermediate_size", mutant.value == "17" {
            // A wrong expert width is found reading the experts' tensors.
            let scratch = try ScratchDirectory()
            let model = try scratch.copyOfModel("qwen3_moe-f32", as: "model")
            try Self.edit(model) { $0["moe_intermediate_size"] = 17 }
            #expect(throws: DroptraceError.self) { _ = try ModelRegistry.load(try Checkpoint(directory: model)).block(0) }
            return
        }
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    static func edit(_ model: URL, _ change: (inout [String: Any]) -> Void) throws {
        let url = model.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        change(&config)
        try KindPreservingJSON.data(config).write(to: url)
    }

    func isSparse(_ model: any LanguageModel) throws -> [Bool] {
        try (0..<model.layerCount).map { layer in
            if case .mixture? = try model.block(layer).mlp?.feedForward { return true }
            return false
        }
    }

    /// Layer 1 is in `mlp_only_layers`: a dense MLP of intermediate_size;
    /// the others route with renormalised weights (`norm_topk_prob`).
    @Test func mlpOnlyLayersAreDense() throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model("qwen3_moe-f32")))
        #expect(try isSparse(model) == [true, false, true, true])
        guard case .mixture(let moe)? = try model.block(0).mlp?.feedForward,
              case .softmaxTopK(let renormalize) = moe.rule else {
            Issue.record("layer 0 is not routed by softmax top-k")
            return
        }
        #expect(renormalize)
    }

    /// An `mlp_only_layers` entry past the last layer (what cutting layers
    /// without editing the list leaves) or below 0 matches no layer, as
    /// transformers' `layer_idx not in mlp_only_layers` test: the model is
    /// the fixture's, and scores as transformers 5.23 does. (transformers'
    /// importances of the fixture with `[1, 7]` and with `[1, -1]`, from
    /// `make_fixtures.importances`, equal those of `[1]` recorded in
    /// reference.json exactly.)
    @Test(arguments: ["[1, 7]", "[1, -1]"])
    func mlpOnlyLayersOutsideTheLayersSelectNone(list: String) throws {
        let scratch = try ScratchDirectory()
        let model = try EditedModel.copy("qwen3_moe-f32", in: scratch, [("mlp_only_layers", list)])
        let loaded = try EditedModel.load(model)
        #expect(try isSparse(loaded) == [true, false, true, true])
        let scores = try ImportanceScorer(model: loaded).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
        let reference = try #require(FixtureFiles.scores("qwen3_moe-f32", "jsonl", "float32_compute"))
        ScoringReferenceTests().check("qwen3_moe-f32 \(list)", scores, against: reference, tolerance: ScoringReferenceTests.float32Tolerance)
    }

    /// `decoder_sparse_step` 2 makes layers 1 and 3 sparse (1-based beat);
    /// an export without block 1 lists the dense layers it keeps instead of
    /// the beat, which renumbering would shift.
    @Test func sparseStepSurvivesABlockDrop() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("qwen3_moe-f32", as: "model")
        try Self.edit(model) { config in
            config["decoder_sparse_step"] = 2
            config["mlp_only_layers"] = [Int]()
        }
        // Layers 0 and 2 now need the dense MLP the fixture has at layer 1,
        // and layer 1 experts: swap them in.
        let original = try Checkpoint(directory: model)
        var entries: [SafetensorsWriter.Entry] = []
        func moved(_ name: String, _ from: Int, to layers: [Int]) throws {
            for layer in layers {
                entries.append(SafetensorsWriter.Entry(
                    try original.tensor(name), renamedTo: name.replacingOccurrences(of: "layers.\(from).", with: "layers.\(layer).")))
            }
        }
        for name in original.tensorNames {
            if name.hasPrefix("model.layers.1.mlp.") {
                try moved(name, 1, to: [0, 2])
            } else if name.hasPrefix("model.layers.0.mlp.") {
                try moved(name, 0, to: [1])
            } else if !name.hasPrefix("model.layers.2.mlp.") {
                entries.append(SafetensorsWriter.Entry(try original.tensor(name)))
            }
        }
        let file = model.appendingPathComponent(Checkpoint.singleFileName)
        try FileManager.default.removeItem(at: file)
        try SafetensorsWriter.write(entries, to: file)
        let stepped = try ModelRegistry.load(try Checkpoint(directory: model))
        #expect(try isSparse(stepped) == [false, true, false, true])

        let export = scratch.path("export")
        try DroppedModelExport.write(model: stepped, plan: DropPlan(blocks: [1]), to: export)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: export.appendingPathComponent("config.json"))) as! [String: Any]
        #expect((config["decoder_sparse_step"] as? NSNumber)?.intValue == 1)
        #expect((config["mlp_only_layers"] as? [NSNumber])?.map(\.intValue) == [0, 1])
        #expect(try isSparse(ModelRegistry.load(try Checkpoint(directory: export))) == [false, false, true])
    }

    /// llama.cpp's `qwen3moe` GGUF (experts stacked in 3-D `ffn_*_exps`, router
    /// `ffn_gate_inp`; scripts/fixtures/make_gguf_qwen3_olmoe_fixtures.py)
    /// scores as the safetensors fixture does.
    /// Layer 1 has no `ffn_gate_inp`: it reads as a dense MLP (`mlp_only_layers`).
    @Test func ggufScoresLikeTheSafetensorsCheckpoint() throws {
        try expectGGUFScoresLike("qwen3_moe-f32.gguf", safetensors: FixtureFiles.model("qwen3_moe-f32"), modelType: "qwen3_moe")
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("qwen3_moe-f32")
    }

    /// Fused 3-D experts (`mlp.experts.gate_up_proj` / `down_proj`) score
    /// exactly as the per-expert tensors `save_pretrained` writes.
    @Test func fusedExpertTensorsLoadLikePerExpertOnes() throws {
        try expectFusedExpertsScoreAlike("qwen3_moe-f32")
    }
}

/// Fixture `name`'s per-expert `mlp.experts.<e>.gate_proj|up_proj|down_proj`
/// fused into 3-D tensors give the scores of the original.
func expectFusedExpertsScoreAlike(
    _ name: String, from stored: String = "mlp.experts.", router: String = "mlp.gate",
    names: (gate: String, up: String, down: String) = ("gate_proj", "up_proj", "down_proj"), fusedRouter: String = "mlp.gate",
    fused: String = "mlp.experts."
) throws {
    let scratch = try ScratchDirectory()
    let directory = try scratch.copyOfModel(name)
    try fuseExperts(in: directory, from: stored, router: router, names: names, fusedRouter: fusedRouter, fused: fused)
    #expect(try Checkpoint(directory: directory).tensorNames.contains { $0.hasSuffix(fused + "gate_up_proj") })
    let sequences = FixtureFiles.jsonlSequences()
    let expected = try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(name))))
        .score(sequences, calibrationPath: "calib")
    let scores = try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: directory)))
        .score(sequences, calibrationPath: "calib")
    let difference = ReferenceScores(
        attention: expected.attention, mlp: expected.mlp, block: expected.block, blockGap: expected.blockGap
    ).maxDifference(attention: scores.attention, mlp: scores.mlp, block: scores.block, blockGap: scores.blockGap)
    #expect(difference < 1e-7, "fused experts change the scores by \(difference)")
}
