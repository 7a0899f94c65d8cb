import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import Testing

/// The expert tensors of mixture-of-experts checkpoints are checked with the
/// layers, as transformers 5.23 loads them: it collects a sparse layer's
/// per-expert tensors into its fused parameters, so it refuses an expert
/// index at or past the configured count and a layer holding its experts
/// both fused and per expert (checked with transformers 5.23's
/// `from_pretrained` on the same edits: a conversion error, an AttributeError),
/// while the same names on a dense layer are unexpected keys it ignores.
@Suite struct ExpertTensorTests {
    /// A fixture with the per-expert names it stores (`stored`, projections
    /// gate, up, down) and the spelling `experts` a test adds, the configured
    /// count and its key, and a dense layer if the fixture has one.
    struct Family: Sendable, CustomStringConvertible {
        let fixture: String
        let stored: String
        let experts: String
        let projections: (gate: String, up: String, down: String)
        let router: String
        let count: Int
        let countKey: String
        let denseLayer: Int?
        /// A sparse layer the tests add tensors to.
        var sparseLayer = 2
        var description: String { fixture + " " + experts }
    }

    static let qwen = ("gate_proj", "up_proj", "down_proj"), mixtral = ("w1", "w3", "w2")
    static let families = [
        Family(
            fixture: "qwen3_moe-f32", stored: "mlp.experts.", experts: "mlp.experts.", projections: qwen, router: "mlp.gate", count: 4,
            countKey: "num_local_experts", denseLayer: 1),
        Family(
            fixture: "olmoe-f32", stored: "mlp.experts.", experts: "mlp.experts.", projections: qwen, router: "mlp.gate", count: 4,
            countKey: "num_experts", denseLayer: nil),
        Family(
            fixture: "deepseek_v2-f32", stored: "mlp.experts.", experts: "mlp.experts.", projections: qwen, router: "mlp.gate", count: 4,
            countKey: "n_routed_experts", denseLayer: 0),
        Family(
            fixture: "deepseek_v3-f32", stored: "mlp.experts.", experts: "mlp.experts.", projections: qwen, router: "mlp.gate", count: 8,
            countKey: "n_routed_experts", denseLayer: 0),
        Family(
            fixture: "mixtral-f32", stored: "block_sparse_moe.experts.", experts: "block_sparse_moe.experts.", projections: mixtral,
            router: "block_sparse_moe.gate", count: 4, countKey: "num_local_experts", denseLayer: nil),
        // transformers renames `block_sparse_moe.` to `mlp.` before collecting: this spelling counts too.
        Family(
            fixture: "mixtral-f32", stored: "block_sparse_moe.experts.", experts: "mlp.experts.", projections: mixtral,
            router: "block_sparse_moe.gate", count: 4, countKey: "num_local_experts", denseLayer: nil),
        Family(
            fixture: "minimax_m2-f32", stored: "block_sparse_moe.experts.", experts: "block_sparse_moe.experts.", projections: mixtral,
            router: "block_sparse_moe.gate", count: 8, countKey: "num_local_experts", denseLayer: nil),
        Family(
            fixture: "qwen2_moe-f32", stored: "mlp.experts.", experts: "mlp.experts.", projections: qwen, router: "mlp.gate", count: 4,
            countKey: "num_experts", denseLayer: 2, sparseLayer: 1),
    ]

    /// A copy of `fixture` named `name` whose weights also hold `added`
    /// (name → a stored tensor copied under it).
    static func copy(_ fixture: String, in scratch: ScratchDirectory, as name: String, adding added: [String: TensorSlice]) throws -> URL {
        let directory = try scratch.copyOfModel(fixture, as: name)
        let original = try Checkpoint(directory: directory)
        var entries = try original.tensorNames.map { SafetensorsWriter.Entry(try original.tensor($0)) }
        entries += added.sorted { $0.key < $1.key }.map { SafetensorsWriter.Entry($0.value, renamedTo: $0.key) }
        let file = directory.appendingPathComponent(Checkpoint.singleFileName)
        try FileManager.default.removeItem(at: file)
        try SafetensorsWriter.write(entries, to: file)
        return directory
    }

