import DroptraceSupport
import Foundation

/// The JSON kinds config.json's keys may hold, as transformers' config
/// classes type-check them.
///
/// transformers 5 builds every config class as a strict dataclass: each
/// field's value is type-checked when the config is made, and a value of
/// another kind — `"head_dim": null` where Qwen3Config declares `head_dim:
/// int`, `"num_hidden_layers": 48.0` (a float for an int), `"attention_bias":
/// 0` (an int for a bool), `"rms_norm_eps": 1` (an int for a float) — makes
/// `from_pretrained` fail. droptrace refuses the same configs, naming the key,
/// rather than read such a value as absent or convert it and score a model
/// transformers cannot load. The table (`transformers`) is generated from the
/// installed transformers' own validators by
/// `scripts/config_schema/generate.py`; keys it does not list (and keys
/// outside the config class, such as `rope_theta` or `rope_scaling`) take
/// any value here and are checked where they are read.
public enum ConfigValueKinds {
    /// Checks the values of config.json (`document`) against the config
    /// class of `modelType` (an `attn_config` against its own class, MPT's;
    /// a wrapper's `vision_config` against its vision config class),
    /// an omni model's sub-configs, nested ones too, against their classes (`nestedSections`),
    /// and its `text_config` against the text config
    /// class where the class has one: its own (`gemma3.text_config`), or,
    /// where the text config's class follows its `model_type`
    /// (`textConfigModelTypes`, Mistral3Config's AutoConfig), that
    /// model_type's; where the class builds its text config from the top
    /// level's keys when there is no `text_config` (`flatTextConfigs`), the
    /// top level against the text config class too, or from listed keys
    /// (`flatTextConfigKeys`), those keys against it. `textModelType`: the
    /// text config's model type as the wrapper's class resolves it, where it
    /// renames one (EXAONE 4.5's `exaone4_5_text`).
    /// - Throws: `DroptraceError` naming `path` and the first key whose value
    ///   is of a kind its class refuses.
    public static func check(_ document: JSONValue, modelType: String, path: String, textModelType: String? = nil) throws {
        guard case .object(let members) = document else { return }
        if let problem = valueProblem(in: members, of: modelType, under: "") {
            throw DroptraceError(problem, path: path)
        }
        // Sections built as config classes of their own: the model's own settings (MPT's
        // attn_config, DBRX's attn_config and ffn_config), and a wrapper's vision tower (and Molmo2's
        // adapter_config), which transformers builds, and type-checks, whenever it loads the model, on text too.
        for section in ["attn_config", "ffn_config", "vision_config", "adapter_config"] where transformers[modelType + "." + section] != nil {
            guard case .object(let settings)? = document.member(section) else { continue }
            if let problem = problem(in: settings, of: modelType + "." + section, under: section + ".") {
                throw DroptraceError(problem, path: path)
            }
        }
        // An omni model's sub-configs, nested ones too (Qwen2.5-Omni's thinker_config and the text_config
        // inside it, whose class is its language model's): its config class builds each as a class of its own.
        for section in nestedSections[modelType] ?? [] {
            let classKey = modelType + "." + section, prefix = section + "."
            guard case .object(let settings)? = document.member(path: section) else { continue }
            let isText = section == nestedTextConfigs[modelType]
            if let problem = isText ? valueProblem(in: settings, of: classKey, under: prefix) : problem(in: settings, of: classKey, under: prefix) {
                throw DroptraceError(problem, path: path)
            }
        }
        let textKey = textConfigKey(document, modelType: modelType)
        guard case .object(let text)? = document.member(textKey) else {
            // A wrapper whose class builds its text config from the top level's keys (Qwen2-VL's flat configs).
            let textKey = modelType + ".text_config"
            if flatTextConfigs.contains(modelType),
               let problem = problem(in: members, of: textKey, under: "") ?? paddingProblem(in: members, of: textKey, under: "") {
                throw DroptraceError(problem, path: path)
            }
            // One that builds it from listed top-level keys (FuyuConfig's), against its text model type's class.
            if let keys = flatTextSection(document, modelType: modelType)?.keys,
               let textClass = textConfigClass(of: modelType, text: [], resolved: textModelType) {
                if let problem = valueProblem(in: members.filter { keys.contains($0.key) }, of: textClass, under: "") {
                    throw DroptraceError(problem, path: path)
                }
            }
            return
        }
        guard let textClass = textConfigClass(of: modelType, text: text, resolved: textModelType) else { return }
        if let problem = valueProblem(in: text, of: textClass, under: textKey + ".") {
            throw DroptraceError(problem, path: path)
        }
    }

    /// The first value of `members` the class of `classKey` refuses, as one
    /// sentence: of a kind it does not take (`problem`), a padding token its
    /// embedding cannot hold (`paddingProblem`), out of the range its
    /// validation allows (`rangeProblem`); nil when it takes them all.
    static func valueProblem(in members: [(key: String, value: JSONValue)], of classKey: String, under prefix: String) -> String? {
        problem(in: members, of: classKey, under: prefix) ?? paddingProblem(in: members, of: classKey, under: prefix)
            ?? rangeProblem(in: members, of: classKey, under: prefix)
    }

