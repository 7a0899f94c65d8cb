import DroptraceSupport

/// Reading the normalizer, pre_tokenizer and post_processor sections.
/// Anything droptrace cannot reproduce exactly is refused by name, so a
/// tokenizer is never silently run differently from the Python library.
extension JSONFields {
    /// The `type` tag, the last when given twice: the library dispatches
    /// on it without refusing a repeat (TemplateProcessing, BertProcessing
    /// and RobertaProcessing read it as serde's struct tag); the steps whose
    /// readers do refuse one call `refuseRepeated("type")`.
    func typeName() throws -> String {
        let tag = JSONFields(values, location: location, file: file, repeatedKeys: .lastWins)
        guard let type = try tag.string("type") else { throw failure("has no \"type\"") }
        return type
    }

    func unsupported(_ kind: String, _ type: String, known: String) -> DroptraceError {
        failure("\(kind) type \(quoted(type)) is not supported (droptrace handles \(known))")
    }

    /// - Parameter rewrittenLater: whether a step after this one (a later
    ///   normalizer, or the pre-tokenizer) rewrites text character by
    ///   character (`rewritesCharacters`), which a Replace needs to know.
    func readNormalizer(rewrittenLater: Bool = false) throws -> TextNormalizer {
        let type = try typeName()
        switch type {
        case "NFC", "NFD", "NFKC", "NFKD":
            return UnicodeFormNormalizer(form: .init(rawValue: type)!)
        case "Lowercase":
            return LowercaseNormalizer()
        case "Sequence":
            let items = try requiredObjects("normalizers")
            let steps = try items.indices.map { index in
                try items[index].readNormalizer(
                    rewrittenLater: rewrittenLater || items[(index + 1)...].contains { $0.rewritesCharacters() })
            }
            return SequenceNormalizer(steps: steps, source: file)
        case "Prepend":
            // The library's Prepend of "" corrupts its alignments, and a
            // ByteLevel step after it panics.
            let prefix = try requiredString("prepend")
            guard !prefix.isEmpty else { throw failure("Prepend of an empty string (the tokenizers library fails on it)") }
            return PrependNormalizer(prefix: prefix)
        case "Replace":
            return ReplaceNormalizer(
                pattern: try readSplitPattern(), content: try requiredString("content"),
                emptyMatchAtStartFails: rewrittenLater, source: file)
        case "Strip":
            return StripNormalizer(left: try requiredBool("strip_left"), right: try requiredBool("strip_right"))
        case "StripAccents":
            return StripAccentsNormalizer()
        case "ByteLevel":
            return ByteLevelNormalizer()
        case "Precompiled":
            return try PrecompiledNormalizer(
                base64: try requiredString("precompiled_charsmap"), location: location, source: file)
        default:
            throw unsupported(
                "normalizer", type,
                known: "NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, Prepend, ByteLevel, Precompiled and Sequence")
        }
    }

    func readPreTokenizer() throws -> PreTokenizer {
        let type = try typeName()
        switch type {
        case "ByteLevel":
            let options = try readByteLevelOptions()
            return ByteLevelPreTokenizer(addPrefixSpace: options.addPrefixSpace, useRegex: options.useRegex)
        case "Split":
            return PatternPreTokenizer(pattern: try readSplitPattern(), behavior: try readSplitBehavior(),
                                       invert: try requiredBool("invert"))
        case "Digits":
            return PatternPreTokenizer.digits(individually: try requiredBool("individual_digits"))
        case "Whitespace":
            // The library's `\w+|[^\w\s]+`, the matches kept: words, and runs of other non-space
            // characters. Its matches end within a run of one kind (`boundedMatches`). It runs in Rust's
            // `regex` crate, not Oniguruma: its \w (UTS #18: Alphabetic, marks, Nd, Pc, Join_Control)
            // holds ZWNJ and ZWJ and not the Latin-1 No characters ² ³ ¹ ¼ ½ ¾ that Oniguruma's
            // Latin-1 table counts as word characters; every other character is classed alike.
            let word = #"[\w\x{200C}\x{200D}&&[^\x{B2}\x{B3}\x{B9}\x{BC}-\x{BE}]]"#
            let other = #"[[^\w\s\x{200C}\x{200D}]\x{B2}\x{B3}\x{B9}\x{BC}-\x{BE}]"#
            return PatternPreTokenizer(
                pattern: try ICURegexSplitPattern(pattern: "\(word)+|\(other)+", source: file, boundedMatches: true),
                behavior: .removed, invert: true)
        case "WhitespaceSplit":
            return PatternPreTokenizer.whitespaceSplit
        case "Punctuation":
            return PatternPreTokenizer.punctuation(try readSplitBehavior(whenAbsent: .isolated))
        case "BertPreTokenizer":
            return PatternPreTokenizer.bert
        case "CharDelimiterSplit":
            let delimiter = try requiredString("delimiter")
            guard delimiter.unicodeScalars.count == 1, let scalar = delimiter.unicodeScalars.first else {
                throw failure("\"delimiter\" should be one character")
            }
            return PatternPreTokenizer.delimiter(scalar)
        case "Sequence":
            // Nested sequences run as one: each step is a level of recursion per piece.
            let steps = try requiredObjects("pretokenizers").flatMap { object -> [PreTokenizer] in
                let step = try object.readPreTokenizer()
                return (step as? SequencePreTokenizer)?.steps ?? [step]
            }
            guard steps.count <= SequencePreTokenizer.maximumSteps else {
                throw failure("has \(steps.count) pre-tokenizer steps; droptrace runs at most \(SequencePreTokenizer.maximumSteps)")
            }
            return SequencePreTokenizer(steps: steps, source: file)
        case "Metaspace":
            let (replacement, scheme, split) = try readMetaspaceOptions()
            return MetaspacePreTokenizer(replacement: replacement, prependScheme: scheme, split: split)
        default:
            throw unsupported("pre-tokenizer", type, known: "ByteLevel, Metaspace, Split, Digits, Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer, CharDelimiterSplit and Sequence")
        }
    }