    /// The error loading `directory` gives; nil when it loads.
    static func loadError(_ directory: URL) -> String? {
        do {
            _ = try EditedModel.load(directory)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// An expert at index `count` of a sparse layer is refused naming
    /// config.json, the key and the tensor, as a layer past
    /// num_hidden_layers is; on a dense layer, or under a name transformers
    /// does not collect (a `_scale_inv` beside it), the same tensor is ignored.
    @Test(arguments: families)
    func anExpertPastTheConfiguredCountIsRefused(_ family: Family) throws {
        let scratch = try ScratchDirectory()
        let source = try Checkpoint(directory: FixtureFiles.model(family.fixture))
        let up = family.projections.up
        let last = try source.tensor("model.layers.\(family.sparseLayer).\(family.stored)\(family.count - 1).\(up).weight")
        let extra = "model.layers.\(family.sparseLayer).\(family.experts)\(family.count).\(up).weight"
        let directory = try Self.copy(family.fixture, in: scratch, as: "extra", adding: [extra: last])
        #expect(
            Self.loadError(directory)
                == "\(directory.path)/config.json: \"\(family.countKey)\" is \(family.count), but the weights hold tensor '\(extra)' of expert \(family.count)")

        var ignored = [extra + "_scale_inv": last]
        if let dense = family.denseLayer { ignored["model.layers.\(dense).\(family.experts)\(family.count).\(up).weight"] = last }
        #expect(Self.loadError(try Self.copy(family.fixture, in: scratch, as: "ignored", adding: ignored)) == nil)
    }

    /// A sparse layer's experts stored both per expert (as saved) and fused (the
    /// in-memory 3-D parameters, both or gate_up_proj alone) are refused
    /// naming the weights and the layer, as a tensor stored with and without
    /// `model.` is: the copies are one parameter to transformers. Fused
    /// tensors on a dense layer are ignored.
    @Test(arguments: families.filter { $0.stored == $0.experts })
    func expertsStoredBothFusedAndPerExpertAreRefused(_ family: Family) throws {
        let scratch = try ScratchDirectory()
        let fusedCopy = try scratch.copyOfModel(family.fixture, as: "fused")
        try fuseExperts(in: fusedCopy, from: family.stored, router: family.router, names: family.projections)
        let fused = try Checkpoint(directory: fusedCopy)
        // The first per-expert name in sorted order, which the error quotes.
        let perExpert = [family.projections.gate, family.projections.up, family.projections.down].min()!
        for kept in [["down_proj", "gate_up_proj"], ["gate_up_proj"]] {
            let added = try Dictionary(uniqueKeysWithValues: kept.map {
                ("model.layers.\(family.sparseLayer).mlp.experts.\($0)", try fused.tensor("model.layers.\(family.sparseLayer).mlp.experts.\($0)"))
            })
            let directory = try Self.copy(family.fixture, in: scratch, as: kept.joined(separator: "+"), adding: added)
            #expect(
                Self.loadError(directory)
                    == "\(directory.path): layer \(family.sparseLayer)'s experts are stored partly fused ('model.layers.\(family.sparseLayer).mlp.experts.\(kept[0])') and partly per expert ('model.layers.\(family.sparseLayer).\(family.stored)0.\(perExpert).weight'): droptrace reads a layer's experts in one form (transformers reads the two forms of one projection as one parameter); store them fused or per expert")
        }
        if let dense = family.denseLayer {
            let onDense = try Self.copy(
                family.fixture, in: scratch, as: "dense",
                adding: ["model.layers.\(dense).mlp.experts.gate_up_proj": try fused.tensor("model.layers.\(family.sparseLayer).mlp.experts.gate_up_proj")])
            #expect(Self.loadError(onDense) == nil)
        }
    }

