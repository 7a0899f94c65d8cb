import DroptraceSupport
import Foundation

/// A checkpoint's BOS and EOS tokens as transformers' `AutoTokenizer`
/// reports them (`bos_token`, `eos_token`; transformers 5,
/// `PreTrainedTokenizerBase.from_pretrained`): tokenizer_config.json's
/// values; special_tokens_map.json's over them when tokenizer_config.json has
/// no `added_tokens_decoder` (the legacy file is read only then); for a key
/// neither gives, the default of the tokenizer class `AutoTokenizer` picks
/// (`tokenizerClass`). tokenizer.json itself names neither.
///
/// lm-evaluation-harness conditions an empty context on BOS, else EOS, and
/// encodes text that starts with that token's text without special tokens.
public struct SpecialTokenSettings: Sendable, Equatable {
    public enum Token: Sendable, Equatable {
        /// None given (null, or a class without a default).
        case absent
        /// The token's content.
        case content(String)
        /// Not given, and the tokenizer class's default is unknown here.
        case defaultOf(tokenizerClass: String)
    }

    public var bos: Token
    public var eos: Token
    /// Where the values come from, for messages.
    public var source: String

    /// The harness's `prefix_token_id`: BOS when the tokenizer has one, else EOS.
    public var prefix: Token {
        if case .absent = bos { return eos }
        return bos
    }

    /// Reads the settings beside `tokenizer` (loaded from the directory's tokenizer.json).
    /// - Parameter modelType: config.json's `model_type`, for the tokenizer class transformers picks.
    /// - Throws: `DroptraceError` naming the file when a file is not a JSON
    ///   object, a token is neither a string, an AddedToken object nor null,
    ///   or `added_tokens_decoder` is not an object of objects.
    public init(directory: URL, modelType: String, tokenizer: Tokenizer) throws {
        let configPath = directory.appendingPathComponent("tokenizer_config.json").path
        let mapPath = directory.appendingPathComponent("special_tokens_map.json").path
        let config = try Self.object(at: configPath)
        var given: [String: (value: JSONValue, path: String)] = [:]
        for key in ["bos_token", "eos_token"] {
            if let value = config?.member(key) { given[key] = (value, configPath) }
        }
        let addedTokensDecoder = config?.member("added_tokens_decoder")
        if let addedTokensDecoder { try Self.checkAddedTokensDecoder(addedTokensDecoder, path: configPath) }
        if addedTokensDecoder == nil, let map = try Self.object(at: mapPath) {
            for key in ["bos_token", "eos_token"] {
                if let value = map.member(key) { given[key] = (value, mapPath) }
            }
        }
        var declared: String?
        if case .string(let name)? = config?.member("tokenizer_class") { declared = name }
        let tokenizerClass = Self.tokenizerClass(
            declared: declared, modelType: modelType, byteLevel: tokenizer.decodesByteLevel)
        let defaults = Self.classDefaults[tokenizerClass]
        func token(_ key: String, classDefault: String??) throws -> Token {
            guard let (value, path) = given[key] else {
                guard let classDefault else { return .defaultOf(tokenizerClass: tokenizerClass) }
                return classDefault.map(Token.content) ?? .absent
            }
            switch value {
            case .null: return .absent
            case .string(let content): return .content(content)
            case .object:
                if case .string(let content)? = value.member("content") { return .content(content) }
                throw DroptraceError("\(key) is an object without a \"content\" string", path: path)
            default:
                throw DroptraceError("\(key) should be a string, an AddedToken object or null", path: path)
            }
        }
        let sources = [configPath, mapPath].filter { FileManager.default.fileExists(atPath: $0) }
        bos = try token("bos_token", classDefault: defaults.map(\.bos))
        eos = try token("eos_token", classDefault: defaults.map(\.eos))
        source = sources.isEmpty ? directory.path : sources.joined(separator: ", ")
    }

    /// The harness's prefix token in `tokenizer`'s ids.
    public func prefixToken(in tokenizer: Tokenizer) -> PrefixToken {
        switch prefix {
        case .absent:
            return .none(reason: "\(source) names no bos_token or eos_token")
        case .defaultOf(let tokenizerClass):
            return .unknown(text: nil, reason: "\(source) gives no bos_token or eos_token, and the defaults of "
                + "tokenizer_class \(tokenizerClass) are not known to droptrace; write them into tokenizer_config.json")
        case .content(let content):
            let key = bos == .absent ? "eos_token" : "bos_token"
            guard let id = tokenizer.tokenID(of: content) else {
                return .unknown(text: content, reason: "\(key) \(content.debugDescription) (\(source)) is not a token of "
                    + "tokenizer.json; transformers would add it as a new token")
            }
            return .token(id: id, text: tokenizer.decode([id]))
        }
    }

