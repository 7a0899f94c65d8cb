import DroptraceSupport
import Foundation

/// The GGUF architectures (`general.architecture`) droptrace reads.
enum GGUFFamily: String, CaseIterable {
    /// Llama, Mistral, TinyLlama, SmolLM and other Llama-shaped models.
    case llama
    case qwen2
    /// Qwen3 (dense): qwen2's layout with per-head q/k norms and no q/k/v biases.
    case qwen3
    /// Qwen3-MoE and OLMoE: experts stored as 3-D `ffn_*_exps` tensors.
    case qwen3moe
    case olmoe
    case gptneox
    case gpt2

    /// The Hugging Face name prefix of the base model and its layer list.
    var prefix: String {
        switch self {
        case .llama, .qwen2, .qwen3, .qwen3moe, .olmoe: "model."
        case .gptneox: "gpt_neox."
        case .gpt2: "transformer."
        }
    }

    var layers: String { self == .gpt2 ? "h" : "layers" }

    /// Whether its blocks may route to experts (`<arch>.expert_count`).
    var hasExperts: Bool { self == .qwen3moe || self == .olmoe }
}

/// A config.json equivalent built from a GGUF file's metadata: the keys
/// llama.cpp's converter writes (`<arch>.embedding_length`, ...) translated to
/// the ones droptrace's architectures decode, plus what only the tensors tell
/// (vocabulary size, tied embeddings, biases).
///
/// Every size is checked (`ConfigRules`, errors naming the GGUF key) and
/// confirmed by the tensors' dimensions (the block count by the blocks
/// present) before the tensor names and row
/// permutations are built from it.
struct GGUFConfiguration {
    let family: GGUFFamily
    let heads: Int
    let kvHeads: Int
    let headDim: Int
    let json: [String: Any]