    /// An expert index with leading zeros (`experts.01.`) is expert 1 to
    /// transformers (a second copy beside `experts.1.`, which it refuses);
    /// droptrace reads experts by the names save_pretrained writes, so it
    /// refuses the spelling by name rather than miss or ignore the tensor.
    @Test(arguments: families)
    func anExpertIndexWithLeadingZerosIsRefused(_ family: Family) throws {
        let scratch = try ScratchDirectory()
        let source = try Checkpoint(directory: FixtureFiles.model(family.fixture))
        let up = family.projections.up
        let padded = "model.layers.\(family.sparseLayer).\(family.experts)01.\(up).weight"
        let directory = try Self.copy(
            family.fixture, in: scratch, as: "padded",
            adding: [padded: try source.tensor("model.layers.\(family.sparseLayer).\(family.stored)1.\(up).weight")])
        #expect(
            Self.loadError(directory)
                == "\(directory.path): tensor '\(padded)' writes expert 1 with leading zeros, which transformers reads as that "
                + "expert; droptrace reads experts named as save_pretrained writes them: rename it")
    }

    /// Shared experts of width 0 (`shared_expert_intermediate_size: 0`,
    /// `n_shared_experts: 0`), which transformers builds with empty weights
    /// and whose zero output it adds, score as the same model with its
    /// shared experts' output zeroed (scores against transformers: 1e-8);
    /// stored tensors of another shape are refused.
    @Test(arguments: [
        ("qwen2_moe-f32", "mlp.shared_expert.", "shared_expert_intermediate_size"),
        ("deepseek_v3-f32", "mlp.shared_experts.", "n_shared_experts"),
        ("deepseek_v2-f32", "mlp.shared_experts.", "n_shared_experts"),
    ])
    func sharedExpertsOfWidthZeroAddNothing(fixture: String, shared: String, key: String) throws {
        func scores(_ directory: URL) throws -> ModuleScores {
            try ImportanceScorer(model: try ModelRegistry.load(try Checkpoint(directory: directory)))
                .score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
        }
        let scratch = try ScratchDirectory()
        let zeroed = try scratch.copyOfModel(fixture, as: "zeroed")
        try BadInputTests().rewriteWeights(zeroed) { entries in
            for index in entries.indices where entries[index].name.hasSuffix(shared + "down_proj.weight") {
                let shape = entries[index].shape
                entries[index] = SafetensorsWriter.Entry(name: entries[index].name, shape: shape) {
                    [Float](repeating: 0, count: shape.reduce(1, *))
                }
            }
        }
        let empty = try scratch.copyOfModel(fixture, as: "empty")
        try BadInputTests().rewriteConfig(empty) { $0[key] = 0 }
        try BadInputTests().rewriteWeights(empty) { entries in
            for index in entries.indices where entries[index].name.contains(shared) {
                var shape = entries[index].shape
                shape[entries[index].name.hasSuffix("down_proj.weight") ? 1 : 0] = 0
                entries[index] = SafetensorsWriter.Entry(name: entries[index].name, shape: shape) { [] }
            }
        }
        let (expected, measured) = (try scores(zeroed), try scores(empty))
        #expect(expected.attention == measured.attention && expected.mlp == measured.mlp && expected.block == measured.block)
        #expect(measured.mlp != (try scores(FixtureFiles.model(fixture))).mlp, "the shared experts must matter for this test to tell")

        try BadInputTests().rewriteWeights(empty) { entries in
            for index in entries.indices where entries[index].name.hasSuffix(shared + "up_proj.weight") {
                let shape = [2, entries[index].shape[1]]
                entries[index] = SafetensorsWriter.Entry(name: entries[index].name, shape: shape) { [Float](repeating: 0, count: shape[0] * shape[1]) }
            }
        }
        let error = #expect(throws: DroptraceError.self) { try scores(empty) }
        #expect(error?.message.contains("up_proj.weight' has shape [2, ") == true, "\(String(describing: error))")
    }

    /// transformers collects per-expert tensors into its fused experts only
    /// where the conversion mapping of a model type the model carries says
    /// so (`WeightConversions`, generated from transformers 5.23): the
    /// checkpoint's, and its text model's, by `text_config.model_type` as
    /// written. Qwen3.5-MoE's text model collects them as its class's
    /// `qwen3_5_moe_text` or as `qwen3_moe`, whose mapping does too (the same
    /// scores), but not as `llama` or a null type; Qwen3-VL-MoE's,
    /// Mistral 4's and Lara Mini's mappings never do. There transformers initialises the
    /// fused experts randomly (missing keys in `from_pretrained` on the same
    /// edits), and droptrace refuses naming the tensor and the model types.
    @Test func perExpertTensorsLoadOnlyWhereTransformersCollectsThem() throws {
        func error(_ fixture: EditedFixture) -> String? { Self.loadError(fixture.model) }
        let base = try EditedFixture("qwen3_5_moe-f32").attentionScores()
        #expect(try EditedFixture("qwen3_5_moe-f32") { EditedModel.set("qwen3_moe", at: "text_config.model_type", in: &$0) }
            .attentionScores() == base)
        let first = "model.language_model.layers.0.mlp.experts.0.down_proj.weight"
        for (written, types) in [("llama" as Any, #""qwen3_5_moe" and "llama""#), (NSNull(), #""qwen3_5_moe""#)] {
            let edited = try EditedFixture("qwen3_5_moe-f32") { EditedModel.set(written, at: "text_config.model_type", in: &$0) }
            #expect(error(edited) == "\(edited.model.path): tensor '\(first)' stores one expert, but transformers collects such tensors into "
                + "its fused experts only where the conversion mapping of the model type says so, and that of \(types) does not "
                + "(it would initialise the experts randomly): store them fused")
        }
        for (fixture, types) in [("qwen3_vl_moe-f32", #""qwen3_vl_moe" and "qwen3_vl_moe_text""#), ("mistral3_mistral4-f32", #""mistral3" and "mistral4""#),
                                 ("lara_mini-f32", #""lara_mini""#)] {
            let split = try EditedFixture(fixture)
            var named = ""
            try BadInputTests().rewriteWeights(split.model) { entries in
                // Any per-expert tensor in place of the fused ones: refused before its shape is read.
                let fused = entries.filter { $0.name.hasSuffix(".mlp.experts.gate_up_proj") || $0.name.hasSuffix(".mlp.experts.down_proj") }
                entries.removeAll { entry in fused.contains { $0.name == entry.name } }
                for entry in fused where entry.name.hasSuffix("down_proj") {
                    let name = entry.name.replacingOccurrences(of: "experts.down_proj", with: "experts.0.down_proj.weight")
                    named = named.isEmpty || name < named ? name : named
                    entries.append(SafetensorsWriter.Entry(name: name, shape: [2, 2]) { [1, 2, 3, 4] })
                }
            }
            #expect(error(split)?.hasSuffix("tensor '\(named)' stores one expert, but transformers collects such tensors into "
                + "its fused experts only where the conversion mapping of the model type says so, and that of \(types) does not "
                + "(it would initialise the experts randomly): store them fused") == true, "\(error(split) ?? "loads")")
        }
    }
}