    /// The key a `modelType` config's text config is read from: `text_config`,
    /// or the legacy name its config class reads in its place where
    /// `text_config` is absent or null and the legacy key holds a value
    /// (NemotronH_Omni_Reasoning_V3_Config's `llm_config`, as its released
    /// checkpoints write it; UnlimitedOcrConfig's `language_config`, as its
    /// original checkpoint does).
    public static func textConfigKey(_ document: JSONValue, modelType: String) -> String {
        guard let legacy = legacyTextConfigKeys[modelType] else { return "text_config" }
        return !isSet(document.member("text_config")) && isSet(document.member(legacy)) ? legacy : "text_config"
    }

    /// Legacy names of `text_config` (`textConfigKey`), by model type.
    static let legacyTextConfigKeys = ["nemotron_h_omni": "llm_config", "unlimited_ocr": "language_config"]

    /// Config classes that, given no `text_config`, build their text config
    /// from a fixed list of top-level keys where one of them is written (null
    /// counts), and the values they set beside them: FuyuConfig's
    /// `__post_init__` takes its text sub-config's init keys, `rope_scaling`
    /// and `rope_theta`, and sets `partial_rotary_factor` 0.5; every other
    /// top-level key (a `partial_rotary_factor` too) stays on the wrapper, unread.
    static let flatTextConfigKeys: [String: (keys: Set<String>, added: [String: ConfigDefault])] = [
        "fuyu": (
            [
                "vocab_size", "max_position_embeddings", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "hidden_act", "initializer_range", "layer_norm_eps", "use_cache", "qk_layernorm", "hidden_dropout", "attention_dropout",
                "eos_token_id", "rope_scaling", "rope_theta",
            ],
            ["partial_rotary_factor": 0.5]),
    ]

    /// The top level read as a `modelType` config's text config
    /// (`flatTextConfigKeys`): its listed keys alone, with the values the
    /// class adds; nil where `text_config` is set or none of the keys is written.
    public static func flatTextSection(_ document: JSONValue, modelType: String) -> ConfigSection? {
        guard let flat = flatTextConfigKeys[modelType], !isSet(document.member("text_config")),
              flat.keys.contains(where: { document.member($0) != nil }) else { return nil }
        return ConfigSection(overrides: flat.added, keys: flat.keys)
    }

    /// Whether a config member holds a value (present and not null).
    private static func isSet(_ value: JSONValue?) -> Bool {
        guard let value else { return false }
        if case .null = value { return false }
        return true
    }

    /// The model_type the text model of a `modelType` config reports when
    /// its `text_config` names none: the type an AutoConfig sub-config
    /// defaults to (`textConfigModelTypes`), or its own text config class's
    /// (`ownTextConfigModelTypes`); nil for a class without a text config.
    public static func textModelType(of modelType: String) -> String? {
        textConfigModelTypes[modelType] ?? ownTextConfigModelTypes[modelType]
    }

    /// Whether the config class of `modelType` ties the head to the
    /// embedding when config.json omits `tie_word_embeddings` (`tiedByDefault`).
    public static func tiesByDefault(_ modelType: String) -> Bool { tiedByDefault.contains(modelType) }

    /// Refuses a legacy key that `modelType`'s config class reads into a
    /// field in its `__post_init__` (`legacy`: key → field, NemotronHConfig's
    /// `mamba_dt_limit` → `time_step_limit`) holding a value of a kind the
    /// field refuses: the assignment is type-checked as the field is.
    /// - Throws: `DroptraceError` naming `path` and both keys.
    public static func checkLegacyKeys(
        _ document: JSONValue, _ legacy: [String: String], modelType: String, path: String, under prefix: String = ""
    ) throws {
        guard let (className, keys, _) = transformers[modelType] else { return }
        for (key, field) in legacy.sorted(by: { $0.key < $1.key }) {
            guard let value = document.member(key), let spec = keys[field], !accepts(spec, value) else { continue }
            throw DroptraceError(
                "key \"\(prefix)\(key)\" (which transformers' \(className) reads as \(field)) holds \(spelled(value, against: spec)), which its field \(field) refuses (it takes \(described(spec)))",
                path: path)
        }
    }

    /// Config classes that drop a written `head_dim` whatever it holds
    /// (SarvamMLAConfig: its original configs store kv_lora_rank + qk_rope_head_dim).
    public static let headDimDropped: Set<String> = ["sarvam_mla"]

    /// The keys the attribute map of `modelType`'s config class reads as
    /// `key` (ExaoneConfig's `num_layers` for `num_hidden_layers`), sorted.
    public static func aliases(of key: String, modelType: String) -> [String] {
        (transformers[modelType]?.aliases ?? [:]).filter { $0.value == key }.map(\.key).sorted()
    }

