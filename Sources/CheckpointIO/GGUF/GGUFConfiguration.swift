import DroptraceSupport
import Foundation

/// A config.json equivalent built from a GGUF file's metadata: the keys
/// llama.cpp's converter writes (`<arch>.embedding_length`, ...) translated to
/// the ones droptrace's architectures decode, plus what only the tensors tell
/// (vocabulary size, tied embeddings, biases, dense layers of MoE models).
/// What is read per architecture is its table (`GGUFArchitecture`).
///
/// Every size is checked (`ConfigRules`, errors naming the GGUF key) and
/// confirmed by the tensors' dimensions (the block count by the blocks
/// present, expert stacks by the expert count and width) before the tensor
/// names and row permutations are built from it.
struct GGUFConfiguration {
    let architecture: GGUFArchitecture
    /// The block count, heads, key/value heads and head width, as confirmed by the tensors.
    let layers: Int
    let heads: Int
    let kvHeads: Int
    let headDim: Int
    let json: [String: Any]
    /// The GGUF file, for errors.
    let path: String

    /// `tensorDimensions` are the GGUF tensors' dimensions by GGUF name;
    /// `ropeTensors` the contents of `rope_freqs.weight`, `rope_factors_long.weight`
    /// and `rope_factors_short.weight`, when present.
    init(metadata: GGUFMetadata, tensorDimensions: [String: [Int]], ropeTensors: [String: [Float]]) throws {
        let path = metadata.path
        self.path = path
        // llama.cpp's convert_lora_to_gguf.py marks its files general.type = "adapter": no model in them.
        if try metadata.optionalString("general.type") == "adapter" {
            let kind = try metadata.optionalString("adapter.type").map { " (\($0))" } ?? ""
            throw DroptraceError(
                "is an adapter\(kind), not a model (general.type \"adapter\"): merge it into its base model "
                    + "(llama.cpp's llama-export-lora) and score the merged file",
                path: path)
        }
        let name = try metadata.string("general.architecture")
        guard let named = GGUFArchitecture.named(name) else {
            throw DroptraceError(
                "GGUF architecture '\(name)' is not supported (supported: \(GGUFArchitecture.all.map(\.name).joined(separator: ", ")))",
                path: path)
        }
        let architecture = named.variant?(tensorDimensions) ?? named
        self.architecture = architecture
        let a = name + "."
        let experts = try metadata.optionalUInt32(a + "expert_count") ?? 0
        if experts > 0, architecture.experts == .none {
            throw DroptraceError(
                "\(a)expert_count is \(experts), but llama.cpp's \(name) models have no experts", path: path)
        }

        // llama.cpp reads `attention.causal` for every architecture: false attends both ways (embedding models).
        if try metadata.optionalBool(a + "attention.causal") == false {
            throw InvalidConfigValue(
                key: a + "attention.causal",
                problem: "is false: llama.cpp then attends both ways (an embedding model); droptrace scores causal language models only"
            ).error(path: path)
        }
        let hidden = try metadata.uint32(a + "embedding_length")
        let layers = try metadata.uint32(a + "block_count")
        let heads = try metadata.uniformInt(a + "attention.head_count", layers: layers) ?? 0
        let kvHeads = try metadata.uniformInt(a + "attention.head_count_kv", layers: layers) ?? heads
        // Older DeepSeek files have no `key_length_mla`; their `key_length` is the per-head width.
        let widthKey = try metadata.optionalUInt32(a + architecture.headWidthKey) == nil ? a + "attention.key_length" : a + architecture.headWidthKey
        let keyLength = try metadata.optionalUInt32(widthKey)
        guard let feedForward = try metadata.uniformInt(a + "feed_forward_length", layers: layers) else {
            throw DroptraceError("missing GGUF metadata key '\(a)feed_forward_length'", path: path)
        }
        let context = try metadata.uint32(a + "context_length")
        guard let embedding = tensorDimensions["token_embd.weight"].flatMap({ GGUFFile.dimensions($0, rank: 2) }) else {
            throw DroptraceError("missing tensor 'token_embd.weight' (the token embedding)", path: path)
        }
        let vocabulary = embedding[1]
        // llama.cpp sizes the embedding (and the output) by the vocabulary: rows for ids
        // the tokenizer never gives, or ids without a row, are a file it refuses.
        if case .array(let tokens, _)? = metadata.values["tokenizer.ggml.tokens"], tokens.count != vocabulary {
            throw DroptraceError(
                "token_embd.weight has \(vocabulary) rows, but the vocabulary (tokenizer.ggml.tokens) holds \(tokens.count) tokens; llama.cpp refuses a file whose embedding is not one row per token",
                path: path)
        }
        let tied = tensorDimensions["output.weight"] == nil
        let theta = try metadata.optionalPositiveFloat32(a + "rope.freq_base") ?? 10_000
        var headDim = 0
        try ConfigRules.checks(path: path) {
            try ConfigRules.count(hidden, a + "embedding_length")
            try ConfigRules.count(layers, a + "block_count")
            try ConfigRules.count(heads, a + "attention.head_count")
            if case .fusedPerHead = architecture.attentionRows {
                try ConfigRules.divides(heads, a + "attention.head_count", hidden, a + "embedding_length")
            }
            try ConfigRules.divides(kvHeads, a + "attention.head_count_kv", heads, a + "attention.head_count")
            headDim = try ConfigRules.count(keyLength ?? hidden / heads, keyLength == nil ? a + "attention.head_count" : widthKey)
            // llama.cpp sizes attn_v by the value width; these families' value heads are as wide as
            // their key heads (DeepSeek's latent attention, with its own widths, aside).
            if architecture.headWidthKey == "attention.key_length",
               let valueLength = try metadata.optionalUInt32(a + "attention.value_length"), valueLength != headDim {
                throw InvalidConfigValue(
                    key: a + "attention.value_length",
                    problem: "is \(valueLength), but the heads are \(headDim) wide (\(keyLength == nil ? "embedding_length / head_count" : widthKey)) and this architecture's value heads are as wide as its key heads")
            }
            try ConfigRules.count(feedForward, a + "feed_forward_length")
            try ConfigRules.count(context, a + "context_length")
            try ConfigRules.count(vocabulary, "token_embd.weight")
            if architecture.experts == .required { try ConfigRules.count(experts, a + "expert_count") }
            for (tensor, factors) in ropeTensors {
                for factor in factors { try ConfigRules.positive(Double(factor), tensor) }
            }
            try Self.confirm(
                architecture, hidden: hidden, layers: layers, heads: heads, kvHeads: kvHeads, headDim: headDim,
                keyLength: keyLength.map { ($0, widthKey) }, embedding: embedding, tensorDimensions: tensorDimensions,
                kvHeadsGiven: metadata.values[a + "attention.head_count_kv"] != nil)
            if experts > 0 {
                let width = try ConfigRules.count(
                    try metadata.optionalUInt32(a + "expert_feed_forward_length") ?? feedForward, a + "expert_feed_forward_length")
                try Self.confirmExperts(prefix: a, experts: experts, width: width, hidden: hidden, tensorDimensions: tensorDimensions)
            }
        }
        self.layers = layers
        self.heads = heads
        self.kvHeads = kvHeads
        self.headDim = headDim
        let sizes = GGUFArchitecture.Sizes(
            hidden: hidden, layers: layers, heads: heads, kvHeads: kvHeads, headDim: headDim, feedForward: feedForward,
            context: context, vocabulary: vocabulary, tied: tied, theta: theta, experts: experts)
        var json = try architecture.config(.init(
            metadata: metadata, sizes: sizes, tensorDimensions: tensorDimensions, ropeTensors: ropeTensors, architecture: architecture))
        // Some config classes default the padding id to a token (Phi-3 32000,
        // OLMo 2 / 3 / OLMoE 1, Gemma 3 0): outside a small vocabulary the
        // export does not load (the embedding's padding_idx), inside it names
        // a token the file does not. Every family gets the file's own padding
        // id when it is a row of the embedding, else null (none).
        // BOS and EOS likewise (StarCoder2's, Command-R's, OLMo's and SmolLM3's
        // config classes default them to ids of their full vocabularies).
        for (key, gguf) in [("pad_token_id", "padding"), ("bos_token_id", "bos"), ("eos_token_id", "eos")] {
            let id = try metadata.optionalUInt32("tokenizer.ggml.\(gguf)_token_id")
            json[key] = id.flatMap { $0 < vocabulary ? $0 : nil } ?? NSNull()
        }
        self.json = json
    }

