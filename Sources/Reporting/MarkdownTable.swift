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
            if let code = bidiControlCode(scalar) {
                escaped += "\\[\(code)\\]"
                continue
            }
            if "\\`*_[]<>#~&".unicodeScalars.contains(scalar) { escaped.append("\\") }
            escaped.unicodeScalars.append(scalar == "\n" ? " " : scalar)
        }
        return escaped
    }

    /// "U+202E" for a Unicode bidirectional formatting character (embeddings,
    /// overrides, isolates, marks), else nil. Left in a name, such a character
    /// reorders the text that follows it as displayed — a checkpoint named
    /// "step-\u{202E}0001" reads as another step — so reports show its code.
    static func bidiControlCode(_ scalar: Unicode.Scalar) -> String? {
        switch scalar.value {
        case 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: "U+" + String(scalar.value, radix: 16, uppercase: true)
        default: nil
        }
    }
}