    /// `"behavior"`: required unless `fallback` is given for when it is
    /// absent; null is an error to the library either way.
    func readSplitBehavior(whenAbsent fallback: SplitDelimiterBehavior? = nil) throws -> SplitDelimiterBehavior {
        if let fallback, try value("behavior") == nil { return fallback }
        let name = try requiredString("behavior")
        guard let behavior = SplitDelimiterBehavior(rawValue: name) else {
            throw failure("unknown split behavior \(quoted(name))")
        }
        return behavior
    }

    /// `"pattern": {"Regex": "..."}` or `{"String": "..."}`. The library
    /// runs a literal as an escaped regex, so an empty one is the empty
    /// regex: an empty match at every character boundary.
    func readSplitPattern() throws -> SplitPattern {
        guard let pattern = try object("pattern") else { throw failure("has no \"pattern\"") }
        // One key, however often given: the library reads this through serde_json's Value, where the last repeat wins.
        guard Set(pattern.values.members.map { Array($0.key.utf8) }).count == 1 else {
            throw pattern.failure("should hold one of \"String\" or \"Regex\"")
        }
        if let literal = try pattern.string("String"), !literal.isEmpty {
            return LiteralSplitPattern(needle: Array(literal.utf8))
        }
        if let regex = try pattern.string("Regex") ?? pattern.string("String") {
            if let shape = WordSplitScanner.knownPatterns[regex] { return WordSplitScanner(shape: shape) }
            do throws(DroptraceError) {
                return try ICURegexSplitPattern(pattern: regex, source: file)
            } catch {
                throw pattern.failure(error.message)
            }
        }
        throw pattern.failure("should hold \"String\" or \"Regex\"")
    }

    func readPostProcessor() throws -> PostProcessor {
        let type = try typeName()
        switch type {
        case "ByteLevel":
            try refuseRepeated("type")  // its reader has `type` as a field
            _ = try readByteLevelOptions()  // it only trims offsets, but the library requires its fields
            return IdentityPostProcessor()
        case "TemplateProcessing":
            return try readTemplate()
        case "RobertaProcessing", "BertProcessing":
            return SurroundingPostProcessor(first: try readNamedToken("cls"), last: try readNamedToken("sep"))
        case "Sequence":
            try refuseRepeated("type")  // its reader has `type` as a field
            let steps = try requiredObjects("processors").map { try $0.readPostProcessor() }
            // The library hands the step after a TemplateProcessing the
            // template's pieces as separate sequences (a pair, or more), which
            // droptrace does not reproduce; no published tokenizer does this.
            if let template = steps.firstIndex(where: { $0 is TemplatePostProcessor }),
               steps[(template + 1)...].contains(where: { $0 is TemplatePostProcessor || $0 is SurroundingPostProcessor }) {
                throw failure("a TemplateProcessing followed by another step that adds tokens is not supported")
            }
            return SequencePostProcessor(steps: steps)
        default:
            throw unsupported("post-processor", type, known: "TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing and Sequence")
        }
    }

    /// ByteLevel's options, as the pre-tokenizer and the post-processor share
    /// them; `trim_offsets` concerns offsets only but is required too.
    private func readByteLevelOptions() throws -> (addPrefixSpace: Bool, useRegex: Bool) {
        let addPrefixSpace = try requiredBool("add_prefix_space")
        _ = try requiredBool("trim_offsets")
        return (addPrefixSpace, try nonNullBool("use_regex", default: true))
    }

