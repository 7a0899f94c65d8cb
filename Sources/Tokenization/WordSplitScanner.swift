/// Hand-written matchers for the word-splitting regexes that byte-level BPE
/// models ship with (GPT-2's, Llama-3's and Qwen2's), because they run over
/// every byte of a calibration file and ICU's regex engine manages only
/// about 6 MB/s on them.
///
/// Each alternative of those regexes is tried in order at the current
/// position, as Oniguruma does; the comments quote the alternative being
/// imitated. Any pattern not recognised here goes to `ICURegexSplitPattern`.
struct WordSplitScanner: SplitPattern {
    struct Shape: Equatable {
        /// `(?i:'s|...)` rather than `'s|...`
        var caseInsensitiveContractions: Bool
        /// `[^\r\n\p{L}\p{N}]?\p{L}+` rather than ` ?\p{L}+`
        var letterRunTakesAnyLeadingSymbol: Bool
        /// `\p{N}{1,k}` (k, or nil for `+`) rather than ` ?\p{N}+`
        var digitGroupLimit: Int?
        /// ` ?[^\s\p{L}\p{N}]+[\r\n]*` rather than ` ?[^\s\p{L}\p{N}]+`
        var symbolRunTakesNewlines: Bool
        /// presence of the `\s*[\r\n]+` alternative
        var hasNewlineRunAlternative: Bool
    }

    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    static let gpt2 = Shape(
        caseInsensitiveContractions: false, letterRunTakesAnyLeadingSymbol: false,
        digitGroupLimit: nil, symbolRunTakesNewlines: false, hasNewlineRunAlternative: false)

    static let llama3 = Shape(
        caseInsensitiveContractions: true, letterRunTakesAnyLeadingSymbol: true,
        digitGroupLimit: 3, symbolRunTakesNewlines: true, hasNewlineRunAlternative: true)

    static let qwen2 = Shape(
        caseInsensitiveContractions: true, letterRunTakesAnyLeadingSymbol: true,
        digitGroupLimit: 1, symbolRunTakesNewlines: true, hasNewlineRunAlternative: true)

    /// The exact regex texts recognised, as they appear in tokenizer.json.
    static let knownPatterns: [String: Shape] = [
        gpt2Pattern: gpt2,
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: llama3,
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#: qwen2,
    ]

    let shape: Shape
    private let classifier = ScalarClassifier.shared

    init(shape: Shape) {
        self.shape = shape
    }

    func forEachSegment(in text: UnsafeBufferPointer<UInt8>, _ body: (Int, Int, Bool) throws -> Void) rethrows {
        // The alternatives between them match every character, so the
        // matches tile the text and there are never gaps.
        var start = 0
        while start < text.count {
            let end = matchEnd(in: text, from: start)
            try body(start, end, true)
            start = end
        }
    }

