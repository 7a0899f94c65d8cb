import Foundation
import DroptraceSupport

/// One step of the `normalizer` section: rewrites text before it is split.
protocol TextNormalizer: Sendable {
    /// - Throws: a regex's `DroptraceError` (step budget; `Replace` only).
    func normalize(_ text: String) throws -> String
    /// The same on UTF-8, which a normaliser can override to skip text it
    /// would leave unchanged.
    func normalize(utf8: ArraySlice<UInt8>) throws -> [UInt8]
    /// `normalize(utf8:)`, and whether it deleted the text's first
    /// character, so that the normalised text starts later in the input (the
    /// library's `offsets_original().0 > 0`, which Metaspace's prepend_scheme
    /// "first" reads). A prefix, or a replacement of one character, takes its
    /// place and deletes nothing; a replacement of several is aligned with
    /// the last of them, so the start moves as if the others were deleted.
    func normalizeTrackingStart(utf8 text: ArraySlice<UInt8>) throws -> (text: [UInt8], deletedStart: Bool)
    /// Whether a rewrite may depend on text arbitrarily far ahead (`SplitPattern`).
    var looksArbitrarilyFarAhead: Bool { get }
}

extension TextNormalizer {
    func normalize(utf8: ArraySlice<UInt8>) throws -> [UInt8] {
        Array(try normalize(String(decoding: utf8, as: UTF8.self)).utf8)
    }

    var looksArbitrarilyFarAhead: Bool { false }

    /// Steps that delete nothing at the start.
    func normalizeTrackingStart(utf8 text: ArraySlice<UInt8>) throws -> (text: [UInt8], deletedStart: Bool) {
        (try normalize(utf8: text), false)
    }

    /// The first Unicode scalar of UTF-8 text.
    static func firstScalar(_ text: ArraySlice<UInt8>) -> Unicode.Scalar? {
        var iterator = text.makeIterator()
        var decoder = UTF8()
        if case .scalarValue(let scalar) = decoder.decode(&iterator) { return scalar }
        return nil
    }
}

struct UnicodeFormNormalizer: TextNormalizer {
    enum Form: String { case nfc = "NFC", nfd = "NFD", nfkc = "NFKC", nfkd = "NFKD" }
    let form: Form

