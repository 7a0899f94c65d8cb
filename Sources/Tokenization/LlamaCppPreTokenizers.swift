import DroptraceSupport

/// The pre-tokenizers behind llama.cpp's `tokenizer.ggml.pre` names for
/// byte-level BPE vocabularies, each written as the `pre_tokenizer` (and
/// normalizer, `ignore_merges`) of the tokenizer.json the name stands for,
/// and read by the same code that reads tokenizer.json — so a GGUF
/// vocabulary tokenises as the `tokenizers` library does on that file.
///
/// Names and regexes follow llama.cpp's `llama_vocab::impl::load` and
/// `llm_tokenizer_bpe` (src/llama-vocab.cpp); where llama.cpp rewrote a
/// tokenizer.json regex for its own engine (`(?i:'s|…)` as `'[sS]|…`), the
/// original is used. Names whose splitting droptrace cannot express
/// (chameleon, kimi-k2, superbpe, afmoe: custom code in llama.cpp) are
/// not listed and so refused.
struct LlamaCppPreTokenizer: Sendable {
    /// A tokenizer.json `pre_tokenizer` object.
    let preTokenizerJSON: String
    var normalizesToNFC = false
    var ignoresMerges = false
    /// llama.cpp adds BOS by default (no `tokenizer.ggml.add_bos_token`)
    /// for these, as their tokenizer.json post-processors do.
    var addsBOSByDefault = false

    /// llama.cpp's choice when `tokenizer.ggml.pre` is missing or "default":
    /// LLAMA_VOCAB_PRE_TYPE_DEFAULT.
    static let defaultName = "default"

    static func named(_ name: String) -> LlamaCppPreTokenizer? {
        guard let family = families.first(where: { $0.names.contains(name) }) else { return nil }
        return family.preTokenizer
    }

    static var knownNames: [String] { families.flatMap(\.names).sorted() }

    /// The pre-tokenizer as droptrace runs it; `source` names the GGUF file
    /// in errors (a regex over its step budget).
    func read(source: String) throws -> PreTokenizer {
        let document = try JSONFields.parseDocument(Array(preTokenizerJSON.utf8), file: source, what: "pre-tokenizer")
        return try JSONFields(document, location: "tokenizer.ggml.pre", file: source).readPreTokenizer()
    }

    private static func splits(_ regexes: [String]) -> String {
        let steps = regexes.map { regex in
            #"{"type": "Split", "pattern": {"Regex": \#(jsonString(regex))}, "behavior": "Isolated", "invert": false}"#
        }
        return #"{"type": "Sequence", "pretokenizers": ["# + steps.joined(separator: ", ")
            + #", {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}"#
    }