    /// TemplateProcessing's `single` template, its special-token names
    /// resolved through `special_tokens` (name → ids). The `pair` template
    /// is not used, but the library requires it, and each piece's `type_id`
    /// and each special token's `id` and `tokens`.
    private func readTemplate() throws -> PostProcessor {
        // Keyed by bytes, as the library keys them: Swift's String equality would
        // take canonically equivalent names ("é" and "e\u{301}") for one.
        var specialIds: [[UInt8]: [Int]] = [:]
        guard let specials = try entries("special_tokens") else { throw failure("has no \"special_tokens\"") }
        for (name, entry) in specials {
            guard let ids = try entry.array("ids") else {
                throw entry.failure("has no \"ids\"")
            }
            guard try entry.string("id") != nil, let tokens = try entry.array("tokens") else {
                throw entry.failure("needs \"id\" and \"tokens\"")
            }
            // The library deserialises them as strings, and refuses the file otherwise.
            guard tokens.allSatisfy({ $0 is String }) else { throw entry.failure("\"tokens\" should be a list of strings") }
            specialIds[Array(name.utf8)] = try ids.map { value in
                // Ids are u32 to the library and below 2^31 everywhere in droptrace, as vocabulary ids are
                // (a larger one was refused later as the calibration's fault, naming the calibration file).
                guard let id = JSONFields.integer(value), id >= 0, id <= Int(Int32.max) else {
                    throw entry.failure("has an invalid id")
                }
                return id
            }
        }
        guard let single = try array("single") else { throw failure("has no \"single\" template") }
        guard let pair = try array("pair") else { throw failure("has no \"pair\" template") }
        // Each piece of either template as the library reads it: one
        // SpecialToken or Sequence, with a string (Sequence: A or B) id and a u32 type_id.
        for (key, items) in [("single", single), ("pair", pair)] {
            for (index, item) in items.enumerated() {
                let piece = try child(item, key: key, location: fieldName(key) + "[\(index)]")
                guard piece.values.members.count == 1, let inner = try piece.object("SpecialToken") ?? piece.object("Sequence") else {
                    throw piece.failure("should be a SpecialToken or a Sequence")
                }
                let id = try inner.requiredString("id")
                if try piece.isGiven("Sequence"), !["A", "B"].contains(id) { throw inner.failure("\"id\" should be A or B") }
                _ = try inner.requiredCount("type_id", limit: Int(UInt32.max))
            }
        }
        let pieces = try single.enumerated().map { index, item -> TemplatePostProcessor.Piece in
            let piece = try child(item, key: "single", location: fieldName("single") + "[\(index)]")
            if let special = try piece.object("SpecialToken") {
                let name = try special.requiredString("id")
                guard let ids = specialIds[Array(name.utf8)] else {
                    throw piece.failure("special token \(quoted(name)) is not in special_tokens")
                }
                return .specialTokens(ids)
            }
            if let sequence = try piece.object("Sequence") {
                guard try sequence.requiredString("id") == "A" else {
                    throw piece.failure("a single-sequence template can only use sequence A")
                }
                return .sequence
            }
            throw piece.failure("should be a SpecialToken or a Sequence")
        }
        return TemplatePostProcessor(pieces: pieces)
    }

    /// `"cls": ["<s>", 0]`
    private func readNamedToken(_ key: String) throws -> Int {
        guard let pair = try array(key), pair.count == 2, let id = JSONFields.integer(pair[1]), id >= 0,
              id <= Int(Int32.max) else {
            throw failure("\"\(key)\" should be [token, id]")
        }
        return id
    }

    /// Whether this normalizer or pre-tokenizer step (or a step of this
    /// Sequence) rewrites each character through the library's alignments
    /// (`NormalizedString::transform`): the ByteLevel, NFC, NFD, NFKC, NFKD,
    /// Lowercase, StripAccents and Precompiled normalizers and the ByteLevel
    /// pre-tokenizer, and a right Strip (as far as a Replace's content
    /// inserted at the start is concerned). A left Strip, Prepend, Replace,
    /// Metaspace, Split and Digits do not.
    func rewritesCharacters() -> Bool {
        let rewriting: Set = ["ByteLevel", "NFC", "NFD", "NFKC", "NFKD", "Lowercase", "StripAccents", "Precompiled"]
        if let type = values["type"] as? String, rewriting.contains(type) { return true }
        // A right Strip that removes trailing text makes the library insert the start's content twice
        // ("ZZHello") or panic (content of two characters): its alignments go wrong the same way.
        if values["type"] as? String == "Strip", values["strip_right"] as? Bool == true { return true }
        return ["normalizers", "pretokenizers"].contains { key in
            (values[key] as? [Any] ?? []).contains { item in
                (try? JSONFields(item, location: "", file: file))?.rewritesCharacters() ?? false
            }
        }
    }

    /// Whether the decoder (or pipeline) writes tokens in the byte alphabet.
    /// Checks the fields of every ByteLevel step in this decoder (or its
    /// `decoders`) as the library deserialises them, though droptrace does
    /// not decode: the library refuses the file otherwise (`use_regex: null`).
    func checkByteLevelDecoders() throws {
        if values["type"] as? String == "ByteLevel" { _ = try readByteLevelOptions() }
        for step in try objects("decoders") { try step.checkByteLevelDecoders() }
    }

    func mentionsByteLevel() -> Bool {
        if values["type"] as? String == "ByteLevel" { return true }
        for key in ["decoders", "pretokenizers", "normalizers"] {
            for item in values[key] as? [Any] ?? [] {
                if let fields = try? JSONFields(item, location: "", file: file), fields.mentionsByteLevel() {
                    return true
                }
            }
        }
        return false
    }
}
