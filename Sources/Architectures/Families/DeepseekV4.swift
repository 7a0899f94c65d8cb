import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of `deepseek_v4`'s config.json besides the sizes, with
/// DeepseekV4Config's defaults and its `__post_init__`'s readings of the
/// legacy spellings (`compress_ratios`, `compress_rate_csa` /
/// `compress_rate_hca`, `num_hash_layers`, `qk_rope_head_dim`).
struct DeepseekV4Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    var qLoraRank: Int
    /// The rotated columns of each head: int(head_dim · partial_rotary_factor).
    var partialRotaryFactor: Double?
    var legacyRopeHeadDim: Int?
    var ropeTheta: Double
    var compressRopeTheta: Double
    var layerTypes: [String]?
    var legacyCompressRatios: [Int]?
    var compressRates: [String: Int]?
    var legacyRateCSA: Int?, legacyRateHCA: Int?
    var mlpLayerTypes: [String]?
    var legacyHashLayers: Int?
    var hcMult: Int
    var hcSinkhornIters: Int
    var hcEps: Double
    var swigluLimit: Double
    var slidingWindow: Int
    var oGroups: Int
    var oLoraRank: Int
    var indexNHeads: Int
    var indexHeadDim: Int
    var indexTopk: Int
    var nRoutedExperts: Int
    var numExpertsPerTok: Int
    var moeIntermediateSize: Int
    var scoringFunc: String
    var routedScalingFactor: Double

    static let layerTypeNames = ["sliding_attention", "compressed_sparse_attention", "heavily_compressed_attention"]
    static let ratioTypes = [0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"]

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ name: String) { stringValue = name }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        func value<T: Decodable>(_ key: String, _ fallback: T) throws -> T { try c.decodeIfPresent(T.self, forKey: Key(key)) ?? fallback }
        func optional<T: Decodable>(_ key: String) throws -> T? { try c.decodeIfPresent(T.self, forKey: Key(key)) }
        rmsNormEps = try value("rms_norm_eps", 1e-6)
        hiddenAct = try value("hidden_act", "silu")
        qLoraRank = try value("q_lora_rank", 1024)
        partialRotaryFactor = try optional("partial_rotary_factor")
        legacyRopeHeadDim = try optional("qk_rope_head_dim")
        ropeTheta = try value("rope_theta", 10000)
        compressRopeTheta = try value("compress_rope_theta", 160_000)
        layerTypes = try optional("layer_types")
        legacyCompressRatios = try optional("compress_ratios")
        compressRates = try optional("compress_rates")
        legacyRateCSA = try optional("compress_rate_csa")
        legacyRateHCA = try optional("compress_rate_hca")
        mlpLayerTypes = try optional("mlp_layer_types")
        legacyHashLayers = try optional("num_hash_layers")
        hcMult = try value("hc_mult", 4)
        hcSinkhornIters = try value("hc_sinkhorn_iters", 20)
        hcEps = try value("hc_eps", 1e-6)
        swigluLimit = try value("swiglu_limit", 10)
        slidingWindow = try value("sliding_window", 128)
        oGroups = try value("o_groups", 8)
        oLoraRank = try value("o_lora_rank", 1024)
        indexNHeads = try value("index_n_heads", 64)
        indexHeadDim = try value("index_head_dim", 128)
        indexTopk = try value("index_topk", 512)
        nRoutedExperts = try optional("num_local_experts") ?? value("n_routed_experts", 256)
        numExpertsPerTok = try value("num_experts_per_tok", 6)
        moeIntermediateSize = try value("moe_intermediate_size", 2048)
        scoringFunc = try value("scoring_func", "sqrtsoftplus")
        routedScalingFactor = try value("routed_scaling_factor", 1.5)
    }

    /// Each layer's attention type, as `__post_init__` resolves them: `layer_types`, else
    /// `compress_ratios` (0, 4, 128), else two heavily compressed layers then alternating.
    func resolvedLayerTypes(_ layers: Int) throws -> [String] {
        if let layerTypes { return Array(layerTypes.prefix(layers)) }
        if let ratios = legacyCompressRatios {
            return try ratios.prefix(layers).map { ratio in
                guard let type = Self.ratioTypes[ratio] else {
                    throw InvalidConfigValue(key: "compress_ratios", problem: "has \(ratio), which DeepseekV4Config maps to no layer type (it knows 0, 4 and 128)")
                }
                return type
            }
        }
        return (0..<layers).map { $0 < 2 || $0 % 2 == 0 ? "heavily_compressed_attention" : "compressed_sparse_attention" }
    }

    /// Each layer's MLP: `mlp_layer_types`, else the first `num_hash_layers` (3) "hash_moe", the rest "moe".
    func resolvedMLPTypes(_ layers: Int) -> [String] {
        if let mlpLayerTypes { return Array(mlpLayerTypes.prefix(layers)) }
        let hashed = legacyHashLayers ?? 3
        return (0..<layers).map { $0 < hashed ? "hash_moe" : "moe" }
    }

    /// The compression rate of each compressed type.
    var rates: (sparse: Int, heavy: Int) {
        var rates = compressRates ?? [:]
        if compressRates == nil { rates = ["compressed_sparse_attention": 4, "heavily_compressed_attention": 128] }
        if let legacyRateCSA { rates["compressed_sparse_attention"] = legacyRateCSA }
        if let legacyRateHCA { rates["heavily_compressed_attention"] = legacyRateHCA }
        return (rates["compressed_sparse_attention"] ?? 0, rates["heavily_compressed_attention"] ?? 0)
    }

    /// Refuses the rate of a compressed type some layer has unless config.json
    /// writes it as an integer (the legacy `compress_rate_csa` / `_hca` where
    /// given, else `compress_rates`'): DeepseekV4Config keeps it as written and
    /// the compressor sizes its position bias by it (`torch.empty`), which
    /// fails on 4.0, where decoding would read 4.
    func checkRatesAreIntegers(_ document: JSONValue, layerTypes: [String]) throws {
        for (type, legacy) in [("compressed_sparse_attention", "compress_rate_csa"), ("heavily_compressed_attention", "compress_rate_hca")]
        where layerTypes.contains(type) {
            var (key, value) = ("compress_rates.\(type)", document.member("compress_rates")?.member(type))
            switch document.member(legacy) {
            case nil, .null?: break
            case let written?: (key, value) = (legacy, written)
            }
            guard let value, case .number(let number) = value else { continue }
            throw InvalidConfigValue(
                key: key, problem: "is \(number), not an integer: transformers sizes the compressor's position bias by it (torch.empty), which fails")
        }
    }

    /// `partial_rotary_factor` as `__post_init__` resolves it: as given, else
    /// the legacy `qk_rope_head_dim` / head_dim, else 64 / 512.
    func rotaryFraction(headDim: Int) -> Double {
        partialRotaryFactor ?? legacyRopeHeadDim.map { Double($0) / Double(headDim) } ?? 64.0 / 512
    }

    /// The rotations' labels: `main` for the sliding layers, `compress` for
    /// the compressed layers, their compressors and indexers.
    static let ropeLabels = ["main", "compress"]

    /// The rope parameters of each label (`ropeLabels`) as transformers
    /// builds them from `written` (config.json's, `DecoderParts.writtenRopeParameters`):
    /// `DeepseekV4Config.__post_init__` keeps entries written nested by label
    /// and `standardize_rope_params` completes them with the top-level
    /// `rope_theta` (not `compress_rope_theta`) and rotary fraction; flat
    /// parameters (the released configs' YaRN) are the compressed layers',
    /// at `compress_rope_theta` and the rotary fraction, their own base and
    /// fraction overridden, with an attention factor of 1 for YaRN (the
    /// reference multiplies cos and sin by nothing), and `main` is the
    /// default rotation at `rope_theta`.
    func ropeEntries(_ written: [String: Any], headDim: Int) -> [String: Any] {
        let fraction = rotaryFraction(headDim: headDim)
        if var main = written["main"] as? [String: Any], var compress = written["compress"] as? [String: Any] {
            for key in ["rope_theta", "partial_rotary_factor"] {
                let value = key == "rope_theta" ? ropeTheta : fraction
                if main[key] == nil { main[key] = value }
                if compress[key] == nil { compress[key] = value }
            }
            return ["main": main, "compress": compress]
        }
        var compress = written.filter { !Self.ropeLabels.contains($0.key) }
        compress["rope_theta"] = compressRopeTheta
        compress["partial_rotary_factor"] = fraction
        let type = compress["rope_type"] ?? compress["type"] ?? "default"
        compress["rope_type"] = type
        if type as? String == "yarn", compress["attention_factor"] == nil { compress["attention_factor"] = 1.0 }
        return [
            "main": ["rope_type": "default", "rope_theta": ropeTheta, "partial_rotary_factor": fraction] as [String: Any],
            "compress": compress,
        ]
    }

    /// Refuses values transformers could not run, before anything is sized from them.
    func check(_ d: DecoderDimensions) throws {
        try ConfigRules.positive(rmsNormEps, "rms_norm_eps")
        try ConfigRules.count(qLoraRank, "q_lora_rank")
        let layers = d.numHiddenLayers, types = try resolvedLayerTypes(layers), mlpTypes = resolvedMLPTypes(layers)
        for (key, list, allowed) in [
            ("layer_types", types, Self.layerTypeNames), ("mlp_layer_types", mlpTypes, ["hash_moe", "moe"]),
        ] {
            guard list.count == layers else {
                throw InvalidConfigValue(key: key, problem: "has \(list.count) entries, but num_hidden_layers is \(layers)")
            }
            if let bad = list.first(where: { !allowed.contains($0) }) {
                throw InvalidConfigValue(key: key, problem: "has \"\(bad)\"; DeepseekV4Config allows \(allowed.joined(separator: ", "))")
            }
        }
        let rates = self.rates
        if types.contains("compressed_sparse_attention") { try ConfigRules.count(rates.sparse, "compress_rates.compressed_sparse_attention") }
        if types.contains("heavily_compressed_attention") { try ConfigRules.count(rates.heavy, "compress_rates.heavily_compressed_attention") }
        try HyperConnection.checkSizes(streams: hcMult, hidden: d.hiddenSize, sinkhornIterations: hcSinkhornIters)
        for (value, key) in [(hcEps, "hc_eps"), (swigluLimit, "swiglu_limit")] where !Float(value).isFinite {
            throw InvalidConfigValue(key: key, problem: "must be a finite number that float32 holds, got \(value)")
        }
        try ConfigRules.count(slidingWindow, "sliding_window")
        try ConfigRules.count(oGroups, "o_groups")
        try ConfigRules.count(oLoraRank, "o_lora_rank")
        let headDim = d.resolvedHeadDim
        try ConfigRules.divides(oGroups, "o_groups", d.numAttentionHeads * headDim, "num_attention_heads × head_dim")
        if types.contains("compressed_sparse_attention") {
            try ConfigRules.count(indexNHeads, "index_n_heads")
            try ConfigRules.nonNegative(indexTopk, "index_topk")
            try ConfigRules.count(indexHeadDim, "index_head_dim")
        }
        try ConfigRules.count(nRoutedExperts, "n_routed_experts")
        guard (1...nRoutedExperts).contains(numExpertsPerTok) else {
            throw InvalidConfigValue(key: "num_experts_per_tok", problem: "is \(numExpertsPerTok); it must be within 1...n_routed_experts (\(nRoutedExperts))")
        }
        try ConfigRules.count(moeIntermediateSize, "moe_intermediate_size")
        _ = try scoring()
        guard Float(routedScalingFactor).isFinite else {
            throw InvalidConfigValue(key: "routed_scaling_factor", problem: "must be a finite number that float32 holds, got \(routedScalingFactor)")
        }
    }

    /// The routers' scores: `ACT2FN[scoring_func]` of each logit (sqrtsoftplus by default).
    func scoring() throws -> GroupLimitedTopK.Scoring {
        if scoringFunc == "sqrtsoftplus" { return .sqrtSoftplus }
        // ACT2FN has no softmax: DeepseekV4TopKRouter cannot be built with the docstring's "softmax".
        guard scoringFunc != "softmax", let activation = try? Activation(huggingFaceName: scoringFunc, configPath: "") else {
            throw InvalidConfigValue(
                key: "scoring_func",
                problem: "is \"\(scoringFunc)\", which DeepseekV4TopKRouter looks up in transformers' ACT2FN; droptrace scores by sqrtsoftplus or one of "
                    + Activation.huggingFaceNames.joined(separator: ", "))
        }
        return .activation(activation)
    }
}

