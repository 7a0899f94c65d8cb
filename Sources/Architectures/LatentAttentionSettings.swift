import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The config.json keys of multi-head latent attention (`LatentQKVProjection`)
/// as DeepSeek-V2/V3, Mistral 4 (`mistral4`), GLM-4.7-Flash
/// (`glm4_moe_lite`), DeepSeek-V3.2 (`deepseek_v32`) and MiniCPM3 read them, with the refusals, shape confirmations
/// and attention each of them builds alike. Each family decodes the keys
/// with its own config class's defaults.
struct LatentAttentionSettings {
    /// nil: the direct q_proj (config.json writes null).
    var qLoraRank: Int?
    var kvLoraRank: Int
    var qkNopeHeadDim: Int
    var qkRopeHeadDim: Int
    var vHeadDim: Int
    /// Whether the rope parts' pairs are interleaved (x0, x1), (x2, x3), …
    var ropeInterleave: Bool
    /// Biases on q_a_proj (or none on q_proj), kv_a_proj_with_mqa and o_proj.
    var attentionBias: Bool
    /// A.X K2's `q_gate_proj` [heads · (nope + rope + v), 2 · q_lora_rank] in
    /// place of q_b_proj: it reads the query latent beside q_a_proj's raw
    /// output (`LatentQKVProjection.QueryPath.lowRankBesideRaw`) and gives
    /// each head's query rows, then v_head_dim rows of the gate whose
    /// sigmoid multiplies the head's attention output before o_proj. Set by
    /// the config class (AXK2Config), not read from config.json.
    var fusedQueryGate = false

    enum CodingKeys: String, CodingKey {
        case qLoraRank = "q_lora_rank"
        case kvLoraRank = "kv_lora_rank"
        case qkNopeHeadDim = "qk_nope_head_dim"
        case qkRopeHeadDim = "qk_rope_head_dim"
        case vHeadDim = "v_head_dim"
        case ropeInterleave = "rope_interleave"
        case attentionBias = "attention_bias"
    }

    init(
        qLoraRank: Int?, kvLoraRank: Int, qkNopeHeadDim: Int, qkRopeHeadDim: Int, vHeadDim: Int, ropeInterleave: Bool,
        attentionBias: Bool
    ) {
        self.qLoraRank = qLoraRank
        self.kvLoraRank = kvLoraRank
        self.qkNopeHeadDim = qkNopeHeadDim
        self.qkRopeHeadDim = qkRopeHeadDim
        self.vHeadDim = vHeadDim
        self.ropeInterleave = ropeInterleave
        self.attentionBias = attentionBias
    }

