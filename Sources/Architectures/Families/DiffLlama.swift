import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// config.json of `diffllama`, with DiffLlamaConfig's defaults
/// (transformers' `models/diffllama/configuration_diffllama.py`).
struct DiffLlamaConfiguration: Decodable {
    var rmsNormEps: Double
    var hiddenAct: String
    /// Biases on q/k/v/o_proj.
    var attentionBias: Bool
    /// DiffLlamaAttention refuses any above 0 (and cannot compare null).
    var attentionDropout: Double?

    enum CodingKeys: String, CodingKey {
        case rmsNormEps = "rms_norm_eps"
        case hiddenAct = "hidden_act"
        case attentionBias = "attention_bias"
        case attentionDropout = "attention_dropout"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? 1e-5
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
        attentionDropout = c.contains(.attentionDropout) ? try c.decodeIfPresent(Double.self, forKey: .attentionDropout) : 0
    }
}

/// DiffLlama (`diffllama`, DiffLlamaForCausalLM), as transformers'
/// `models/diffllama/modeling_diffllama.py` runs it: Llama's pre-RMSNorm
/// blocks, rotary grouped-query attention (q/k/v/o biases by
/// `attention_bias`) made differential (`DifferentialAttention`: λ from
/// the layer's `lambda_q1`, `lambda_k1`, `lambda_q2`, `lambda_k2` and
/// λ_init = 0.8 − 0.6 · exp(−0.3 · layer index); the group norm a
/// weightless RMSNorm at `rms_norm_eps`), and Mistral's bias-free SwiGLU
/// MLP; untied head by default.
struct DiffLlamaModel: DecoderFamily {
    let parts: DecoderParts
    let config: DiffLlamaConfiguration
    let rotary: RotaryEmbedding

    init(_ checkpoint: Checkpoint) throws {
        parts = try DecoderParts(checkpoint, naming: LlamaModel.naming)
        let config = try parts.config(DiffLlamaConfiguration.self)
        self.config = config
        let parts = parts
        guard let dropout = config.attentionDropout else {
            throw DroptraceError("\"attention_dropout\" is null: DiffLlamaAttention compares it with 0 and cannot be built; write 0", path: parts.configPath)
        }
        if dropout > 0 {
            throw DroptraceError(
                "\"attention_dropout\" is \(dropout): DiffLlamaAttention refuses any above 0 (the differential attention defines no dropout)",
                path: parts.configPath)
        }
        // Without num_key_value_heads, DiffLlamaConfig takes num_attention_heads.
        let kvKey = parts.dimensions.numKeyValueHeads == nil ? "num_attention_heads (num_key_value_heads absent)" : "num_key_value_heads"
        if parts.dimensions.kvHeads % 2 != 0 {
            throw DroptraceError(
                "\(kvKey) is \(parts.dimensions.kvHeads): DiffLlamaAttention needs an even number of key/value heads, "
                    + "as the differential attention splits the value heads in two halves",
                path: parts.configPath)
        }
        rotary = try parts.rotary()
        if let layer = parts.firstKeptAttention {
            for name in ["lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"] {
                try parts.weights.confirmShape(
                    "layers.\(layer).self_attn.\(name)", [parts.dimensions.resolvedHeadDim],
                    keys: parts.dimensions.headDim == nil ? "hidden_size / num_attention_heads" : "head_dim", configPath: parts.configPath)
            }
        }
    }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("norm", size: hiddenSize, eps: config.rmsNormEps))
    }

    /// A kept attention moved to another index would take that index's λ_init.
    func exportProblem(_ plan: DropPlan) -> String? {
        guard let first = plan.blocks.min() else { return nil }
        let moved = ((first + 1)..<layerCount).filter { !plan.blocks.contains($0) && !plan.dropsAttention($0) }
        guard let layer = moved.first else { return nil }
        return "dropping block \(first) renumbers layer \(layer) and the kept layers after it, whose differential attention's "
            + "λ_init (0.8 − 0.6 · exp(−0.3 · layer index)) transformers computes from the new index; drop the last blocks instead"
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let p = "layers.\(index).", weights = parts.weights, headDim = parts.dimensions.resolvedHeadDim
        return try parts.preNormBlock(
            index, drops: plan.union(configuredDrops), eps: config.rmsNormEps,
            attention: {
                var attention = try parts.attention(p + "self_attn.", bias: config.attentionBias, rotary: rotary)
                func lambda(_ name: String) throws -> [Float] { try weights.floats(p + "self_attn." + name, [headDim]) }
                attention.differential = DifferentialAttention(
                    q1: try lambda("lambda_q1"), k1: try lambda("lambda_k1"), q2: try lambda("lambda_q2"), k2: try lambda("lambda_k2"),
                    layer: index, headDim: headDim, eps: config.rmsNormEps)
                return attention
            },
            feedForward: {
                try weights.gatedMLP(
                    p + "mlp.", hidden: hiddenSize, inner: parts.dimensions.intermediateSize,
                    activation: try parts.activation(config.hiddenAct), bias: false)
            })
    }
}
