import Foundation

/// The `--json` output of `drop`, `eval` and `score`: pretty-printed, keys
/// sorted, and every number that is not finite (an infinite perplexity, a
/// ratio of infinities) null. JSON has no NaN or infinity, and a string
/// ("inf") where a number goes breaks readers that expect a number, while
/// null reads as "no value" everywhere.
func encodeJSON<T: Encodable>(_ value: T) throws -> String {
    // JSONEncoder cannot write null for a Double, only a given string. The
    // value encoded with two different strings differs exactly at its
    // non-finite numbers (a string of the value itself is written alike both
    // times), and there the string, quotes included, becomes null.
    let first = try encoded(value, nonFinite: "a"), second = try encoded(value, nonFinite: "b")
    precondition(first.count == second.count, "one-character stand-ins keep the two encodings aligned")
    var merged: [UInt8] = []
    merged.reserveCapacity(first.count)
    var index = 0
    while index < first.count {
        if first[index] != second[index] {
            // At the stand-in; its opening quote is already in `merged`, its closing one follows.
            merged.removeLast()
            merged += Array("null".utf8)
            index += 2
        } else {
            merged.append(first[index])
            index += 1
        }
    }
    return String(decoding: merged, as: UTF8.self)
}

private func encoded<T: Encodable>(_ value: T, nonFinite: String) throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    encoder.nonConformingFloatEncodingStrategy = .convertToString(
        positiveInfinity: nonFinite, negativeInfinity: nonFinite, nan: nonFinite)
    return Array(try encoder.encode(value))
}
