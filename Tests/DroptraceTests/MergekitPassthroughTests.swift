@testable import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import Testing

/// What `--export-mergekit` refuses because mergekit's passthrough would
/// build another model than the dropped one: an architecture mergekit has no
/// one-module definition of, a config key the kept layers' renumbering
/// changes (mergekit writes the source's config with only the layer count
/// set), a tensor its definition does not copy. Each refusal here was
/// checked against mergekit 0.1.5 and transformers 5.25 on these fixtures:
/// the merged model failed to load, loaded with layers or biases filled at
/// random, or gave other logits than the model with those layers removed;
/// each plan let through gave the same logits (max |Δ| 0; Mixtral 4.8e-7,
/// its experts summed in another order once fused).
@Suite struct MergekitPassthroughTests {
    /// The model after a run over the calibration text: every tensor it computes with read.
    static func scored(_ fixture: EditedFixture) throws -> any LanguageModel {
        let model = try fixture.load()
        _ = try ImportanceScorer(model: model).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
        return model
    }

    static func refusal(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        return "not refused"
    }

    @Test func architecturesMergekitDoesNotSliceAreRefused() throws {
        let deepseek = try EditedFixture("deepseek_v3-f32")
        let inferred = Self.refusal { try MergekitSlices.checkSource(try deepseek.load()) }
        #expect(inferred.hasPrefix("\(deepseek.configPath): --export-mergekit: mergekit \(MergekitSlices.mergekitVersion) has no definition of DeepseekV3ForCausalLM"), "\(inferred)")
        #expect(inferred.contains("keep the source's layer count"))
        let multimodal = Self.refusal { try MergekitSlices.checkSource(try EditedFixture("mistral3-f32").load()) }
        #expect(multimodal.contains("defines Mistral3ForConditionalGeneration as several modules"), "\(multimodal)")
        for architectures in [nil, [] as [String], ["LlamaForCausalLM", "MistralForCausalLM"]] as [[String]?] {
            let edited = try EditedFixture("llama-f32") { $0["architectures"] = architectures }
            let unnamed = Self.refusal { try MergekitSlices.checkSource(try edited.load()) }
            #expect(unnamed.hasSuffix("must name one architecture in \"architectures\", as mergekit reads it"), "\(unnamed)")
        }
        #expect(throws: Never.self) { try MergekitSlices.checkSource(try EditedFixture("llama-f32").load()) }
    }

