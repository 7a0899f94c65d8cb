/// GPT-2's reversible mapping between bytes and printable characters.
///
/// Byte-level BPE vocabularies never contain raw bytes: every byte is first
/// replaced by a visible character (space becomes "Ġ", newline "Ċ") so that
/// tokens are printable strings. Printable Latin-1 bytes map to themselves;
/// the remaining 68 bytes map to U+0100 onwards, in byte order.
enum ByteLevelAlphabet {
    /// The character standing for each byte.
    static let scalarForByte: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var nextSubstitute: UInt32 = 256
        for byte in 0..<256 {
            if isPrintedAsItself(UInt8(byte)) {
                table[byte] = Unicode.Scalar(UInt8(byte))
            } else {
                table[byte] = Unicode.Scalar(nextSubstitute)!
                nextSubstitute += 1
            }
        }
        return table
    }()

    /// UTF-8 encoding of each byte's character, for turning raw bytes into
    /// the text the vocabulary is written in.
    static let utf8ForByte: [[UInt8]] = scalarForByte.map { Array(String($0).utf8) }

    /// The byte each alphabet character stands for, indexed by scalar
    /// value (all below U+0144); -1 for characters outside the alphabet.
    static let byteForScalar: [Int16] = {
        var inverse = [Int16](repeating: -1, count: 0x144)
        for (byte, scalar) in scalarForByte.enumerated() { inverse[Int(scalar.value)] = Int16(byte) }
        return inverse
    }()

    private static func isPrintedAsItself(_ byte: UInt8) -> Bool {
        (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
    }

    /// Raw bytes → UTF-8 of the alphabet text that stands for them.
    static func encode<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes { out.append(contentsOf: utf8ForByte[Int(byte)]) }
        return out
    }

    /// Alphabet text → the raw bytes it stands for, or nil when some
    /// character is outside the alphabet (e.g. a special token such as "<s>"
    /// that happens to be all-alphabet decodes fine; "▁" does not).
    static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        let table = byteForScalar
        for scalar in text.unicodeScalars {
            guard scalar.value < table.count, table[Int(scalar.value)] >= 0 else { return nil }
            out.append(UInt8(table[Int(scalar.value)]))
        }
        return out
    }
}
