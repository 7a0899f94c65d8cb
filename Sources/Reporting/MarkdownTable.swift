/// A GitHub-flavoured Markdown table.
struct MarkdownTable {
    enum Alignment { case left, right, center }

    var headers: [String]
    var alignments: [Alignment]
    var rows: [[String]] = []

    init(_ headers: [String], alignments: [Alignment]? = nil) {
        self.headers = headers
        self.alignments = alignments ?? headers.map { _ in .left }
    }

    mutating func add(_ row: [String]) {
        precondition(row.count == headers.count, "a table row needs one cell per column")
        rows.append(row)
    }

    func render() -> String {
        let rule = alignments.map { alignment -> String in
            switch alignment {
            case .left: "---"
            case .right: "---:"
            case .center: ":---:"
            }
        }
        return ([headers, rule] + rows).map { cells in
            "| " + cells.map(Self.cell).joined(separator: " | ") + " |"
        }.joined(separator: "\n") + "\n"
    }

    /// A pipe ends a cell and a newline ends the table, even inside code.
    private static func cell(_ text: String) -> String {
        text.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "\n", with: " ")
    }
}

/// Inline Markdown escaping for text that comes from outside (checkpoint
/// names, model types): such text should show literally, never as markup
/// (nor as an HTML entity: "R&amp;D" shows as typed).
/// Pipes are left to `MarkdownTable`, which escapes them in cells only.
enum Markdown {
    static func escape(_ text: String) -> String {
        var escaped = ""
        for scalar in text.unicodeScalars {
            if let code = hiddenCharacterCode(scalar) {
                escaped += "\\[\(code)\\]"
                continue
            }
            if "\\`*_[]<>#~&".unicodeScalars.contains(scalar) { escaped.append("\\") }
            escaped.unicodeScalars.append(scalar == "\n" ? " " : scalar)
        }
        return escaped
    }

    /// "U+202E" for a character that changes or hides how a name reads,
    /// else nil: format characters (general category Cf: bidirectional
    /// embeddings, overrides, isolates and marks, which reorder what follows
    /// them — "step-\u{202E}0001" reads as another step — and zero-width
    /// ones, which make "fin\u{200B}al" read as "final"), control characters
    /// other than tab and line breaks, and noncharacters (U+FFFE, U+FFFF…),
    /// which XML does not allow in an SVG. Reports show the code instead.
    static func hiddenCharacterCode(_ scalar: Unicode.Scalar) -> String? {
        let category = scalar.properties.generalCategory
        guard category == .format || scalar.properties.isNoncharacterCodePoint
                || (category == .control && !["\t", "\n", "\r"].contains(scalar))
        else { return nil }
        return String(format: "U+%04X", scalar.value)
    }
}