    /// Normalises line by line, handing Foundation only the lines that hold
    /// a character the form could change: no normalisation form acts across
    /// a line feed, and most calibration text is lines of ASCII, which would
    /// otherwise cost a UTF-16 round trip through Foundation.
    func normalize(utf8 text: ArraySlice<UInt8>) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(text.count)
        var pendingStart: Int?  // start of consecutive lines needing work
        func flush(upTo end: Int) {
            guard let start = pendingStart else { return }
            output.append(contentsOf: normalize(String(decoding: text[start..<end], as: UTF8.self)).utf8)
            pendingStart = nil
        }
        text.withUnsafeBufferPointer { buffer in
            let base = text.startIndex
            var lineStart = 0
            while lineStart < buffer.count {
                var lineEnd = lineStart
                var unchanged = true
                while lineEnd < buffer.count {
                    let (value, length) = UTF8Scalars.decode(buffer, at: lineEnd)
                    lineEnd += length
                    if unchanged && !isUnchangedAlone(value) { unchanged = false }
                    if value == 0x0A { break }
                }
                if unchanged {
                    flush(upTo: base + lineStart)
                    output.append(contentsOf: buffer[lineStart..<lineEnd])
                } else if pendingStart == nil {
                    pendingStart = base + lineStart
                }
                lineStart = lineEnd
            }
            flush(upTo: base + buffer.count)
        }
        return output
    }

    /// True for characters that no form changes, that no neighbour combines
    /// with and that reorder with nothing (combining class 0). For NFC that
    /// covers below U+0300 and whole blocks of common scripts (checked
    /// against Unicode's decomposition data); the compatibility forms and
    /// NFD change Latin-1 letters, so for them only ASCII.
    @inline(__always)
    private func isUnchangedAlone(_ value: UInt32) -> Bool {
        if value < 0x80 { return true }
        guard form == .nfc else { return false }
        switch value {
        case 0x80..<0x300, 0x400...0x482, 0x48A...0x52F, 0x620...0x64A, 0x2010...0x2027, 0x2030...0x205E,
             0x3041...0x3096, 0x30A1...0x30FA, 0x4E00...0x9FFF, 0xAC00...0xD7A3, 0xFF01...0xFFDC,
             0x1F300...0x1FAFF:
            return true
        default:
            return false
        }
    }

    /// The library's result (`LibraryNormalizationTable`): Foundation's
    /// normalization of the text between the scalars the library's older
    /// tables do not know, which are kept as they are, with the scalars
    /// whose decomposition Foundation would not reorder handed to it
    /// decomposed.
    func normalize(_ text: String) -> String {
        let canonical = form == .nfc || form == .nfd
        let slips = canonical
            ? LibraryNormalizationTable.canonicalReorderingSlips
            : LibraryNormalizationTable.compatibilityReorderingSlips
        let unknown = LibraryNormalizationTable.unknownToLibrary
        guard text.unicodeScalars.contains(where: { unknown.containsScalar($0.value) || slips.containsScalar($0.value) })
        else { return foundationForm(text) }
        var result = String.UnicodeScalarView()
        var piece = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if unknown.containsScalar(scalar.value) {
                result.append(contentsOf: foundationForm(String(piece)).unicodeScalars)
                result.append(scalar)
                piece.removeAll()
            } else if slips.containsScalar(scalar.value) {
                let single = String(scalar)
                piece.append(contentsOf: (canonical
                    ? single.decomposedStringWithCanonicalMapping
                    : single.decomposedStringWithCompatibilityMapping).unicodeScalars)
            } else {
                piece.append(scalar)
            }
        }
        result.append(contentsOf: foundationForm(String(piece)).unicodeScalars)
        return String(result)
    }

    private func foundationForm(_ text: String) -> String {
        // Foundation on Linux drops the marks of a combining sequence past
        // its 64th when it has to decompose or reorder them.
        if Self.holdsLongCombiningRun(text) { return longRunForm(text) }
        switch form {
        // NFC is the composition of NFD (and NFKC of NFKD) by definition;
        // Foundation's direct forms on Linux leave Hangul apart that
        // composition joins: an LV syllable and a trailing jamo (가 + ᆨ),
        // decomposed jamo from halfwidth forms.
        case .nfc: return text.decomposedStringWithCanonicalMapping.precomposedStringWithCanonicalMapping
        case .nfd: return text.decomposedStringWithCanonicalMapping
        case .nfkc: return text.decomposedStringWithCompatibilityMapping.precomposedStringWithCanonicalMapping
        case .nfkd: return text.decomposedStringWithCompatibilityMapping
        }
    }
}

extension UnicodeFormNormalizer {
    /// Runs of combining marks at least this long take `longRunForm`.
    static let longRun = 32

    static func holdsLongCombiningRun(_ text: String) -> Bool {
        var run = 0
        for scalar in text.unicodeScalars {
            let properties = scalar.properties
            let isMark = properties.canonicalCombiningClass.rawValue != 0
                || [.nonspacingMark, .spacingMark, .enclosingMark].contains(properties.generalCategory)
            run = isMark ? run + 1 : 0
            if run >= longRun { return true }
        }
        return false
    }

    /// The form by Unicode's algorithm (UAX #15), with Foundation only for
    /// what it gets right on short strings: each scalar's decomposition and
    /// each pair's primary composite. Canonical ordering is a stable sort of
    /// each run of non-starters by combining class; composition joins a
    /// mark with the last starter unless a character between them blocks it.
    func longRunForm(_ text: String) -> String {
        let compatibility = form == .nfkc || form == .nfkd
        var scalars: [Unicode.Scalar] = []
        for scalar in text.unicodeScalars {
            let single = String(scalar)
            scalars += (compatibility ? single.decomposedStringWithCompatibilityMapping : single.decomposedStringWithCanonicalMapping)
                .unicodeScalars
        }
        func combiningClass(_ scalar: Unicode.Scalar) -> UInt8 { scalar.properties.canonicalCombiningClass.rawValue }
        var start = 0
        while start < scalars.count {
            guard combiningClass(scalars[start]) != 0 else { start += 1; continue }
            var end = start
            while end < scalars.count, combiningClass(scalars[end]) != 0 { end += 1 }
            let sorted = scalars[start..<end].enumerated().sorted {
                (combiningClass($0.element), $0.offset) < (combiningClass($1.element), $1.offset)
            }
            scalars.replaceSubrange(start..<end, with: sorted.map(\.element))
            start = end
        }
        guard form == .nfc || form == .nfkc else { return String(String.UnicodeScalarView(scalars)) }
        var result: [Unicode.Scalar] = []
        var starter: Int?
        var lastClass: UInt8 = 0
        for scalar in scalars {
            let currentClass = combiningClass(scalar)
            if let starter {
                let blocked = result.count - 1 != starter && (lastClass == 0 || lastClass >= currentClass)
                // Decomposed first, as `foundationForm` does, so Hangul LV + T joins.
                let pair = String(String.UnicodeScalarView([result[starter], scalar]))
                    .decomposedStringWithCanonicalMapping.precomposedStringWithCanonicalMapping
                if !blocked, pair.unicodeScalars.count == 1, let composite = pair.unicodeScalars.first {
                    result[starter] = composite
                    continue
                }
            }
            if currentClass == 0 { starter = result.count }
            lastClass = currentClass
            result.append(scalar)
        }
        return String(String.UnicodeScalarView(result))
    }
}