    /// A per-layer list no passthrough keeps right is refused before any
    /// work, whether config.json writes it (Qwen3) or its config class
    /// derives it where config.json has none (GraniteMoeHybridConfig, whose
    /// `layer_types` mergekit's saved config spells out for the source's
    /// layer count, a list transformers then refuses as too long).
    @Test func perLayerListsAreRefusedBeforeAnyWork() throws {
        let written = try EditedFixture("qwen3-f32")
        let derived = try EditedFixture("granitemoehybrid-f32") { $0["layer_types"] = nil }
        #expect(try derived.load().layerNaming.layerTypes == nil, "the family writes no layer_types into an export")
        for fixture in [written, derived] {
            let refused = Self.refusal { try MergekitSlices.checkSource(try fixture.load()) }
            #expect(refused == "\(fixture.configPath): --export-mergekit: a mergekit passthrough keeps the source's config.json with only "
                + "the layer count changed: whichever layers are dropped, its layer_types would describe other layers than "
                + "the kept ones; use --export, which rewrites it")
        }
    }

    /// GLM-4-MoE's dense layers below `first_k_dense_replace`: dropping a
    /// later layer keeps them, dropping one of them moves a sparse layer
    /// below the threshold.
    @Test func aPlanIsRefusedWhenItMovesALayerAcrossAThreshold() throws {
        let glm = try EditedFixture("glm4_moe-f32")
        let model = try Self.scored(glm)
        try MergekitSlices.checkSource(model)
        #expect(throws: Never.self) { try MergekitSlices.checkPlan(model, dropping: [3]) }
        let refused = Self.refusal { try MergekitSlices.checkPlan(model, dropping: [0]) }
        #expect(refused == "\(glm.configPath): --export-mergekit: a mergekit passthrough keeps the source's config.json with only the "
            + "layer count changed: with layer 0 dropped, its first_k_dense_replace would describe other layers than the kept ones; "
            + "use --export, which rewrites it")
    }

    /// Lists of layer indices are read as transformers reads them at the new
    /// indices: entries past the kept layers name none.
    @Test func layerIndexListsCompareAtTheNewIndices() throws {
        let qwen = try EditedFixture("qwen3_moe-f32") { $0["mlp_only_layers"] = [1] }.load()
        #expect(try MergekitSlices.staleKeys(qwen, dropping: [3], countKey: "num_hidden_layers") == [])
        #expect(try MergekitSlices.staleKeys(qwen, dropping: [2], countKey: "num_hidden_layers") == [])
        #expect(try MergekitSlices.staleKeys(qwen, dropping: [0], countKey: "num_hidden_layers") == ["mlp_only_layers"])
        let key = "text_config.num_hidden_layers"
        let molmo = try EditedFixture("molmo2-f32") { EditedModel.set([1, 3], at: "text_config.rope_scaling_layers", in: &$0) }.load()
        #expect(try MergekitSlices.staleKeys(molmo, dropping: [3], countKey: key) == [])
        #expect(try MergekitSlices.staleKeys(molmo, dropping: [0], countKey: key) == ["rope_scaling_layers"])
        let every = try EditedFixture("molmo2-f32") { EditedModel.set([0, 1, 2, 3], at: "text_config.rope_scaling_layers", in: &$0) }.load()
        #expect(try MergekitSlices.staleKeys(every, dropping: [0], countKey: key) == [])
        // A count mergekit sets under another key than droptrace reads leaves droptrace's stale.
        #expect(try MergekitSlices.staleKeys(qwen, dropping: [3], countKey: "n_layer") == ["num_hidden_layers"])
    }

    /// A tensor the model computes with that mergekit's definition does not
    /// copy (LlamaForCausalLM's has no biases) would be left out of the
    /// merged model. Names are read through transformers' renamings and
    /// per-expert tensors as the fused ones they are collected into, as
    /// mergekit reads them (Mixtral's `block_sparse_moe.experts.<e>.w1`).
    @Test func tensorsTheDefinitionDoesNotCopyAreRefused() throws {
        let internlm = try EditedFixture("internlm3-f32")
        let refused = Self.refusal { try MergekitSlices.checkPlan(try Self.scored(internlm), dropping: [3]) }
        #expect(refused.hasPrefix("\(internlm.configPath): --export-mergekit: mergekit \(MergekitSlices.mergekitVersion)'s definition of "
            + "LlamaForCausalLM copies no tensor model.layers.0.mlp.down_proj.bias and 27 more, which the model computes with"), "\(refused)")
        #expect(throws: Never.self) { try MergekitSlices.checkPlan(try Self.scored(EditedFixture("mixtral-f32")), dropping: [0]) }
        #expect(throws: Never.self) { try MergekitSlices.checkPlan(try Self.scored(EditedFixture("llama-f32")), dropping: [0, 2]) }
    }

    /// A checkpoint lacking a tensor mergekit's definition cannot do
    /// without is refused before any work: mergekit would refuse it
    /// (GPTNeoXForCausalLM's wants the `attention.bias` buffers
    /// transformers no longer saves; Phi3ForCausalLM's an `lm_head` a tied
    /// checkpoint has none of). Fused experts count as given by the
    /// per-expert tensors transformers collects into them (Mixtral).
    @Test func checkpointsLackingATensorTheDefinitionNeedsAreRefused() throws {
        let neox = try EditedFixture("gpt_neox-f32")
        let refused = Self.refusal { try MergekitSlices.checkSource(try neox.load()) }
        #expect(refused == "\(neox.configPath): --export-mergekit: mergekit \(MergekitSlices.mergekitVersion)'s definition of "
            + "GPTNeoXForCausalLM needs a tensor gpt_neox.layers.<n>.attention.bias (and 2 more) the checkpoint does not store, "
            + "so mergekit would refuse it; use --export")
        let tied = Self.refusal { try MergekitSlices.checkSource(try EditedFixture("phi3-f32").load()) }
        #expect(tied.contains("Phi3ForCausalLM needs a tensor lm_head.weight the checkpoint does not store"), "\(tied)")
        #expect(throws: Never.self) { try MergekitSlices.checkSource(try EditedFixture("mixtral-f32").load()) }
    }

    @Test func templatesMatchDecimalIndices() {
        let matches = MergekitSlices.Definition.matches
        #expect(matches("model.layers.12.mlp.experts.3.w1", "model.layers.{n}.mlp.experts.{n}.w1"))
        #expect(!matches("model.layers..mlp", "model.layers.{n}.mlp"))
        #expect(!matches("model.layers.1x.mlp", "model.layers.{n}.mlp"))
        #expect(!matches("model.layers.1.mlp.bias", "model.layers.{n}.mlp"))
        #expect(matches("lm_head.weight", "lm_head.weight") && !matches("lm_head.weight2", "lm_head.weight"))
    }

    /// `drop` refuses a plan before evaluating it.
    @Test func dropRefusesThePlanBeforeEvaluatingIt() throws {
        let scratch = try ScratchDirectory()
        let yaml = scratch.path("slice.yaml")
        let internlm = try EditedFixture("internlm3-f32")
        let result = try DroptraceCommand.run([
            "drop", internlm.model.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block", "--count", "1",
            "--export-mergekit", yaml.path, "--eval", FixtureFiles.calibrationJSONL.path,
        ])
        #expect(result.status == 1 && result.stderr.contains("copies no tensor model.layers.0.mlp.down_proj.bias"), "\(result.stderr)")
        #expect(!result.stderr.contains("perplexity on"), "refused before the evaluation: \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: yaml.path))
    }
}