    /// `tensorDimensions` are the GGUF tensors' dimensions by GGUF name;
    /// `ropeFactors` the contents of `rope_freqs.weight`, when present.
    init(metadata: GGUFMetadata, tensorDimensions: [String: [Int]], ropeFactors: [Float]?) throws {
        let path = metadata.path
        let architecture = try metadata.string("general.architecture")
        guard let family = GGUFFamily(rawValue: architecture) else {
            throw DroptraceError(
                "GGUF architecture '\(architecture)' is not supported (supported: \(GGUFFamily.allCases.map(\.rawValue).joined(separator: ", ")))",
                path: path)
        }
        self.family = family
        let a = architecture + "."
        if !family.hasExperts, let experts = try metadata.optionalInt(a + "expert_count"), experts > 0 {
            throw DroptraceError(
                "mixture-of-experts GGUF models (\(a)expert_count = \(experts), e.g. Mixtral) are not supported", path: path)
        }

        let hidden = try metadata.int(a + "embedding_length")
        let layers = try metadata.int(a + "block_count")
        let heads = try metadata.uniformInt(a + "attention.head_count") ?? 0
        let kvHeads = try metadata.uniformInt(a + "attention.head_count_kv") ?? heads
        let keyLength = try metadata.optionalInt(a + "attention.key_length")
        guard let feedForward = try metadata.uniformInt(a + "feed_forward_length") else {
            throw DroptraceError("missing GGUF metadata key '\(a)feed_forward_length'", path: path)
        }
        let context = try metadata.int(a + "context_length")
        guard let embedding = tensorDimensions["token_embd.weight"], embedding.count == 2 else {
            throw DroptraceError("missing tensor 'token_embd.weight' (the token embedding)", path: path)
        }
        let vocabulary = embedding[1]
        let tied = tensorDimensions["output.weight"] == nil
        let theta = try metadata.optionalPositiveDouble(a + "rope.freq_base") ?? 10_000
        var headDim = 0
        try ConfigRules.checks(path: path) {
            try ConfigRules.count(hidden, a + "embedding_length")
            try ConfigRules.count(layers, a + "block_count")
            try ConfigRules.count(heads, a + "attention.head_count")
            if family == .gptneox || family == .gpt2 {
                try ConfigRules.divides(heads, a + "attention.head_count", hidden, a + "embedding_length")
            }
            try ConfigRules.divides(kvHeads, a + "attention.head_count_kv", heads, a + "attention.head_count")
            headDim = try ConfigRules.count(keyLength ?? hidden / heads, keyLength == nil ? a + "attention.head_count" : a + "attention.key_length")
            try ConfigRules.count(feedForward, a + "feed_forward_length")
            try ConfigRules.count(context, a + "context_length")
            try ConfigRules.count(vocabulary, "token_embd.weight")
            for factor in ropeFactors ?? [] { try ConfigRules.positive(Double(factor), "rope_freqs.weight") }
            try Self.confirm(
                family: family, prefix: a, hidden: hidden, layers: layers, heads: heads, kvHeads: kvHeads, headDim: headDim, keyLength: keyLength,
                embedding: embedding, tensorDimensions: tensorDimensions)
        }
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim

        var config: [String: Any]
        switch family {
        case .llama, .qwen2, .qwen3, .qwen3moe, .olmoe:
            let slidingWindow = try metadata.optionalInt(a + "attention.sliding_window")
            try ConfigRules.checks(path: path) {
                try ConfigRules.countIfPresent(slidingWindow, a + "attention.sliding_window")
                // llama.cpp interleaves the two halves of each rotary head; an odd width has no halves.
                if family == .llama, headDim % 2 != 0 {
                    throw InvalidConfigValue(key: a + "attention.key_length", problem: "must be even for rotary heads, got \(headDim)")
                }
            }
            if let rotary = try metadata.optionalInt(a + "rope.dimension_count"), rotary != headDim {
                // The row permutation undone below assumes the whole head rotates.
                throw InvalidConfigValue(
                    key: a + "rope.dimension_count", problem: "must equal the head width \(headDim) (partial rotary is not supported here), got \(rotary)"
                ).error(path: path)
            }
            config = [
                // llama.cpp converts Mistral to `llama`; a window is what sets it apart.
                "model_type": family == .llama ? (slidingWindow == nil ? "llama" : "mistral") : family == .qwen3moe ? "qwen3_moe" : family.rawValue,
                "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
                "num_key_value_heads": kvHeads, "head_dim": headDim, "intermediate_size": feedForward,
                "rms_norm_eps": try metadata.positiveDouble(a + "attention.layer_norm_rms_epsilon"),
                "vocab_size": vocabulary, "max_position_embeddings": context, "hidden_act": "silu",
                "tie_word_embeddings": tied,
                "rope_parameters": try Self.rope(metadata, prefix: a, theta: theta, factors: ropeFactors),
            ]
            if family == .llama {
                config["attention_bias"] = tensorDimensions["blk.0.attn_q.bias"] != nil
                config["mlp_bias"] = tensorDimensions["blk.0.ffn_up.bias"] != nil
                if let slidingWindow { config["sliding_window"] = slidingWindow }
            } else {
                config["use_sliding_window"] = false
            }
            if family.hasExperts {
                try Self.addExperts(to: &config, metadata, prefix: a, family: family, layers: layers, tensorDimensions: tensorDimensions)
            }
        case .gptneox:
            let rotary = try metadata.optionalInt(a + "rope.dimension_count") ?? headDim
            // transformers rotates 2·ceil(rotary/2) dimensions, which must fit in the head.
            guard rotary >= 1, rotary + rotary % 2 <= headDim else {
                throw InvalidConfigValue(
                    key: a + "rope.dimension_count", problem: "must be between 1 and the head width \(headDim), got \(rotary)"
                ).error(path: path)
            }
            config = [
                "model_type": "gpt_neox",
                "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
                "intermediate_size": feedForward,
                "layer_norm_eps": try metadata.positiveDouble(a + "attention.layer_norm_epsilon"),
                "vocab_size": vocabulary, "max_position_embeddings": context, "hidden_act": "gelu",
                "use_parallel_residual": try metadata.optionalBool(a + "use_parallel_residual") ?? true,
                "attention_bias": tensorDimensions["blk.0.attn_qkv.bias"] != nil,
                "tie_word_embeddings": tied,
                "rope_parameters": [
                    "rope_type": "default", "rope_theta": theta,
                    "partial_rotary_factor": Self.fraction(rotary, of: headDim),
                ] as [String: Any],
            ]
        case .gpt2:
            config = [
                "model_type": "gpt2",
                "n_embd": hidden, "n_layer": layers, "n_head": heads, "n_inner": feedForward,
                "n_positions": context, "vocab_size": vocabulary,
                "layer_norm_epsilon": try metadata.positiveDouble(a + "attention.layer_norm_epsilon"),
                "activation_function": "gelu_new", "tie_word_embeddings": tied,
            ]
        }
        json = config
    }