    /// transformers reads `added_tokens_decoder` with `.items()` and each
    /// entry as a dict or AddedToken: null (taken here for present), a list
    /// or a string stops AutoTokenizer, and lm-evaluation-harness with it.
    /// - Throws: `DroptraceError` naming the file and the field.
    private static func checkAddedTokensDecoder(_ decoder: JSONValue, path: String) throws {
        guard case .object(let entries) = decoder else {
            throw DroptraceError(
                "added_tokens_decoder should be an object of added tokens (transformers' AutoTokenizer fails on \(kind(decoder)))",
                path: path)
        }
        for (key, value) in entries {
            guard case .object = value else {
                throw DroptraceError(
                    "added_tokens_decoder entry \(key.debugDescription) should be an object "
                        + "(transformers' AutoTokenizer fails on \(kind(value)))", path: path)
            }
        }
    }

    /// A JSON value's kind, for messages.
    private static func kind(_ value: JSONValue) -> String {
        switch value {
        case .null: return "null"
        case .bool: return "true or false"
        case .integer, .number, .bigInteger: return "a number"
        case .string: return "a string"
        case .array: return "a list"
        case .object: return "an object"
        }
    }

    private static func object(at path: String) throws -> JSONValue? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        let data = try RegularFile.contents(path: path, limit: Tokenizer.sizeLimit)
        let document: JSONValue
        do {
            document = try JSONValue.parse([UInt8](data))
        } catch {
            throw DroptraceError("is not valid JSON (byte \(error.offset): \(error.reason))", path: path)
        }
        guard case .object = document else { throw DroptraceError("should be a JSON object", path: path) }
        return document
    }

    /// The class `AutoTokenizer.from_pretrained` instantiates (transformers 5,
    /// tokenization_auto.py), "Fast" names read as their base classes. With
    /// no declared `tokenizer_class`, the model_type's registered class
    /// (`autoTokenizerClass`, else the generic backend). A declared
    /// LlamaTokenizer over a byte-level tokenizer.json loads as the generic
    /// backend, unless the model_type's Hub class is known incorrect
    /// (`modelsWithIncorrectHubTokenizerClass`). A declared class other than
    /// the registered one: where the registered class is a specialised one,
    /// that class for the model types whose Hub class is known incorrect and
    /// the declared one for the others; where it is the generic backend, the
    /// generic backend. Otherwise the declared class.
    static func tokenizerClass(declared: String?, modelType: String, byteLevel: Bool) -> String {
        let backend = "TokenizersBackend"
        let registered = autoTokenizerClass[modelType]
        guard let declared else { return registered ?? backend }
        let base = declared.hasSuffix("Fast") ? String(declared.dropLast(4)) : declared
        let hubClassIncorrect = modelsWithIncorrectHubTokenizerClass.contains(modelType)
        if base == "LlamaTokenizer", byteLevel, !hubClassIncorrect { return backend }
        if let registered, registered != base {
            let generic: Set<String> = [backend, "PythonBackend", "PreTrainedTokenizerFast", "MistralCommonBackend"]
            guard !generic.contains(registered) else { return backend }
            let chosen = hubClassIncorrect ? registered : base
            return ["PythonBackend", "PreTrainedTokenizer"].contains(chosen) ? backend : chosen
        }
        return base == "PythonBackend" ? backend : base
    }

    /// The `bos_token` and `eos_token` defaults of tokenizer classes' `__init__` (transformers 5).
    private static let classDefaults: [String: (bos: String?, eos: String?)] = [
        "TokenizersBackend": (nil, nil), "PreTrainedTokenizer": (nil, nil), "BloomTokenizer": (nil, nil),
        "LlamaTokenizer": ("<s>", "</s>"), "CodeLlamaTokenizer": ("<s>", "</s>"),
        "GPT2Tokenizer": ("<|endoftext|>", "<|endoftext|>"), "GPTNeoXTokenizer": ("<|endoftext|>", "<|endoftext|>"),
        "Qwen2Tokenizer": (nil, "<|endoftext|>"), "Qwen3_5Tokenizer": (nil, "<|endoftext|>"), "GemmaTokenizer": ("<bos>", "<eos>"),
        "CohereTokenizer": ("<BOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"), "ErgoTokenizer": ("<bos>", "<ctrl100>"),
    ]
}

/// lm-evaluation-harness's `prefix_token_id` (HFLM): the token an empty
/// context is conditioned on, whose text also marks prompts that are
/// encoded without special tokens (`tok_encode`'s `has_bos_prefix`).
public enum PrefixToken: Sendable, Equatable {
    case token(id: Int, text: String)
    /// The tokenizer has no BOS or EOS: no prompt starts with its text, and
    /// an empty context has nothing to be conditioned on.
    case none(reason: String)
    /// A token droptrace cannot place: prompts that may start with its text
    /// (any, when the text is unknown) and empty contexts are refused.
    case unknown(text: String?, reason: String)
}