    /// The per-layer lists (`layer_types`, …) the config class transformers
    /// builds a section of config.json with holds when the section has none,
    /// derived from a rule, and so writes back when it saves the config
    /// (`derivedPerLayerLists`).
    /// - Parameters:
    ///   - section: the section's dotted path (`text_config`,
    ///     `thinker_config.text_config`); nil for the top level.
    ///   - document: config.json.
    public static func derivedPerLayerLists(modelType: String, section: String?, document: JSONValue) -> [String] {
        guard let section else { return derivedPerLayerLists[modelType] ?? [] }
        if let lists = derivedPerLayerLists[modelType + "." + section] { return lists }
        var text: [(key: String, value: JSONValue)] = []
        if case .object(let members)? = document.member(path: section) { text = members }
        return textConfigClass(of: modelType, text: text).flatMap { derivedPerLayerLists[$0] } ?? []
    }

    /// The table key of the class transformers builds the `text_config`
    /// (`text`) of a `modelType` config with, if droptrace has its table
    /// (under its model type, or as a registered wrapper's own text config class).
    static func textConfigClass(of modelType: String, text: [(key: String, value: JSONValue)], resolved: String? = nil) -> String? {
        if transformers[modelType + ".text_config"] != nil { return modelType + ".text_config" }
        guard let defaultType = textConfigModelTypes[modelType] else { return nil }
        var textType = defaultType
        if case .string(let written)? = text.last(where: { $0.key == "model_type" })?.value { textType = renamedTextType(written, in: modelType) }
        textType = resolved ?? textType
        if transformers[textType] != nil { return textType }
        // A type droptrace reads only as another wrapper's own text config class (Glm46VConfig's
        // glm4v_text, Glm4vConfig's): that class's tables.
        return ownTextConfigModelTypes.filter { $0.value == textType }.map { $0.key + ".text_config" }.sorted()
            .first { transformers[$0] != nil }
    }

    /// The text model type a `modelType` config class reads a `text_config`
    /// naming `written` as: the type it renames it to before AutoConfig builds
    /// it (Kimi_K25Config's `kimi_k2`, a DeepseekV3Config; Exaone4_5_Config's
    /// `exaone4_5_text`, an Exaone4Config), else `written`.
    public static func renamedTextType(_ written: String, in modelType: String) -> String {
        renamedTextTypes[modelType]?[written] ?? written
    }

    static let renamedTextTypes = ["exaone4_5": ["exaone4_5_text": "exaone4"], "kimi_k25": ["kimi_k2": "deepseek_v3"]]

    /// The `dtype` names transformers builds a causal LM under (`getattr(torch, dtype)`,
    /// a floating-point dtype with storage); droptrace computes in float32 or bf16 whatever they say.
    static let torchFloatingDtypes: Set<String> = ["float32", "float", "float16", "half", "bfloat16", "float64", "double"]

    /// Values transformers refuses when it builds the config or the model,
    /// though they change no score: `initializer_range` outside [0, 1] (where
    /// the config class declares that interval: `initializerRangeChecked`), a dropout probability outside [0, 1] where
    /// the model builds `nn.Dropout` from it, a top-level `dtype` that is not a
    /// torch floating-point type (`torchFloatingDtypes`), and `layer_types` that are not
    /// one allowed name per layer on classes that do not read them
    /// (`validate_layer_type`; the others check them where they are read).
    /// `prefix` puts the section's member in front of the keys messages name (`text_config.`).
    static func rangeProblem(in written: [(key: String, value: JSONValue)], of modelType: String, under prefix: String = "") -> String? {
        // Read through the class's aliases; a key read from one is named as written.
        let (members, writtenAs) = readingAliases(written, of: modelType)
        return rangeProblem(read: members, of: modelType, under: prefix).map { message in
            writtenAs.reduce(message) { $0.replacingOccurrences(of: "\"\(prefix)\($1.key)\"", with: "\"\(prefix)\($1.value)\"") }
        }
    }

