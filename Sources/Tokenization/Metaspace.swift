/// Where Metaspace puts a "▁" in front of a piece (tokenizer.json spelling).
enum MetaspacePrependScheme: String, CaseIterable, Sendable {
    /// Every piece not already starting with the replacement.
    case always
    /// Only a piece at the very start of the input: the legacy=False Llama
    /// tokenizers use this so that text after a special token gets no ▁.
    case first
    case never
}

/// SentencePiece-style pre-tokenizer: spaces become the replacement
/// character ("▁"), a "▁" is prepended as the scheme says, and with `split`
/// the text is cut before every "▁" (each "▁" starts a new piece).
struct MetaspacePreTokenizer: PreTokenizer {
    let replacement: [UInt8]
    let prependScheme: MetaspacePrependScheme
    let splitsOnReplacement: Bool
    private let replacementPattern: LiteralSplitPattern

    init(replacement: String, prependScheme: MetaspacePrependScheme, split: Bool) {
        self.replacement = Array(replacement.utf8)
        self.prependScheme = prependScheme
        splitsOnReplacement = split
        replacementPattern = LiteralSplitPattern(needle: self.replacement)
    }

    func split(_ piece: TextPiece, _ emit: (TextPiece) throws -> Void) throws {
        let text = piece.logicalText()
        var output: [UInt8] = []
        output.reserveCapacity(text.bytes.count + replacement.count * 4)
        let startsWithReplacement = text.bytes.first == 0x20 || text.bytes.starts(with: replacement)
        // The library prepends even to empty text only when there is a
        // piece at all; pieces here are never empty.
        switch prependScheme {
        case .always where !startsWithReplacement: output.append(contentsOf: replacement)
        case .first where !startsWithReplacement && piece.startsInput: output.append(contentsOf: replacement)
        default: break
        }
        for byte in text.bytes {
            if byte == 0x20 { output.append(contentsOf: replacement) } else { output.append(byte) }
        }
        let result = TextPiece(output[...], startsInput: piece.startsInput)
        if splitsOnReplacement {
            try result.split(by: replacementPattern, behavior: .mergedWithNext, invert: false, markByteMapped: false, emit)
        } else {
            try emit(result)
        }
    }
}
