import CheckpointIO
import DroptraceSupport

/// config.json keys outside the families' own config classes that change
/// how transformers runs every family, checked before any family reads its
/// keys: the values droptrace does not run are refused naming the key,
/// never ignored.
enum ForwardPassKeys {
    /// The `quant_method`s whose weights droptrace dequantises itself:
    /// block-scaled FP8 (`<name>_scale_inv`) and gpt-oss's MXFP4 experts.
    static let readQuantMethods: Set<String> = ["fp8", "mxfp4"]

    /// `familyReadsLayerTypes`: the family resolves `layer_types` itself
    /// (`RegisteredModel.readsLayerTypes`).
    /// - Throws: `DroptraceError` naming `path` and the key.
    static func check(_ document: JSONValue, path: String, familyReadsLayerTypes: Bool) throws {
        try requireCausal(document, path: path)
        try requireReadQuantization(document, path: path)
        if !familyReadsLayerTypes { try requireCacheableLayerTypes(document, path: path) }
    }

    /// Refuses a `layer_types` list (top level or in `text_config`) that
    /// transformers 5 cannot run in a family whose model does not read it:
    /// its cache still builds one layer per entry for every family, and
    /// fails on types other than full_attention and sliding_attention and
    /// on sliding layers where the config sets no `sliding_window`
    /// (droptrace would have run them as full attention, exit 0). A list
    /// such a family can run changes nothing in its forward pass.
    static func requireCacheableLayerTypes(_ document: JSONValue, path: String) throws {
        for (prefix, section) in sections(of: document) {
            guard case .array(let items)? = section.member("layer_types") else { continue }
            let types = items.compactMap { item -> String? in
                if case .string(let type) = item { return type }
                return nil
            }
            var hasWindow = false
            if case .integer? = section.member("sliding_window") { hasWindow = true }
            try AttentionLayerType.check(
                types, hasWindow: hasWindow, windowKeys: prefix + "sliding_window", listKey: prefix + "layer_types", path: path)
        }
    }

    /// The config's top level, its `text_config` (a multimodal wrapper's
    /// language model; null when absent) and its `thinker_config.text_config`
    /// (an omni model's), each with the prefix its keys are named by.
    private static func sections(of document: JSONValue) -> [(prefix: String, section: JSONValue)] {
        [
            ("", document), ("text_config.", document.member("text_config") ?? .null),
            // An omni model's thinker (Qwen2.5-Omni's), whose text model is its language model.
            ("thinker_config.text_config.", document.member(path: "thinker_config.text_config") ?? .null),
        ]
    }

    /// Refuses `is_causal` other than true or null, at the top level or in
    /// `text_config`: transformers 5 builds a bidirectional attention mask
    /// for every family when the config's `is_causal` is false
    /// (`masking_utils.create_causal_mask`, for decoders used as embedding
    /// models), and hands any other kind of value to
    /// `scaled_dot_product_attention`, which takes only a boolean.
    static func requireCausal(_ document: JSONValue, path: String) throws {
        for (prefix, section) in sections(of: document) {
            switch section.member("is_causal") {
            case nil, .null?, .bool(true)?:
                continue
            case .bool(false)?:
                throw DroptraceError(
                    "\"\(prefix)is_causal\" is false: transformers then attends both ways (an embedding model's bidirectional mask); "
                        + "droptrace scores causal language models only", path: path)
            case let value?:
                throw DroptraceError(
                    "\"\(prefix)is_causal\" holds \(ConfigValueKinds.spelled(value)), which transformers hands to "
                        + "scaled_dot_product_attention, which takes only true or false", path: path)
            }
        }
    }

    /// Refuses a `quantization_config` whose method droptrace does not
    /// implement (`readQuantMethods`): transformers runs such a model
    /// through that method's kernels, or quantises plain weights as it loads
    /// them (bitsandbytes, torchao), so the stored tensors — quantised
    /// integers, or floats — are not the model it runs. One without a
    /// `quant_method` is refused as transformers refuses it; null is none.
    /// Read at the top level and in `text_config` (a multimodal wrapper's
    /// language model, whose quantisation transformers applies as well).
    static func requireReadQuantization(_ document: JSONValue, path: String) throws {
        for (prefix, section) in sections(of: document) {
            try requireReadQuantization(section.member("quantization_config"), key: prefix + "quantization_config", path: path)
        }
    }

    private static func requireReadQuantization(_ config: JSONValue?, key: String, path: String) throws {
        guard let config else { return }
        let method: String
        switch config {
        case .null: return
        case .object:
            guard case .string(let name)? = config.member("quant_method") else {
                throw DroptraceError(
                    "\"\(key)\" has no quant_method string, which transformers refuses (it names the quantisation)", path: path)
            }
            method = name
        default:
            throw DroptraceError(
                "\"\(key)\" holds \(ConfigValueKinds.spelled(config)), not an object, which transformers refuses", path: path)
        }
        guard !readQuantMethods.contains(method.lowercased()) else { return }
        throw DroptraceError(
            "\"\(key).quant_method\" is \"\(method.forErrorMessage)\": transformers runs the model through that "
                + "method's kernels or quantises the weights as it loads them, which droptrace does not implement "
                + "(it reads F32, F16 and BF16 weights, block-scaled fp8 and mxfp4); score the unquantised model", path: path)
    }
}