    private static func rangeProblem(read members: [(key: String, value: JSONValue)], of modelType: String, under prefix: String) -> String? {
        func number(_ key: String) -> Double? {
            switch members.last(where: { $0.key == key })?.value {
            case .integer(let value)?: Double(value)
            case .number(let value)?, .bigInteger(let value)?: value
            default: nil
            }
        }
        if initializerRangeChecked.contains(modelType), let range = number("initializer_range"), !(0...1).contains(range) {
            return "key \"\(prefix)initializer_range\" is \(range), which transformers' config validator refuses (it must be in [0, 1])"
        }
        let dropouts = (dropoutModules[modelType] ?? []).map { ($0, "transformers' model builds nn.Dropout from it") }
            + (functionalDropout[modelType] ?? []).map { ($0, "transformers' forward pass calls dropout with it") }
        for (key, use) in dropouts {
            if let probability = number(key), !(0...1).contains(probability) {
                return "key \"\(prefix)\(key)\" is \(probability), a dropout probability outside [0, 1]: \(use), which torch refuses"
            }
        }
        for key in ["dtype", "torch_dtype"] {
            guard let value = members.last(where: { $0.key == key })?.value else { continue }
            if case .null = value { continue }
            guard prefix.isEmpty else {
                // The top level's dtype builds the model, not a wrapper's text config's, whose class still converts a
                // string by name (getattr(torch, name)) and fails on a list.
                let readable: Bool
                switch value {
                case .string(let name): readable = torchDtypeNames.contains(name)
                case .array: readable = false
                default: readable = true
                }
                if !readable {
                    return "key \"\(prefix)\(key)\" holds \(spelled(value)), which transformers' config class cannot read as a torch dtype "
                        + "(it takes null, a number, an object or a torch dtype's name such as bfloat16)"
                }
                continue
            }
            guard case .string(let name) = value, torchFloatingDtypes.contains(name) else {
                return "key \"\(prefix)\(key)\" holds \(spelled(value)), not a torch floating-point dtype transformers can build the model in "
                    + "(it takes null or one of \(torchFloatingDtypes.sorted().joined(separator: ", ")))"
            }
        }
        if let key = ropeIntegerBeyondTorch(in: members) {
            return "key \"\(prefix)\(key)\" is an integer beyond 64 bits, which transformers' rotary set-up cannot convert (OverflowError)"
        }
        // A null or absent head_dim: whether the model cannot be built from it, and whether the class keeps it None.
        let headDim = members.last(where: { $0.key == "head_dim" })?.value
        if !headDimDropped.contains(modelType), case .number(let width)? = headDim {
            // Classes without a typed head_dim field keep the float, and the model sizes its projections by it.
            return "key \"\(prefix)head_dim\" is \(width), a float, which transformers' model cannot size its attention by; write an integer"
        }
        let (modelFails, headDimIsNone) = switch headDim {
        case .null?: (nullHeadDimFails.contains(modelType), headDimNoneWhenNull.contains(modelType))
        case nil: (absentHeadDimFails.contains(modelType), headDimNoneWhenAbsent.contains(modelType))
        default: (false, false)
        }
        if modelFails {
            return "key \"\(prefix)head_dim\" is null or absent, which transformers' config class takes but its model cannot be built from; write the head width"
        }
        if headDimIsNone, let type = ropeTypes(in: members).first(where: Self.ropeTypesReadingHeadDim.contains) {
            return "key \"\(prefix)head_dim\" is \(headDim == nil ? "absent (None in transformers' config class)" : "null"), which transformers' "
                + "\(type) rotary set-up takes for the head width (TypeError); write the head width"
        }
        if nullKeyValueHeadsFail.contains(modelType), case .null? = members.last(where: { $0.key == "num_key_value_heads" })?.value {
            return "key \"\(prefix)num_key_value_heads\" is null, which transformers' config class keeps but its attention cannot be built from; write the count"
        }
        guard !layerTypesRead.contains(modelType), let written = members.last(where: { $0.key == "layer_types" })?.value
        else { return nil }
        let countKey = modelType == "gpt2" ? "n_layer" : "num_hidden_layers"
        if case .null = written { return nil }
        let layers = members.last(where: { $0.key == countKey })?.value
        guard case .array(let items) = written,
              items.allSatisfy({
                  if case .string(let name) = $0 { allowedLayerTypes.contains(legacyLayerTypes[name] ?? name) } else { false }
              }) else {
            return "key \"\(prefix)layer_types\" must list one of \(allowedLayerTypes.joined(separator: ", ")) per layer, as transformers' validate_layer_type requires"
        }
        if case .integer(let count)? = layers, count != items.count {
            return "key \"\(prefix)layer_types\" lists \(items.count) layers, but \"\(prefix)\(countKey)\" is \(count), which transformers' validate_layer_type refuses"
        }
        return nil
    }

    /// The rope types whose transformers initialisers read `config.head_dim` with getattr's default,
    /// so that a None there is used as the width ("su": the first Phi-3 configs' LongRoPE).
    static let ropeTypesReadingHeadDim: Set<String> = ["dynamic", "yarn", "longrope", "su"]

    /// The `rope_type` (or legacy `type`) of `rope_parameters` and of `rope_scaling`, as written.
    static func ropeTypes(in members: [(key: String, value: JSONValue)]) -> [String] {
        ["rope_parameters", "rope_scaling"].compactMap { key in
            guard case .object(let nested)? = members.last(where: { $0.key == key })?.value,
                  case .string(let type)? = (nested.last { $0.key == "rope_type" } ?? nested.last { $0.key == "type" })?.value
            else { return nil }
            return type
        }
    }

    /// The first rope setting (top-level `rope_theta`, or a member of `rope_parameters` / `rope_scaling`,
    /// also nested by layer type) written as an integer torch cannot hold: at least 2⁶⁴, or below −2⁶³.
    static func ropeIntegerBeyondTorch(in members: [(key: String, value: JSONValue)]) -> String? {
        func beyond(_ value: JSONValue) -> Bool {
            if case .bigInteger(let number) = value { number >= 0x1p64 || number < -0x1p63 } else { false }
        }
        func search(_ members: [(key: String, value: JSONValue)], under prefix: String) -> String? {
            for (key, value) in members {
                if beyond(value) { return prefix + key }
                if case .object(let nested) = value, let found = search(nested, under: prefix + key + ".") { return found }
            }
            return nil
        }
        for (key, value) in members {
            if key == "rope_theta", beyond(value) { return key }
            if ["rope_parameters", "rope_scaling"].contains(key), case .object(let nested) = value,
               let found = search(nested, under: key + ".") {
                return found
            }
        }
        return nil
    }

    /// The classes whose `initializer_range` field is declared
    /// `interval(min=0.0, max=1.0)` in transformers 5.23 (LlamaConfig alone
    /// among the families droptrace reads; the others take any float).
    static let initializerRangeChecked: Set<String> = ["llama"]

    /// Dropout settings a family's forward pass hands to `torch.nn.functional.dropout` (which checks
    /// the probability even when not training), beyond the generated `dropoutModules`, which a model
    /// built on the meta device reveals.
    static let functionalDropout: [String: [String]] = [
        "opt": ["dropout"], "seed_oss": ["residual_dropout"], "starcoder2": ["embedding_dropout", "residual_dropout"],
        "xglm": ["activation_dropout", "attention_dropout", "dropout"],
    ]
    /// Classes whose models read `layer_types` (the family checks it where
    /// it reads it; NemotronHConfig has its own `validate_layer_type`, of
    /// its layer kinds; DoryConfig validates it once it halved the released
    /// layout's "…_attention", "mlp" pairs; Step3p7TextConfig once it cut
    /// the MTP layers' trailing entries); transformers 5.23 checks every
    /// other class's with `validate_layer_type` alone.
    static let layerTypesRead: Set<String> = [
        "dory", "gemma2", "gemma3", "gemma3_text", "gpt_oss", "ministral", "mistral", "nemotron_h", "olmo3", "qwen2", "qwen2_moe", "qwen3",
        "smollm3", "step3p7.text_config",
    ]
    /// transformers 5.23's `ALLOWED_LAYER_TYPES`.
    /// Earlier layer type names transformers reads as the current ones
    /// before it validates them (`_LEGACY_LAYER_TYPE_REMAP`).
    public static let legacyLayerTypes = [
        "mamba": "linear_attention", "attention": "full_attention", "deepseek_sparse_attention": "indexed_attention",
        "qwen_sparse_attention": "indexed_attention",
    ]

    static let allowedLayerTypes = [
        "full_attention", "sliding_attention", "chunked_attention", "window_attention", "indexed_attention",
        "compressed_sparse_attention", "heavily_compressed_attention", "minimax_m3_sparse", "conv", "moe", "hybrid",
        "hybrid_sliding", "reference_sliding_attention", "linear_attention", "sparse", "dense",
    ]

    /// For a class whose model builds its token embedding as
    /// `nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)`
    /// (`paddedEmbeddings`): a pad_token_id — as written, or the class's
    /// default when absent — outside [-vocab_size, vocab_size), where torch
    /// asserts and the model cannot be built, as one sentence. nil when the
    /// index is in range or null, and for the classes without one (gpt2,
    /// gpt_neox). Run after the kinds check: a value of another kind is
    /// refused there, a vocab_size below 1 where it is read.
    static func paddingProblem(in written: [(key: String, value: JSONValue)], of classKey: String, under prefix: String) -> String? {
        guard let (defaultPad, defaultVocabulary) = paddedEmbeddings[classKey] else { return nil }
        let (members, writtenAs) = readingAliases(written, of: classKey)
        var vocabulary = defaultVocabulary
        if let written = members.last(where: { $0.key == "vocab_size" })?.value {
            guard case .integer(let size) = written, size >= 1 else { return nil }
            vocabulary = size
        }
        // The embedding's rows past vocab_size (Mllama's 8); a sum past 64 bits is refused where vocab_size is read.
        let extra = embeddingRowsPastVocabulary[classKey] ?? 0
        guard case (let rows, false) = vocabulary.addingReportingOverflow(extra) else { return nil }
        let vocabularyKey = prefix + (writtenAs["vocab_size"] ?? "vocab_size")
        let rowsText = extra == 0 ? "\(vocabularyKey) \(vocabulary)" : "\(vocabularyKey) \(vocabulary) + \(extra) rows"
        vocabulary = rows
        let className = transformers[classKey]?.className ?? classKey
        let key = "key \"\(prefix)\(writtenAs["pad_token_id"] ?? "pad_token_id")\""
        let stated: String
        switch members.last(where: { $0.key == "pad_token_id" })?.value {
        case nil:
            guard let defaultPad, defaultPad < -vocabulary || defaultPad >= vocabulary else { return nil }
            stated = "\(key) is absent, so transformers' \(className) takes its default \(defaultPad),"
        case .integer(let pad)?:
            guard pad < -vocabulary || pad >= vocabulary else { return nil }
            stated = "\(key) holds \(pad),"
        case .bigInteger(let pad)?:
            // An integer literal beyond 64 bits: Python's int, out of any vocabulary.
            stated = "\(key) holds \(pad),"
        default:
            return nil
        }
        return "\(stated) outside the vocabulary (\(rowsText)): transformers builds the token embedding "
            + "with padding_idx=pad_token_id, which torch requires in [-\(vocabulary), \(vocabulary - 1)]; "
            + "set it below vocab_size, or to null"
    }

    /// `members` with each alias of the class written without the key it
    /// stands for also written as that key, as the class sets it (HunYuanVLTextConfig's
    /// `attention_head_dim`, its head_dim; `pad_id`, its pad_token_id).
    /// `writtenAs`: the alias each added key is written as, for messages.
    static func readingAliases(
        _ members: [(key: String, value: JSONValue)], of classKey: String
    ) -> (members: [(key: String, value: JSONValue)], writtenAs: [String: String]) {
        let aliases = transformers[classKey]?.aliases ?? [:]
        var read = members, writtenAs: [String: String] = [:]
        for member in members {
            guard let target = aliases[member.key], !members.contains(where: { $0.key == target }) else { continue }
            read.append((target, member.value))
            writtenAs[target] = member.key
        }
        return (read, writtenAs)
    }

    /// The first member of `members` (in file order) whose value the class
    /// refuses, as one sentence; nil when every value is accepted.
    static func problem(in members: [(key: String, value: JSONValue)], of classKey: String, under prefix: String) -> String? {
        guard let (className, keys, aliases) = transformers[classKey] else { return nil }
        for (key, value) in members {
            if let spec = keys[key], !accepts(spec, value) {
                return "key \"\(prefix)\(key)\" holds \(spelled(value, against: spec)), which transformers' \(className) refuses (it takes \(described(spec)))"
            }
            // An alias (gpt2's hidden_size for n_embd) is set after the
            // fields, over the key it stands for, and never type-checked:
            // it must say what that key says, or, alone, be of its kinds
            // (it is then read as that key: `decodable`).
            guard let target = aliases[key] else { continue }
            let stated = "key \"\(prefix)\(key)\" (which transformers' \(className) reads as \(target), over it)"
            if let written = members.last(where: { $0.key == target })?.value {
                // Which one wins depends on the class (an alias that is also a field is set before the
                // other key, Qwen3VLMoeTextConfig's num_experts): two values are refused either way.
                if !same(written, value) {
                    return "key \"\(prefix)\(key)\" (the setting transformers' \(className) stores as \(target)) holds \(spelled(value)), "
                        + "but \"\(prefix)\(target)\" holds \(spelled(written)); keep one of them"
                }
            } else if let spec = keys[target], !accepts(spec, value) {
                return "\(stated) holds \(spelled(value)), which transformers would not type-check and cannot run (\(target) takes \(described(spec)))"
            }
        }
        // The key an alias stands for, written alone (as transformers saves it), is read through
        // the alias's field, which never type-checks it: it must be of that field's kinds.
        for (alias, target) in aliases.sorted(by: { $0.key < $1.key }) where !members.contains(where: { $0.key == alias }) {
            guard let spec = keys[alias], let value = members.last(where: { $0.key == target })?.value, !accepts(spec, value) else { continue }
            return "key \"\(prefix)\(target)\" (which transformers' \(className) reads as \(alias), unchecked) holds \(spelled(value)), "
                + "which its field \(alias) refuses (it takes \(described(spec)))"
        }
        return nil
    }

    /// config.json as the families decode it, with what transformers' config
    /// class of `modelType` adds to a config as written:
    /// - each alias given without the key it stands for is written under that
    ///   key as well, because transformers sets the alias over the key
    ///   (`Qwen3MoeConfig.attribute_map`: the `num_experts` of every Qwen3-MoE
    ///   config written by transformers 4.x is `num_local_experts`; gpt2's
    ///   `hidden_size` is `n_embd`);
    /// - the keys of `omittedDefaults` a config leaves out take the class's
    ///   default (`rms_norm_eps` 1e-6 for LlamaConfig).
    /// Keys are added at the start of the object, so the rest of the text —
    /// and how its numbers are spelled — is decoded as written.
    /// - Returns: the data, and the alias each key added for one was written
    ///   as (for messages, which name the key the file holds).
    /// The model types whose omitted aliases `decodable` writes from the keys they stand for.
    static let aliasesRead: Set<String> = ["deepseek_v4"]

    public static func decodable(_ data: Data, document: JSONValue, modelType: String) -> (data: Data, writtenAs: [String: String]) {
        guard case .object(let members) = document,
              let start = data.firstIndex(where: { $0 == UInt8(ascii: "{") }) else { return (data, [:]) }
        var aliases = transformers[modelType]?.aliases ?? [:]
        // A wrapper that builds its text config from the top level's keys (HunYuanVLConfig without
        // text_config) builds it with them: the text config class reads its own aliases there.
        let hasTextConfig: Bool
        if case .object? = document.member(textConfigKey(document, modelType: modelType)) { hasTextConfig = true } else { hasTextConfig = false }
        if flatTextConfigs.contains(modelType), !hasTextConfig {
            aliases.merge(transformers[modelType + ".text_config"]?.aliases ?? [:], uniquingKeysWith: { own, _ in own })
        }
        var added: [(key: String, text: String)] = [], writtenAs: [String: String] = [:]
        for (key, value) in members {
            guard let target = aliases[key], document.member(target) == nil, let text = jsonText(value) else { continue }
            // Of two aliases of one key, the later is read: transformers sets them in turn (Param2MoEConfig's num_experts, num_local_experts).
            if let earlier = added.firstIndex(where: { $0.key == target }) { added[earlier].text = text } else { added.append((target, text)) }
            writtenAs[target] = key
        }
        // An alias the config leaves out reads the key it stands for (transformers' attribute_map
        // getter), for the types whose sizes droptrace reads under the alias: DeepseekV4Config's
        // intermediate_size is its moe_intermediate_size.
        for (alias, target) in aliases.sorted(by: { $0.key < $1.key })
        where aliasesRead.contains(modelType) && document.member(alias) == nil && writtenAs[alias] == nil && writtenAs[target] == nil {
            guard let value = document.member(target), let text = jsonText(value) else { continue }
            added.append((alias, text))
            writtenAs[alias] = target
        }
        for (key, text) in (omittedDefaults[modelType] ?? [:]).sorted(by: { $0.key < $1.key })
        where document.member(key) == nil && writtenAs[key] == nil {
            added.append((key, text))
        }
        guard !added.isEmpty else { return (data, [:]) }
        var decodable = data
        let text = added.map { "\"\($0.key)\": \($0.text), " }.joined()
        decodable.insert(contentsOf: Data(text.utf8), at: start + 1)
        return (decodable, writtenAs)
    }

    /// The aliases (alias → the key it stands for, `attribute_map`) of the
    /// config class each sub-config of `document` is built as, by the
    /// sub-config's dotted path: the text config (`textConfigClass`:
    /// DeepseekOcr2TextConfig's `num_experts` for `n_routed_experts`) and an
    /// omni model's nested sub-configs (`nestedSections`). A section decoded
    /// from config.json reads an alias written alone as the key it stands
    /// for (`Checkpoint.configObject`), as transformers sets it; the top
    /// level's are read by `decodable`.
    /// - Returns: the aliases by section, and the alias each key of a section
    ///   the document writes only through one is written as, by dotted path
    ///   (`text_config.n_routed_experts` → `text_config.num_experts`), for messages.
    static func sectionAliases(_ document: JSONValue, modelType: String) -> (aliases: [String: [String: String]], writtenAs: [String: String]) {
        var classes = Dictionary(uniqueKeysWithValues: (nestedSections[modelType] ?? []).map { ($0, modelType + "." + $0) })
        let textKey = textConfigKey(document, modelType: modelType)
        if case .object(let text)? = document.member(textKey), let textClass = textConfigClass(of: modelType, text: text) {
            classes[textKey] = textClass
        }
        var writtenAs: [String: String] = [:]
        for (section, classKey) in classes {
            guard case .object(let members)? = document.member(path: section) else { continue }
            for (key, alias) in readingAliases(members, of: classKey).writtenAs { writtenAs[section + "." + key] = section + "." + alias }
        }
        return (classes.compactMapValues { transformers[$0]?.aliases }.filter { !$0.value.isEmpty }, writtenAs)
    }

    /// A value's JSON text as Python's json would read it back to the same
    /// value: null, flags, integers, floats (spelled with a point or an
    /// exponent, so they stay floats), strings (ExaoneConfig's
    /// `activation_function`) and lists of those (BailingHybridConfig's
    /// `swiglu_limits`); nil for the kinds no alias's key takes (the check
    /// above refuses those).
    private static func jsonText(_ value: JSONValue) -> String? {
        switch value {
        case .null: return "null"
        case .bool(let flag): return flag ? "true" : "false"
        case .integer(let number): return String(number)
        case .number(let number) where number.isFinite: return "\(number)"
        case .string(let text): return (try? JSONEncoder().encode(text)).flatMap { String(data: $0, encoding: .utf8) }
        case .array(let items):
            let texts = items.compactMap(jsonText)
            return texts.count == items.count ? "[" + texts.joined(separator: ", ") + "]" : nil
        default: return nil
        }
    }

    /// The same JSON value, of the same kind (48 and 48.0 differ, as Python
    /// builds an int from one and a float from the other).
    private static func same(_ a: JSONValue, _ b: JSONValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case (.bool(let x), .bool(let y)): return x == y
        case (.integer(let x), .integer(let y)): return x == y
        case (.number(let x), .number(let y)), (.bigInteger(let x), .bigInteger(let y)): return x == y
        case (.string(let x), .string(let y)): return x == y
        case (.array(let x), .array(let y)): return x.count == y.count && zip(x, y).allSatisfy { same($0, $1) }
        case (.object(let x), .object(let y)):
            return x.count == y.count && x.allSatisfy { member in y.contains { $0.key == member.key && same($0.value, member.value) } }
        default: return false
        }
    }

