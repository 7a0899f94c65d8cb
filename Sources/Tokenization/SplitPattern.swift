/// Something that finds delimiters in text: a regex, a literal string or a
/// character test. It reports consecutive segments covering the whole text,
/// each either a match or the gap before one — the shape the Rust library's
/// `Pattern::find_matches` produces.
protocol SplitPattern: Sendable {
    /// - Throws: what `body` throws, or a regex's `DroptraceError` (step budget).
    func forEachSegment(
        in text: UnsafeBufferPointer<UInt8>, _ body: (_ start: Int, _ end: Int, _ isMatch: Bool) throws -> Void
    ) throws
    /// Whether a match may depend on text arbitrarily far ahead (any
    /// regex of a tokenizer.json: `"[^"]*"` spans to the next quote);
    /// literals and the library's word patterns end within a run of one
    /// kind of character.
    var looksArbitrarilyFarAhead: Bool { get }
}

extension SplitPattern {
    var looksArbitrarilyFarAhead: Bool { false }
}

/// What to do with the delimiters found by a pattern (tokenizer.json spelling).
enum SplitDelimiterBehavior: String, CaseIterable {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"
}

extension SplitPattern {
    /// Splits `text` the way `NormalizedString::split` does, streaming the
    /// resulting ranges instead of collecting them (a whole calibration file
    /// may be one piece). Empty ranges are dropped, as the library drops them.
    func split(
        _ text: UnsafeBufferPointer<UInt8>, behavior: SplitDelimiterBehavior, invert: Bool,
        _ emit: (Range<Int>) throws -> Void
    ) throws {
        var pending: (start: Int, end: Int, isMatch: Bool)?
        func flush() throws {
            if let piece = pending, piece.start < piece.end { try emit(piece.start..<piece.end) }
            pending = nil
        }
        try forEachSegment(in: text) { start, end, found in
            let isMatch = found != invert
            switch behavior {
            case .isolated:
                if start < end { try emit(start..<end) }
            case .removed:
                if !isMatch && start < end { try emit(start..<end) }
            case .contiguous:
                // Runs of segments with the same flag become one piece.
                if let previous = pending, previous.isMatch == isMatch {
                    pending = (previous.start, end, isMatch)
                } else {
                    try flush()
                    pending = (start, end, isMatch)
                }
            case .mergedWithPrevious:
                // A delimiter joins the piece before it, unless that piece
                // is itself a delimiter.
                if isMatch, let previous = pending, !previous.isMatch {
                    pending = (previous.start, end, true)
                } else {
                    try flush()
                    pending = (start, end, isMatch)
                }
            case .mergedWithNext:
                // A delimiter joins the piece after it, unless that piece is
                // itself a delimiter.
                if let previous = pending, previous.isMatch, !isMatch {
                    pending = (previous.start, end, false)
                    try flush()
                } else {
                    try flush()
                    pending = (start, end, isMatch)
                }
            }
        }
        try flush()
    }
}

/// A literal delimiter (`{"String": ...}` in tokenizer.json), found left to
/// right without overlaps, as the library's escaped regex would find it.
struct LiteralSplitPattern: SplitPattern {
    let needle: [UInt8]
    /// Knuth–Morris–Pratt: `border[i]` is the length of the longest proper
    /// prefix of needle[0...i] that is also its suffix, so the search never
    /// steps back in the text (a naive search of a 200,001-byte needle over a
    /// text of its first byte took minutes).
    private let border: [Int]

    init(needle: [UInt8]) {
        self.needle = needle
        var border = [Int](repeating: 0, count: needle.count)
        var length = 0
        for index in needle.indices.dropFirst() {
            while length > 0 && needle[index] != needle[length] { length = border[length - 1] }
            if needle[index] == needle[length] { length += 1 }
            border[index] = length
        }
        self.border = border
    }

    func forEachSegment(in text: UnsafeBufferPointer<UInt8>, _ body: (Int, Int, Bool) throws -> Void) rethrows {
        let count = text.count
        var gapStart = 0
        if !needle.isEmpty {
            var matched = 0
            for index in 0..<count {
                let byte = text[index]
                while matched > 0 && needle[matched] != byte { matched = border[matched - 1] }
                if needle[matched] == byte { matched += 1 }
                guard matched == needle.count else { continue }
                let start = index + 1 - needle.count
                if gapStart < start { try body(gapStart, start, false) }
                try body(start, index + 1, true)
                gapStart = index + 1
                matched = 0
            }
        }
        if gapStart < count { try body(gapStart, count, false) }
    }
}

/// Every character passing a test is its own delimiter (the Digits
/// pre-tokenizer uses Rust's `char::is_numeric`, i.e. \p{N}).
struct CharacterTestSplitPattern: SplitPattern {
    let test: @Sendable (UInt32) -> Bool

    func forEachSegment(in text: UnsafeBufferPointer<UInt8>, _ body: (Int, Int, Bool) throws -> Void) rethrows {
        var gapStart = 0
        var index = 0
        while index < text.count {
            let (value, length) = UTF8Scalars.decode(text, at: index)
            if test(value) {
                if gapStart < index { try body(gapStart, index, false) }
                try body(index, index + length, true)
                gapStart = index + length
            }
            index += length
        }
        if gapStart < text.count { try body(gapStart, text.count, false) }
    }
}
