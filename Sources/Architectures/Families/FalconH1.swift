import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `falcon_h1` beside the Mamba-2 keys (`Mamba2Configuration`),
/// with FalconH1Config's defaults: every µP multiplier 1 unless given.
struct FalconH1Configuration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v_proj and o_proj alike.
    var attentionBias: Bool
    var mlpBias: Bool
    /// The Mamba-2 mixer's `out_proj` bias (its `in_proj` has `mamba_proj_bias`).
    var projectorsBias: Bool
    /// `mamba_d_ssm`: the mixer's inner width; nil (null) for mamba_expand × hidden_size.
    var mambaInnerWidth: Int?
    /// `mamba_rms_norm`: the mixer's gated RMSNorm, else y · silu(z) alone.
    var mambaNorm: Bool
    /// `mamba_norm_before_gate`: norm(y) · silu(z) rather than norm(y · silu(z)).
    var mambaNormBeforeGate: Bool
    var embeddingMultiplier: Float
    var lmHeadMultiplier: Float
    var keyMultiplier: Float
    var attentionInMultiplier: Float
    var attentionOutMultiplier: Float
    var ssmInMultiplier: Float
    var ssmOutMultiplier: Float
    /// The gate's input and the MLP's output (`mlp_multipliers`).
    var mlpMultipliers: [Float]
    /// The in_proj's z, x, B, C and dt columns (`ssm_multipliers`).
    var ssmMultipliers: [Float]

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case mlpBias = "mlp_bias"
        case projectorsBias = "projectors_bias"
        case mambaInnerWidth = "mamba_d_ssm"
        case mambaNorm = "mamba_rms_norm"
        case mambaNormBeforeGate = "mamba_norm_before_gate"
        case mambaUseMLP = "mamba_use_mlp"
        case embeddingMultiplier = "embedding_multiplier"
        case lmHeadMultiplier = "lm_head_multiplier"
        case keyMultiplier = "key_multiplier"
        case attentionInMultiplier = "attention_in_multiplier"
        case attentionOutMultiplier = "attention_out_multiplier"
        case ssmInMultiplier = "ssm_in_multiplier"
        case ssmOutMultiplier = "ssm_out_multiplier"
        case mlpMultipliers = "mlp_multipliers"
        case ssmMultipliers = "ssm_multipliers"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func isNull(_ key: CodingKeys) throws -> Bool { try c.contains(key) && c.decodeNil(forKey: key) }
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
        // The config class takes null for these flags; its model reads null as false.
        func flag(_ key: CodingKeys, _ fallback: Bool) throws -> Bool {
            try isNull(key) ? false : try c.decodeIfPresent(Bool.self, forKey: key) ?? fallback
        }
        projectorsBias = try flag(.projectorsBias, false)
        mambaNorm = try flag(.mambaNorm, false)
        mambaNormBeforeGate = try flag(.mambaNormBeforeGate, true)
        // FalconH1Config's default is 1024; null means mamba_expand × hidden_size.
        mambaInnerWidth = try isNull(.mambaInnerWidth) ? nil : try c.decodeIfPresent(Int.self, forKey: .mambaInnerWidth) ?? 1024
        // Falcon-H1's original configs say whether the layers have an MLP;
        // transformers builds one in every layer whatever it says.
        let usesMLP = try c.decodeIfPresent(Bool.self, forKey: .mambaUseMLP)
        // transformers multiplies float32 activations by these Python floats.
        func multiplier(_ key: CodingKeys) throws -> Float {
            let null = try isNull(key)
            let value = try c.decodeIfPresent(Double.self, forKey: key) ?? 1
            try ConfigRules.decodingChecks {
                guard !null else { throw InvalidConfigValue(key: key.rawValue, problem: "must be a number, got null") }
                guard value.isFinite, Float(value).isFinite else {
                    throw InvalidConfigValue(key: key.rawValue, problem: "must be a finite number that float32 holds, got \(value)")
                }
            }
            return Float(value)
        }
        /// A list of `count` multipliers, all 1 when absent or null (as FalconH1Config fills it).
        func multipliers(_ key: CodingKeys, count: Int, meaning: String) throws -> [Float] {
            let values = try isNull(key) ? nil : try c.decodeIfPresent([Double].self, forKey: key)
            try ConfigRules.decodingChecks {
                guard let values else { return }
                guard values.count == count else {
                    throw InvalidConfigValue(key: key.rawValue, problem: "must hold \(count) numbers (\(meaning)), got \(values.count)")
                }
                if let bad = values.first(where: { !$0.isFinite || !Float($0).isFinite }) {
                    throw InvalidConfigValue(key: key.rawValue, problem: "must hold finite numbers that float32 holds, got \(bad)")
                }
            }
            return values?.map { Float($0) } ?? Array(repeating: 1, count: count)
        }
        embeddingMultiplier = try multiplier(.embeddingMultiplier)
        lmHeadMultiplier = try multiplier(.lmHeadMultiplier)
        keyMultiplier = try multiplier(.keyMultiplier)
        attentionInMultiplier = try multiplier(.attentionInMultiplier)
        attentionOutMultiplier = try multiplier(.attentionOutMultiplier)
        ssmInMultiplier = try multiplier(.ssmInMultiplier)
        ssmOutMultiplier = try multiplier(.ssmOutMultiplier)
        mlpMultipliers = try multipliers(.mlpMultipliers, count: 2, meaning: "the gate's and down_proj's")
        ssmMultipliers = try multipliers(.ssmMultipliers, count: 5, meaning: "in_proj's z, x, B, C and dt columns")
        let inner = mambaInnerWidth
        try ConfigRules.decodingChecks {
            try ConfigRules.countIfPresent(inner, "mamba_d_ssm")
            if usesMLP == false {
                throw InvalidConfigValue(
                    key: "mamba_use_mlp",
                    problem: "is false, but transformers' FalconH1 runs its feed_forward in every layer; droptrace does not implement layers without one")
            }
        }
    }
}