    /// Whether a value of `value`'s kind is one of `spec`'s: letters `n`
    /// null, `b` boolean, `i` integer, `f` float, `s` string, `o` object, and
    /// `[…]` a list whose items are of the bracketed kinds.
    static func accepts(_ spec: String, _ value: JSONValue) -> Bool {
        let scalars = spec.prefix { $0 != "[" }.filter { $0 != "o" } + (spec.hasSuffix("o") ? "o" : "")
        let items = spec.firstIndex(of: "[").map { start in spec[spec.index(after: start)...].prefix { $0 != "]" } }
        switch value {
        case .array(let elements):
            guard let items else { return false }
            return elements.allSatisfy { element in
                // "*": a list may hold lists (GPTNeoConfig's attention_types), checked where read.
                if case .array = element { return items.contains("*") }
                if case .object = element { return false }
                return items.contains(kind(of: element))
            }
        default:
            return scalars.contains(kind(of: value))
        }
    }

    /// The letter of a scalar's or object's kind, as Python's json module
    /// reads it: an integer literal beyond 64 bits is an int, 1e20 a float.
    private static func kind(of value: JSONValue) -> Character {
        switch value {
        case .null: return "n"
        case .bool: return "b"
        case .integer, .bigInteger: return "i"
        case .number: return "f"
        case .string: return "s"
        case .object: return "o"
        case .array: return "["
        }
    }

