@testable import Architectures
@testable import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// DeepSeek-V4 (`deepseek_v4`): its config refusals and DeepseekV4Config's
/// rules, the residual stream of `hc_mult` streams mixed by Sinkhorn-
/// normalised hyper-connections, the attention over a sliding window and
/// compressed keys (heavily compressed, or chosen by the indexer), the
/// grouped output and the experts routed by token id or by score. The
/// fixture is saved as transformers saves DeepSeek-V4 (the released names,
/// renamed on load). The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct DeepseekV4Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "deepseek_v4-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "rms_norm_eps", "0"),
        Mutant(name, "hc_mult", "0"), Mutant(name, "hc_mult", "4611686018427387904"), Mutant(name, "hc_mult", "9223372036854775807"),
        Mutant(name, "hc_eps", "1e39"), Mutant(name, "swiglu_limit", "1e39"),
        Mutant(name, "o_groups", "3"), Mutant(name, "o_groups", "0"), Mutant(name, "sliding_window", "0"),
        Mutant(name, "index_topk", "-1"), Mutant(name, "index_n_heads", "0"), Mutant(name, "index_head_dim", "4"),
        // Products past 64 bits, and a head_dim that would size the rotary tables before the weights say otherwise.
        Mutant(name, "index_head_dim", "4611686018427387904"), Mutant(name, "index_n_heads", "9223372036854775807"),
        Mutant(name, "o_lora_rank", "4611686018427387904"), Mutant(name, "head_dim", "2147483648"),
        Mutant(name, "layer_types", #"["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"]"#),
        Mutant(name, "layer_types", #"["sliding_attention", "sliding_attention"]"#),
        Mutant(name, "mlp_layer_types", #"["hash_moe", "dense", "moe", "moe"]"#),
        Mutant(name, "compress_rates.compressed_sparse_attention", "0", key: "compress_rates.compressed_sparse_attention"),
        // DeepseekV4Config keeps a rate as written; sizing the compressor's position bias by 4.0 fails in transformers.
        Mutant(name, "compress_rates.compressed_sparse_attention", "4.0", key: "compress_rates.compressed_sparse_attention"),
        Mutant(name, "compress_rates.heavily_compressed_attention", "8.0", key: "compress_rates.heavily_compressed_attention"),
        Mutant(name, "compress_rate_hca", "8.0", key: "compress_rate_hca"),
        Mutant(name, "n_routed_experts", "0"), Mutant(name, "num_experts_per_tok", "9"), Mutant(name, "scoring_func", #""softmax""#),
        Mutant(name, "rope_parameters.compress.rope_type", #""yarn""#, key: "rope_parameters.compress.factor"),
        Mutant(name, "rope_parameters.main.rope_type", #""linear""#, key: "rope_parameters.main.rope_type"),
        Mutant(name, "hc_sinkhorn_iters", "1000000000000"),
        // Sizes the tensors contradict.
        Mutant(name, "hc_mult", "2"), Mutant(name, "n_routed_experts", "16"), Mutant(name, "moe_intermediate_size", "32"),
        Mutant(name, "q_lora_rank", "16"), Mutant(name, "o_lora_rank", "8"), Mutant(name, "index_head_dim", "32"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Each layer's branches join 3 streams through hyper-connections that
    /// mix them (20 Sinkhorn iterations); layer 0 attends over its window
    /// only, layers 1 and 3 over compressed keys of windows of 4 chosen by an
    /// indexer keeping 3, layer 2 over every finished window of 8; the output
    /// in 2 groups; layers 0 and 1 routed by token id, 2 and 3 by score.
    @Test func layersAsDeepseekV4Builds() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.streamWidth == 3 * model.hiddenSize)
        #expect(try model.head().streamCollapse?.streams == 3)
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            guard case .hyperConnected(let attentionJoin)? = block.attention?.join, case .hyperConnected(let mlpJoin)? = block.mlp?.join else {
                Issue.record("layer \(layer): a branch without its hyper-connection")
                continue
            }
            #expect(attentionJoin.mixing?.iterations == 20 && mlpJoin.mixing?.iterations == 20 && attentionJoin.streams == 3)
            guard case .compressedAttention(let attention)? = block.attention?.mixer else {
                Issue.record("layer \(layer): not DeepSeek-V4's attention")
                continue
            }
            #expect(attention.slidingWindow == 8 && attention.outputGroups.count == 2 && attention.rope.width == 8)
            #expect(attention.compressor?.rate == [nil, 4, 8, 4][layer] && (attention.indexer != nil) == (layer % 2 == 1))
            #expect(attention.indexer?.topK ?? 3 == 3)
            guard case .mixture(let moe)? = block.mlp?.feedForward else {
                Issue.record("layer \(layer): not a mixture of experts")
                continue
            }
            #expect(moe.routesByToken == (layer < 2) && moe.sharedExperts.count == 1)
        }
    }

    /// The embedding enters every stream; a dropped attention or MLP leaves
    /// the streams as they were (unmixed).
    @Test func droppedBranchLeavesTheStreams() throws {
        let model = try EditedFixture(Self.name).load()
        let batch = TokenBatch(sequences: [Array(FixtureFiles.jsonlSequences()[0].prefix(9))])
        let x = try model.embed(batch)
        #expect(x.cols == model.streamWidth)
        let block = try model.block(2, skipping: DropPlan(attention: [2], mlp: [2]))
        let activations = block(x, index: 2, tokenIDs: batch.tokenIDs) { mixer, input in mixer(input, batch) }
        #expect(activations.output.data == x.data)
    }

    /// What config.json leaves out takes DeepseekV4Config's rules, the
    /// legacy spellings its `__post_init__` reads among them; written out,
    /// the same model. A block-drop export spells the kept layers' lists out.
    @Test func legacySpellingsReadAsDeepseekV4Config() throws {
        let base = try scores(EditedFixture(Self.name))
        let legacy = try EditedFixture(Self.name) {
            $0["layer_types"] = nil
            $0["compress_ratios"] = [0, 4, 128, 4]
            $0["compress_rates"] = nil
            $0["compress_rate_hca"] = 8
            $0["mlp_layer_types"] = nil
            $0["num_hash_layers"] = 2
        }
        #expect(try scores(legacy) == base)
        let exported = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [1])
        #expect(exported["layer_types"] as? [String] == ["sliding_attention", "heavily_compressed_attention", "compressed_sparse_attention"])
        #expect(exported["mlp_layer_types"] as? [String] == ["hash_moe", "moe", "moe"])
    }

    /// Keys DeepseekV4Config keeps but its model does not read change
    /// nothing; the values its model runs with though they look degenerate
    /// (no Sinkhorn iteration after the first column normalisation, an
    /// indexer keeping no compressed key, tanh scores: `ACT2FN`) are run.
    @Test func valuesAsDeepseekV4Reads() throws {
        let base = try scores(EditedFixture(Self.name))
        #expect(try scores(EditedFixture(Self.name) {
            $0["num_key_value_heads"] = 4
            $0["norm_topk_prob"] = false
            $0["n_shared_experts"] = 2
        }) == base)
        for (key, value) in [("hc_sinkhorn_iters", 0 as Any), ("index_topk", 0), ("scoring_func", "tanh")] {
            let changed = try scores(EditedFixture(Self.name) { $0[key] = value })
            #expect(changed != base, "\(key)")
        }
        // range(iters - 1) is empty for any count below 2, -2^63 too.
        #expect(try scores(EditedFixture(Self.name) { $0["hc_sinkhorn_iters"] = Int.min }) == scores(EditedFixture(Self.name) { $0["hc_sinkhorn_iters"] = 1 }))
    }

    /// A token-to-expert table naming an expert past n_routed_experts is refused, naming the tensor.
    @Test func tableOutsideTheExpertsIsRefused() throws {
        let fixture = try EditedFixture(Self.name)
        let name = "model.layers.0.ffn.gate.tid2eid"
        try BadInputTests().rewriteWeights(fixture.model) { entries in
            let index = entries.firstIndex { $0.name == name }!
            var values = [Int64](repeating: 1, count: 512 * 2)
            values[5] = 8
            entries[index] = SafetensorsWriter.Entry(
                name: name, dtype: .int64, shape: [512, 2], bytes: values.withUnsafeBytes { Data($0) })
        }
        fixture.expectRefused(naming: "tid2eid")
        // A NaN or a value past Int's range is refused as stored, not converted.
        for value in [Float.nan, 9.3e18] {
            let stored = try EditedFixture(Self.name)
            try BadInputTests().rewriteWeights(stored.model) { entries in
                let index = entries.firstIndex { $0.name == name }!
                var values = [Float](repeating: 1, count: 512 * 2)
                values[7] = value
                entries[index] = SafetensorsWriter.Entry(
                    name: name, dtype: .float32, shape: [512, 2], bytes: values.withUnsafeBytes { Data($0) })
            }
            stored.expectRefused(naming: "tid2eid")
        }
    }

    /// The released configs' YaRN (a legacy flat `rope_scaling`) rotates the
    /// compressed layers, their compressors and indexers, not the sliding
    /// layers (tables against transformers' in `RopeStandardizationTests`);
    /// a YaRN attention factor other than 1 multiplies cos and sin, the
    /// output's inverse rotation included.
    @Test func yarnRotatesTheCompressedLayers() throws {
        let plain = try scores(EditedFixture(Self.name))
        func yarn(_ attentionFactor: Double?) throws -> [Double] {
            var parameters: [String: Any] = ["type": "yarn", "factor": 16, "original_max_position_embeddings": 32]
            parameters["attention_factor"] = attentionFactor
            return try scores(EditedFixture(Self.name) {
                $0["rope_parameters"] = nil
                $0["rope_scaling"] = parameters
            })
        }
        let released = try yarn(nil)
        #expect(zip(plain, released).map { abs($0 - $1) }.max()! > 1e-4, "the fixture's sequences must reach YaRN's interpolated frequencies")
        #expect(try yarn(1) == released)
        #expect(zip(released, try yarn(1.5)).map { abs($0 - $1) }.max()! > 1e-4)
        // Another rope type is refused naming the key as written.
        try EditedFixture(Self.name) {
            $0["rope_parameters"] = ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0]
        }.expectRefused(naming: "rope_parameters.rope_type")
    }

    /// A YaRN rotation scales cos and sin by its attention factor in both directions.
    @Test func scaledInterleavedRotation() {
        let rope = InterleavedRope(frequencies: [0.5], scaling: 2)
        var head: [Float] = [7, 1, 2]
        head.withUnsafeMutableBufferPointer { rope.rotate($0.baseAddress!, headDim: 3, position: 3) }
        let (c, s) = (cos(Float(1.5)) * 2, sin(Float(1.5)) * 2)
        #expect(head == [7, 1 * c - 2 * s, 2 * c + 1 * s])
        head.withUnsafeMutableBufferPointer { rope.rotate($0.baseAddress!, headDim: 3, position: 3, inverse: true) }
        #expect(abs(head[1] - 4) < 1e-5 && abs(head[2] - 8) < 1e-5, "undone up to the scaling applied twice: \(head)")
    }

    /// A sliding window past every row attends to all of them, with no
    /// buffer sized by the window; `drop`'s analytic FLOPs count the keys
    /// the context holds (Int.max overflowed them).
    @Test func aHugeWindowReachesEveryRow() throws {
        let huge = try EditedFixture(Self.name) { $0["sliding_window"] = Int.max }
        let wide = try EditedFixture(Self.name) { $0["sliding_window"] = 10_000 }
        #expect(try huge.attentionScores() == wide.attentionScores())
        func flops(_ fixture: EditedFixture) throws -> Double { try SpeedMeasurement.decodeFLOPs(model: fixture.load(), plan: .none, context: 600) }
        #expect(try flops(huge) == flops(wide))
    }

    /// Hyper-connection tensors of another shape than `hc_mult` gives are
    /// refused on loading, naming the tensor as transformers renames it.
    @Test func misshapenHyperConnectionTensorsAreRefused() throws {
        for (name, shape, renamed) in [
            ("model.hc_head.hc_scale", [2], "model.hc_head.hc_scale"),
            ("model.layers.0.hc_attn_scale", [2], "model.layers.0.attn_hc.scale"),
        ] {
            let fixture = try EditedFixture(Self.name)
            try BadInputTests().rewriteWeights(fixture.model) { entries in
                let index = entries.firstIndex { $0.name == name }!
                entries[index] = SafetensorsWriter.Entry(
                    name: name, dtype: .float32, shape: shape, bytes: Data(count: 4 * shape.reduce(1, *)))
            }
            fixture.expectRefused(naming: renamed)
        }
    }

    /// Router and experts of one layer against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers(Self.name, unordered: true)
    }

    /// The KV-cache bytes per token count each attention's key (also its
    /// value) and its share of the compressed keys: head_dim 16 and
    /// index_head_dim 16, Float32, on layers sliding, compressed sparse
    /// (rate 4, with the indexer), heavily compressed (rate 8), compressed sparse.
    @Test func cacheBytesCountTheCompressedKeys() throws {
        let model = try EditedFixture(Self.name).load()
        let (sliding, sparse, heavy) = (4 * 16, 4 * (16 + 16 / 4 + 16 / 4), 4 * (16 + 16 / 8))
        let full = try IncrementalDecoder(model: model, plan: .none, capacity: 4)
        #expect(full.cacheBytesPerToken == sliding + sparse + heavy + sparse)
        #expect(try full.dropping(DropPlan(attention: [1]), capacity: 4).cacheBytesPerToken == sliding + heavy + sparse)
    }

    /// Prefill, then decoding token by token, equal the full forward.
    @Test func prefillAndDecodingMatchTheForward() throws {
        try expectCachedDecodingMatchesTheForward(
            try EditedFixture(Self.name).load(), tokens: 30, prefill: 20, plans: [.none, DropPlan(mlp: [2]), DropPlan(attention: [1])],
            label: Self.name)
    }
}
