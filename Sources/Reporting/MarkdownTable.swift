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
        for character in text {
            if "\\`*_[]<>#~&".contains(character) { escaped.append("\\") }
            escaped.append(character == "\n" ? " " : character)
        }
        return escaped
    }
}
