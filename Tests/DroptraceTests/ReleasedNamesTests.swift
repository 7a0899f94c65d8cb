@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
@testable import Dropping
import Foundation
import Scoring
import Testing

/// Families transformers 5.25 runs with an existing model class under a
/// config class of their own, whose checkpoints store the names its
/// conversion mapping renames (`TensorRenamings`): EXAONE 3 (`exaone`,
/// LlamaForCausalLM), Param2-MoE and Sarvam-30B (`param2moe`, `sarvam_moe`,
/// Glm4MoeForCausalLM, with the q | k | v projection transformers splits),
/// MiniCPM5-MoE (`minicpm5_moe`, its gated query projection stored as
/// `q_proj`) and Sarvam-105B (`sarvam_mla`, DeepseekV3ForCausalLM) in its original
/// config format. The scores themselves are checked against transformers
/// with every other family (`DropTests` and the reference suites).
@Suite struct ReleasedNamesTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        // An alias beside its field with another value.
        Mutant("exaone-f32", "num_hidden_layers", "3"),
        Mutant("param2moe-f32", "n_routed_experts", "4"),
        // Widths the fused q | k | v projection contradicts.
        Mutant("param2moe-f32", "num_key_value_heads", "4"),
        Mutant("sarvam_moe-f32", "head_dim", "16"),
        // MiniCPM5MoeConfig refuses ungated attention; one MLP kind per layer.
        Mutant("minicpm5_moe-f32", "use_gated_attention", "false"),
        Mutant("minicpm5_moe-f32", "mlp_layer_types", #"["dense", "sparse", "dense"]"#),
        Mutant("minicpm5_moe-f32", "mlp_layer_types", #"["dense", "moe", "dense", "sparse"]"#),
        Mutant("minicpm5_moe-f32", "mlp_layer_types", #"["sparse", "sparse", "dense", "sparse"]"#),
        // An alias holding a kind its field refuses.
        Mutant("exaone-f32", "activation_function", "1"),
    ]

    /// EXAONE 3's `activation_function` alone is read as hidden_act (a string
    /// alias, copied like the others).
    @Test func exaoneActivationAlias() throws {
        let aliased = try EditedFixture("exaone-f32") { $0["activation_function"] = "gelu" }.attentionScores()
        let field = try EditedFixture("exaone-f32") {
            $0["activation_function"] = nil
            $0["hidden_act"] = "gelu"
        }.attentionScores()
        #expect(aliased == field)
        #expect(aliased != (try EditedFixture("exaone-f32").attentionScores()))
    }

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The stored names are read as transformers renames them, and errors
    /// about a tensor name the stored one too.
    @Test func storedNamesAreReadRenamed() throws {
        let checkpoint = try Checkpoint(directory: FixtureFiles.model("exaone-f32"))
        #expect(checkpoint.hasTensor("model.layers.0.self_attn.o_proj.weight"))
        #expect(!checkpoint.hasTensor("transformer.h.0.attn.attention.out_proj.weight"))
        #expect(checkpoint.tensorNames.allSatisfy { $0.hasPrefix("model.") || $0 == "lm_head.weight" })
        let error = #expect(throws: DroptraceError.self) {
            _ = try checkpoint.tensor("model.layers.0.self_attn.q_proj.weight", shape: [1, 1])
        }
        #expect(error?.message.contains("'transformer.h.0.attn.attention.q_proj.weight' (read as 'model.layers.0.self_attn.q_proj.weight'") == true)
    }

    /// Two stored tensors transformers renames to one name are refused,
    /// naming both; a name the rules leave alone is read as stored.
    @Test func tensorsRenamedToOneNameAreRefused() throws {
        let fixture = try EditedFixture("exaone-f32")
        try BadInputTests().rewriteWeights(fixture.model) { entries in
            let norm = [Float](repeating: 1, count: 48)
            entries.append(SafetensorsWriter.Entry(name: "model.norm.weight", shape: [48], producing: { norm }))
        }
        let error = #expect(throws: DroptraceError.self) { _ = try Checkpoint(directory: fixture.model) }
        #expect(error?.message.contains("'model.norm.weight' and 'transformer.ln_f.weight' are both read as 'model.norm.weight'") == true)
        #expect(TensorRenamings.rename("lm_head.weight", [.init(pattern: try NSRegularExpression(pattern: "^transformer\\.h\\."), replacement: "model.layers.", scope: [])]) == "lm_head.weight")
    }

    /// The fused query_key_value is refused beside a separate q_proj
    /// (transformers would split one over the other), and a checkpoint
    /// saved under transformers' own names (q_proj, k_proj, v_proj, o_proj,
    /// embed_tokens, q_norm) is the same model.
    @Test func fusedQKVAndTransformersNames() throws {
        let name = "param2moe-f32"
        let scores = try EditedFixture(name).attentionScores()
        let renamed = try EditedFixture(name)
        try splitQueryKeyValue(renamed.model) { _ in true }
        try BadInputTests().rewriteWeights(renamed.model) { entries in
            for index in entries.indices {
                entries[index].name = entries[index].name.replacingOccurrences(of: ".attention.dense.", with: ".self_attn.o_proj.")
                    .replacingOccurrences(of: ".attention.query_layernorm.", with: ".self_attn.q_norm.")
                    .replacingOccurrences(of: ".attention.key_layernorm.", with: ".self_attn.k_norm.")
                    .replacingOccurrences(of: "model.word_embeddings.", with: "model.embed_tokens.")
                    .replacingOccurrences(of: ".mlp.gate.expert_bias", with: ".mlp.gate.e_score_correction_bias")
                    .replacingOccurrences(of: ".attention.", with: ".self_attn.")
            }
        }
        #expect(try renamed.attentionScores() == scores)
        // The weights split, the bias still fused: transformers splits it too.
        let biasFused = try EditedFixture(name)
        try splitQueryKeyValue(biasFused.model) { $0.hasSuffix(".weight") }
        #expect(try biasFused.attentionScores() == scores)
        let both = try EditedFixture(name)
        try BadInputTests().rewriteWeights(both.model) { entries in
            let q = [Float](repeating: 0.01, count: 48 * 48)
            entries.append(SafetensorsWriter.Entry(name: "model.layers.0.attention.q_proj.weight", shape: [48, 48], producing: { q }))
        }
        let error = #expect(throws: DroptraceError.self) { _ = try both.attentionScores() }
        #expect(error?.message.contains("are both stored") == true)
    }

    /// MiniCPM5-MoE's gated projection stored under transformers' name
    /// (`q_gate_proj`) is the same model as under the released `q_proj`;
    /// both stored are refused (transformers renames one onto the other).
    @Test func miniCPM5GatedProjectionNames() throws {
        let name = "minicpm5_moe-f32"
        let scores = try EditedFixture(name).attentionScores()
        let renamed = try EditedFixture(name)
        try BadInputTests().renameWeights(renamed.model, prefix: "model.layers.0.self_attn.q_proj", to: "model.layers.0.self_attn.q_gate_proj")
        #expect(try renamed.attentionScores() == scores)
        let both = try EditedFixture(name)
        try BadInputTests().rewriteWeights(both.model) { entries in
            let gate = [Float](repeating: 0.01, count: 96 * 48)
            entries.append(SafetensorsWriter.Entry(name: "model.layers.1.self_attn.q_gate_proj.weight", shape: [96, 48], producing: { gate }))
        }
        #expect(throws: DroptraceError.self) { _ = try both.attentionScores() }
    }

    /// A block-drop export of EXAONE 3 writes the kept layer count under the
    /// key config.json holds it as (`num_layers`), and loads back.
    @Test func exaoneExportRewritesTheAliasedCount() throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model("exaone-f32")))
        let scratch = try ScratchDirectory()
        let out = scratch.path("export")
        try DroppedModelExport.write(model: model, plan: DropPlan(blocks: [1]), to: out)
        let config = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json"))) as? [String: Any])
        #expect(config["num_layers"] as? Int == 3 && config["num_hidden_layers"] == nil)
        #expect(try ModelRegistry.load(try Checkpoint(directory: out)).layerCount == 3)
    }

    /// SarvamMLAConfig's translation of its original format: head_dim is
    /// ignored whatever it says; rope_scaling of type "deepseek_yarn" is
    /// YaRN (refused without its factor), and "deepseek_yarn" in
    /// rope_parameters is refused as transformers refuses it.
    @Test func sarvamOriginalFormat() throws {
        let name = "sarvam_mla-f32"
        let scores = try EditedFixture(name).attentionScores()
        for value in [7, 0, -7, "abc", 24.5] as [Any] {
            #expect(try EditedFixture(name) { $0["head_dim"] = value }.attentionScores() == scores, "head_dim \(value)")
        }
        // Without its original length YaRN takes max_position_embeddings, as for "yarn" itself.
        func withoutOriginalLength(_ type: String) throws -> [Double] {
            try EditedFixture(name) { config in
                var scaling = config["rope_scaling"] as! [String: Any]
                scaling["original_max_position_embeddings"] = nil
                scaling["type"] = type
                config["rope_scaling"] = scaling
            }.attentionScores()
        }
        #expect(try withoutOriginalLength("deepseek_yarn") == withoutOriginalLength("yarn"))
        let yarn = try EditedFixture(name) { config in
            var scaling = config.removeValue(forKey: "rope_scaling") as! [String: Any]
            scaling["type"] = nil
            scaling["rope_type"] = "yarn"
            scaling["rope_theta"] = config.removeValue(forKey: "rope_theta")
            config["rope_parameters"] = scaling
        }
        #expect(try yarn.attentionScores() == scores)
        #expect(throws: DroptraceError.self) {
            try EditedFixture(name) { config in
                var scaling = config["rope_scaling"] as! [String: Any]
                scaling["factor"] = nil
                config["rope_scaling"] = scaling
            }.attentionScores()
        }
        #expect(throws: DroptraceError.self) {
            try EditedFixture(name) { config in
                var scaling = config.removeValue(forKey: "rope_scaling") as! [String: Any]
                scaling["type"] = nil
                scaling["rope_type"] = "deepseek_yarn"
                config["rope_parameters"] = scaling
            }.attentionScores()
        }
    }

    /// Replaces the fused `attention.query_key_value` tensors of `model`
    /// whose names `included` accepts by q_proj, k_proj and v_proj: rows
    /// q (4 heads × 12) | k (2 × 12) | v (2 × 12), as transformers splits them.
    func splitQueryKeyValue(_ model: URL, where included: (String) -> Bool) throws {
        let original = try SafetensorsFile(path: model.appendingPathComponent("model.safetensors").path).tensors
        try BadInputTests().rewriteWeights(model) { entries in
            for (index, entry) in entries.enumerated().reversed() where entry.name.contains(".query_key_value.") && included(entry.name) {
                entries.remove(at: index)
                let values = try! original[entry.name]!.floats(), width = entry.shape.count == 2 ? entry.shape[1] : 1
                for (part, rows) in [("q_proj", 0..<48), ("k_proj", 48..<72), ("v_proj", 72..<96)] {
                    let piece = Array(values[(rows.lowerBound * width)..<(rows.upperBound * width)])
                    entries.append(SafetensorsWriter.Entry(
                        name: entry.name.replacingOccurrences(of: "query_key_value.", with: "\(part)."),
                        shape: entry.shape.count == 2 ? [rows.count, width] : [rows.count], producing: { piece }))
                }
            }
        }
    }
}
