import DroptraceSupport
import Foundation

/// A Hugging Face `tokenizer.json` for BPE models, byte-level (GPT-2,
/// GPT-NeoX/Pythia, Llama-3, Qwen2, SmolLM) or SentencePiece-style (Llama-2,
/// Mistral, TinyLlama: "▁" for spaces, byte fallback), and for Unigram
/// models converted from SentencePiece (XGLM: a `Precompiled` normalizer,
/// scored pieces), producing the ids the Python `tokenizers` package
/// produces for `tokenizer.encode(text).ids`.
/// A GGUF file's vocabulary gives the same pipeline
/// (TokenizerFromVocabulary.swift).
///
/// The pipeline is the library's: added tokens are cut out of the raw text,
/// the rest is normalised, added tokens marked `normalized` are cut out of
/// that, pre-tokenizers split it into words, the model encodes each word, and the
/// post-processor adds special tokens. `truncation` and `padding` settings
/// in the file are ignored (calibration needs the whole text); BPE
/// `dropout` other than 0 is refused (encoding stays deterministic).
public final class Tokenizer: Sendable {
    let normalizer: TextNormalizer?
    let preTokenizer: PreTokenizer?
    let model: SubwordModel
    let rawTextAddedTokens: AddedTokenMatcher
    let normalizedTextAddedTokens: AddedTokenMatcher
    let postProcessor: PostProcessor?
    let addedTokenContents: [Int: String]
    /// Whether an added token strips the whitespace before it (`lstrip`),
    /// however long the run: the text before a cut then encodes otherwise.
    let addedTokenReachesBack: Bool
    let decodesByteLevel: Bool
    /// The `decoder` section when it is SentencePiece-style (Replace,
    /// ByteFallback, Fuse, Strip, Metaspace).
    let tokenDecoder: TokenDecoder?

    /// Largest id in the vocabulary or the added tokens, plus one.
    public let vocabularySize: Int
    /// The tokenizer.json or GGUF file, for errors.
    let source: String

    public convenience init(contentsOf url: URL) throws {
        let file = url.path
        guard let document = try Self.parseJSON(at: url) as? JSONObject else {
            throw DroptraceError("is not a JSON object; is this a tokenizer.json?", path: file)
        }
        // Top-level fields are named bare in messages ("model.vocab").
        let top = JSONFields(document, location: "", file: file, repeatedKeys: .document)
        // The library's deserializer refuses keys it does not know.
        let known: Set = ["version", "truncation", "padding", "added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder", "model"]
        if let unknown = document.members.map(\.key).first(where: { !known.contains($0) }) {
            throw DroptraceError("has an unknown top-level key \(unknown.debugDescription) (the tokenizers library refuses it)", path: file)
        }
        if let version = document["version"], version as? String != "1.0" {
            throw DroptraceError("version should be \"1.0\", the only one the tokenizers library reads", path: file)
        }

        for key in ["normalizer", "pre_tokenizer", "decoder", "post_processor"] { try top.checkSequenceNesting(key) }
        try top.checkTruncation()
        try top.checkPadding()
        try top.object("decoder")?.checkDecoder()

        guard let modelFields = try top.object("model") else {
            throw DroptraceError("has no \"model\" section; is this a tokenizer.json?", path: file)
        }
        let model = try modelFields.readModel()
        let decoderFields = try top.object("decoder")
        try decoderFields?.checkByteLevelDecoders()
        let decodesByteLevel = [decoderFields, try top.object("pre_tokenizer"), try top.object("normalizer")]
            .contains { $0?.mentionsByteLevel() ?? false }
        try self.init(
            model: model,
            normalizer: try top.object("normalizer")?.readNormalizer(
                rewrittenLater: try top.object("pre_tokenizer")?.rewritesCharacters() ?? false),
            preTokenizer: try top.object("pre_tokenizer")?.readPreTokenizer(),
            postProcessor: try top.object("post_processor")?.readPostProcessor(),
            addedTokens: try (document["added_tokens"] == nil ? [] : top.requiredObjects("added_tokens"))
                .readAddedTokens(model: model),
            decodesByteLevel: decodesByteLevel,
            tokenDecoder: decodesByteLevel ? nil : try decoderFields?.readTokenDecoder(), source: file)
    }

