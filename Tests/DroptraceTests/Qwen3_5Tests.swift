@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Scoring
import Foundation
import TensorEngine
import Testing

/// Qwen3.5's hybrid text model: its config keys as Qwen3_5TextConfig reads
/// them, the layer types, the Gated DeltaNet and gated attention mixers;
/// the scores themselves are checked against transformers with every other
/// family, and key/value-cache decoding against the batched forward
/// (`DropTests.incrementalDecodingMatchesTheFullForward`).
@Suite struct Qwen3_5Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("qwen3_5_text-f32", "linear_num_key_heads", "0"),
        // Qwen3_5TextRotaryEmbedding slices by mrope_section's items 1 and 2, on text too.
        Mutant("qwen3_5_text-f32", "rope_parameters.mrope_section", "[1.0, 1.0, 1.0]", key: "rope_parameters.mrope_section"),
        Mutant("qwen3_5-f32", "text_config.rope_parameters.mrope_section", "[1]", key: "text_config.rope_parameters.mrope_section"),
        Mutant("minicpmv4_6-f32", "text_config.rope_parameters.mrope_section", "\"111\"", key: "text_config.rope_parameters.mrope_section"),
        Mutant("qwen3_5_text-f32", "linear_num_value_heads", "-1"),
        Mutant("qwen3_5_text-f32", "linear_key_head_dim", "null"),
        Mutant("qwen3_5_text-f32", "linear_conv_kernel_dim", "0"),
        Mutant("qwen3_5_text-f32", "linear_value_head_dim", "\"8\""),
        // Each key head serves a whole number of value heads.
        Mutant("qwen3_5_text-f32", "linear_num_value_heads", "3"),
        Mutant("qwen3_5_text-f32", "linear_num_key_heads", "1000000000000"),
        Mutant("qwen3_5_text-f32", "layer_types", "[\"linear_attention\"]"),
        Mutant("qwen3_5_text-f32", "layer_types", "[\"linear_attention\", \"sliding_attention\", \"linear_attention\", \"full_attention\"]"),
        Mutant("qwen3_5_text-f32", "rms_norm_eps", "0"),
        // The MoE keys, at the top level and under a wrapper's text_config.
        Mutant("qwen3_5_moe_text-f32", "num_experts", "-1"),
        // Every layer routes: transformers' top-k fails on no experts.
        Mutant("qwen3_5_moe_text-f32", "num_experts", "0"),
        Mutant("qwen3_5_moe_text-f32", "num_experts", "5"),
        Mutant("qwen3_5_moe_text-f32", "num_experts_per_tok", "0"),
        Mutant("qwen3_5_moe_text-f32", "moe_intermediate_size", "0"),
        Mutant("qwen3_5_moe_text-f32", "shared_expert_intermediate_size", "-1"),
        Mutant("qwen3_5_moe_text-f32", "num_experts", "1152921504606846976"),
        Mutant("qwen3_5_moe-f32", "text_config.num_experts_per_tok", "5"),
        Mutant("qwen3_5_moe-f32", "text_config.moe_intermediate_size", "-1"),
        Mutant("qwen3_5_moe-f32", "text_config.linear_num_key_heads", "0"),
        Mutant("qwen3_5-f32", "text_config.linear_num_value_heads", "3"),
        Mutant("qwen3_5-f32", "text_config.hidden_size", "0"),
        Mutant("qwen3_5-f32", "text_config", "[]"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every score of the fixture, JSONL and text calibration, close to
    /// transformers' (its chunked delta rule against the step form here).
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers("qwen3_5_text-f32")
    }

    /// Linear layers get a Gated DeltaNet of the `linear_*` sizes, full ones
    /// gated attention with per-head q/k norms and half the head rotated.
    @Test func layersFollowLayerTypes() throws {
        let model = try EditedFixture("qwen3_5_text-f32").load()
        guard case .gatedDeltaNet(let net)? = try model.block(0).attention?.mixer else {
            Issue.record("layer 0 is not linear attention")
            return
        }
        #expect(net.heads == GatedDeltaNetHeads(keyHeads: 2, valueHeads: 4, keyDim: 8, valueDim: 8, convolutionKernel: 4))
        let attention = try #require(try model.block(1).attention?.attention)
        #expect(attention.outputGate?.outFeatures == attention.layout.queryWidth)
        #expect(attention.rotary?.rotaryDim == 6)
        guard case .perHead? = attention.queryKeyNorm else {
            Issue.record("no per-head q/k norms")
            return
        }
    }

    /// Without `layer_types` every fourth layer is full attention
    /// (`full_attention_interval`, default 4); the rule is spelled out in
    /// a block-drop export so renumbering keeps each layer's mixer.
    @Test func layerTypesDefaultToTheIntervalRule() throws {
        let fixture = try EditedFixture("qwen3_5_text-f32") {
            $0["layer_types"] = nil
            $0["full_attention_interval"] = 2
        }
        let model = try fixture.load()
        for (index, linear) in [(0, true), (1, false), (2, true), (3, false)] {
            guard case .gatedDeltaNet? = try model.block(index).attention?.mixer else {
                #expect(!linear, "layer \(index)")
                continue
            }
            #expect(linear, "layer \(index)")
        }
        let exported = try fixture.exportedConfig(droppingBlocks: [0])
        #expect(exported["layer_types"] as? [String] == ["full_attention", "linear_attention", "full_attention"])
        try EditedFixture("qwen3_5_text-f32") {
            $0["layer_types"] = nil
            $0["full_attention_interval"] = 0
        }.expectRefused(naming: "full_attention_interval")
    }

    /// The Gated DeltaNet's convolution is activated by `hidden_act`, as
    /// transformers' causal_conv1d is given it (scores with gelu checked
    /// against transformers 5.23 within 4e-9, Qwen3-Next's too); droptrace
    /// applied SiLU whatever it said.
    @Test(arguments: ["qwen3_5_text-f32", "qwen3_next-f32"])
    func convolutionActivationIsHiddenAct(_ name: String) throws {
        let model = try EditedFixture(name) { $0["hidden_act"] = "gelu" }.load()
        guard case .gatedDeltaNet(let net)? = try model.block(0).attention?.mixer else {
            Issue.record("layer 0 is not linear attention")
            return
        }
        #expect(net.convolutionActivation == .gelu)
    }

    /// Qwen3.5's attention rotates as many dimensions as its rotary table is
    /// wide: without rope_parameters, the class's partial_rotary_factor 0.25
    /// of heads of 12 gives int(3), two frequencies over exponent 2i/3 and
    /// four rotated dimensions (scores checked against transformers 5.23
    /// within 1e-5); droptrace refused that width.
    @Test func anOddRotaryWidthRotatesTheWholeTable() throws {
        let model = try EditedFixture("qwen3_5_text-f32") { $0["rope_parameters"] = nil }.load()
        let rotary = try #require(model as? Qwen3_5Model).layers.rotary
        #expect(rotary.inverseFrequencies.count == 2)
        #expect(abs(rotary.inverseFrequencies[1] - Float(pow(10_000, -2.0 / 3))) < 1e-9)
    }

    /// The released checkpoints' head is tied by the top-level
    /// `tie_word_embeddings` (Qwen3_5Config's, default false), not by the
    /// text config's.
    @Test func wrappedHeadIsTiedByTheTopLevelKey() throws {
        let tied = try EditedFixture("qwen3_5-f32") { config in
            var text = config["text_config"] as! [String: Any]
            text["tie_word_embeddings"] = false
            config["text_config"] = text
        }
        #expect(try tied.load().head().vocabularySize == 512)
        let untied = try EditedFixture("qwen3_5-f32") { $0["tie_word_embeddings"] = nil }
        #expect(throws: DroptraceError.self) { _ = try untied.load().head() }
    }

    /// Qwen3_5MoeTextConfig has no `decoder_sparse_step`, `mlp_only_layers`
    /// or `norm_topk_prob`: every layer routes, renormalised, whatever a
    /// config says under those names; the shared expert sits behind its gate.
    @Test func everyMoeLayerRoutesRenormalised() throws {
        for name in ["qwen3_5_moe_text-f32", "qwen3_5_moe-f32"] {
            let model = try EditedFixture(name) { config in
                func set(_ object: inout [String: Any]) {
                    object["decoder_sparse_step"] = 2
                    object["mlp_only_layers"] = [0, 1]
                    object["norm_topk_prob"] = false
                }
                if var text = config["text_config"] as? [String: Any] {
                    set(&text)
                    config["text_config"] = text
                } else {
                    set(&config)
                }
            }.load()
            for layer in 0..<model.layerCount {
                guard case .mixture(let moe)? = try model.block(layer).mlp?.feedForward,
                      case .softmaxTopK(let renormalize) = moe.rule
                else {
                    Issue.record("\(name) layer \(layer) is not routed by softmax top-k")
                    continue
                }
                #expect(renormalize && moe.expertsPerToken == 2, "\(name) layer \(layer)")
                #expect(moe.sharedExperts.count == 1 && moe.sharedExpertGate?.outFeatures == 1, "\(name) layer \(layer)")
            }
        }
    }

    /// Without the MoE keys, Qwen3_5MoeTextConfig's defaults apply (256
    /// experts): the fixture's 4-expert router is refused naming them.
    @Test func moeDefaultsAreQwen3_5MoeTextConfigs() throws {
        try EditedFixture("qwen3_5_moe_text-f32") { $0["num_experts"] = nil; $0["num_experts_per_tok"] = nil }
            .expectRefused(naming: "num_experts")
    }

    /// A text-only checkpoint whose weights keep a wrapper's
    /// `model.language_model.` names is read as transformers' conversion
    /// mapping for qwen3_5_text (and qwen3_5_moe_text) strips them
    /// (PrefixChange): the same scores (block-drop exports of it load back
    /// in transformers 5.23 with the original's logits).
    @Test(arguments: ["qwen3_5_text-f32", "qwen3_5_moe_text-f32"])
    func textModelReadsAWrappersWeightNames(_ name: String) throws {
        let renamed = try EditedFixture(name)
        try BadInputTests().renameWeights(renamed.model, prefix: "model.", to: "model.language_model.")
        #expect(try renamed.attentionScores() == (try EditedFixture(name).attentionScores()))
    }
}