    /// Confirms the sizes by the tensors' dimensions (ggml order: [in, out]),
    /// so that no row permutation is sized from metadata the weights
    /// contradict: the embedding's width, every attention projection's rows
    /// (all query projections before the key projections, so a wrong head
    /// width is blamed on the key that sets it).
    private static func confirm(
        family: GGUFFamily, prefix a: String, hidden: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int, keyLength: Int?,
        embedding: [Int], tensorDimensions: [String: [Int]]
    ) throws {
        guard embedding[0] == hidden else {
            throw InvalidConfigValue(
                key: a + "embedding_length", problem: "is \(hidden), but token_embd.weight has rows of \(embedding[0])")
        }
        let widthKey = keyLength == nil ? a + "embedding_length" : a + "attention.key_length"
        let rules: [(suffix: String, heads: Int, key: String)]
        switch family {
        case .llama, .qwen2, .qwen3, .qwen3moe, .olmoe:
            rules = [(".attn_q.weight", heads, a + "attention.head_count"), (".attn_k.weight", kvHeads, a + "attention.head_count_kv")]
        case .gptneox, .gpt2:
            // The fused q | k | v rows are regrouped per head of this width.
            guard heads.multipliedReportingOverflow(by: headDim) == (hidden, false) else {
                throw InvalidConfigValue(
                    key: widthKey, problem: "gives heads of \(headDim), but embedding_length \(hidden) / head_count \(heads) = \(hidden / heads)")
            }
            rules = [(".attn_qkv.weight", try ConfigRules.product([(heads, a + "attention.head_count"), (3, "q, k and v")]), a + "attention.head_count")]
        }
        let names = tensorDimensions.keys.filter { $0.hasPrefix("blk.") }.sorted()
        // Every block the count promises, and no other.
        let blocks = Set(names.compactMap { $0.split(separator: ".", maxSplits: 2).dropFirst().first.flatMap { Int($0) } })
        if let beyond = blocks.first(where: { $0 >= layers }) {
            throw InvalidConfigValue(key: a + "block_count", problem: "is \(layers), but the file has tensors of block \(beyond)")
        }
        if let missing = (0...blocks.count).first(where: { !blocks.contains($0) }), missing < layers {
            throw InvalidConfigValue(key: a + "block_count", problem: "is \(layers), but the file has no tensors of block \(missing)")
        }
        for rule in rules {
            let rows = try ConfigRules.product([(rule.heads, rule.key), (headDim, widthKey)])
            for name in names where name.hasSuffix(rule.suffix) {
                let dimensions = tensorDimensions[name]!
                guard dimensions.count == 2, dimensions[0] == hidden else {
                    throw InvalidConfigValue(
                        key: a + "embedding_length", problem: "is \(hidden), but \(name) has dimensions \(dimensions)")
                }
                guard dimensions[1] == rows else {
                    // Whole heads of another width: the width is wrong; otherwise the count.
                    let blamed = keyLength != nil && dimensions[1] % rule.heads == 0 ? widthKey : rule.key
                    throw InvalidConfigValue(
                        key: blamed,
                        problem: "does not fit \(name): \(rule.heads) heads of \(headDim) make \(rows) rows, but it has \(dimensions[1])")
                }
            }
        }
    }

