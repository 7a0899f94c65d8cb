import DroptraceSupport
import Foundation

/// SentencePiece's normalisation rules, as tokenizer.json carries them
/// (`{"type": "Precompiled", "precompiled_charsmap": <base64>}`, copied from
/// a SentencePiece model's `normalizer_spec`: nmt_nfkc, for one, is NFKC
/// plus SentencePiece's own mappings, such as control characters removed),
/// applied as the tokenizers library applies them (spm_precompiled 0.1.4).
///
/// The charsmap is a little-endian u32 byte count, a double-array trie of
/// that many bytes (SentencePiece's Darts::DoubleArray, u32 units) over the
/// UTF-8 of the texts it rewrites, and the replacement texts, each ended by
/// a NUL, which the trie's values point into. The text is read grapheme by
/// grapheme (extended grapheme clusters): a grapheme shorter than 6 bytes
/// whose UTF-8 starts with a key of the trie is replaced by the replacement
/// of the shortest such key (which may cover only part of it: the library's
/// rule); otherwise each character is replaced the same way, or kept.
struct PrecompiledNormalizer: TextNormalizer {
    private let charsmap: Charsmap
    /// The rewrite of each ASCII character alone: most text is ASCII, whose
    /// characters are graphemes of their own between two ASCII bytes.
    private let asciiRewrites: [Result<[UInt8]?, DroptraceError>]

    /// - Parameter location: where the normalizer sits in tokenizer.json.
    /// - Throws: `DroptraceError` where the library refuses to load the
    ///   charsmap: not canonical base64, shorter than its trie, or
    ///   replacement texts that are not UTF-8.
    init(base64: String, location: String, source: String) throws {
        let charsmap = try Charsmap(base64: base64, location: location, source: source)
        self.charsmap = charsmap
        asciiRewrites = (0..<128).map { byte in Result { () throws(DroptraceError) in try charsmap.rewrite([UInt8(byte)]) } }
    }

    func normalize(_ text: String) throws -> String {
        String(decoding: try normalize(utf8: Array(text.utf8)[...]), as: UTF8.self)
    }

    func normalize(utf8 text: ArraySlice<UInt8>) throws -> [UInt8] {
        let limit = NormalizationGrowth.limit(text.count)
        var output: [UInt8] = []
        output.reserveCapacity(text.count)
        let bytes = Array(text)
        // Between two ASCII bytes (but CR LF) there is always a grapheme
        // boundary; what lies between such boundaries goes to Swift's
        // grapheme breaking (Unicode's extended grapheme clusters, as the
        // library's unicode-segmentation).
        var start = 0
        var index = 0
        while index < bytes.count {
            let isAsciiAlone = bytes[index] < 0x80 && (index == 0 || Self.breaksBetween(bytes[index - 1], bytes[index]))
                && (index + 1 == bytes.count || Self.breaksBetween(bytes[index], bytes[index + 1]))
            guard isAsciiAlone else { index += 1; continue }
            if start < index { try appendGraphemes(of: bytes[start..<index], to: &output) }
            output.append(contentsOf: try asciiRewrites[Int(bytes[index])].get() ?? [bytes[index]])
            index += 1
            start = index
            try NormalizationGrowth.check(output.count, limit: limit, source: charsmap.source)
        }
        if start < bytes.count { try appendGraphemes(of: bytes[start...], to: &output) }
        try NormalizationGrowth.check(output.count, limit: limit, source: charsmap.source)
        return output
    }

    /// Whether two adjacent bytes are both ASCII and not CR LF: a grapheme boundary lies between them.
    private static func breaksBetween(_ first: UInt8, _ second: UInt8) -> Bool {
        first < 0x80 && second < 0x80 && !(first == 0x0D && second == 0x0A)
    }

    private func appendGraphemes(of text: ArraySlice<UInt8>, to output: inout [UInt8]) throws {
        for grapheme in String(decoding: text, as: UTF8.self) {
            let utf8 = Array(grapheme.utf8)
            if utf8.count < 6, let replacement = try charsmap.rewrite(utf8) {
                output.append(contentsOf: replacement)
                continue
            }
            for scalar in grapheme.unicodeScalars {
                let character = Array(String(scalar).utf8)
                output.append(contentsOf: try charsmap.rewrite(character) ?? character)
            }
        }
    }
}