/// DeepSeek-V4 (`deepseek_v4`; transformers' `models/deepseek_v4/`,
/// DeepseekV4ForCausalLM): the residual stream is `hc_mult` streams joined
/// by manifold-constrained hyper-connections (`HyperConnection` with its
/// Sinkhorn-normalised stream mixing: `attn_hc`, `ffn_hc`; `hc_head` before
/// the final norm); each layer's attention (`CompressedAttention`) one
/// shared key/value head over a sliding window plus, on the
/// `compressed_sparse_attention` layers, compressed keys of overlapping
/// windows chosen by a lightning indexer, on the
/// `heavily_compressed_attention` layers every finished window's compressed
/// key; a grouped output projection; every MLP a mixture of experts
/// (`n_routed_experts`, `num_experts_per_tok`, SwiGLU inputs clamped at
/// `swiglu_limit`) beside one shared expert of the same width, the
/// `hash_moe` layers routed by each token's `tid2eid` row, the `moe` ones
/// by `scoring_func` plus the correction bias, the weights renormalised
/// and times `routed_scaling_factor`.
///
/// A module is its whole hyper-connected sublayer, the stream mixing
/// included: its importance compares all streams before and after it
/// (`LanguageModel.streamWidth` wide); a dropped module leaves the streams
/// as they were. The released names (`attn.wq_a`, `ffn.experts.<e>.w1`,
/// `hc_attn_fn`, …) are read as transformers renames them on load.
struct DeepseekV4Model: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let config: DeepseekV4Configuration
    let layerTypes: [String]
    let mlpTypes: [String]
    let headDim: Int
    let mainRope: InterleavedRope, compressedRope: InterleavedRope

    init(_ checkpoint: Checkpoint) throws {
        let config = try checkpoint.decodeConfig(DeepseekV4Configuration.self)
        let layers = try checkpoint.decodeConfig(DecoderDimensions.self).numHiddenLayers
        let mlpTypes = config.resolvedMLPTypes(layers)
        let experts = ExpertNaming(
            parts: ["mlp.experts."], projections: ["w1", "w3", "w2"], count: config.nRoutedExperts, countKey: "n_routed_experts",
            isSparse: { _ in true })
        parts = try DecoderParts(checkpoint, naming: Self.naming, experts: experts)
        let d = parts.dimensions
        try ConfigRules.checks(path: parts.configPath) { try config.check(d) }
        self.config = config
        self.mlpTypes = mlpTypes
        layerTypes = try ConfigRules.checks(path: parts.configPath) { try config.resolvedLayerTypes(layers) }
        try ConfigRules.checks(path: parts.configPath) { [layerTypes] in try config.checkRatesAreIntegers(checkpoint.configDocument, layerTypes: layerTypes) }
        headDim = d.resolvedHeadDim
        // head_dim sizes the rotary tables: checked against a kept kv_proj first.
        let drops = parts.configuredDrops, weights = parts.weights
        if let layer = (0..<layers).first(where: { !drops.dropsAttention($0) }) {
            try weights.confirmShape(
                "layers.\(layer).self_attn.kv_proj.weight", [headDim, d.hiddenSize], keys: "head_dim, hidden_size", configPath: parts.configPath)
        }
        (mainRope, compressedRope) = try Self.rotations(parts, config: config, layerTypes: layerTypes)
        try confirmShapes()
    }

    /// The two rotations (`DeepseekV4Configuration.ropeEntries`), of the
    /// default or the YaRN type (those DeepSeek-V4's configs use).
    /// - Throws: `DroptraceError` naming config.json and the key as written
    ///   for another rope type, a rotated width past the head or, on
    ///   compressed sparse layers, past `index_head_dim`.
    static func rotations(
        _ parts: DecoderParts, config: DeepseekV4Configuration, layerTypes: [String]
    ) throws -> (main: InterleavedRope, compressed: InterleavedRope) {
        let written = try DecoderParts.writtenRopeParameters(parts.checkpoint.configObject(parts.section), path: parts.configPath)
        let headDim = parts.dimensions.resolvedHeadDim
        let entries = config.ropeEntries(written.parameters, headDim: headDim)
        // Flat parameters are the compressed layers': name their keys as written.
        let nested = written.parameters["compress"] is [String: Any]
        func named(_ label: String) -> String { nested ? "\(written.key).\(label)" : written.key }
        for label in DeepseekV4Configuration.ropeLabels {
            let entry = entries[label] as? [String: Any] ?? [:]
            let type = entry["rope_type"] ?? entry["type"] ?? "default"
            guard let type = type as? String, ["default", "yarn"].contains(type) else {
                throw InvalidConfigValue(
                    key: named(label) + ".rope_type", problem: "is \(type); DeepSeek-V4 rotates by the default or the YaRN rope")
                .error(path: parts.configPath)
            }
        }
        let tables: [String: RotaryEmbedding]
        do {
            tables = try parts.rotariesAsWritten(
                types: Set(DeepseekV4Configuration.ropeLabels), defaults: [:], rotaryClass: "DeepseekV4RotaryEmbedding",
                attentionClass: "DeepseekV4Attention", partialRotary: { _ in .honoured(default: config.rotaryFraction(headDim: headDim)) },
                entries: entries)
        } catch var error as DroptraceError where !nested {
            error.message = error.message.replacingOccurrences(of: "\"rope_parameters.compress.", with: "\"\(written.key).")
            throw error
        }
        let main = InterleavedRope(tables["main"]!), compressed = InterleavedRope(tables["compress"]!)
        if layerTypes.contains("compressed_sparse_attention"), compressed.width > config.indexHeadDim {
            throw InvalidConfigValue(
                key: "index_head_dim", problem: "is \(config.indexHeadDim), narrower than the \(compressed.width) rotated columns")
            .error(path: parts.configPath)
        }
        return (main, compressed)
    }

    /// The sizes config.json gives against the tensors of the head and of
    /// the first kept layer of each kind, before anything is sized from them.
    func confirmShapes() throws {
        let n = config.hcMult, width = streamWidth, d = hiddenSize, heads = parts.dimensions.numAttentionHeads
        let rank = config.qLoraRank, groups = config.oGroups, groupRank = config.oLoraRank, rates = config.rates
        let index = config.indexHeadDim, indexHeads = config.indexNHeads, experts = config.nRoutedExperts
        // Sizes multiplied without overflow: a product past Int is refused naming its first key.
        func times(_ a: Int, _ aKey: String, _ b: Int, _ bKey: String) throws -> Int {
            try ConfigRules.checks(path: parts.configPath) { try ConfigRules.product([(a, aKey), (b, bKey)]) }
        }
        let mixes = try times(2 + n, "hc_mult", n, "hc_mult"), queryWidth = try times(heads, "num_attention_heads", headDim, "head_dim")
        let groupWidth = try times(groups, "o_groups", groupRank, "o_lora_rank")
        let indexWidth = try times(indexHeads, "index_n_heads", index, "index_head_dim"), pairedIndex = try times(index, "index_head_dim", 2, "2")
        var shapes: [(String, [Int], String)] = [
            ("hc_head.hc_fn", [n, width], "hc_mult, hc_mult × hidden_size"), ("hc_head.hc_base", [n], "hc_mult"),
            ("hc_head.hc_scale", [1], "DeepseekV4HyperHead's one scale"),
        ]
        func connection(_ p: String) {
            shapes += [
                (p + "fn", [mixes, width], "(2 + hc_mult) × hc_mult, hc_mult × hidden_size"),
                (p + "base", [mixes], "(2 + hc_mult) × hc_mult"), (p + "scale", [3], "DeepseekV4HyperConnection's three scales"),
            ]
        }
        let kept = (0..<layerCount).filter { !configuredDrops.dropsAttention($0) }
        if let layer = kept.first {
            let p = "layers.\(layer).self_attn."
            connection("layers.\(layer).attn_hc.")
            shapes += [
                (p + "q_a_proj.weight", [rank, d], "q_lora_rank, hidden_size"),
                (p + "q_b_proj.weight", [queryWidth, rank], "num_attention_heads × head_dim, q_lora_rank"),
                (p + "kv_proj.weight", [headDim, d], "head_dim, hidden_size"), (p + "sinks", [heads], "num_attention_heads"),
                (p + "o_a_proj.weight", [groupWidth, queryWidth / groups], "o_groups × o_lora_rank, num_attention_heads × head_dim / o_groups"),
                (p + "o_b_proj.weight", [d, groupWidth], "hidden_size, o_groups × o_lora_rank"),
            ]
        }
        if let layer = kept.first(where: { layerTypes[$0] == "heavily_compressed_attention" }) {
            let p = "layers.\(layer).self_attn.compressor."
            shapes += [
                (p + "kv_proj.weight", [headDim, d], "head_dim, hidden_size"),
                (p + "position_bias", [rates.heavy, headDim], "compress_rates.heavily_compressed_attention, head_dim"),
            ]
        }
        if let layer = kept.first(where: { layerTypes[$0] == "compressed_sparse_attention" }) {
            let p = "layers.\(layer).self_attn.compressor."
            shapes += [
                (p + "kv_proj.weight", [2 * headDim, d], "2 × head_dim, hidden_size"),
                (p + "position_bias", [rates.sparse, 2 * headDim], "compress_rates.compressed_sparse_attention, 2 × head_dim"),
                (p + "indexer.kv_proj.weight", [pairedIndex, d], "2 × index_head_dim, hidden_size"),
                (p + "indexer.position_bias", [rates.sparse, pairedIndex], "compress_rates.compressed_sparse_attention, 2 × index_head_dim"),
                (p + "indexer.q_b_proj.weight", [indexWidth, rank], "index_n_heads × index_head_dim, q_lora_rank"),
                (p + "indexer.scorer.weights_proj.weight", [indexHeads, d], "index_n_heads, hidden_size"),
            ]
        }
        if let layer = (0..<layerCount).first(where: { !configuredDrops.dropsMLP($0) }) {
            let p = "layers.\(layer).mlp."
            connection("layers.\(layer).ffn_hc.")
            shapes += [
                (p + "gate.weight", [experts, d], "n_routed_experts, hidden_size"),
                (p + "shared_experts.gate_proj.weight", [config.moeIntermediateSize, d], "moe_intermediate_size, hidden_size"),
            ]
            let perExpert = p + "experts.0.w1.weight"
            if parts.weights.has(perExpert) {
                shapes.append((perExpert, [config.moeIntermediateSize, d], "moe_intermediate_size, hidden_size"))
            }
        }
        try parts.weights.confirmShapes(shapes, configPath: parts.configPath)
        // The first kept hash layer's token-to-expert table, read as its MLP reads it.
        if let layer = (0..<layerCount).first(where: { !configuredDrops.dropsMLP($0) && mlpTypes[$0] == "hash_moe" }) {
            _ = try expertTable(layer: layer)
        }
    }

    /// Layer `index`'s `tid2eid` [vocab_size, num_experts_per_tok], each entry an expert.
    func expertTable(layer index: Int) throws -> [Int] {
        let w = parts.weights, name = w.prefix + "layers.\(index).mlp.gate.tid2eid"
        let vocabulary = parts.dimensions.vocabSize, k = config.numExpertsPerTok, count = config.nRoutedExperts
        let stored = try w.checkpoint.storedTensor(name)
        guard stored.shape == [vocabulary, k] else {
            throw DroptraceError(
                "vocab_size, num_experts_per_tok imply tensor '\(name)' of shape [\(vocabulary), \(k)], but it has shape \(stored.shape)",
                path: parts.configPath)
        }
        // Checked as stored (torch casts to int64 toward zero), before a NaN or huge value is converted.
        let values = try stored.floats()
        if let bad = values.first(where: { !($0 > -1 && $0 < Float(count)) }) {
            throw DroptraceError(
                "tensor '\(name)' (tid2eid) routes a token to expert \(bad), outside the \(count) experts n_routed_experts gives",
                path: parts.configPath)
        }
        return values.map { Int($0) }
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "input_layernorm.", "attn_hc."],
            mlp: ["mlp.", "post_attention_layernorm.", "ffn_hc."], layerCountKeys: ["num_hidden_layers"])
    }

    var streamWidth: Int { hiddenSize * config.hcMult }

    /// An export without some blocks writes `layer_types` and `mlp_layer_types` for the kept layers.
    var layerNaming: LayerNaming {
        var naming = parts.naming(spellingOut: layerTypes)
        naming.perLayerLists["mlp_layer_types"] = mlpTypes
        return naming
    }

    /// The embedding, entering every stream.
    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch).repeated(config.hcMult) }

    func head() throws -> OutputHead {
        var head = try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
        head.streamCollapse = try hyperConnections.head()
        return head
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), p = "layers.\(index)."
        return try parts.preNormBlock(
            index, drops: drops, eps: config.rmsNormEps,
            residualJoins: ({ try hyperConnection(p + "attn_hc") }, { try hyperConnection(p + "ffn_hc") }),
            mixer: { .compressedAttention(try attention(layer: index)) }, feedForward: { try feedForward(layer: index) })
    }

    /// The hyper-connection tensors (`hc_mult` streams).
    var hyperConnections: HyperConnectionTensors {
        HyperConnectionTensors(
            weights: parts.weights, streams: config.hcMult, hiddenSize: hiddenSize, gateEps: Float(config.hcEps),
            normEps: Float(config.rmsNormEps))
    }

    /// The hyper-connection stored under `name` (`fn`, `base`, `scale`).
    func hyperConnection(_ name: String) throws -> ResidualJoin {
        try hyperConnections.connection(name, postMagnitude: 2, sinkhornIterations: config.hcSinkhornIters)
    }

    /// Layer `index`'s attention, its compressor and indexer as its layer type has them.
    func attention(layer index: Int) throws -> CompressedAttention {
        let p = "layers.\(index).self_attn.", w = parts.weights, d = hiddenSize, heads = parts.dimensions.numAttentionHeads
        let eps = config.rmsNormEps, rank = config.qLoraRank, type = layerTypes[index]
        let rates = config.rates
        func compressor(_ q: String, dim: Int, rate: Int, overlapping: Bool) throws -> KeyCompressor {
            let width = (overlapping ? 2 : 1) * dim
            return KeyCompressor(
                rate: rate, dim: dim, overlapping: overlapping, keyValue: try w.linear(q + "kv_proj", in: d, out: width, bias: false),
                gate: try w.linear(q + "gate_proj", in: d, out: width, bias: false),
                positionBias: try w.floats(q + "position_bias", [rate, width]), norm: try w.rmsNorm(q + "kv_norm", size: dim, eps: eps),
                rope: compressedRope)
        }
        var keys: KeyCompressor?, indexer: CompressedKeyIndexer?
        switch type {
        case "compressed_sparse_attention":
            keys = try compressor(p + "compressor.", dim: headDim, rate: rates.sparse, overlapping: true)
            let q = p + "compressor.indexer."
            indexer = CompressedKeyIndexer(
                compressor: try compressor(q, dim: config.indexHeadDim, rate: rates.sparse, overlapping: true),
                queryUp: try w.linear(q + "q_b_proj", in: rank, out: config.indexNHeads * config.indexHeadDim, bias: false),
                headWeights: try w.linear(q + "scorer.weights_proj", in: d, out: config.indexNHeads, bias: false),
                heads: config.indexNHeads, topK: config.indexTopk)
        case "heavily_compressed_attention":
            keys = try compressor(p + "compressor.", dim: headDim, rate: rates.heavy, overlapping: false)
        default:
            break
        }
        let groups = config.oGroups, groupWidth = heads * headDim / groups, groupRank = config.oLoraRank
        let down = try w.floats(p + "o_a_proj.weight", [groups * groupRank, groupWidth])
        let outputGroups = (0..<groups).map { g in
            Linear(
                weight: Array(down[(g * groupRank * groupWidth)..<((g + 1) * groupRank * groupWidth)]), bias: nil,
                inFeatures: groupWidth, outFeatures: groupRank)
        }
        return CompressedAttention(
            heads: heads, headDim: headDim, queryDown: try w.linear(p + "q_a_proj", in: d, out: rank, bias: false),
            queryNorm: try w.rmsNorm(p + "q_a_norm", size: rank, eps: eps),
            queryUp: try w.linear(p + "q_b_proj", in: rank, out: heads * headDim, bias: false),
            keyValue: try w.linear(p + "kv_proj", in: d, out: headDim, bias: false),
            keyValueNorm: try w.rmsNorm(p + "kv_norm", size: headDim, eps: eps), normEps: Float(eps),
            sinks: try w.floats(p + "sinks", [heads]), slidingWindow: config.slidingWindow,
            rope: type == "sliding_attention" ? mainRope : compressedRope, compressor: keys, indexer: indexer,
            outputGroups: outputGroups, output: try w.linear(p + "o_b_proj", in: groups * groupRank, out: d, bias: false))
    }

    /// Layer `index`'s mixture of experts: routed by `tid2eid` on the hash
    /// layers, by score plus the correction bias elsewhere; one shared expert.
    func feedForward(layer index: Int) throws -> FeedForward {
        let p = "layers.\(index).mlp.", w = parts.weights, d = hiddenSize, count = config.nRoutedExperts
        let k = config.numExpertsPerTok, inner = config.moeIntermediateSize
        let activation = Activation.clampedInput(try parts.activation(config.hiddenAct), limit: Float(config.swigluLimit))
        let scoring = try config.scoring()
        let rule: MixtureOfExperts.RoutingRule
        if mlpTypes[index] == "hash_moe" {
            let table = try expertTable(layer: index)
            rule = .tokenHashed(TokenHashedRouting(table: table, scoring: scoring, scalingFactor: Float(config.routedScalingFactor)))
        } else {
            let bias = w.has(p + "gate.e_score_correction_bias") ? try w.floats(p + "gate.e_score_correction_bias", [count]) : nil
            rule = .groupLimited(GroupLimitedTopK(
                scoring: scoring, groupScore: .best, groups: 1, groupsPerToken: 1, selectionBias: bias, normalizesWeights: true,
                scalingFactor: Float(config.routedScalingFactor)))
        }
        let experts = try w.gatedExperts(
            fused: p + "experts.", perExpert: p + "experts.", names: (gate: "w1", up: "w3", down: "w2"), count: count, hidden: d,
            inner: inner, activation: activation)
        return .mixture(MixtureOfExperts(
            router: try w.linear(p + "gate", in: d, out: count, bias: false), experts: experts, expertsPerToken: k, rule: rule,
            sharedExperts: [try w.gatedMLP(p + "shared_experts.", hidden: d, inner: inner, activation: activation)]))
    }
}
