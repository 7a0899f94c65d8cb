import DroptraceSupport
import Foundation

/// The GGUF architectures (`general.architecture`) droptrace reads.
enum GGUFFamily: String, CaseIterable {
    /// Llama, Mistral, TinyLlama, SmolLM and other Llama-shaped models.
    case llama
    case qwen2
    case gptneox
    case gpt2

    /// The Hugging Face name prefix of the base model and its layer list.
    var prefix: String {
        switch self {
        case .llama, .qwen2: "model."
        case .gptneox: "gpt_neox."
        case .gpt2: "transformer."
        }
    }

    var layers: String { self == .gpt2 ? "h" : "layers" }
}

/// A config.json equivalent built from a GGUF file's metadata: the keys
/// llama.cpp's converter writes (`<arch>.embedding_length`, ...) translated to
/// the ones droptrace's architectures decode, plus what only the tensors tell
/// (vocabulary size, tied embeddings, biases).
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
        if let experts = try metadata.optionalInt(a + "expert_count"), experts > 0 {
            throw DroptraceError(
                "mixture-of-experts GGUF models (\(a)expert_count = \(experts), e.g. Mixtral) are not supported", path: path)
        }

        let hidden = try metadata.int(a + "embedding_length")
        let layers = try metadata.int(a + "block_count")
        heads = try metadata.uniformInt(a + "attention.head_count") ?? 0
        guard heads > 0, hidden % heads == 0 || family == .llama || family == .qwen2 else {
            throw DroptraceError("\(a)attention.head_count must be positive and divide the embedding length", path: path)
        }
        kvHeads = try metadata.uniformInt(a + "attention.head_count_kv") ?? heads
        headDim = try metadata.optionalInt(a + "attention.key_length") ?? hidden / heads
        guard let feedForward = try metadata.uniformInt(a + "feed_forward_length") else {
            throw DroptraceError("missing GGUF metadata key '\(a)feed_forward_length'", path: path)
        }
        let context = try metadata.int(a + "context_length")
        guard let embedding = tensorDimensions["token_embd.weight"], embedding.count == 2 else {
            throw DroptraceError("missing tensor 'token_embd.weight' (the token embedding)", path: path)
        }
        let vocabulary = embedding[1]
        let tied = tensorDimensions["output.weight"] == nil
        let theta = try metadata.optionalDouble(a + "rope.freq_base") ?? 10_000

        var config: [String: Any]
        switch family {
        case .llama, .qwen2:
            let slidingWindow = try metadata.optionalInt(a + "attention.sliding_window")
            config = [
                // llama.cpp converts Mistral to `llama`; a window is what sets it apart.
                "model_type": family == .qwen2 ? "qwen2" : (slidingWindow == nil ? "llama" : "mistral"),
                "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
                "num_key_value_heads": kvHeads, "head_dim": headDim, "intermediate_size": feedForward,
                "rms_norm_eps": try metadata.double(a + "attention.layer_norm_rms_epsilon"),
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
        case .gptneox:
            let rotary = try metadata.optionalInt(a + "rope.dimension_count") ?? headDim
            config = [
                "model_type": "gpt_neox",
                "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
                "intermediate_size": feedForward,
                "layer_norm_eps": try metadata.double(a + "attention.layer_norm_epsilon"),
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
                "layer_norm_epsilon": try metadata.double(a + "attention.layer_norm_epsilon"),
                "activation_function": "gelu_new", "tie_word_embeddings": tied,
            ]
        }
        json = config
    }

    /// `rope_parameters` from llama.cpp's rope keys. Llama 3's frequency-dependent
    /// scaling is stored as the per-frequency divisors of `rope_freqs.weight`.
    private static func rope(_ metadata: GGUFMetadata, prefix a: String, theta: Double, factors: [Float]?) throws -> [String: Any] {
        var rope: [String: Any] = ["rope_type": "default", "rope_theta": theta]
        let type = try metadata.optionalString(a + "rope.scaling.type")
        let factor = try metadata.optionalDouble(a + "rope.scaling.factor") ?? metadata.optionalDouble(a + "rope.scale_linear")
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

    /// `part / whole` nudged so that transformers' `int(whole * factor)` gives `part` back.
    static func fraction(_ part: Int, of whole: Int) -> Double {
        var factor = Double(part) / Double(whole)
        while Int(Double(whole) * factor) < part { factor = factor.nextUp }
        return factor
    }
}
