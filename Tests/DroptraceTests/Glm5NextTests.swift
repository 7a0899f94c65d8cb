@testable import Architectures
import CheckpointIO
import DroptraceSupport
@testable import Dropping
import Foundation
import Scoring
import TensorEngine
import Testing

/// GLM-5-Next (`glm5_next`, read as its language model): the
/// hyper-connected streams, the Kimi Delta Attention and NoPE latent
/// attention layers with the pooled DSA indexer, the clamped SwiGLU MLPs,
/// the refusals (compared with transformers 5.25's), cached decoding and
/// exports. The scores themselves are checked against transformers with
/// every other family (`DropTests` and the reference suites).
@Suite struct Glm5NextTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "glm5_next-f32"

    /// Values Glm5NextTextConfig refuses, on which its model fails or
    /// computes what droptrace does not: each refused naming its key.
    static let mutants: [Mutant] = [
        // validate_architecture: top-k not a multiple of the pool, no pool, rotated columns, no low-rank query, MQA.
        Mutant(name, "text_config.index_topk", "6"), Mutant(name, "text_config.index_kpool", "0"),
        Mutant(name, "text_config.qk_rope_head_dim", "8"), Mutant(name, "text_config.q_lora_rank", "null"),
        Mutant(name, "text_config.num_key_value_heads", "1"),
        // No pool kept, or no tail: some query sees no key (transformers then attends to every key, later ones too).
        Mutant(name, "text_config.index_topk", "0"), Mutant(name, "text_config.index_kpool_always_select_tail", "false"),
        // A layer type the model has no mask for (KeyError), lists of another length.
        Mutant(name, "text_config.layer_types", "[\"linear_attention\", \"sliding_attention\", \"linear_attention\", \"indexed_attention\"]"),
        Mutant(name, "text_config.layer_types", "[\"linear_attention\", \"indexed_attention\"]"),
        Mutant(name, "text_config.mlp_layer_types", "[\"dense\", \"sparse\"]"),
        Mutant(name, "text_config.mlp_layer_types", "[\"dense\", \"moe\", \"sparse\", \"sparse\"]"),
        // A shared indexer layer after a linear one (transformers: ValueError), and any shared indexed layer.
        Mutant(name, "text_config.indexer_types", "[\"full\", \"shared\", \"full\", \"full\"]"),
        Mutant(name, "text_config.indexer_types", "[\"full\", \"full\", \"full\", \"shared\"]"),
        Mutant(name, "text_config.indexer_types", "[\"full\"]"),
        // Streams and Sinkhorn iterations.
        Mutant(name, "text_config.hc_mult", "0"), Mutant(name, "text_config.hc_mult", "1000000000000000000"),
        Mutant(name, "text_config.hc_mult", "9223372036854775807"),
        Mutant(name, "text_config.hc_sinkhorn_iters", "1000000000"),
        // linear_attn_config's sizes read over the fields: a null one sizes nothing, others contradict the tensors.
        Mutant(name, "text_config.linear_attn_config", "{\"head_dim\": null}", key: "linear_attn_config"),
        Mutant(name, "text_config.linear_attn_config", "{\"num_heads\": 8}", key: "linear_num_heads"),
        // Sizes the tensors contradict.
        Mutant(name, "text_config.n_routed_experts", "8"), Mutant(name, "text_config.hc_mult", "2"),
        Mutant(name, "text_config.index_kpool", "8", key: "index_kpool_compress_ape"),
        // Another text model type: Glm5NextConfig's language model is glm5_next_text's.
        Mutant(name, "text_config.model_type", "\"glm_moe_dsa\"", key: "text_config.model_type"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// A config without text_config (Glm5NextConfig then reads the top
    /// level's keys as the text model's) is refused naming it.
    @Test func absentTextConfigIsRefused() throws {
        try EditedFixture(Self.name) { $0.removeValue(forKey: "text_config") }.expectRefused(naming: "text_config")
    }

    /// Layers 0 and 2 Kimi Delta Attention (4 heads of 8, the bounded
    /// decay), 1 and 3 latent attention over the pooled indexer's keys
    /// (pools of 4, index_topk 8, 4 heads of 16); every sublayer joined by a
    /// mixing hyper-connection of 3 streams (3 Sinkhorn iterations); the
    /// head collapses the streams by their mean.
    @Test func layersAsTransformersBuildsThem() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.streamWidth == 3 * 32)
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            let mixer = try #require(block.attention?.mixer)
            if layer % 2 == 0 {
                guard case .gatedDeltaNet(let net) = mixer else {
                    Issue.record("layer \(layer): not Kimi Delta Attention")
                    continue
                }
                #expect(net.heads.valueHeads == 4 && net.heads.keyDim == 8 && net.heads.decayPerChannel)
                #expect(net.decay == .boundedSigmoid(lowerBound: -5))
            } else {
                let attention = try #require(mixer.softmaxAttention)
                let indexer = try #require(attention.indexer)
                let pools = try #require(indexer.keyPools)
                #expect(pools.size == 4 && indexer.topK == 8 && indexer.heads == 4 && indexer.dim == 16 && indexer.keyWidth == 32)
                #expect(attention.rotary == nil && indexer.rotary.rotaryDim == 0)
            }
            for join in [block.attention?.join, block.mlp?.join] {
                guard case .hyperConnected(let connection)? = join else {
                    Issue.record("layer \(layer): a sublayer without its hyper-connection")
                    continue
                }
                #expect(connection.streams == 3 && connection.postMagnitude == 2 && connection.mixing?.iterations == 3)
            }
        }
        #expect(try model.head().streamCollapse is StreamMean)
    }

    /// A query attends to the best index_topk / index_kpool complete pools
    /// it sees and to its own incomplete pool; it sees every key until it
    /// sees more complete pools than that.
    @Test func pooledSelection() throws {
        let model = try EditedFixture(Self.name).load()
        let indexer = try #require(try model.block(1).attention?.mixer.softmaxAttention?.indexer)
        #expect(!indexer.selects(among: 11) && indexer.selects(among: 12))
        let x = Matrix(uninitialized: 14, 32) { for i in 0..<(14 * 32) { $0[i] = Float(sin(Double(i))) } }
        let rows = indexer.project(x, queryLatent: Matrix(zeros: 14, 16), positions: Array(0..<14))
        let keys = indexer.chosenKeys(rows, row: 13, keys: rows.keys.data, keyRows: 0..<14)
        // Two of the three complete pools, then the tail 12, 13.
        #expect(keys.count == 10 && keys.suffix(2) == [12, 13])
        for pool in [Array(keys[0..<4]), Array(keys[4..<8])] {
            #expect(pool[0] % 4 == 0 && pool == Array(pool[0]..<(pool[0] + 4)) && pool[0] < 12)
        }
    }

    /// The analytic FLOPs of a decoding step grow with the context only by
    /// the pooled indexer's scores, one per complete pool of index_kpool
    /// keys (the keys attended to are bounded by index_topk and the tail).
    @Test func decodingFLOPsScoreOnePooledKeyPerPool() throws {
        let model = try EditedFixture(Self.name).load()
        let indexers = try (0..<model.layerCount).compactMap { try model.block($0).attention?.mixer.softmaxAttention?.indexer }
        let pooled = try #require(indexers.first?.keyPools)
        #expect(indexers.allSatisfy { $0.keyPools != nil })
        let growth = try SpeedMeasurement.decodeFLOPs(model: model, plan: .none, context: 2000)
            - SpeedMeasurement.decodeFLOPs(model: model, plan: .none, context: 1000)
        #expect(growth == indexers.reduce(0) { $0 + 2 * Double(1000 / pooled.size * $1.heads * $1.dim) })
    }

    /// Values Glm5NextTextConfig reads alike: "full_attention" for
    /// "indexed_attention", linear_attn_config over the fields, a null
    /// lower bound made -5 under safe_gate, the pattern's F for "full".
    @Test func spellingsAsTransformersReadsThem() throws {
        func text(_ change: @escaping (inout [String: Any]) -> Void) -> (inout [String: Any]) -> Void {
            { config in
                var textConfig = config["text_config"] as! [String: Any]
                change(&textConfig)
                config["text_config"] = textConfig
            }
        }
        let base = try scores(EditedFixture(Self.name))
        #expect(try scores(EditedFixture(Self.name, text {
            $0["layer_types"] = ["linear_attention", "full_attention", "linear_attention", "full_attention"]
        })) == base)
        #expect(try scores(EditedFixture(Self.name, text {
            $0["linear_attn_config"] = ["head_dim": 8, "num_heads": 4, "short_conv_kernel_size": 4, "gate_lower_bound": NSNull()]
            $0["linear_num_heads"] = 2
        })) == base)
        #expect(try scores(EditedFixture(Self.name, text {
            $0.removeValue(forKey: "indexer_types")
            $0["index_topk_pattern"] = "FFFF"
        })) == base)
        // Without safe_gate a null bound is the softplus decay.
        #expect(try scores(EditedFixture(Self.name, text { $0["linear_lower_bound"] = NSNull() })) != base)
        #expect(try scores(EditedFixture(Self.name, text { $0["index_topk"] = 1_000_000_000_000 })) != base)
    }

    /// Prefill, then decoding token by token, equal the full forward. On
    /// sequences 1 and 2: sequence 0 has pools of equal score (0, every
    /// head's ReLU zero) at the top-k boundary, which torch.topk breaks by
    /// the row's length, the forward's (the sequence's pools) and the
    /// cache's (those seen so far) differing, in transformers as here.
    @Test func prefillAndDecodingMatchTheForward() throws {
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture(Self.name).load(), tokens: 30, prefill: 14,
            plans: [.none, DropPlan(attention: [1]), DropPlan(attention: [0], mlp: [2]), DropPlan(blocks: [2])], label: Self.name,
            sequence: 1)
    }

    /// A block-drop export writes the kept layers' mixer, MLP and indexer types.
    @Test func exportSpellsOutTheLayerTypes() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0])
        let text = try #require(config["text_config"] as? [String: Any])
        #expect(text["layer_types"] as? [String] == ["indexed_attention", "linear_attention", "indexed_attention"])
        #expect(text["mlp_layer_types"] as? [String] == ["sparse", "sparse", "sparse"])
        #expect(text["indexer_types"] as? [String] == ["full", "full", "full"])
        #expect(text["num_hidden_layers"] as? Int == 3)
    }

    /// Router and experts of one layer against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers(Self.name, unordered: true)
    }
}