    /// An integer of the synthesised config (for the tensors built from several GGUF tensors).
    func int(_ key: String) throws -> Int {
        guard let value = json[key] as? Int else {
            throw DroptraceError("the GGUF configuration has no integer '\(key)'", path: path)
        }
        return value
    }

    /// Confirms the sizes by the tensors' dimensions (ggml order: [in, out]),
    /// so that no row permutation is sized from metadata the weights
    /// contradict: the embedding's width, every attention projection's rows
    /// (all query projections before the key projections, so a wrong head
    /// width is blamed on the key that sets it).
    private static func confirm(
        _ architecture: GGUFArchitecture, hidden: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int,
        keyLength: (value: Int, key: String)?, embedding: [Int], tensorDimensions: [String: [Int]], kvHeadsGiven: Bool
    ) throws {
        let a = architecture.name + "."
        guard embedding[0] == hidden else {
            throw InvalidConfigValue(
                key: a + "embedding_length", problem: "is \(hidden), but token_embd.weight has rows of \(embedding[0])")
        }
        let widthKey = keyLength?.key ?? a + "embedding_length"
        let rules: [(suffix: String, heads: Int, key: String)]
        switch architecture.attentionRows {
        case .projections(let projections):
            rules = try projections.map { projection -> (suffix: String, heads: Int, key: String) in
                switch projection.heads {
                case .query: return ("." + projection.suffix, heads, a + "attention.head_count")
                case .keyValue: return ("." + projection.suffix, kvHeads, a + "attention.head_count_kv")
                case .queryKeyValue:
                    let keyValue = try ConfigRules.product([(kvHeads, a + "attention.head_count_kv"), (2, "k and v")])
                    let (total, overflow) = heads.addingReportingOverflow(keyValue)
                    guard !overflow else {
                        throw InvalidConfigValue(key: a + "attention.head_count", problem: "is too large, got \(heads)")
                    }
                    return ("." + projection.suffix, total, a + "attention.head_count_kv")
                }
            }
        case .fusedPerHead(let suffix):
            // The fused q | k | v rows are regrouped per head of this width.
            guard heads.multipliedReportingOverflow(by: headDim) == (hidden, false) else {
                throw InvalidConfigValue(
                    key: widthKey, problem: "gives heads of \(headDim), but embedding_length \(hidden) / head_count \(heads) = \(hidden / heads)")
            }
            rules = [("." + suffix, try ConfigRules.product([(heads, a + "attention.head_count"), (3, "q, k and v")]), a + "attention.head_count")]
        }
        let names = tensorDimensions.keys.filter { $0.hasPrefix("blk.") }.sorted()
        // Every block the count promises, and no other.
        let blocks = Set(names.compactMap(GGUFTensorNames.blockNumber))
        if let beyond = blocks.first(where: { $0 >= layers }) {
            throw InvalidConfigValue(key: a + "block_count", problem: "is \(layers), but the file has tensors of block \(beyond)")
        }
        if let missing = (0...blocks.count).first(where: { !blocks.contains($0) }), missing < layers {
            throw InvalidConfigValue(key: a + "block_count", problem: "is \(layers), but the file has no tensors of block \(missing)")
        }
        // Once the query projections fit, the head width is right: a key projection that does not fit blames its count.
        var widthConfirmed = false
        for rule in rules {
            let rows = try ConfigRules.product([(rule.heads, rule.key), (headDim, widthKey)])
            for name in names where name.hasSuffix(rule.suffix) {
                // Projections from a low-rank input (DeepSeek's q_b) take that rank, not the embedding.
                guard let dimensions = GGUFFile.dimensions(tensorDimensions[name]!, rank: 2),
                      dimensions[0] == hidden || rule.suffix == ".attn_q_b.weight" else {
                    throw InvalidConfigValue(
                        key: a + "embedding_length", problem: "is \(hidden), but \(name) has dimensions \(tensorDimensions[name]!)")
                }
                guard dimensions[1] == rows else {
                    // Whole heads of another width: the width is wrong; otherwise the count.
                    let blamed = keyLength != nil && !widthConfirmed && dimensions[1] % rule.heads == 0 ? widthKey : rule.key
                    let defaulted = blamed == a + "attention.head_count_kv" && !kvHeadsGiven
                        ? "is absent, so head_count as llama.cpp defaults it, which " : ""
                    throw InvalidConfigValue(
                        key: blamed,
                        problem: defaulted + "does not fit \(name): \(rule.heads) heads of \(headDim) make \(rows) rows, but it has \(dimensions[1])")
                }
            }
            if rule.key == a + "attention.head_count" { widthConfirmed = true }
        }
    }

