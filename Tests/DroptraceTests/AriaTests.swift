@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Aria (`aria_text`, and `aria` read as its language model): config
/// refusals and AriaTextConfig's defaults, every layer's mixture (top-k of
/// the logits softmaxed among themselves, SiLU experts stored [in, out],
/// shared experts taking hidden_act), the experts' two names and the
/// wrapper's tying. The scores themselves are checked against transformers
/// with every other family (`ScoringReferenceTests`, `DropTests`).
@Suite struct AriaTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("aria_text-f32", "rms_norm_eps", "0"),
        Mutant("aria_text-f32", "moe_num_experts", "0"), Mutant("aria_text-f32", "moe_num_experts", "4611686018427387904"),
        Mutant("aria_text-f32", "moe_topk", "0"), Mutant("aria_text-f32", "moe_topk", "9"),
        Mutant("aria_text-f32", "moe_num_shared_experts", "-1"),
        // AriaTextConfig.validate_architecture refuses heads not dividing the width, whatever head_dim says.
        Mutant("aria_text-f32", "num_attention_heads", "5"),
        // Sizes the tensors contradict.
        Mutant("aria_text-f32", "moe_num_experts", "16"), Mutant("aria_text-f32", "intermediate_size", "32"),
        Mutant("aria-f32", "text_config.moe_num_experts", "4", key: "text_config.moe_num_experts"),
        Mutant("aria-f32", "text_config.moe_topk", "9", key: "text_config.moe_topk"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every layer routes 2 of 8 experts by the top logits softmaxed among
    /// themselves; the experts take SiLU and the shared expert GELU
    /// (hidden_act) with biases (mlp_bias); q/k/v/o carry biases (attention_bias).
    @Test func everyLayerRoutesWithSiLUExpertsBesideTheSharedOne() throws {
        let model = try EditedFixture("aria_text-f32").load()
        for layer in 0..<model.layerCount {
            let moe = try #require(try mlpMixture(model, layer: layer), "layer \(layer) routes")
            #expect(moe.experts.count == 8 && moe.expertsPerToken == 2)
            guard case .topKThenSoftmax = moe.rule else {
                Issue.record("layer \(layer) routes by \(moe.rule)")
                continue
            }
            guard case .gated(let gateUp, _, let activation)? = moe.experts.first,
                  case .gated(_, let down, let sharedActivation)? = moe.sharedExperts.first
            else {
                Issue.record("layer \(layer): not gated experts")
                continue
            }
            #expect(activation == .silu && sharedActivation != .silu && gateUp.layout == .inByOut)
            #expect(down.bias != nil && down.inFeatures == 16)
        }
        let attention = try #require(try model.block(0).attention?.attention)
        guard case .fused(let qkv) = attention.projection else {
            Issue.record("not a fused q/k/v projection")
            return
        }
        #expect(qkv.bias != nil && attention.output.bias != nil)
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("aria_text-f32")
    }

    /// The experts under transformers' names (`gate_up_proj`, `down_proj`)
    /// score as the released `fc1` / `fc2`; both stored is refused.
    @Test func expertNamesAsTransformersRenamesThem() throws {
        let renamed = try EditedFixture("aria_text-f32")
        try rewriteTensors(renamed.model) { entries in
            for i in entries.indices {
                entries[i].name = entries[i].name.replacingOccurrences(of: "experts.fc1.weight", with: "experts.gate_up_proj")
                    .replacingOccurrences(of: "experts.fc2.weight", with: "experts.down_proj")
            }
        }
        #expect(try renamed.attentionScores() == EditedFixture("aria_text-f32").attentionScores())
        let both = try EditedFixture("aria_text-f32")
        try rewriteTensors(both.model) { entries in
            let fc1 = entries.first { $0.name == "model.layers.0.mlp.experts.fc1.weight" }!
            var copy = fc1
            copy.name = "model.layers.0.mlp.experts.gate_up_proj"
            entries.append(copy)
        }
        #expect(throws: DroptraceError.self) { _ = try both.load().block(0) }
    }

    /// What config.json leaves out takes AriaTextConfig's defaults: two
    /// shared experts (twice the fixture's width), no biases, SiLU. The
    /// wrapper's head is tied only by the top level's tie_word_embeddings.
    @Test func omittedKeysAndTheWrappersTying() throws {
        let shared = try EditedFixture("aria_text-f32") { $0["moe_num_shared_experts"] = nil }.load()
        #expect(throws: DroptraceError.self) { _ = try shared.block(0) }
        let unbiased = try EditedFixture("aria_text-f32") { $0["attention_bias"] = nil }.load()
        #expect(try unbiased.block(0).attention?.attention.output.bias == nil)
        let textTied = try EditedFixture("aria-f32") { config in
            var text = config["text_config"] as! [String: Any]
            text["tie_word_embeddings"] = true
            config["text_config"] = text
        }
        #expect(try textTied.attentionScores() == EditedFixture("aria-f32").attentionScores())
        // Without the stored head: the embedding where the top level ties, a refusal where only the text config does.
        func headless(_ change: @escaping (inout [String: Any]) -> Void) throws -> EditedFixture {
            let fixture = try EditedFixture("aria-f32", change)
            try rewriteTensors(fixture.model) { entries in entries.removeAll { $0.name.hasSuffix("lm_head.weight") } }
            return fixture
        }
        let tied = try headless { $0["tie_word_embeddings"] = true }
        let embedding = try Checkpoint(directory: tied.model).tensor("language_model.model.embed_tokens.weight").floats()
        #expect(try tied.load().head().projection.weight == embedding)
        #expect(throws: DroptraceError.self) {
            _ = try headless { config in
                var text = config["text_config"] as! [String: Any]
                text["tie_word_embeddings"] = true
                config["text_config"] = text
            }.load().head()
        }
    }
}