/// A decoded `precompiled_charsmap`.
private struct Charsmap: Sendable {
    /// The double-array trie's units.
    let units: [UInt32]
    /// The replacement texts, NUL-terminated, as UTF-8.
    let replacements: [UInt8]
    /// Where the normalizer sits in tokenizer.json, and the file, for errors.
    let location: String
    let source: String

    init(base64: String, location: String, source: String) throws {
        self.location = location
        self.source = source
        let failure = { (problem: String) in
            DroptraceError("\(location).precompiled_charsmap \(problem) (the tokenizers library cannot load it)", path: source)
        }
        // As the library decodes it: the standard alphabet, padding optional
        // but never extra, no whitespace, no stray bits in the last character.
        let padded = base64 + String(repeating: "=", count: [0, 4, 2, 1][base64.utf8.count % 4] % 4)
        guard base64.utf8.count % 4 != 1, let data = Data(base64Encoded: padded), data.base64EncodedString() == padded else {
            throw failure("is not canonical base64")
        }
        let bytes = [UInt8](data)
        guard bytes.count >= 4 else { throw failure("is shorter than its 4-byte trie size") }
        let trieBytes = Int(Self.littleEndianUnit(bytes, at: 0))
        let unitCount = trieBytes / 4
        guard bytes.count >= 4 + unitCount * 4 else {
            throw failure("holds \(bytes.count - 4) bytes after its trie size, fewer than the trie's \(trieBytes)")
        }
        units = (0..<unitCount).map { Self.littleEndianUnit(bytes, at: 4 + $0 * 4) }
        replacements = Array(bytes[(4 + unitCount * 4)...])
        guard String(validating: replacements, as: UTF8.self) != nil else {
            throw failure("has replacement texts that are not UTF-8")
        }
    }

    private static func littleEndianUnit(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) | UInt32(bytes[offset + 1]) << 8 | UInt32(bytes[offset + 2]) << 16 | UInt32(bytes[offset + 3]) << 24
    }

    /// The replacement of the shortest key that starts `key` (the library's
    /// `transform`: the first of `common_prefix_search`), nil for none.
    /// - Throws: `DroptraceError` where the library panics: the trie or a
    ///   value pointing outside itself or inside a character.
    func rewrite(_ key: [UInt8]) throws(DroptraceError) -> [UInt8]? {
        guard let value = try firstValue(along: key) else { return nil }
        let start = Int(value)
        guard start <= replacements.count, start == replacements.count || replacements[start] & 0xC0 != 0x80 else {
            throw broken("a trie value points outside its replacement texts or inside a character")
        }
        let end = replacements[start...].firstIndex(of: 0) ?? replacements.count
        return Array(replacements[start..<end])
    }

    /// Walks the double array along `key` as `common_prefix_search` does,
    /// to its end (the library collects every value, so a broken unit past
    /// the first value still fails it), and gives the first value met.
    private func firstValue(along key: [UInt8]) throws(DroptraceError) -> UInt32? {
        func unit(_ position: Int) throws(DroptraceError) -> UInt32 {
            guard position < units.count else { throw broken("its trie points outside itself") }
            return units[position]
        }
        var first: UInt32?
        var position = Self.offset(try unit(0))
        for byte in key {
            if byte == 0 { break }
            position ^= Int(byte)
            let current = try unit(position)
            // The label: the key byte, and the high bit clear.
            if current & 0x8000_00FF != UInt32(byte) { return first }
            position ^= Self.offset(current)
            if current >> 8 & 1 == 1 {
                let value = try unit(position) & 0x7FFF_FFFF
                if first == nil { first = value }
            }
        }
        return first
    }

    private static func offset(_ unit: UInt32) -> Int {
        Int(unit >> 10) << Int((unit & (1 << 9)) >> 6)
    }

    private func broken(_ problem: String) -> DroptraceError {
        DroptraceError(
            "\(location).precompiled_charsmap is broken: \(problem) (the tokenizers library panics on this text)",
            path: source)
    }
}