    /// The mixture-of-experts keys of config.json from llama.cpp's
    /// (`expert_count`, `expert_used_count`, `expert_feed_forward_length`,
    /// `expert_weights_norm`, `attention.clamp_kqv`). llama.cpp renormalises
    /// the top-k weights of qwen3moe and not those of olmoe unless
    /// `expert_weights_norm` says otherwise; blocks without a router
    /// (`ffn_gate_inp`) keep a dense MLP (Qwen3-MoE's `mlp_only_layers`).
    private static func addExperts(
        to config: inout [String: Any], _ metadata: GGUFMetadata, prefix a: String, family: GGUFFamily, layers: Int,
        tensorDimensions: [String: [Int]]
    ) throws {
        config["num_experts"] = try metadata.int(a + "expert_count")
        config["num_experts_per_tok"] = try metadata.int(a + "expert_used_count")
        config["norm_topk_prob"] = try metadata.optionalBool(a + "expert_weights_norm") ?? (family == .qwen3moe)
        if family == .qwen3moe {
            config["moe_intermediate_size"] = try metadata.int(a + "expert_feed_forward_length")
            config["mlp_only_layers"] = (0..<layers).filter { tensorDimensions["blk.\($0).ffn_gate_inp.weight"] == nil }
        }
        if let clip = try metadata.optionalPositiveDouble(a + "attention.clamp_kqv") { config["clip_qkv"] = clip }
    }

    /// `rope_parameters` from llama.cpp's rope keys. Llama 3's frequency-dependent
    /// scaling is stored as the per-frequency divisors of `rope_freqs.weight`.
    private static func rope(_ metadata: GGUFMetadata, prefix a: String, theta: Double, factors: [Float]?) throws -> [String: Any] {
        var rope: [String: Any] = ["rope_type": "default", "rope_theta": theta]
        let type = try metadata.optionalString(a + "rope.scaling.type")
        let factor = try metadata.optionalPositiveDouble(a + "rope.scaling.factor")
            ?? metadata.optionalPositiveDouble(a + "rope.scale_linear")
        switch type {
        case nil where factor != nil && factor != 1, "linear":
            rope["rope_type"] = "linear"
            rope["factor"] = factor ?? 1
        case nil, "none":
            break
        case let other?:
            // Left to RopeSettings, which names the types it implements.
            rope["rope_type"] = other
            if let factor { rope["factor"] = factor }
        }
        if let factors { rope["frequency_factors"] = factors.map(Double.init) }
        return rope
    }

    /// `json` as config.json text with sorted keys and floats spelled as
    /// floats (`"rope_theta": 10000.0`), as transformers wants them in an export.
    var jsonData: Data { Data(Self.jsonText(json).utf8) }

    private static func jsonText(_ value: Any) -> String {
        switch value {
        case let flag as Bool: return flag ? "true" : "false"
        case let integer as Int: return String(integer)
        case let real as Double: return real.isFinite ? "\(real)" : "null"
        case let list as [Any]: return "[" + list.map(jsonText).joined(separator: ", ") + "]"
        case let object as [String: Any]:
            return "{" + object.keys.sorted().map { jsonText($0) + ": " + jsonText(object[$0]!) }.joined(separator: ", ") + "}"
        default:
            let data = (try? JSONSerialization.data(withJSONObject: "\(value)", options: .fragmentsAllowed)) ?? Data("null".utf8)
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// `part / whole` nudged so that transformers' `int(whole * factor)` gives `part` back.
    static func fraction(_ part: Int, of whole: Int) -> Double {
        var factor = Double(part) / Double(whole)
        while Int(Double(whole) * factor) < part { factor = factor.nextUp }
        return factor
    }
}

extension GGUFMetadata {
    /// A real parameter that is divided by or scales with (epsilons, rope
    /// base and factors): finite and above 0, else an error naming the key.
    func positiveDouble(_ key: String) throws -> Double {
        try ConfigRules.checks(path: path) { try ConfigRules.positive(try double(key), key) }
        return try double(key)
    }

    func optionalPositiveDouble(_ key: String) throws -> Double? {
        guard try optionalDouble(key) != nil else { return nil }
        return try positiveDouble(key)
    }
}
