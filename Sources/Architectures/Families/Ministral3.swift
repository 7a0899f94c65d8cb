import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// Ministral 3's rotary settings and its query temperature (transformers'
/// models/ministral3/: `Ministral3Config`, `Ministral3Attention`): without
/// `rope_parameters` the config takes YaRN (base 1e6, factor 16 over 16384
/// original positions, β 0.1); the attention multiplies its queries after
/// rotary by 1 + β · ln(1 + ⌊p / original⌋) (`QueryTemperature`), β and
/// the original length read from the rope parameters, where
/// transformers fails without either.
enum Ministral3Rope {
    /// `Ministral3Config`'s defaults of the keys its sizes differ in from
    /// what droptrace assumes (head_dim 128 as a field, not hidden / heads).
    static func classDefaults(_ modelType: String) -> [String: ConfigDefault] {
        modelType == "ministral3" ? ["head_dim": 128] : [:]
    }

    /// `Ministral3Config.__post_init__`'s rope parameters when config.json has none.
    static func defaultParameters(maxPositions: Int) -> [String: Any] {
        [
            "type": "yarn", "rope_theta": 1_000_000.0, "factor": 16.0, "original_max_position_embeddings": 16384,
            "max_position_embeddings": maxPositions, "beta_fast": 32.0, "beta_slow": 1.0, "mscale_all_dim": 1.0,
            "mscale": 1.0, "llama_4_scaling_beta": 0.1,
        ]
    }

    private struct Beta: Decodable {
        var parameters: [String: Parameters]
        struct Parameters: Decodable {
            var beta: Double?
            enum CodingKeys: String, CodingKey { case beta = "llama_4_scaling_beta" }
        }
        init(from decoder: Decoder) throws {
            parameters = try [String: Parameters](from: decoder)
        }
    }

    /// The rope settings and the query temperature of `parts`' config section,
    /// `defaults` (Ministral 3's unless given) standing for absent rope
    /// parameters; `attentionClass` names the attention that reads them
    /// (Mistral 4's latent attention scales its queries alike).
    /// - Throws: `DroptraceError` naming config.json and the key when β or
    ///   the original length is missing or null, or the length is below 1.
    static func read(
        _ parts: DecoderParts, defaults: [String: Any]? = nil, attentionClass: String = "Ministral3Attention"
    ) throws -> (settings: RopeSettings, temperature: QueryTemperature) {
        let name = parts.section.name
        let keyPrefix = name.map { $0 + "." } ?? ""
        let (settings, key, object) = try parts.ropeSettings(
            defaults: defaults ?? defaultParameters(maxPositions: parts.dimensions.maxPositionEmbeddings))
        let beta = try parts.checkpoint.decodeConfig(Beta.self, object: [key: object[key]!], under: name).parameters[key]?.beta
        guard let beta else {
            throw InvalidConfigValue(
                key: keyPrefix + key + ".llama_4_scaling_beta",
                problem: "is missing or null: \(attentionClass) scales its queries by it, and transformers fails without it"
            ).error(path: parts.configPath)
        }
        guard let original = settings.originalMaxPositions else {
            throw InvalidConfigValue(
                key: keyPrefix + key + ".original_max_position_embeddings",
                problem: "is missing or null: \(attentionClass) divides positions by it to scale its queries, and transformers fails without it"
            ).error(path: parts.configPath)
        }
        return (settings, QueryTemperature(beta: Float(beta), originalMaxPositions: original))
    }
}