    /// Confirms every stacked expert tensor (ggml order: [in, out, experts])
    /// by the expert count and width before it is cut into per-expert tensors.
    private static func confirmExperts(prefix a: String, experts: Int, width: Int, hidden: Int, tensorDimensions: [String: [Int]]) throws {
        for (name, compared) in tensorDimensions where name.hasPrefix("blk.") && name.contains("_exps.") {
            let down = name.contains(".ffn_down_exps.")
            let expected = name.hasSuffix(".bias") ? [down ? hidden : width, experts] : (down ? [width, hidden, experts] : [hidden, width, experts])
            // Compared as llama.cpp compares them (a dimension not written is 1).
            guard let dimensions = GGUFFile.dimensions(compared, rank: expected.count), dimensions.last == experts else {
                throw InvalidConfigValue(key: a + "expert_count", problem: "is \(experts), but \(name) has dimensions \(compared)")
            }
            guard dimensions == expected else {
                throw InvalidConfigValue(
                    key: a + "expert_feed_forward_length", problem: "is \(width), but \(name) has dimensions \(dimensions) (expected \(expected))")
            }
        }
    }

    /// `rope_parameters` from llama.cpp's rope keys. Llama 3's frequency-dependent
    /// scaling is stored as the per-frequency divisors of `rope_freqs.weight`;
    /// YaRN's attention scaling as `yarn_log_multiplier` = 0.1 · mscale_all_dim.
    static func rope(_ input: GGUFArchitecture.Input) throws -> [String: Any] {
        let m = input.metadata
        var rope: [String: Any] = ["rope_type": "default", "rope_theta": input.sizes.theta]
        let type = try m.optionalString(input.key("rope.scaling.type"))
        let factor = try m.optionalPositiveFloat32(input.key("rope.scaling.factor"))
            ?? m.optionalPositiveFloat32(input.key("rope.scale_linear"))
        switch type {
        case nil where factor != nil && factor != 1, "linear":
            rope["rope_type"] = "linear"
            rope["factor"] = factor ?? 1
        case nil, "none":
            break
        case "yarn":
            rope["rope_type"] = "yarn"
            rope["factor"] = factor ?? 1
            let original = try m.optionalUInt32(input.key("rope.scaling.original_context_length"))
            try ConfigRules.checks(path: input.path) {
                try ConfigRules.countIfPresent(original, input.key("rope.scaling.original_context_length"))
            }
            if let original { rope["original_max_position_embeddings"] = original }
            rope["beta_fast"] = try m.optionalPositiveFloat32(input.key("rope.scaling.yarn_beta_fast")) ?? 32
            rope["beta_slow"] = try m.optionalPositiveFloat32(input.key("rope.scaling.yarn_beta_slow")) ?? 1
            if let multiplier = try m.optionalPositiveFloat32(input.key("rope.scaling.yarn_log_multiplier")) {
                // The file holds 0.1 · mscale_all_dim as a float32; divide in float32 to get it back.
                let scale = Double(Float(multiplier) / Float(0.1))
                rope["mscale_all_dim"] = scale
                rope["mscale"] = scale
            }
            if let factor = try yarnAttentionFactor(input) { rope["attention_factor"] = factor }
        case "longrope":
            // Its factors are tensors (Phi-3's table reads them); without them RopeSettings refuses it.
            rope["rope_type"] = "longrope"
            if let factor { rope["factor"] = factor }
        case let other?:
            // llama.cpp knows no other name (llama_rope_scaling_type_from_string) and refuses the file.
            throw InvalidConfigValue(
                key: input.key("rope.scaling.type"), problem: "must be none, linear, yarn or longrope (the types llama.cpp reads), got \"\(other.forErrorMessage)\""
            ).error(path: input.path)
        }
        if let factors = input.ropeTensors["rope_freqs.weight"] { rope["frequency_factors"] = factors.map(Double.init) }
        let rotary = try m.optionalUInt32(input.key("rope.dimension_count")) ?? input.sizes.headDim
        try input.refuseUnmodelled(
            "rope.dimension_count_swa", inertCount: rotary, effect: "give the sliding layers a rotary width of their own")
        // LongRoPE (Phi-3's factor tensors) and YaRN take it as their attention factor; elsewhere it is llama.cpp's alone.
        if input.ropeTensors["rope_factors_long.weight"] == nil && type != "yarn" {
            try input.refuseUnmodelled(
                "rope.scaling.attn_factor", inert: 1, effect: "multiply the rotary embedding's cos and sin by it")
        }
        return rope
    }

