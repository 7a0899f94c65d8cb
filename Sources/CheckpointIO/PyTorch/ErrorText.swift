extension String {
    /// The string as it may appear inside a one-line error: control, format
    /// (bidirectional overrides) and line-separator characters escaped and long
    /// values cut, since names in a damaged or hostile file can hold anything.
    public var forErrorMessage: String {
        var result = ""
        for scalar in unicodeScalars.prefix(120) {
            switch scalar.properties.generalCategory {
            case .control, .format, .lineSeparator, .paragraphSeparator, .privateUse, .unassigned, .surrogate:
                result += "\\u{\(String(scalar.value, radix: 16))}"
            default:
                result.unicodeScalars.append(scalar)
            }
        }
        return unicodeScalars.count > 120 ? result + "…" : result
    }
}