    private func matchEnd(in text: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        let count = text.count
        let (first, firstLength) = UTF8Scalars.decode(text, at: start)
        let firstClass = classifier.classify(first)
        let afterFirst = start + firstLength

        // 's|'t|'re|'ve|'m|'ll|'d
        if first == 0x27, afterFirst < count, let end = contractionEnd(in: text, from: afterFirst) {
            return end
        }
        switch firstClass {
        case .letter:
            return runEnd(of: .letter, in: text, from: afterFirst)
        case .number:
            if let limit = shape.digitGroupLimit {
                return runEnd(of: .number, in: text, from: afterFirst, atMost: limit - 1)
            }
            return runEnd(of: .number, in: text, from: afterFirst)
        case .whitespace, .other:
            break
        }

        var second: (value: UInt32, length: Int, kind: ScalarClass)?
        if afterFirst < count {
            let (value, length) = UTF8Scalars.decode(text, at: afterFirst)
            second = (value, length, classifier.classify(value))
        }
        if let second {
            let afterSecond = afterFirst + second.length
            if shape.letterRunTakesAnyLeadingSymbol {
                // [^\r\n\p{L}\p{N}]?\p{L}+
                if first != 0x0D && first != 0x0A && second.kind == .letter {
                    return runEnd(of: .letter, in: text, from: afterSecond)
                }
            } else if first == 0x20 {
                // ' ?\p{L}+' and ' ?\p{N}+'
                if second.kind == .letter { return runEnd(of: .letter, in: text, from: afterSecond) }
                if second.kind == .number { return runEnd(of: .number, in: text, from: afterSecond) }
            }
        }

        // ' ?[^\s\p{L}\p{N}]+' optionally followed by [\r\n]*
        let symbolsStart: Int?
        if firstClass == .other {
            symbolsStart = afterFirst
        } else if first == 0x20, let second, second.kind == .other {
            symbolsStart = afterFirst + second.length
        } else {
            symbolsStart = nil
        }
        if let symbolsStart {
            let end = runEnd(of: .other, in: text, from: symbolsStart)
            return shape.symbolRunTakesNewlines ? newlinesEnd(in: text, from: end) : end
        }

        // Only whitespace is left.
        let whitespaceEnd = runEnd(of: .whitespace, in: text, from: afterFirst)
        if shape.hasNewlineRunAlternative, let end = lastNewlineEnd(in: text, from: start, to: whitespaceEnd) {
            // \s*[\r\n]+ : backtracking settles on the last line break of the run.
            return end
        }
        if whitespaceEnd == count { return whitespaceEnd }
        // \s+(?!\S) gives back the run's last character, so that it can
        // prefix the following word; a single character falls to \s+.
        let lastStart = UTF8Scalars.startOfScalar(endingAt: whitespaceEnd, in: text)
        return lastStart > start ? lastStart : whitespaceEnd
    }

    /// End of `'s`, `'re`, ... given the position just after the apostrophe.
    private func contractionEnd(in text: UnsafeBufferPointer<UInt8>, from index: Int) -> Int? {
        let (first, firstLength) = UTF8Scalars.decode(text, at: index)
        let letter = folded(first)
        if letter == Letter.s || letter == Letter.t || letter == Letter.m || letter == Letter.d {
            return index + firstLength
        }
        guard letter == Letter.r || letter == Letter.v || letter == Letter.l else { return nil }
        let secondIndex = index + firstLength
        guard secondIndex < text.count else { return nil }
        let (second, secondLength) = UTF8Scalars.decode(text, at: secondIndex)
        let expected = letter == Letter.l ? Letter.l : Letter.e
        return folded(second) == expected ? secondIndex + secondLength : nil
    }

    private enum Letter {
        static let s = UInt32(UInt8(ascii: "s")), t = UInt32(UInt8(ascii: "t"))
        static let m = UInt32(UInt8(ascii: "m")), d = UInt32(UInt8(ascii: "d"))
        static let r = UInt32(UInt8(ascii: "r")), v = UInt32(UInt8(ascii: "v"))
        static let l = UInt32(UInt8(ascii: "l")), e = UInt32(UInt8(ascii: "e"))
    }

    /// Case folding as far as it matters for the contraction letters:
    /// ASCII capitals and the long s (U+017F folds to "s").
    @inline(__always)
    private func folded(_ value: UInt32) -> UInt32 {
        guard shape.caseInsensitiveContractions else { return value }
        if value >= 0x41 && value <= 0x5A { return value + 0x20 }
        if value == 0x17F { return Letter.s }
        return value
    }

    @inline(__always)
    private func runEnd(
        of kind: ScalarClass, in text: UnsafeBufferPointer<UInt8>, from index: Int, atMost limit: Int = .max
    ) -> Int {
        var end = index
        var taken = 0
        while end < text.count && taken < limit {
            let (value, length) = UTF8Scalars.decode(text, at: end)
            guard classifier.classify(value) == kind else { break }
            end += length
            taken += 1
        }
        return end
    }

    private func newlinesEnd(in text: UnsafeBufferPointer<UInt8>, from index: Int) -> Int {
        var end = index
        while end < text.count && (text[end] == 0x0A || text[end] == 0x0D) { end += 1 }
        return end
    }

    private func lastNewlineEnd(in text: UnsafeBufferPointer<UInt8>, from start: Int, to end: Int) -> Int? {
        var index = end
        while index > start {
            index -= 1
            if text[index] == 0x0A || text[index] == 0x0D { return index + 1 }
        }
        return nil
    }
}