/// Rust's per-character `char::to_lowercase`: full mappings (İ becomes two
/// scalars) but no context, so a final capital sigma becomes σ, not ς —
/// which is why `String.lowercased()` is not used.
struct LowercaseNormalizer: TextNormalizer {
    func normalize(_ text: String) -> String {
        var scalars = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if scalar.isASCII {
                let value = scalar.value
                scalars.append((0x41...0x5A).contains(value) ? Unicode.Scalar(value + 0x20)! : scalar)
            } else {
                scalars.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
            }
        }
        return String(scalars)
    }
}

struct SequenceNormalizer: TextNormalizer {
    let steps: [TextNormalizer]
    var looksArbitrarilyFarAhead: Bool { steps.contains { $0.looksArbitrarilyFarAhead } }
    /// tokenizer.json, for errors.
    let source: String

    func normalize(_ text: String) throws -> String {
        let limit = NormalizationGrowth.limit(text.utf8.count)
        return try steps.reduce(text) { partial, step in
            let next = try step.normalize(partial)
            try NormalizationGrowth.check(next.utf8.count, limit: limit, source: source)
            return next
        }
    }

    func normalize(utf8 text: ArraySlice<UInt8>) throws -> [UInt8] {
        try normalizeTrackingStart(utf8: text).text
    }

    /// A deleted start stays deleted: later steps align to what is left.
    func normalizeTrackingStart(utf8 text: ArraySlice<UInt8>) throws -> (text: [UInt8], deletedStart: Bool) {
        let limit = NormalizationGrowth.limit(text.count)
        var partial = Array(text), deleted = false
        for step in steps {
            let next = try step.normalizeTrackingStart(utf8: partial[...])
            try NormalizationGrowth.check(next.text.count, limit: limit, source: source)
            partial = next.text
            deleted = deleted || next.deletedStart
        }
        return (partial, deleted)
    }
}

/// How far normalisation may grow a text: 16 times its UTF-8 bytes plus
/// 4 KiB. Real normalizers stay far below (NFKD's widest expansion is 11
/// times in bytes; "▁" for a space is 3); a Replace that multiplies the
/// text, once or step after step, would otherwise take all memory.
enum NormalizationGrowth {
    static func limit(_ inputBytes: Int) -> Int {
        inputBytes > (Int.max - 4096) / 16 ? Int.max : inputBytes * 16 + 4096
    }

    static func check(_ bytes: Int, limit: Int, source: String) throws {
        guard bytes <= limit else {
            throw DroptraceError(
                "the normalizer grows text beyond 16 times its length (a Replace multiplying it?); droptrace stops there",
                path: source)
        }
    }
}

/// Prepends a fixed string to non-empty text (SentencePiece-style "▁").
struct PrependNormalizer: TextNormalizer {
    let prefix: String

    func normalize(_ text: String) -> String {
        text.isEmpty ? text : prefix + text
    }
}

/// Replaces every match of a literal or regex with fixed content; an empty
/// match (`x*`, `(?=\p{Lu})`, an empty pattern) inserts the content there,
/// as the library does. Content inserted at an empty match at the text's
/// start leaves the library's alignments broken: a later step that rewrites each character
/// (`rewritesCharacters`: ByteLevel, NFC, Lowercase, …, or a right Strip)
/// then panics, yields a stray token or inserts the content twice, so such
/// a match is an error there.
struct ReplaceNormalizer: TextNormalizer {
    let pattern: SplitPattern
    var looksArbitrarilyFarAhead: Bool { pattern.looksArbitrarilyFarAhead }
    let content: String
    /// Whether a later step rewrites each character (see above).
    var emptyMatchAtStartFails = false
    /// tokenizer.json, for errors.
    let source: String