    /// transformers' YaRN `attention_factor` (the scale of cos and sin, in
    /// place of the one derived from the factor and mscales), which
    /// llama.cpp's converter writes as `rope.scaling.yarn_attn_factor` for
    /// every YaRN model that sets it, and for OLMo 3 (`olmo2`) also as
    /// `rope.scaling.attn_factor`. llama.cpp reads the first for a few
    /// architectures only and multiplies its own YaRN scale by the second:
    /// droptrace keeps the Hugging Face meaning of both, as for the other
    /// YaRN keys. nil when the file has neither.
    /// - Throws: when the two are given and differ.
    static func yarnAttentionFactor(_ input: GGUFArchitecture.Input) throws -> Double? {
        let keys = ["rope.scaling.yarn_attn_factor", "rope.scaling.attn_factor"].map(input.key)
        let given = try keys.compactMap { key in try input.metadata.optionalPositiveFloat32(key).map { (key, $0) } }
        guard let (firstKey, first) = given.first else { return nil }
        if let (otherKey, other) = given.dropFirst().first, Float(other) != Float(first) {
            throw InvalidConfigValue(
                key: otherKey, problem: "is \(Float(other)), but \"\(firstKey)\" is \(Float(first)): both are YaRN's attention factor"
            ).error(path: input.path)
        }
        return first
    }