    /// The pipeline from its parts, however they were described.
    init(
        model: SubwordModel, normalizer: TextNormalizer?, preTokenizer: PreTokenizer?, postProcessor: PostProcessor?,
        addedTokens: [AddedToken], decodesByteLevel: Bool, tokenDecoder: TokenDecoder?, source: String
    ) throws {
        self.model = model
        self.source = source
        self.normalizer = normalizer
        self.preTokenizer = preTokenizer
        self.postProcessor = postProcessor
        rawTextAddedTokens = AddedTokenMatcher(
            addedTokens.filter { !$0.normalized }.map { ($0.content, $0) })
        // Tokens marked `normalized` are searched for in normalised text, so
        // their content is normalised the same way first.
        let normalizedPatterns = try addedTokens.filter { $0.normalized }.map { token in
                let content = try normalizer?.normalize(token.content) ?? token.content
                // The library then matches empty text everywhere, cutting every character apart (or panics).
                guard !content.isEmpty else {
                    throw DroptraceError(
                        "added token \(String(reflecting: token.content)) (id \(token.id)) is matched after normalization, "
                            + "which leaves nothing of its content "
                            + "(the tokenizers library then cuts the text at every character, or fails)", path: source)
                }
                return (pattern: content, token: token)
            }
        // Two tokens whose texts differ but normalise alike ("é" and "e" + U+0301 under NFC): the
        // library keeps them in a hash map and matches either, at random from one process to the next.
        var firstByPattern: [[UInt8]: AddedToken] = [:]
        for (pattern, token) in normalizedPatterns {
            let key = Array(pattern.utf8)
            if let first = firstByPattern[key], first.id != token.id {
                throw DroptraceError(
                    "added tokens \(String(reflecting: first.content)) (id \(first.id)) and \(String(reflecting: token.content)) "
                        + "(id \(token.id)) are both matched after normalization and normalize to the same text; the "
                        + "tokenizers library then gives either id, at random from run to run", path: source)
            }
            firstByPattern[key] = firstByPattern[key] ?? token
        }
        normalizedTextAddedTokens = AddedTokenMatcher(normalizedPatterns)
        addedTokenContents = Dictionary(addedTokens.map { ($0.id, $0.content) }, uniquingKeysWith: { first, _ in first })
        addedTokenReachesBack = addedTokens.contains { $0.leftStrip }
        self.decodesByteLevel = decodesByteLevel
        self.tokenDecoder = tokenDecoder
        vocabularySize = max(model.largestId, addedTokens.map(\.id).max() ?? -1) + 1
    }

    /// The largest tokenizer.json read: real ones are at most tens of
    /// megabytes (Gemma 3's 262k-token vocabulary: 33 MB); this bounds a hostile one.
    static let sizeLimit = 1 << 28

    private static func parseJSON(at url: URL) throws -> Any {
        guard FileManager.default.fileExists(atPath: url.path) else { throw DroptraceError("no such file", path: url.path) }
        let data = try RegularFile.contents(path: url.path, limit: sizeLimit)
        return try JSONFields.parseDocument([UInt8](data), file: url.path, what: "tokenizer file")
    }

    /// Token ids for `text`; with `addSpecialTokens` the post-processor's
    /// special tokens (e.g. Llama-3's <|begin_of_text|>) are included.
    ///
    /// - Throws: `DroptraceError` naming the tokenizer file and the pattern
    ///   when one of its regexes goes over its step budget on `text`
    ///   (catastrophic backtracking), or when `text` needs an `unk_token`
    ///   the vocabulary lacks (as the library fails).
    public func encode(_ text: String, addSpecialTokens: Bool = true) throws -> [Int] {
        try encode(utf8: Array(text.utf8), addSpecialTokens: addSpecialTokens)
    }

