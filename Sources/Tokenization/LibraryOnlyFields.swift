import DroptraceSupport

/// The parts of tokenizer.json that do not change the ids droptrace
/// computes (`truncation`, `padding`, `decoder`: transformers' fast
/// tokenizer disables the first two on loading, so calibration text is
/// encoded whole and unpadded, as LLM-Drop's runs encode it, though the
/// library's own `Tokenizer.encode` would apply them), and how deep `Sequence`
/// steps nest, are still checked as the tokenizers library's deserializer
/// checks them (tokenizers 0.23.3): a file it refuses to load,
/// transformers' AutoTokenizer refuses too, so droptrace refuses it naming
/// the field rather than tokenising it.
extension JSONFields {
    /// The library's JSON recursion limit reached by this many nested
    /// `Sequence` steps (of normalizers, pre-tokenizers, decoders or
    /// post-processors).
    static let sequenceNestingLimit = 63

    /// `truncation`: null or {direction?, max_length, strategy, stride}.
    func checkTruncation() throws {
        guard let truncation = try object("truncation") else { return }
        try truncation.checkVariant("direction", ["Left", "Right"], required: false)
        _ = try truncation.requiredCount("max_length")
        try truncation.checkVariant("strategy", ["LongestFirst", "OnlyFirst", "OnlySecond"], required: true)
        _ = try truncation.requiredCount("stride")
    }

    /// `padding`: null or {strategy, direction, pad_to_multiple_of?, pad_id, pad_type_id, pad_token}.
    func checkPadding() throws {
        guard let padding = try object("padding") else { return }
        switch try padding.value("strategy") {
        case let name as String where name == "BatchLongest":
            break
        case let fixed as JSONObject where fixed.members.map(\.key) == ["Fixed"]:
            _ = try JSONFields(fixed, location: padding.fieldName("strategy"), file: file).requiredCount("Fixed")
        default:
            throw padding.failure("\"strategy\" should be \"BatchLongest\" or {\"Fixed\": length}")
        }
        try padding.checkVariant("direction", ["Left", "Right"], required: true)
        if try padding.isGiven("pad_to_multiple_of") { _ = try padding.requiredCount("pad_to_multiple_of") }
        for key in ["pad_id", "pad_type_id"] { _ = try padding.requiredCount(key, limit: Int(UInt32.max)) }
        _ = try padding.requiredString("pad_token")
    }

    /// A `decoder` section: a type the library knows, with the fields it requires.
    func checkDecoder() throws {
        switch try requiredString("type") {
        case "ByteLevel":
            for key in ["add_prefix_space", "trim_offsets"] { _ = try requiredBool(key) }
            _ = try bool("use_regex", default: true)
        case "WordPiece":
            _ = try requiredString("prefix")
            _ = try requiredBool("cleanup")
        case "BPEDecoder":
            _ = try requiredString("suffix")
        case "CTC":
            for key in ["pad_token", "word_delimiter_token"] { _ = try requiredString(key) }
            _ = try requiredBool("cleanup")
        case "Metaspace":
            _ = try readMetaspaceOptions()
        case "Strip":
            _ = try requiredString("content")
            for key in ["start", "stop"] { _ = try requiredCount(key) }
        case "Replace":
            guard let pattern = try object("pattern"), try pattern.string("String") ?? pattern.string("Regex") != nil else {
                throw failure("\"pattern\" should be {\"String\": ...} or {\"Regex\": ...}")
            }
            _ = try requiredString("content")
        case "Fuse", "ByteFallback":
            break
        case "Sequence":
            for step in try requiredObjects("decoders") { try step.checkDecoder() }
        case let other:
            throw failure("decoder type \(quoted(other)) is not one the tokenizers library knows")
        }
    }

    /// Refuses `Sequence` steps nested `sequenceNestingLimit` deep in section `key`.
    func checkSequenceNesting(_ key: String) throws {
        func depth(_ value: Any) -> Int {
            guard let object = value as? JSONObject, object["type"] as? String == "Sequence" else { return 0 }
            return 1 + (object.members.compactMap { $0.value as? [Any] }.flatMap { $0 }.map(depth).max() ?? 0)
        }
        guard let section = values[key] else { return }
        let nesting = depth(section)
        if nesting >= Self.sequenceNestingLimit {
            throw DroptraceError(
                "\(fieldName(key)) nests \(nesting) Sequence steps; the tokenizers library refuses "
                    + "\(Self.sequenceNestingLimit) or more (its JSON recursion limit)", path: file)
        }
    }

    /// A unit-variant field: one of `names`; absent only when not `required`.
    func checkVariant(_ key: String, _ names: [String], required: Bool) throws {
        guard try isGiven(key) || required else { return }
        guard let name = try string(key), names.contains(name) else {
            throw DroptraceError("\(fieldName(key)) should be one of \(names.joined(separator: ", "))", path: file)
        }
    }
}
