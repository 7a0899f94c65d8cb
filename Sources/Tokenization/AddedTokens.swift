import DroptraceSupport
/// An entry of `added_tokens`: text that is cut out of the input whole and
/// becomes one id, before the model ever sees it.
struct AddedToken: Sendable {
    var content: String
    var id: Int
    var singleWord: Bool
    var leftStrip: Bool
    var rightStrip: Bool
    /// Matched after normalisation (against the normalised content) rather
    /// than in the raw input.
    var normalized: Bool
    var special: Bool
}

/// Output of splitting text around added tokens.
enum AddedTokenSegment {
    case text(ArraySlice<UInt8>)
    case token(Int)
}

/// Finds added tokens the way `AddedVocabulary::find_matches` does:
/// leftmost-longest, non-overlapping, then the single_word / lstrip /
/// rstrip rules applied to each match.
struct AddedTokenMatcher: Sendable {
    private struct Entry: Sendable {
        var id: Int
        var singleWord: Bool
        var leftStrip: Bool
        var rightStrip: Bool
    }

    /// A byte trie: children per node, and the entry a node completes.
    private var children: [[UInt8: Int32]] = [[:]]
    private var terminal: [Int32] = [-1]
    private var entries: [Entry] = []
    private var startsPattern = [Bool](repeating: false, count: 256)

    var isEmpty: Bool { entries.isEmpty }

    /// `patterns` pairs each token with the text to look for (its content,
    /// or its normalised content).
    init(_ patterns: [(pattern: String, token: AddedToken)]) {
        for (pattern, token) in patterns where !pattern.isEmpty {
            var node = 0
            for byte in pattern.utf8 {
                if let child = children[node][byte] {
                    node = Int(child)
                } else {
                    children.append([:])
                    terminal.append(-1)
                    children[node][byte] = Int32(children.count - 1)
                    node = children.count - 1
                }
            }
            entries.append(Entry(id: token.id, singleWord: token.singleWord,
                                 leftStrip: token.leftStrip, rightStrip: token.rightStrip))
            terminal[node] = Int32(entries.count - 1)
            startsPattern[Int(pattern.utf8.first!)] = true
        }
    }

    /// - Throws: `DroptraceError` naming `source` when finding the tokens
    ///   takes more than `trieStepsPerByte` trie steps per byte (a token
    ///   thousands of bytes long whose prefix fills the text: the search from
    ///   every position walks all of it), or what `emit` throws.
    func split(_ text: ArraySlice<UInt8>, source: String, _ emit: (AddedTokenSegment) throws -> Void) throws {
        guard !entries.isEmpty else {
            if !text.isEmpty { try emit(.text(text)) }
            return
        }
        let base = text.startIndex
        var segments: [(start: Int, end: Int, id: Int?)] = []
        try text.withUnsafeBufferPointer { buffer in
            var kept = 0  // `start_offset` in the Rust code
            // The end of the last whitespace run scanned for rstrip, and where the scan began: a run is scanned once.
            var scannedRun = (from: -1, end: -1)
            try forEachMatch(in: buffer, source: source) { matchStart, matchEnd, entry in
                var start = matchStart
                var end = matchEnd
                if entry.singleWord {
                    let wordBefore = start > 0 && Self.endsWithWordCharacter(buffer, before: start)
                    let wordAfter = end < buffer.count && Self.startsWithWordCharacter(buffer, at: end)
                    if wordBefore || wordAfter { return }
                }
                if entry.leftStrip {
                    // Only the run after the last kept end can move the start (it is max'ed with `kept`).
                    start = max(Self.whitespaceRunStart(buffer, before: start, notBefore: kept), kept)
                }
                if entry.rightStrip {
                    if !(scannedRun.from...max(scannedRun.from, scannedRun.end)).contains(end) {
                        scannedRun = (end, Self.whitespaceRunEnd(buffer, from: end))
                    }
                    end = scannedRun.end
                }
                if kept < start { segments.append((kept, start, nil)) }
                segments.append((start, end, entry.id))
                kept = end
            }
            if kept != buffer.count { segments.append((kept, buffer.count, nil)) }
        }
        for segment in segments where segment.start < segment.end {
            if let id = segment.id {
                try emit(.token(id))
            } else {
                try emit(.text(text[(base + segment.start)..<(base + segment.end)]))
            }
        }
    }

    /// Trie steps allowed per byte of text, beyond a fixed 1 Mi: real added
    /// tokens are tens of bytes, so a search walks at most that far from any position.
    static let trieStepsPerByte = 256

    private func forEachMatch(
        in buffer: UnsafeBufferPointer<UInt8>, source: String, _ body: (Int, Int, Entry) -> Void
    ) throws {
        var budget = buffer.count < (Int.max - (1 << 20)) / Self.trieStepsPerByte
            ? buffer.count * Self.trieStepsPerByte + (1 << 20) : Int.max
        var start = 0
        while start < buffer.count {
            guard startsPattern[Int(buffer[start])] else {
                start += 1
                continue
            }
            var node = 0
            var longest: (end: Int, entry: Int32)?
            var index = start
            while index < buffer.count, let child = children[node][buffer[index]] {
                node = Int(child)
                index += 1
                if terminal[node] >= 0 { longest = (index, terminal[node]) }
            }
            budget -= index - start
            guard budget >= 0 else {
                throw DroptraceError(
                    "finding its added tokens in a text of \(buffer.count) bytes took more than \(Self.trieStepsPerByte) "
                        + "steps per byte (an added token thousands of bytes long, whose beginning the text repeats?); "
                        + "droptrace stops there", path: source)
            }
            if let longest {
                body(start, longest.end, entries[Int(longest.entry)])
                start = longest.end
            } else {
                start += 1
            }
        }
    }

    // The Rust code tests these with the regexes \w$, ^\w, \s*$ and ^\s*.
    // The regex crate's \w is of another Unicode version than Swift's (a
    // generated table); its \s, White_Space, is the same in both.

    private static func isWordCharacter(_ value: UInt32) -> Bool {
        LibraryCharacterTables.wordCharacters.containsScalar(value)
    }

    private static func endsWithWordCharacter(_ buffer: UnsafeBufferPointer<UInt8>, before end: Int) -> Bool {
        let start = UTF8Scalars.startOfScalar(endingAt: end, in: buffer)
        return isWordCharacter(UTF8Scalars.decode(buffer, at: start).value)
    }

    private static func startsWithWordCharacter(_ buffer: UnsafeBufferPointer<UInt8>, at start: Int) -> Bool {
        isWordCharacter(UTF8Scalars.decode(buffer, at: start).value)
    }

    private static func isWhitespace(_ value: UInt32) -> Bool {
        Unicode.Scalar(value)?.properties.isWhitespace ?? false
    }

    private static func whitespaceRunStart(_ buffer: UnsafeBufferPointer<UInt8>, before end: Int, notBefore floor: Int) -> Int {
        var start = end
        while start > floor {
            let previous = UTF8Scalars.startOfScalar(endingAt: start, in: buffer)
            guard isWhitespace(UTF8Scalars.decode(buffer, at: previous).value) else { break }
            start = previous
        }
        return start
    }

    private static func whitespaceRunEnd(_ buffer: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        var end = start
        while end < buffer.count {
            let (value, length) = UTF8Scalars.decode(buffer, at: end)
            guard isWhitespace(value) else { break }
            end += length
        }
        return end
    }
}
