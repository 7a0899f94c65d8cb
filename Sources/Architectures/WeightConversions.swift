import CheckpointIO
import DroptraceSupport

/// What transformers 5's conversion mapping does to a checkpoint's tensors
/// on the way to its modules' parameters, where droptrace must read the
/// same (transformers' `conversion_mapping.py`). The mapping is looked up
/// for each PreTrainedModel in the model by its `config.model_type`
/// (`get_model_conversion_mapping`): the checkpoint's, and in a multimodal
/// model the text model's. The table of collected per-expert tensors is
/// generated from transformers (`scripts/weight_conversions/generate.py`).
public enum WeightConversions {
    /// The model types whose conversion mappings apply to the language model
    /// `section` of `checkpoint` holds: config.json's `model_type` and, for a
    /// `text_config` section, the text model's: `text_config.model_type` as
    /// written (a null or non-string one looks up nothing), else the type
    /// its config class gives it (`ConfigValueKinds.textModelType`). Nil for a GGUF file,
    /// which is not converted so: droptrace cuts its experts from their stacks.
    public static func modelTypes(_ checkpoint: Checkpoint, section: ConfigSection) -> [String]? {
        guard checkpoint.gguf == nil else { return nil }
        // (A text config under its legacy name, `llm_config`, is read as one.)
        guard section.name == "text_config" || section.name == ConfigValueKinds.textConfigKey(checkpoint.configDocument, modelType: checkpoint.modelType)
        else { return [checkpoint.modelType] }
        let textType: String?
        switch checkpoint.document(of: section)?.member("model_type") {
        case nil: textType = ConfigValueKinds.textModelType(of: checkpoint.modelType)
        case .string(let written)?: textType = written
        default: textType = nil
        }
        return [checkpoint.modelType] + (textType.map { [$0] } ?? [])
    }

    /// Whether transformers collects the per-expert tensor `name` (e.g.
    /// `model.layers.0.mlp.experts.3.gate_proj.weight`) into fused experts
    /// under the conversion mapping of one of `modelTypes`: a collected
    /// pattern's module path occurs in the name, and the name ends with its
    /// projection (`collectedPerExpert`; transformers searches the name for
    /// the pattern, `*` matching the index).
    public static func collects(_ name: String, modelTypes: [String]) -> Bool {
        modelTypes.contains { type in
            (collectedHalves[type] ?? []).contains { module, projection in
                guard let found = name.range(of: module) else { return false }
                return name[found.upperBound...].hasSuffix(projection)
            }
        }
    }

    /// `collectedPerExpert`'s patterns split once at the index: the module
    /// path before it and ".<projection>.weight" after it.
    private static let collectedHalves: [String: [(module: String, projection: String)]] = collectedPerExpert.mapValues { patterns in
        patterns.compactMap { pattern in
            let halves = pattern.components(separatedBy: "*.")
            return halves.count == 2 ? (halves[0], "." + halves[1]) : nil
        }
    }
}
