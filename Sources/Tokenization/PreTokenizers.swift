import DroptraceSupport
/// One step of the `pre_tokenizer` section: cuts a piece of text into
/// smaller pieces, each of which the model encodes on its own.
protocol PreTokenizer: Sendable {
    /// - Throws: a regex's `DroptraceError` (step budget), or what `emit` throws.
    func split(_ piece: TextPiece, _ emit: (TextPiece) throws -> Void) throws
    /// Whether a split may depend on text arbitrarily far ahead (`SplitPattern`).
    var looksArbitrarilyFarAhead: Bool { get }
}

extension PreTokenizer {
    var looksArbitrarilyFarAhead: Bool { false }
}

extension TextPiece {
    /// Sub-slices of this piece at the ranges a pattern finds.
    func split(by pattern: SplitPattern, behavior: SplitDelimiterBehavior, invert: Bool,
               markByteMapped: Bool, _ emit: (TextPiece) throws -> Void) throws {
        let base = bytes.startIndex
        try bytes.withUnsafeBufferPointer { buffer in
            try pattern.split(buffer, behavior: behavior, invert: invert) { range in
                try emit(TextPiece(bytes[(base + range.lowerBound)..<(base + range.upperBound)],
                               isByteMapped: markByteMapped, startsInput: startsInput && range.lowerBound == 0))
            }
        }
    }
}

/// GPT-2's pre-tokenizer: optionally a leading space, optionally the GPT-2
/// word regex, then every byte replaced by its alphabet character.
struct ByteLevelPreTokenizer: PreTokenizer {
    let addPrefixSpace: Bool
    let useRegex: Bool
    private let wordPattern = WordSplitScanner(shape: WordSplitScanner.gpt2)

    func split(_ piece: TextPiece, _ emit: (TextPiece) throws -> Void) throws {
        var text = piece.logicalText()
        if addPrefixSpace && text.bytes.first != 0x20 {
            text = TextPiece([0x20] + text.bytes, startsInput: text.startsInput)
        }
        if useRegex {
            try text.split(by: wordPattern, behavior: .isolated, invert: false, markByteMapped: true, emit)
        } else {
            try emit(TextPiece(text.bytes, isByteMapped: true, startsInput: text.startsInput))
        }
    }
}

/// The `Split` pre-tokenizer (and `Digits`, which is a split on Rust's
/// `char::is_numeric`).
struct PatternPreTokenizer: PreTokenizer {
    let pattern: SplitPattern
    let behavior: SplitDelimiterBehavior
    let invert: Bool
    var looksArbitrarilyFarAhead: Bool { pattern.looksArbitrarilyFarAhead }

    func split(_ piece: TextPiece, _ emit: (TextPiece) throws -> Void) throws {
        try piece.logicalText().split(by: pattern, behavior: behavior, invert: invert, markByteMapped: false, emit)
    }

    static func digits(individually: Bool) -> PatternPreTokenizer {
        PatternPreTokenizer(
            pattern: CharacterTestSplitPattern { value in
                value < 0x80 ? (0x30...0x39).contains(value) : LibraryCharacterTables.numeric.containsScalar(value)
            },
            behavior: individually ? .isolated : .contiguous,
            invert: false)
    }
}

/// The pre-tokenizers that split at characters of one kind: each such
/// character is its own delimiter (the library's `split` on a `char` test).
extension PatternPreTokenizer {
    /// `WhitespaceSplit`: whitespace (Rust's `char::is_whitespace`) removed.
    static let whitespaceSplit = PatternPreTokenizer(
        pattern: CharacterTestSplitPattern { LibraryCharacterTables.whitespace.containsScalar($0) },
        behavior: .removed, invert: false)

    /// `Punctuation`: ASCII and Unicode punctuation split off as `behavior` says.
    static func punctuation(_ behavior: SplitDelimiterBehavior) -> PatternPreTokenizer {
        PatternPreTokenizer(
            pattern: CharacterTestSplitPattern { LibraryCharacterTables.punctuation.containsScalar($0) },
            behavior: behavior, invert: false)
    }

    /// `CharDelimiterSplit`: every `delimiter` removed.
    static func delimiter(_ delimiter: Unicode.Scalar) -> PatternPreTokenizer {
        PatternPreTokenizer(pattern: CharacterTestSplitPattern { $0 == delimiter.value }, behavior: .removed, invert: false)
    }

    /// `BertPreTokenizer`: whitespace removed, then punctuation isolated.
    static let bert = SequencePreTokenizer(steps: [whitespaceSplit, punctuation(.isolated)])
}

/// Steps applied one after another, each to every piece the previous made.
struct SequencePreTokenizer: PreTokenizer {
    let steps: [PreTokenizer]
    /// tokenizer.json, for errors; nil for the built-in sequences.
    var source: String? = nil
    var looksArbitrarilyFarAhead: Bool { steps.contains { $0.looksArbitrarilyFarAhead } }

    /// Steps accepted (nested sequences counted as their steps): real
    /// tokenizers have a handful, and each is a level of recursion here.
    static let maximumSteps = 64

    /// Each step's pieces together stay within `NormalizationGrowth`'s bound
    /// of the input piece: steps that grow text (ByteLevel re-encoding a
    /// byte-mapped piece doubles it, Metaspace's "▁" triples a space) would,
    /// repeated, take all memory (40 ByteLevel steps: 2⁴⁰ times the text).
    func split(_ piece: TextPiece, _ emit: (TextPiece) throws -> Void) throws {
        var produced = [Int](repeating: 0, count: steps.count)
        try split(piece, fromStep: 0, limit: NormalizationGrowth.limit(piece.bytes.count), produced: &produced, emit)
    }

    private func split(
        _ piece: TextPiece, fromStep step: Int, limit: Int, produced: inout [Int], _ emit: (TextPiece) throws -> Void
    ) throws {
        guard step < steps.count else { return try emit(piece) }
        try steps[step].split(piece) { smaller in
            produced[step] += smaller.bytes.count
            guard produced[step] <= limit else {
                throw DroptraceError(
                    "the pre-tokenizer grows text beyond 16 times its length (step \(step + 1) of its Sequence, one that "
                        + "re-encodes what an earlier one wrote?); droptrace stops there", path: source)
            }
            try split(smaller, fromStep: step + 1, limit: limit, produced: &produced, emit)
        }
    }
}
