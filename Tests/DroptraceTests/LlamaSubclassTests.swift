@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Testing

/// InternLM3 (`internlm3`) and IQuest-Coder (`iquestcoder`): config classes
/// of their own that transformers runs with LlamaForCausalLM, their
/// aliases, defaults and refusals. The scores themselves are checked
/// against transformers with every other family (`DropTests` and the
/// reference suites).
@Suite struct LlamaSubclassTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        // InternLM3Config refuses q/k/v/o biases unlike the MLP's.
        Mutant("internlm3-f32", "bias", "false"),
        Mutant("internlm3-f32", "qkv_bias", "false"),
        // IQuestCoderConfig refuses the original code's options.
        Mutant("iquestcoder-f32", "clip_qkv", "8.0"),
        Mutant("iquestcoder-f32", "use_sliding_window", "true"),
        Mutant("iquestcoder-f32", "use_sliding_window", "\"no\""),
        // Heads of its default head_dim (128), which the tensors refuse.
        Mutant("iquestcoder-f32", "head_dim", "128"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// InternLM3's `qkv_bias` and `bias` stand for `attention_bias` and
    /// `mlp_bias` (its config class's attribute_map): the released
    /// spelling, the field names and both agreeing are one model; both
    /// disagreeing are refused as ambiguous.
    @Test func internlm3BiasAliases() throws {
        let released = try EditedFixture("internlm3-f32")
        let biases = try blockZeroBiases(released)
        #expect(biases.qkv && biases.output && biases.mlp)
        let fields = try EditedFixture("internlm3-f32") {
            $0["attention_bias"] = $0.removeValue(forKey: "qkv_bias")
            $0["mlp_bias"] = $0.removeValue(forKey: "bias")
        }
        #expect(try fields.attentionScores() == released.attentionScores())
        let both = try EditedFixture("internlm3-f32") {
            $0["attention_bias"] = true
            $0["mlp_bias"] = true
        }
        #expect(try both.attentionScores() == released.attentionScores())
        try EditedFixture("internlm3-f32") { $0["mlp_bias"] = false }.expectRefused(naming: "mlp_bias")
    }

    /// Both classes' head_dim is 128 when config.json omits it, whatever
    /// hidden_size / num_attention_heads is (LlamaConfig's is that ratio):
    /// the fixtures' 8- and 16-wide heads are then refused by their tensors.
    @Test func omittedHeadDimIsTheClassDefault() throws {
        #expect(ConfigValueKinds.omittedDefaults["internlm3"]?["head_dim"] == "128")
        #expect(ConfigValueKinds.omittedDefaults["iquestcoder"]?["head_dim"] == "128")
        #expect(ConfigValueKinds.omittedDefaults["llama"]?["head_dim"] == nil)
        for name in ["internlm3-f32", "iquestcoder-f32"] {
            try EditedFixture(name) { $0["head_dim"] = nil }.expectRefused(naming: "head_dim")
        }
    }

    /// IQuest-Coder's options transformers accepts falsy are not refused.
    @Test func iquestcoderFalsyOptionsAccepted() throws {
        let base = try EditedFixture("iquestcoder-f32").attentionScores()
        for falsy: Any in [false, 0, "", [Int]()] {
            let fixture = try EditedFixture("iquestcoder-f32") {
                $0["clip_qkv"] = NSNull()
                $0["use_sliding_window"] = falsy
            }
            #expect(try fixture.attentionScores() == base, "\(falsy)")
        }
    }
}
