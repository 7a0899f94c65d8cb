/// A JSON number's value as serde_json reads it into an f64 without its
/// `float_roundtrip` feature, as the tokenizers and safetensors libraries
/// build it (serde_json 1.0, de.rs: `parse_integer`, `parse_decimal`,
/// `parse_exponent`, `f64_from_parts`). Not always the nearest double:
/// the first 19 or 20 significant digits are gathered into a u64 (the rest
/// dropped), converted, then multiplied or divided by a power of ten, so
/// two roundings may leave the value one unit in the last place away
/// (`"-7.2847161293029785"` reads as −7.284716129302979). A Unigram
/// tokenizer's piece scores are read so: their sums decide its cuts.
enum SerdeFloat {
    /// 1e0 … 1e308, as the literals of serde_json's `POW10`.
    private static let powersOfTen: [Double] = (0...308).map { Double("1e\($0)")! }

    /// - Parameter number: the UTF-8 of one valid JSON number.
    /// - Returns: nil where serde_json reports "number out of range".
    static func value(of number: UnsafeBufferPointer<UInt8>) -> Double? {
        var index = 0
        let positive = number[0] != UInt8(ascii: "-")
        if !positive { index += 1 }
        func digit(_ at: Int) -> UInt64? {
            guard at < number.count, number[at] >= UInt8(ascii: "0"), number[at] <= UInt8(ascii: "9") else { return nil }
            return UInt64(number[at] - UInt8(ascii: "0"))
        }
        // serde_json's `overflow!(significand * 10 + digit, u64::MAX)`.
        func overflows(_ significand: UInt64, _ digit: UInt64) -> Bool {
            significand >= UInt64.max / 10 && (significand > UInt64.max / 10 || digit > UInt64.max % 10)
        }
        var significand: UInt64 = 0
        var exponent = 0
        var dropping = false
        // Integer digits past the u64 each scale by ten (`parse_long_integer`).
        while let value = digit(index) {
            if dropping || overflows(significand, value) {
                dropping = true
                exponent += 1
            } else {
                significand = significand * 10 + value
            }
            index += 1
        }
        if index < number.count, number[index] == UInt8(ascii: ".") {
            index += 1
            // Fraction digits past the u64 are ignored (`parse_decimal_overflow`).
            dropping = false
            while let value = digit(index) {
                if dropping || overflows(significand, value) {
                    dropping = true
                } else {
                    significand = significand * 10 + value
                    exponent -= 1
                }
                index += 1
            }
        }
        if index < number.count, number[index] == UInt8(ascii: "e") || number[index] == UInt8(ascii: "E") {
            index += 1
            var positiveExponent = true
            if number[index] == UInt8(ascii: "+") || number[index] == UInt8(ascii: "-") {
                positiveExponent = number[index] == UInt8(ascii: "+")
                index += 1
            }
            var written: Int32 = 0
            while let value = digit(index) {
                let (times10, overflow1) = written.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = times10.addingReportingOverflow(Int32(value))
                if overflow1 || overflow2 {
                    // `parse_exponent_overflow`: an error for a growing non-zero value, else zero.
                    if significand != 0 && positiveExponent { return nil }
                    return positive ? 0 : -0.0
                }
                written = sum
                index += 1
            }
            // i32 arithmetic, saturating as serde_json's.
            let starting = Int32(clamping: exponent)
            exponent = Int(positiveExponent ? starting.addingSaturating(written) : starting.subtractingSaturating(written))
        }
        return fromParts(positive: positive, significand: significand, exponent: Int(Int32(clamping: exponent)))
    }

    /// `f64_from_parts`.
    private static func fromParts(positive: Bool, significand: UInt64, exponent: Int) -> Double? {
        var value = Double(significand)
        var exponent = exponent
        while true {
            if abs(exponent) < powersOfTen.count {
                if exponent >= 0 {
                    value *= powersOfTen[exponent]
                    if value.isInfinite { return nil }
                } else {
                    value /= powersOfTen[-exponent]
                }
                break
            }
            if value == 0 { break }
            if exponent >= 0 { return nil }
            value /= 1e308
            exponent += 308
        }
        return positive ? value : -value
    }
}

private extension Int32 {
    func addingSaturating(_ other: Int32) -> Int32 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }

    func subtractingSaturating(_ other: Int32) -> Int32 {
        let (difference, overflow) = subtractingReportingOverflow(other)
        return overflow ? (other > 0 ? .min : .max) : difference
    }
}