    /// A value as an error message describes it: `5 (an integer)`, `a list`.
    public static func spelled(_ value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool(let flag): return "\(flag) (a boolean)"
        case .integer(let integer): return "\(integer) (an integer)"
        case .number(let number): return "\(number) (a float)"
        case .bigInteger(let number): return "\(number) (an integer)"
        case .string(let text): return "\"\(text.count > 40 ? text.prefix(40) + "…" : text)\" (a string)"
        case .array: return "a list"
        case .object: return "an object"
        }
    }

    /// `spelled(value)`, for a list of which `spec` takes lists naming its
    /// first item of a kind the list may not hold (`a list whose item [1] is
    /// true (a boolean)`).
    static func spelled(_ value: JSONValue, against spec: String) -> String {
        guard case .array(let items) = value, let start = spec.firstIndex(of: "["),
              let (index, item) = items.enumerated().first(where: { !accepts(String(spec[start...]), .array([$0.element])) })
        else { return spelled(value) }
        return "a list whose item [\(index)] is \(spelled(item))"
    }

    private static func described(_ spec: String) -> String {
        let names: [Character: String] = [
            "n": "null", "b": "a boolean", "i": "an integer", "f": "a float (written with a decimal point or exponent)",
            "s": "a string", "o": "an object",
        ]
        let itemNames: [Character: String] = ["n": "nulls", "b": "booleans", "i": "integers", "f": "floats", "s": "strings"]
        var parts = spec.prefix { $0 != "[" }.compactMap { names[$0] }
        if let start = spec.firstIndex(of: "[") {
            let items = spec[spec.index(after: start)...].prefix { $0 != "]" }.compactMap { itemNames[$0] }
            parts.append(items.isEmpty ? "an empty list" : "a list of " + items.joined(separator: " or "))
            if spec.hasSuffix("o") { parts.append("an object") }
        }
        switch parts.count {
        case 0: return "no value"
        case 1: return parts[0]
        default: return parts.dropLast().joined(separator: ", ") + " or " + parts.last!
        }
    }
}

extension ConfigValueKinds {
    /// The defaults `decodable` adds for the keys a config of `modelType`
    /// omits (`omittedDefaults`), for a family that reads that class's keys
    /// from a section of config.json (a multimodal checkpoint's `text_config`).
    public static func omittedDefaultValues(of modelType: String) -> [String: ConfigDefault] {
        (omittedDefaults[modelType] ?? [:]).compactMapValues { text in
            if let integer = Int(text) { return .integer(integer) }
            return Double(text).map { .number($0) }
        }
    }
}