    /// `encode` of text given as its UTF-8 (which must be valid), without
    /// the copies a `String` would take.
    func encode(utf8 bytes: [UInt8], addSpecialTokens: Bool = true) throws -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(bytes.count / 3 + 8)
        var workspace = EncodingWorkspace()
        try ICURegexSplitPattern.sharingOneBudget(textBytes: bytes.count) {
            try rawTextAddedTokens.split(bytes[...], source: source) { segment in
                switch segment {
                case .token(let id): ids.append(id)
                case .text(let raw): try encodeUnmatched(raw, workspace: &workspace, into: &ids)
                }
            }
        }
        if ids.contains(Int(SubwordModel.missingUnknown)) {
            throw DroptraceError(model.missingUnknownMessage, path: source)
        }
        return postProcessor?.process(ids, addSpecialTokens: addSpecialTokens) ?? ids
    }

    /// Text between raw-text added tokens: normalise, cut out normalised
    /// added tokens, split into words, encode each word.
    private func encodeUnmatched(
        _ raw: ArraySlice<UInt8>, workspace: inout EncodingWorkspace, into ids: inout [Int]
    ) throws {
        var text = raw
        // Metaspace's "first" scheme marks the input's start, unless
        // normalising deleted it.
        var rawStartsInput = raw.startIndex == 0
        if let normalizer {
            let normalized = try normalizer.normalizeTrackingStart(utf8: raw)
            text = normalized.text[...]
            rawStartsInput = rawStartsInput && !normalized.deletedStart
        }
        let textStart = text.startIndex
        try normalizedTextAddedTokens.split(text, source: source) { segment in
            switch segment {
            case .token(let id):
                ids.append(id)
            case .text(let piece):
                let textPiece = TextPiece(piece, startsInput: rawStartsInput && piece.startIndex == textStart)
                if let preTokenizer {
                    try preTokenizer.split(textPiece) { word in
                        model.encode(word, workspace: &workspace, into: &ids)
                    }
                } else {
                    model.encode(textPiece, workspace: &workspace, into: &ids)
                }
            }
        }
    }

    /// Whether the ids of a text's start can be read from a prefix of it:
    /// false when a regex of the normalizer or pre-tokenizer may reach
    /// arbitrarily far ahead, an added token back (`lstrip` over a
    /// whitespace run the cut falls in), or a token is longer than
    /// `longestTokenForPrefixes` bytes, or a merge may join a line end with
    /// other text, so only the whole text gives them.
    public var encodesPrefixesAlike: Bool {
        !addedTokenReachesBack && !(normalizer?.looksArbitrarilyFarAhead ?? false)
            && !(preTokenizer?.looksArbitrarilyFarAhead ?? false)
            && model.longestTokenBytes <= Self.longestTokenForPrefixes
            && lineEndsStopMerges
    }

    /// Whether merges never cross a line end of the text: then a prefix cut
    /// at a line end gives the whole text's ids up to its last words even
    /// where the whole text is one word (no pre-tokenizer, or Metaspace
    /// without splitting, as Llama-2 and Mistral files have: their "\n"
    /// falls back to the byte `<0x0A>`, which no merge takes). A merge that
    /// joins a line end with its neighbours lets merges chain back from
    /// the text's end to its start, however far.
    private var lineEndsStopMerges: Bool {
        guard !model.joinsAcrossLineEnds else { return false }
        // The model sees line ends as the normalizer leaves them.
        return normalizer.map { (try? $0.normalize("a\na"))?.hasSuffix("a\na") == true } ?? true
    }

    /// Merges reach as far back as the tokens they build: without a
    /// pre-tokenizer (SentencePiece-style files) the whole text is one word,
    /// and a token kilobytes long completed far into the text changes its
    /// first ids beyond what comparing two prefixes shows. Real vocabularies'
    /// tokens are at most a few hundred bytes.
    static let longestTokenForPrefixes = 1024

    /// The library's `token_to_id`: an added token's id (the lowest when
    /// several share the content), else the vocabulary's; nil for neither.
    public func tokenID(of content: String) -> Int? {
        let added = addedTokenContents.filter { $0.value.unicodeScalars.elementsEqual(content.unicodeScalars) }
        if let id = added.keys.min() { return id }
        return model.tokenId(TokenBytes(content)).map(Int.init)
    }

    /// The file the tokenizer was read from (tokenizer.json, or a GGUF file).
    public var sourcePath: String { source }

    /// The token text of `id` (an added token's content, else the
    /// vocabulary's), nil for an id neither holds.
    public func tokenText(_ id: Int) -> String? { addedTokenContents[id] ?? model.tokenText(id) }

    /// Best-effort text for ids, for reports and debugging: special tokens
    /// are kept, unknown ids show as U+FFFD.
    public func decode(_ ids: [Int]) -> String {
        if let tokenDecoder {
            let tokens = ids.map { tokenText($0) ?? "\u{FFFD}" }
            return tokenDecoder.decode(tokens).joined()
        }
        var bytes: [UInt8] = []
        for (position, id) in ids.enumerated() {
            guard let token = tokenText(id) else {
                bytes.append(contentsOf: Array("\u{FFFD}".utf8))
                continue
            }
            if decodesByteLevel, let raw = ByteLevelAlphabet.decode(token) {
                bytes.append(contentsOf: raw)
            } else {
                bytes.append(contentsOf: readableSubword(token, isFirst: position == 0))
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Undoes "##"-style prefixes and "</w>"-style suffixes.
    private func readableSubword(_ token: String, isFirst: Bool) -> [UInt8] {
        var text = Array(token.utf8)
        if let prefix = model.continuingSubwordPrefix, !isFirst, text.starts(with: prefix) {
            text.removeFirst(prefix.count)
        }
        if let suffix = model.endOfWordSuffix, text.count >= suffix.count, Array(text.suffix(suffix.count)) == suffix {
            text.removeLast(suffix.count)
            text.append(0x20)
        }
        return text
    }
}