    func normalize(_ text: String) throws -> String {
        try replace(Array(text.utf8)[...]).text
    }

    func normalize(utf8 text: ArraySlice<UInt8>) throws -> [UInt8] { Array(try replace(text).text.utf8) }

    func normalizeTrackingStart(utf8 text: ArraySlice<UInt8>) throws -> (text: [UInt8], deletedStart: Bool) {
        let (output, deletedStart) = try replace(text)
        return (Array(output.utf8), deletedStart)
    }

    /// The replaced text, and whether it no longer starts where the input
    /// does: a match at its start of two or more characters, or of one
    /// replaced by nothing.
    /// - Throws: `DroptraceError` for an empty match at the start when
    ///   `emptyMatchAtStartFails`, and the pattern's and `NormalizationGrowth`'s errors.
    private func replace(_ text: ArraySlice<UInt8>) throws -> (text: String, deletedStart: Bool) {
        var bytes = Array(text)
        var deletedStart = false
        let replacement = Array(content.utf8)
        let limit = NormalizationGrowth.limit(bytes.count)
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        try bytes.withUnsafeMutableBufferPointer { mutableBuffer in
            let buffer = UnsafeBufferPointer(mutableBuffer)
            try pattern.forEachSegment(in: buffer) { start, end, isMatch in
                if isMatch {
                    if start == 0 && end == 0 && !replacement.isEmpty && emptyMatchAtStartFails {
                        throw DroptraceError(
                            "a Replace normalizer's pattern matches empty text at the start, and a later step "
                                + "(ByteLevel, NFC, NFD, NFKC, NFKD, Lowercase, StripAccents, Precompiled, or a right Strip) rewrites it "
                                + "(the tokenizers library fails on that, or inserts the content twice)",
                            path: source)
                    }
                    // The library aligns the content with the last character it replaces: replacing
                    // two or more at the start (or deleting the first) moves the start past the input's.
                    let replacedCharacters = buffer[start..<end].lazy.filter { $0 & 0xC0 != 0x80 }.count
                    if start == 0 && (replacedCharacters > 1 || replacedCharacters == 1 && replacement.isEmpty) {
                        deletedStart = true
                    }
                    output.append(contentsOf: replacement)
                } else {
                    output.append(contentsOf: buffer[start..<end])
                }
                try NormalizationGrowth.check(output.count, limit: limit, source: source)
            }
        }
        return (String(decoding: output, as: UTF8.self), deletedStart)
    }
}

/// Removes leading and/or trailing Unicode whitespace.
struct StripNormalizer: TextNormalizer {
    let left: Bool
    let right: Bool

    func normalize(_ text: String) -> String {
        var scalars = Substring(text).unicodeScalars
        if left { while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() } }
        if right { while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() } }
        return String(String.UnicodeScalarView(scalars))
    }

    func normalizeTrackingStart(utf8 text: ArraySlice<UInt8>) throws -> (text: [UInt8], deletedStart: Bool) {
        (try normalize(utf8: text), left && Self.firstScalar(text)?.properties.isWhitespace == true)
    }
}

/// Drops combining marks (usually after NFD): the library's, which are
/// not Swift's (`LibraryCharacterTables.combiningMarks`).
struct StripAccentsNormalizer: TextNormalizer {
    func normalize(_ text: String) -> String {
        var scalars = String.UnicodeScalarView()
        for scalar in text.unicodeScalars where !LibraryCharacterTables.combiningMarks.containsScalar(scalar.value) {
            scalars.append(scalar)
        }
        return String(scalars)
    }

    func normalizeTrackingStart(utf8 text: ArraySlice<UInt8>) throws -> (text: [UInt8], deletedStart: Bool) {
        (try normalize(utf8: text), Self.firstScalar(text).map { LibraryCharacterTables.combiningMarks.containsScalar($0.value) } == true)
    }
}

/// The ByteLevel normaliser: rewrites text into the byte alphabet up front.
struct ByteLevelNormalizer: TextNormalizer {
    func normalize(_ text: String) -> String {
        String(decoding: ByteLevelAlphabet.encode(text.utf8), as: UTF8.self)
    }
}
