// Byte and text mutations shared by every target.

/// SplitMix64: reproducible from --seed.
struct Random {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }
}

/// Sizes and counts that break naive arithmetic.
let interesting: [UInt64] = [
    0, 1, 2, 7, 8, 16, 31, 32, 255, 256, 0x7FFF, 0xFFFF, 0x1_0000, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF,
    0x1_0000_0000, 0x1_0000_0001, 1 << 40, 1 << 62, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, UInt64.max - 1, UInt64.max,
]

/// One mutation of `bytes`; `header` bounds the region most mutations aim at
/// (the part of the file that holds sizes), since the tensor data is rarely parsed.
func mutateBytes(_ bytes: inout [UInt8], header: Int, _ random: inout Random) {
    let target = random.below(4) == 0 ? bytes.count : max(1, min(header, bytes.count))
    func position() -> Int { random.below(target) }
    switch random.below(9) {
    case 0: // flip bits
        for _ in 0..<(1 + random.below(4)) where !bytes.isEmpty { bytes[position()] ^= UInt8(1 << random.below(8)) }
    case 1: // random bytes
        for _ in 0..<(1 + random.below(8)) where !bytes.isEmpty { bytes[position()] = UInt8(truncatingIfNeeded: random.next()) }
    case 2, 3: // an interesting little-endian integer of 1, 2, 4 or 8 bytes
        let width = [1, 2, 4, 8][random.below(4)]
        let value = interesting[random.below(interesting.count)]
        let at = position()
        for i in 0..<width where at + i < bytes.count { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    case 4: // a decimal number in text (safetensors' JSON header) replaced by an interesting one
        let digits = (0..<min(target, bytes.count)).filter { (0x30...0x39).contains(bytes[$0]) }
        guard let at = digits.isEmpty ? nil : digits[random.below(digits.count)] else { return }
        var end = at
        while end < bytes.count, (0x30...0x39).contains(bytes[end]) { end += 1 }
        var start = at
        while start > 0, (0x30...0x39).contains(bytes[start - 1]) { start -= 1 }
        let choices = ["0", "-1", "1", "4294967295", "4294967296", "9223372036854775807", "9223372036854775808",
                       "18446744073709551615", "4611686018427387904", "1e30", "2.5", "99999999999999999999999"]
        bytes.replaceSubrange(start..<end, with: Array(choices[random.below(choices.count)].utf8))
    case 5: // truncate
        bytes.removeLast(random.below(bytes.count + 1))
    case 6: // delete a chunk
        guard !bytes.isEmpty else { return }
        let at = position()
        bytes.removeSubrange(at..<min(bytes.count, at + 1 + random.below(64)))
    case 7: // duplicate a chunk
        guard !bytes.isEmpty else { return }
        let at = position()
        let chunk = Array(bytes[at..<min(bytes.count, at + 1 + random.below(64))])
        bytes.insert(contentsOf: chunk, at: position())
    default: // copy one region over another (swaps sizes and offsets around)
        guard bytes.count > 16 else { return }
        let length = 1 + random.below(16)
        let (from, to) = (random.below(max(1, target - length)), random.below(max(1, target - length)))
        guard from + length <= bytes.count, to + length <= bytes.count else { return }
        bytes.replaceSubrange(to..<(to + length), with: Array(bytes[from..<(from + length)]))
    }
}

/// Lines that break YAML, JSONL and text readers: anchors and aliases, tags,
/// unclosed brackets, odd numbers, BOMs, NULs, CRLF, lone surrogates.
let textSnippets: [String] = [
    "a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\n", "<<: *a\n", "*a\n", "!!binary AAAA\n", "!custom x\n",
    "? [a, b]\n: c\n", "{\n", "[\n", "key: " + String(repeating: "[", count: 200) + "\n", "%YAML 1.3\n", "---\n",
    "...\n", "\t", "\u{FEFF}", "\u{0}", "\u{85}", "0x7fffffffffffffff", "1e400", ".nan", ".inf", "-.inf", "~", "null",
    "\"\\uD800\"", "'unterminated\n", "|-\n  x\n", "\r\n", "\r", "layers: [1, 2, 99999999999999999999]\n",
    "{\"input_ids\": [1, 2, 3]}\n", "{\"input_ids\": [-1]}\n", "{\"input_ids\": [9223372036854775807]}\n",
    "{\"input_ids\": [1e300]}\n", "{\"input_ids\": []}\n", "{\"input_ids\": [1.5]}\n", "{\"input_ids\": \"abc\"}\n",
    "[1, 2, 3]\n", "{\"input_ids\": [[1]]}\n", "{\"input_ids\": [1, 2], \"input_ids\": [3]}\n",
    "日本語のテキスト 😀👍🏽", "\u{301}\u{301}\u{301}", String(repeating: "a", count: 5000),
]

/// Inserts, replaces or deletes whole lines, or inserts a snippet anywhere.
func mutateText(_ bytes: inout [UInt8], _ random: inout Random) {
    var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
    let snippet = Array(textSnippets[random.below(textSnippets.count)].utf8)
    let line = random.below(lines.count)
    switch random.below(5) {
    case 0: lines.insert(snippet, at: line)
    case 1: lines[line] = snippet
    case 2: lines.remove(at: line)
    case 3: lines.insert(lines[random.below(lines.count)], at: line)
    default:
        bytes.insert(contentsOf: snippet, at: random.below(bytes.count + 1))
        return
    }
    bytes = Array(lines.joined(separator: [UInt8(ascii: "\n")]))
}
