/// One step of the `decoder` section, as the Rust library's `decode_chain`:
/// token strings in, token strings out; the results are concatenated at the
/// end. Byte-level decoding has its own path in `Tokenizer.decode`; these
/// are the SentencePiece-style steps.
protocol TokenDecoder: Sendable {
    func decode(_ tokens: [String]) -> [String]
}

/// Replaces a literal in every token ("▁" → " ").
struct ReplaceDecoder: TokenDecoder {
    let pattern: String
    let content: String

    func decode(_ tokens: [String]) -> [String] {
        let literal = LiteralSplitPattern(needle: Array(pattern.utf8)), replacement = Array(content.utf8)
        return tokens.map { token in
            var bytes = Array(token.utf8)
            var output: [UInt8] = []
            bytes.withUnsafeMutableBufferPointer { mutableBuffer in
                let buffer = UnsafeBufferPointer(mutableBuffer)
                literal.forEachSegment(in: buffer) { start, end, isMatch in
                    if isMatch {
                        output.append(contentsOf: replacement)
                    } else {
                        output.append(contentsOf: buffer[start..<end])
                    }
                }
            }
            return String(decoding: output, as: UTF8.self)
        }
    }
}

/// Turns runs of `<0xXX>` tokens back into the text of their bytes; a run
/// that is not valid UTF-8 becomes one U+FFFD per byte, as in the library.
struct ByteFallbackDecoder: TokenDecoder {
    func decode(_ tokens: [String]) -> [String] {
        var output: [String] = []
        var pending: [UInt8] = []
        func flush() {
            guard !pending.isEmpty else { return }
            if let text = String(validating: pending, as: UTF8.self) {
                output.append(text)
            } else {
                output.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
            }
            pending.removeAll()
        }
        for token in tokens {
            if let byte = Self.byteValue(token) {
                pending.append(byte)
            } else {
                flush()
                output.append(token)
            }
        }
        flush()
        return output
    }

    static func byteValue(_ token: String) -> UInt8? {
        let utf8 = Array(token.utf8)
        guard utf8.count == 6, token.hasPrefix("<0x"), utf8[5] == UInt8(ascii: ">") else { return nil }
        return UInt8(String(decoding: utf8[3..<5], as: UTF8.self), radix: 16)
    }
}

/// Joins all tokens into one.
struct FuseDecoder: TokenDecoder {
    func decode(_ tokens: [String]) -> [String] { [tokens.joined()] }
}

/// Removes up to `start` leading and `stop` trailing copies of a character
/// from every token (Llama's decoder drops the prefix space this way).
struct StripDecoder: TokenDecoder {
    let content: Character
    let start: Int
    let stop: Int

    func decode(_ tokens: [String]) -> [String] {
        tokens.map { token in
            var characters = Substring(token)
            var removed = 0
            while removed < start, characters.first == content {
                characters.removeFirst()
                removed += 1
            }
            removed = 0
            while removed < stop, characters.last == content {
                characters.removeLast()
                removed += 1
            }
            return String(characters)
        }
    }
}

/// Metaspace as a decoder: "▁" becomes a space, except that every "▁" of
/// the first token is dropped unless the scheme is `never` (the library
/// drops them all, not just the leading one).
struct MetaspaceDecoder: TokenDecoder {
    let replacement: Character
    let prependScheme: MetaspacePrependScheme

    func decode(_ tokens: [String]) -> [String] {
        tokens.enumerated().map { index, token in
            let dropsReplacement = index == 0 && prependScheme != .never
            return String(token.compactMap { character -> Character? in
                guard character == replacement else { return character }
                return dropsReplacement ? nil : " "
            })
        }
    }
}

struct SequenceDecoder: TokenDecoder {
    let steps: [TokenDecoder]

    func decode(_ tokens: [String]) -> [String] {
        steps.reduce(tokens) { partial, step in step.decode(partial) }
    }
}

extension JSONFields {
    /// The decoder chain, or nil when the section holds a step droptrace
    /// does not reproduce (decoding is only for reports, so such a file
    /// still loads and decodes the plain way).
    func readTokenDecoder() throws -> TokenDecoder? {
        switch try typeName() {
        case "Replace":
            guard let pattern = try object("pattern"), let literal = try pattern.string("String") else { return nil }
            return ReplaceDecoder(pattern: literal, content: try requiredString("content"))
        case "ByteFallback":
            return ByteFallbackDecoder()
        case "Fuse":
            return FuseDecoder()
        case "Strip":
            let content = try requiredString("content")
            guard content.count == 1 else { throw failure("\"content\" should be one character") }
            return StripDecoder(content: content.first!, start: try int("start") ?? 0, stop: try int("stop") ?? 0)
        case "Metaspace":
            let (replacement, scheme, _) = try readMetaspaceOptions()
            return MetaspaceDecoder(replacement: replacement.first!, prependScheme: scheme)
        case "Sequence":
            var steps: [TokenDecoder] = []
            for step in try objects("decoders") {
                guard let decoder = try step.readTokenDecoder() else { return nil }
                steps.append(decoder)
            }
            return SequenceDecoder(steps: steps)
        default:
            return nil
        }
    }

    /// Metaspace's options, shared by the pre-tokenizer and the decoder.
    /// Files written before `prepend_scheme` existed say `add_prefix_space`.
    func readMetaspaceOptions() throws -> (replacement: String, scheme: MetaspacePrependScheme, split: Bool) {
        let replacement = try requiredString("replacement")
        guard replacement.unicodeScalars.count == 1 else { throw failure("\"replacement\" should be one character") }
        var scheme = MetaspacePrependScheme.always
        if values["prepend_scheme"] != nil {
            let name = try requiredString("prepend_scheme")
            guard let known = MetaspacePrependScheme(rawValue: name) else {
                throw failure("unknown prepend_scheme \(quoted(name)) (expected always, first or never)")
            }
            scheme = known
        }
        // The legacy flag must agree with the scheme when it turns the prefix off.
        if try bool("add_prefix_space", default: true) == false, scheme != .never {
            throw failure("add_prefix_space false does not match prepend_scheme \(quoted(scheme.rawValue))")
        }
        return (replacement, scheme, try bool("split", default: true))
    }
}