    /// The row permutations and q/k norms assume the whole head rotates.
    static func requireWholeHeadRotary(_ input: GGUFArchitecture.Input) throws {
        if let rotary = try input.metadata.optionalUInt32(input.key("rope.dimension_count")), rotary != input.sizes.headDim {
            throw InvalidConfigValue(
                key: input.key("rope.dimension_count"),
                problem: "must equal the head width \(input.sizes.headDim) (partial rotary is not supported here), got \(rotary)"
            ).error(path: input.path)
        }
    }

    /// `rope.dimension_count` of a partially rotary family (the head width
    /// when absent): even and between 2 and the head width, as ggml's rope asserts.
    static func partialRotary(_ input: GGUFArchitecture.Input) throws -> Int {
        let headDim = input.sizes.headDim
        let rotary = try input.metadata.optionalUInt32(input.key("rope.dimension_count")) ?? headDim
        guard rotary >= 2, rotary % 2 == 0, rotary <= headDim else {
            throw InvalidConfigValue(
                key: input.key("rope.dimension_count"), problem: "must be even and between 2 and the head width \(headDim), got \(rotary)"
            ).error(path: input.path)
        }
        return rotary
    }

    /// `rope_parameters` with `partial_rotary_factor` for `partialRotary`'s width.
    static func partialRope(_ input: GGUFArchitecture.Input) throws -> [String: Any] {
        var rope = try rope(input)
        rope["partial_rotary_factor"] = fraction(try partialRotary(input), of: input.sizes.headDim)
        return rope
    }

