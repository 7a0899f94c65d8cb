/// A stretch of text on its way through normalisers and pre-tokenizers.
///
/// Pieces are slices of one UTF-8 buffer, so splitting a large calibration
/// file into a million words copies nothing.
struct TextPiece {
    var bytes: ArraySlice<UInt8>

    /// True once the ByteLevel pre-tokenizer has run: the piece then stands
    /// for the alphabet text of its bytes ("Ġthe" for " the"). Keeping the raw
    /// bytes lets byte-level BPE look symbols up by byte value instead of
    /// re-encoding every word.
    var isByteMapped: Bool

    /// True when the piece begins where the input text begins (the Rust
    /// library's `offsets_original().0 == 0`): Metaspace's `prepend_scheme:
    /// first` adds its "▁" only to such a piece, so text after a leading
    /// added token, or after the first split, gets none.
    var startsInput: Bool

    init(_ bytes: ArraySlice<UInt8>, isByteMapped: Bool = false, startsInput: Bool = false) {
        self.bytes = bytes
        self.isByteMapped = isByteMapped
        self.startsInput = startsInput
    }

    /// The UTF-8 of the text this piece stands for, so that a later stage
    /// that knows nothing of byte mapping sees what the Rust library sees.
    func logicalText() -> TextPiece {
        guard isByteMapped else { return self }
        return TextPiece(ByteLevelAlphabet.encode(bytes)[...], startsInput: startsInput)
    }
}