    /// The keys of `decoder`'s config.json, absent ones taking `defaults`:
    /// a null q_lora_rank is the direct q_proj, a null rope_interleave
    /// false (transformers' `if` reads None so); a null width is refused
    /// (transformers cannot size a projection by it), except a null
    /// v_head_dim when `nullValueWidthIsDefault` (MiniCPM3Config fills it in).
    init(from decoder: Decoder, defaults: LatentAttentionSettings, nullValueWidthIsDefault: Bool = false) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func width(_ key: CodingKeys, _ fallback: Int) throws -> Int {
            guard c.contains(key) else { return fallback }
            if key == .vHeadDim, nullValueWidthIsDefault, try c.decodeNil(forKey: key) { return fallback }
            guard let value = try c.decodeIfPresent(Int.self, forKey: key) else {
                throw InvalidConfigValue(key: key.rawValue, problem: "is null; transformers sizes the latent attention's projections by it")
            }
            return value
        }
        qLoraRank = c.contains(.qLoraRank) ? try c.decodeIfPresent(Int.self, forKey: .qLoraRank) : defaults.qLoraRank
        var widths: [Int] = []
        try ConfigRules.decodingChecks {
            widths = [
                try width(.kvLoraRank, defaults.kvLoraRank), try width(.qkNopeHeadDim, defaults.qkNopeHeadDim),
                try width(.qkRopeHeadDim, defaults.qkRopeHeadDim), try width(.vHeadDim, defaults.vHeadDim),
            ]
        }
        (kvLoraRank, qkNopeHeadDim, qkRopeHeadDim, vHeadDim) = (widths[0], widths[1], widths[2], widths[3])
        ropeInterleave = c.contains(.ropeInterleave) ? try c.decodeIfPresent(Bool.self, forKey: .ropeInterleave) ?? false : defaults.ropeInterleave
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? defaults.attentionBias
    }

    /// Query/key width qk_nope_head_dim + qk_rope_head_dim (checked to fit).
    var queryKeyDim: Int { qkNopeHeadDim + qkRopeHeadDim }

    /// Refuses widths transformers could not run, or whose tensors would not
    /// fit in 64 bits, before anything is sized from them.
    func check(_ d: DecoderDimensions, ropeRequired: Bool = true) throws {
        try ConfigRules.countIfPresent(qLoraRank, "q_lora_rank")
        try ConfigRules.count(kvLoraRank, "kv_lora_rank")
        if ropeRequired { try ConfigRules.count(qkRopeHeadDim, "qk_rope_head_dim") } else { try ConfigRules.nonNegative(qkRopeHeadDim, "qk_rope_head_dim") }
        guard qkRopeHeadDim % 2 == 0 else {
            throw InvalidConfigValue(key: "qk_rope_head_dim", problem: "must be even (rotated in pairs), got \(qkRopeHeadDim)")
        }
        try ConfigRules.nonNegative(qkNopeHeadDim, "qk_nope_head_dim")
        try ConfigRules.count(vHeadDim, "v_head_dim")
        // Latent attention expands keys and values for every query head.
        if let kv = d.numKeyValueHeads, kv != d.numAttentionHeads {
            throw InvalidConfigValue(
                key: "num_key_value_heads",
                problem: "must equal num_attention_heads \(d.numAttentionHeads) (latent attention gives every head its own keys and values), got \(kv)")
        }
        // Head widths are sums of sizes: each is refused when it does not fit in 64 bits.
        func sum(_ a: (Int, String), _ b: (Int, String)) throws -> (Int, String) {
            let (total, overflow) = a.0.addingReportingOverflow(b.0)
            guard !overflow else { throw InvalidConfigValue(key: a.1, problem: "is too large: \(a.1) \(a.0) + \(b.1) \(b.0) does not fit in 64 bits") }
            return (total, "\(a.1) + \(b.1)")
        }
        let nope = (qkNopeHeadDim, "qk_nope_head_dim"), rope = (qkRopeHeadDim, "qk_rope_head_dim")
        let queryKey = try sum(nope, rope), keyValue = try sum(nope, (vHeadDim, "v_head_dim"))
        let latent = try sum((kvLoraRank, "kv_lora_rank"), rope)
        let heads = (d.numAttentionHeads, "num_attention_heads"), hidden = (d.hiddenSize, "hidden_size")
        try ConfigRules.product([queryKey, heads, (qLoraRank ?? d.hiddenSize, qLoraRank == nil ? "hidden_size" : "q_lora_rank")])
        try ConfigRules.product([keyValue, heads, (kvLoraRank, "kv_lora_rank")])
        try ConfigRules.product([(max(queryKey.0, vHeadDim), "v_head_dim"), heads, (3, "q, k and v"), hidden])
        try ConfigRules.product([latent, hidden])
        try ConfigRules.product([(qLoraRank ?? 1, "q_lora_rank"), hidden])
        if fusedQueryGate {
            let rows = try sum(queryKey, (vHeadDim, "v_head_dim"))
            try ConfigRules.product([rows, heads, (qLoraRank ?? 1, "q_lora_rank"), (2, "the latent and q_a_proj's output")])
        }
    }

    /// The first kept attention's projections (or layer `layer`'s, a hybrid
    /// family's first kept latent attention, under `module`) against the
    /// config, before anything is sized from them.
    func confirmShapes(_ parts: DecoderParts, layer: Int? = nil, module: String = "self_attn.", heads: Int? = nil) throws {
        guard let layer = layer ?? parts.firstKeptAttention else { return }
        let d = parts.dimensions, weights = parts.weights, configPath = parts.configPath
        let numHeads = heads ?? d.numAttentionHeads
        let p = "layers.\(layer).\(module)"
        let queryRows = numHeads * queryKeyDim
        // Which query path the weights have must be the one the config names.
        let lowRank = weights.has(p + "q_a_proj.weight")
        if lowRank != (qLoraRank != nil) {
            throw DroptraceError(
                "\"q_lora_rank\" is \(qLoraRank.map(String.init) ?? "null"), but layer \(layer) has \(lowRank ? "q_a_proj" : "no q_a_proj")",
                path: configPath)
        }
        if let rank = qLoraRank {
            try weights.confirmShape(p + "q_a_proj.weight", [rank, d.hiddenSize], keys: "q_lora_rank, hidden_size", configPath: configPath)
            if fusedQueryGate {
                try weights.confirmShape(
                    p + "q_gate_proj.weight", [numHeads * (queryKeyDim + vHeadDim), 2 * rank],
                    keys: "num_attention_heads × (qk_nope_head_dim + qk_rope_head_dim + v_head_dim), 2 × q_lora_rank", configPath: configPath)
            } else {
                try weights.confirmShape(
                    p + "q_b_proj.weight", [queryRows, rank],
                    keys: "num_attention_heads × (qk_nope_head_dim + qk_rope_head_dim), q_lora_rank", configPath: configPath)
            }
        } else {
            try weights.confirmShape(
                p + "q_proj.weight", [queryRows, d.hiddenSize],
                keys: "num_attention_heads × (qk_nope_head_dim + qk_rope_head_dim), hidden_size", configPath: configPath)
        }
        try weights.confirmShape(
            p + "kv_a_proj_with_mqa.weight", [kvLoraRank + qkRopeHeadDim, d.hiddenSize],
            keys: "kv_lora_rank + qk_rope_head_dim, hidden_size", configPath: configPath)
        try weights.confirmShape(
            p + "kv_b_proj.weight", [numHeads * (qkNopeHeadDim + vHeadDim), kvLoraRank],
            keys: "num_attention_heads × (qk_nope_head_dim + v_head_dim), kv_lora_rank", configPath: configPath)
    }

    /// The softmax scale (qk_nope_head_dim + qk_rope_head_dim)^-1/2, grown
    /// by YaRN's mscale of `mscale_all_dim` squared (`yarn_apply_mscale`).
    func scale(_ rope: RopeSettings, configPath: String) throws -> Float {
        let magnitude = try rope.softmaxScaleMagnitude(configPath: configPath)
        return Float(pow(Double(queryKeyDim), -0.5) * magnitude * magnitude)
    }

    /// Layer `index`'s latent attention (under "layers.<index>.self_attn.",
    /// or the family's saved `module`, o_proj under `outputName`):
    /// the rope parts rotated by `rotary` (nil: not rotated), the queries then multiplied by
    /// `queryTemperature` when given (Mistral 4), each query attending only
    /// to the keys `indexer` chooses when given (DeepSeek-V3.2), each head's
    /// output times the sigmoid of its row of `perHeadGate` [heads, hidden]
    /// when named (Ling's hybrid `g_proj`), or each output column times the
    /// sigmoid of its row of `channelGate` [heads · v_head_dim, hidden] when
    /// named (Hunyuan V4's `gate_proj`); `sinks` names a learned logit per
    /// head joining each softmax (Hunyuan V4's `sinks`, [heads]).
    /// `latentScales` multiply the queries and the normalised key/value
    /// latent (LongCat-Flash's `mla_scale_q_lora`, `mla_scale_kv_lora`),
    /// folded into the weights of the latent norms q_b_proj and kv_b_proj read.
    func attention(
        _ parts: DecoderParts, layer index: Int, rotary: RotaryEmbedding?, scale: Float, queryTemperature: QueryTemperature? = nil,
        indexer: SparseAttentionIndexer? = nil, perHeadGate: String? = nil, channelGate: String? = nil, sinks: String? = nil,
        module: String = "self_attn.", outputName: String = "o_proj", latentScales: (query: Float, keyValue: Float)? = nil,
        heads numHeads: Int? = nil, latentNormEps: Double = 1e-6, keyRopeNorm: String? = nil, slidingWindow: Int? = nil
    ) throws -> SelfAttention {
        func scaled(_ norm: Normalization, _ factor: Float?) -> Normalization {
            guard let factor, case .rms(let weight, let eps) = norm else { return norm }
            return .rms(weight: weight.map { $0 * factor }, eps: eps)
        }
        let weights = parts.weights, d = parts.dimensions.hiddenSize, heads = numHeads ?? parts.dimensions.numAttentionHeads
        let p = "layers.\(index).\(module)"
        let qk = queryKeyDim, rope = qkRopeHeadDim
        // Interleaved rope pairs are de-interleaved in the weights (see LatentQKVProjection).
        func deinterleaved(_ linear: Linear, ropeStarts: [Int]) -> Linear {
            guard ropeInterleave, rotary != nil else { return linear }
            return linear.rearrangingRows {
                LatentQKVProjection.deinterleavingRope($0, rowWidth: $1, ropeStarts: ropeStarts, ropeDim: rope)
            }
        }
        let queryRopeStarts = (0..<heads).map { $0 * qk + qkNopeHeadDim }
        let query: LatentQKVProjection.QueryPath
        var fusedGate: Linear?
        if let rank = qLoraRank, fusedQueryGate {
            // Each head's nope + rope query rows, then its v_head_dim gate rows.
            let fused = try weights.linear(p + "q_gate_proj", in: 2 * rank, out: heads * (qk + vHeadDim), bias: false)
            let weight = fused.weight, width = 2 * rank
            func rows(_ h: Int, _ offset: Int, _ count: Int) -> ArraySlice<Float> {
                let start = (h * (qk + vHeadDim) + offset) * width
                return weight[start..<(start + count * width)]
            }
            let queryUp = Linear(weight: Array((0..<heads).map { rows($0, 0, qk) }.joined()), bias: nil, inFeatures: width, outFeatures: heads * qk)
            fusedGate = LatentQKVProjection.paddedRows(
                Linear(weight: Array((0..<heads).map { rows($0, qk, vHeadDim) }.joined()), bias: nil, inFeatures: width, outFeatures: heads * vHeadDim),
                numHeads: heads, valueDim: vHeadDim, headDim: max(qk, vHeadDim))
            query = .lowRankBesideRaw(
                down: try weights.linear(p + "q_a_proj", in: d, out: rank, bias: attentionBias),
                norm: try weights.rmsNorm(p + "q_a_layernorm", size: rank, eps: latentNormEps),
                up: deinterleaved(queryUp, ropeStarts: queryRopeStarts))
        } else if let rank = qLoraRank {
            query = .lowRank(
                down: try weights.linear(p + "q_a_proj", in: d, out: rank, bias: attentionBias),
                norm: scaled(try weights.rmsNorm(p + "q_a_layernorm", size: rank, eps: latentNormEps), latentScales?.query),
                up: deinterleaved(try weights.linear(p + "q_b_proj", in: rank, out: heads * qk, bias: false), ropeStarts: queryRopeStarts))
        } else {
            query = .direct(deinterleaved(try weights.linear(p + "q_proj", in: d, out: heads * qk, bias: false), ropeStarts: queryRopeStarts))
        }
        // transformers builds both latent norms with its default eps, not rms_norm_eps (dots.note's and
        // GLM-5-Next's with `latentNormEps`); a key rope norm's weights follow the de-interleaved rope columns.
        let ropeNorm = try keyRopeNorm.map { name -> Normalization in
            let norm = try weights.rmsNorm(p + name, size: rope, eps: latentNormEps)
            guard ropeInterleave, rotary != nil, case .rms(let weight, let eps) = norm else { return norm }
            return .rms(weight: LatentQKVProjection.deinterleavingRope(weight, rowWidth: 1, ropeStarts: [0], ropeDim: rope), eps: eps)
        }
        let latent = LatentQKVProjection(
            query: query,
            keyValueDown: deinterleaved(
                try weights.linear(p + "kv_a_proj_with_mqa", in: d, out: kvLoraRank + rope, bias: attentionBias),
                ropeStarts: [kvLoraRank]),
            keyValueNorm: scaled(try weights.rmsNorm(p + "kv_a_layernorm", size: kvLoraRank, eps: latentNormEps), latentScales?.keyValue),
            keyValueUp: try weights.linear(p + "kv_b_proj", in: kvLoraRank, out: heads * (qkNopeHeadDim + vHeadDim), bias: false),
            numHeads: heads, nopeDim: qkNopeHeadDim, ropeDim: rope, valueDim: vHeadDim, rotary: rotary, keyRopeNorm: ropeNorm)
        let layout = latent.layout
        var attention = SelfAttention(
            projection: .latent(latent), layout: layout, rotary: nil,
            output: LatentQKVProjection.paddedOutput(
                try weights.linear(p + outputName, in: heads * vHeadDim, out: d, bias: attentionBias),
                numHeads: heads, valueDim: vHeadDim, headDim: layout.headDim),
            scale: scale, slidingWindow: slidingWindow, sinkLogits: try sinks.map { try weights.floats(p + $0, [heads]) }, queryTemperature: queryTemperature,
            outputGate: try fusedGate ?? perHeadGate.map { try weights.perHeadGate(p + $0, layout: layout, hidden: d) }
                ?? channelGate.map { try weights.channelGate(p + $0, layout: layout, valueDim: vHeadDim, hidden: d) },
            indexer: indexer)
        attention.outputGateReadsQueryUpInput = fusedGate != nil
        return attention
    }
}