    /// llama.cpp's interleaved rotary (rows permuted by the converter) pairs
    /// the rows of each whole head: the width must be even and all of it rotate.
    static func requireInterleavedRotary(_ input: GGUFArchitecture.Input) throws {
        if input.sizes.headDim % 2 != 0 {
            throw InvalidConfigValue(
                key: input.key("attention.key_length"), problem: "must be even for rotary heads, got \(input.sizes.headDim)"
            ).error(path: input.path)
        }
        try requireWholeHeadRotary(input)
    }

    /// `expert_used_count`: between 1 and the expert count.
    static func expertsUsed(_ input: GGUFArchitecture.Input) throws -> Int {
        let used = try input.metadata.uint32(input.key("expert_used_count"))
        guard (1...input.sizes.experts).contains(used) else {
            throw InvalidConfigValue(
                key: input.key("expert_used_count"), problem: "must be between 1 and the expert count \(input.sizes.experts), got \(used)"
            ).error(path: input.path)
        }
        return used
    }

    /// An expert's inner width (confirmed by the expert stacks).
    static func expertWidth(_ input: GGUFArchitecture.Input) throws -> Int {
        try input.metadata.optionalUInt32(input.key("expert_feed_forward_length")) ?? input.sizes.feedForward
    }

    /// `layer_types` from `attention.sliding_window_pattern`: one flag per layer
    /// (sliding when true), or n (every n-th layer global, as llama.cpp's
    /// `set_swa_pattern`); `default` when the file has none.
    static func slidingPattern(_ input: GGUFArchitecture.Input, default fallback: Int) throws -> [String] {
        let key = input.key("attention.sliding_window_pattern")
        guard let value = input.metadata.values[key] else { return input.layerTypes { ($0 + 1) % fallback != 0 } }
        // As gguf-py writes it and llama.cpp reads it: a UINT32 period or one BOOL per layer.
        let period: UInt64
        switch value {
        case .array(let items, .bool) where items.count == input.sizes.layers:
            return input.layerTypes { items[$0].bool! }
        case .unsigned(let number, .uint32) where number >= 1:
            period = number
        case .unsigned(_, .uint32), .array(_, .bool):
            throw InvalidConfigValue(
                key: key, problem: "must be a period of at least 1 or one bool per layer (\(input.sizes.layers))"
            ).error(path: input.path)
        default:
            throw GGUFMetadata.wrongType(key, value, expected: "UINT32, or an ARRAY of BOOL with one value per block", path: input.path)
        }
        return input.layerTypes { UInt64($0 + 1) % period != 0 }
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
        case is NSNull: return "null"
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
    func positiveFloat32(_ key: String) throws -> Double {
        try ConfigRules.checks(path: path) { try ConfigRules.positive(try float32(key), key) }
        return try float32(key)
    }

    func optionalPositiveFloat32(_ key: String) throws -> Double? {
        guard try optionalFloat32(key) != nil else { return nil }
        return try positiveFloat32(key)
    }
}