/// TII's Falcon-H1 (`falcon_h1`, transformers' models/falcon_h1): every
/// layer runs attention and a Mamba-2 mixer side by side on the same
/// `input_layernorm` output and adds both to the residual stream —
/// mamba(x · ssm_in_multiplier) · ssm_out_multiplier +
/// attention(x · attention_in_multiplier) · attention_out_multiplier, one
/// token mixer scored and dropped as the layer's attention module — then a
/// SwiGLU `feed_forward` after `pre_ff_layernorm`, act(gate · m₀) · up,
/// down_proj's output times m₁ (`mlp_multipliers`); the final norm
/// `final_layernorm`. µP multipliers elsewhere: embeddings ×
/// `embedding_multiplier`, logits × `lm_head_multiplier`, keys ×
/// `key_multiplier` before rotary, in_proj's z | x | B | C | dt columns ×
/// `ssm_multipliers`. The Mamba-2 mixer is granitemoehybrid's, `mamba_d_ssm`
/// wide (1024 by default; null: mamba_expand × hidden_size), out_proj's bias
/// by `projectors_bias`, and its gated RMSNorm only with `mamba_rms_norm`
/// (then before the gate by `mamba_norm_before_gate`).
struct FalconH1Model: DecoderFamily {
    let parts: DecoderParts
    let config: FalconH1Configuration
    let mamba: Mamba2Configuration
    let heads: Mamba2Heads
    let rotary: RotaryEmbedding
    /// The µP vector: each in_proj column's multiplier.
    let projectionScales: [Float]

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: BambaModel.naming, finalNorm: "final_layernorm")
        config = try parts.config(FalconH1Configuration.self)
        mamba = try parts.config(Mamba2Configuration.self)
        let settings = mamba, hidden = parts.dimensions.hiddenSize
        let inner = config.mambaInnerWidth.map { (value: $0, key: "mamba_d_ssm") }
        var heads: Mamba2Heads?
        try ConfigRules.checks(path: parts.configPath) { heads = try settings.heads(hidden: hidden, innerWidth: inner) }
        self.heads = heads!
        let h = self.heads, m = config.ssmMultipliers
        // The µP vector is as wide as in_proj: confirmed on the first kept mixer before it is sized.
        if let first = parts.firstKeptAttention {
            try parts.weights.confirmShape(
                "layers.\(first).mamba.in_proj.weight", [h.projectionWidth, hidden],
                keys: "2 × mamba_d_ssm + 2 × mamba_n_groups × mamba_d_state + mamba_n_heads, hidden_size", configPath: parts.configPath)
            projectionScales = [Float](repeating: m[0], count: h.innerWidth) + [Float](repeating: m[1], count: h.innerWidth)
                + [Float](repeating: m[2], count: h.groupWidth) + [Float](repeating: m[3], count: h.groupWidth)
                + [Float](repeating: m[4], count: h.heads)
        } else {
            projectionScales = []
        }
        rotary = try parts.rotary()
    }

    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch, multiplier: config.embeddingMultiplier) }

    func head() throws -> OutputHead {
        try parts.head(
            norm: parts.weights.rmsNorm("final_layernorm", size: hiddenSize, eps: config.rmsNormEps),
            logitScale: config.lmHeadMultiplier)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), p = "layers.\(index).", d = hiddenSize, eps = config.rmsNormEps
        let weights = parts.weights, activation = try parts.activation(config.hiddenAct)
        // (Times 1 the activation keeps its vector kernel; the product is exact.)
        let gateMultiplier = config.mlpMultipliers[0]
        func mixer() throws -> TokenMixer {
            var attention = try parts.attention(p + "self_attn.", bias: config.attentionBias, rotary: rotary)
            attention.keyScale = config.keyMultiplier
            let mixer = try mamba.mixer(
                p + "mamba.", parts: parts, heads: heads, activation: activation, eps: eps, outputBias: config.projectorsBias,
                normalises: config.mambaNorm, normalisesBeforeGate: config.mambaNormBeforeGate, projectionScales: projectionScales)
            return .attentionBesideMamba2(AttentionBesideMamba2(
                attention: attention, mamba: mixer, attentionInputScale: config.attentionInMultiplier,
                attentionOutputScale: config.attentionOutMultiplier, mambaInputScale: config.ssmInMultiplier,
                mambaOutputScale: config.ssmOutMultiplier))
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: try weights.rmsNorm(p + "input_layernorm", size: d, eps: eps), mixer: try mixer()),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: try weights.rmsNorm(p + "pre_ff_layernorm", size: d, eps: eps),
                feedForward: try weights.gatedMLP(
                    p + "feed_forward.", hidden: d, inner: parts.dimensions.intermediateSize,
                    activation: gateMultiplier == 1 ? activation : .scaledInput(activation, by: gateMultiplier), bias: config.mlpBias),
                outputScale: config.mlpMultipliers[1]),
            residual: .sequential)
    }
}
