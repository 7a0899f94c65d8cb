extension String {
    /// The string as it may appear inside a one-line error: control characters
    /// escaped and long values cut, since names in a damaged or hostile file can
    /// hold anything.
    var forErrorMessage: String {
        var result = ""
        for scalar in unicodeScalars.prefix(120) {
            if scalar.value < 0x20 || scalar.value == 0x7F {
                result += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                result.unicodeScalars.append(scalar)
            }
        }
        return unicodeScalars.count > 120 ? result + "…" : result
    }
}