    private static func jsonString(_ text: String) -> String {
        var output = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": output += "\\\""
            case "\\": output += "\\\\"
            case "\n": output += "\\n"
            case "\r": output += "\\r"
            case "\t": output += "\\t"
            default: output.unicodeScalars.append(scalar)
            }
        }
        return output + "\""
    }

    static let gpt2Words = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Words = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Words = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let bloomWords = #" ?[^(\s|.,!?…。，、।۔،)]+"#
    static let byteLevelWithRegex = #"{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}"#
    static let tekkenWords = #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let gpt4oWords = #"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let deepseekV3Words = ##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##
    static let deepseekLLMLetters = #"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\x{1F7D}ᾀ-ᾴᾶ-ᾼ\x{1FBE}ῂ-ῄῆ-ῌῐ-\x{1FD3}ῖ-\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\x{2126}ℨ\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+"#

    /// One entry per distinct pre-tokenizer; llama.cpp maps many names to each.
    private static let families: [(names: [String], preTokenizer: LlamaCppPreTokenizer)] = [
        // GPT-2's ByteLevel regex.
        (["gpt-2", "phi-2", "gigachat", "a.x-4.0", "mellum", "mpt", "olmo", "jais", "exaone4", "trillion",
          "granite-docling"],
         LlamaCppPreTokenizer(preTokenizerJSON: byteLevelWithRegex)),
        // Llama-3 (tiktoken cl100k-style), with ignore_merges as transformers converts it.
        (["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"],
         LlamaCppPreTokenizer(preTokenizerJSON: splits([llama3Words]), ignoresMerges: true, addsBOSByDefault: true)),
        // The same regex as pre-types of their own: llama.cpp neither ignores merges nor adds BOS by default.
        (["dbrx", "smaug-bpe", "glm4", "chatglm-bpe"], LlamaCppPreTokenizer(preTokenizerJSON: splits([llama3Words]))),
        // Qwen2's files normalise to NFC (llama.cpp skips that step).
        (["qwen2", "deepseek-r1-qwen", "kormo"],
         LlamaCppPreTokenizer(preTokenizerJSON: splits([qwen2Words]), normalizesToNFC: true)),
        (["stablelm2", "megrez", "hunyuan", "grok-2"], LlamaCppPreTokenizer(preTokenizerJSON: splits([qwen2Words]))),
        // StarCoder / SmolLM: every digit alone, then GPT-2's ByteLevel regex.
        (["starcoder", "refact", "smollm", "codeshell", "exaone", "minerva-7b"],
         LlamaCppPreTokenizer(preTokenizerJSON: #"{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, "# + byteLevelWithRegex + "]}")),
        (["command-r"],
         LlamaCppPreTokenizer(preTokenizerJSON: #"{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, "# + byteLevelWithRegex + "]}", normalizesToNFC: true)),
        (["deepseek-llm"],
         LlamaCppPreTokenizer(preTokenizerJSON: splits([
             "[\r\n]", deepseekLLMLetters, #"\s?[!-/:-~！-／：-～‘-‟　-。]+"#, #"\s+$"#, "[一-龥ࠀ-一가-퟿]+", #"\p{N}+"#]))),
        (["deepseek-coder"],
         LlamaCppPreTokenizer(preTokenizerJSON: splits(["[\r\n]", #"\s?\p{L}+"#, #"\s?\p{P}+"#, "[一-龥ࠀ-一가-퟿]+", #"\p{N}"#]))),
        (["deepseek-v3", "hunyuan-dense"],
         LlamaCppPreTokenizer(preTokenizerJSON: splits([#"\p{N}{1,3}"#, "[一-龥぀-ゟ゠-ヿ]+", deepseekV3Words]))),
        // Falcon: Punctuation (contiguous; ASCII punctuation and \p{P}),
        // ByteLevel with GPT-2's regex, Digits, then runs of three digits.
        (["falcon"],
         LlamaCppPreTokenizer(preTokenizerJSON: #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "[\\p{P}\\$\\+<=>\\^~\\|`]+"}, "behavior": "Isolated", "invert": false}, "# + byteLevelWithRegex + #", {"type": "Digits", "individual_digits": false}, {"type": "Split", "pattern": {"Regex": "[0-9][0-9][0-9]"}, "behavior": "Isolated", "invert": false}]}"#)),
        // llama.cpp's own default: its regexes applied one after another.
        ([defaultName],
         LlamaCppPreTokenizer(preTokenizerJSON: splits([
             #"[\p{P}\$\+<=>\^~\|]+"#, #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"#, #"\p{N}+"#,
             "[0-9][0-9][0-9]"]))),
        (["bloom", "gpt3-finnish", "poro-chat"], LlamaCppPreTokenizer(preTokenizerJSON: splits([bloomWords]))),
        (["viking"], LlamaCppPreTokenizer(preTokenizerJSON: splits([bloomWords, #"\p{N}"#]))),
        (["tekken"],
         LlamaCppPreTokenizer(preTokenizerJSON: splits([tekkenWords]), ignoresMerges: true, addsBOSByDefault: true)),
        (["gpt-4o", "llama4", "minimax-m2"], LlamaCppPreTokenizer(preTokenizerJSON: splits([gpt4oWords]))),
        (["seed-coder"],
         LlamaCppPreTokenizer(preTokenizerJSON: splits([
             #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+"#]))),
        (["bailingmoe", "bailingmoe2", "llada-moe"],
         LlamaCppPreTokenizer(preTokenizerJSON: splits([
             #"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"#]))),
    ]
}
