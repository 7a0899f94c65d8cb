import Foundation

/// A standalone SVG document built from strings: the figures are simple
/// enough that a DOM would only add weight. Everything a browser needs is
/// inline (no external fonts, images or stylesheets), and `width`/`height`
/// plus `viewBox` make it render at its natural size and scale cleanly.
struct SVGDocument {
    var width: Double
    var height: Double
    /// Shown by browsers as a tooltip and read by screen readers.
    var title: String
    private(set) var definitions: [String] = []
    private(set) var elements: [String] = []

    static let fontFamily = "DejaVu Sans, Helvetica, Arial, sans-serif"
    /// The XML declaration, then the line that marks a figure as droptrace's
    /// (`ReportOwnership`): the declaration must come first in an XML file.
    static let prolog = #"<?xml version="1.0" encoding="UTF-8"?>"# + "\n" + ReportOwnership.marker

    init(width: Double, height: Double, title: String) {
        self.width = width
        self.height = height
        self.title = title
    }

    mutating func define(_ element: String) { definitions.append(element) }
    mutating func add(_ element: String) { elements.append(element) }
    mutating func add(contentsOf more: [String]) { elements.append(contentsOf: more) }

    func render() -> String {
        let w = SVG.number(width), h = SVG.number(height)
        var lines = [
            Self.prolog,
            #"<svg xmlns="http://www.w3.org/2000/svg" width="\#(w)" height="\#(h)" viewBox="0 0 \#(w) \#(h)" "#
                + #"font-family="\#(Self.fontFamily)" font-size="12">"#,
            "<title>\(SVG.escape(title))</title>",
        ]
        if !definitions.isEmpty {
            lines.append("<defs>")
            lines.append(contentsOf: definitions)
            lines.append("</defs>")
        }
        // An opaque background: transparent figures vanish on dark themes.
        lines.append(##"<rect x="0" y="0" width="\##(w)" height="\##(h)" fill="#ffffff"/>"##)
        lines.append(contentsOf: elements)
        lines.append("</svg>")
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Element helpers. Coordinates are rounded to 0.01 px to keep files small.
enum SVG {
    /// `value` rounded to 0.01; beyond ±10⁹ (no figure is that large) clamped
    /// there, and a non-finite value is 0, so that no value can make a
    /// figure invalid.
    static func number(_ value: Double) -> String {
        let bounded = value.isFinite ? min(max(value, -1e9), 1e9) : 0
        let rounded = (bounded * 100).rounded() / 100
        if rounded == rounded.rounded() { return String(Int(rounded)) }
        var text = String(format: "%.2f", rounded)
        while text.hasSuffix("0") { text.removeLast() }
        return text
    }

    /// Escapes text and attribute values for XML; a character that changes or
    /// hides how text reads, or that XML does not allow, shows as its code
    /// ("[U+202E]", `Markdown.hiddenCharacterCode`).
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&apos;"
            default: escaped += Markdown.hiddenCharacterCode(scalar).map { "[\($0)]" } ?? String(scalar)
            }
        }
        return escaped
    }

    static func rect(x: Double, y: Double, width: Double, height: Double, fill: String,
                     extra: String = "") -> String {
        #"<rect x="\#(number(x))" y="\#(number(y))" width="\#(number(width))" height="\#(number(height))" "#
            + #"fill="\#(fill)"\#(extra.isEmpty ? "" : " " + extra)/>"#
    }

    static func line(x1: Double, y1: Double, x2: Double, y2: Double, stroke: String, width: Double = 1,
                     extra: String = "") -> String {
        #"<line x1="\#(number(x1))" y1="\#(number(y1))" x2="\#(number(x2))" y2="\#(number(y2))" "#
            + #"stroke="\#(stroke)" stroke-width="\#(number(width))"\#(extra.isEmpty ? "" : " " + extra)/>"#
    }

    enum Anchor: String { case start, middle, end }

    /// Text with its baseline at `y` (or centred on `y` when `middle`).
    static func text(_ content: String, x: Double, y: Double, size: Double = 12, anchor: Anchor = .start,
                     middle: Bool = false, rotate: Double? = nil, weight: String? = nil,
                     fill: String = "#222222") -> String {
        var attributes = #"x="\#(number(x))" y="\#(number(y))" font-size="\#(number(size))" fill="\#(fill)""#
        if anchor != .start { attributes += #" text-anchor="\#(anchor.rawValue)""# }
        // dominant-baseline is patchy across renderers; shift by ~0.35em instead.
        if middle { attributes += #" dy="\#(number(size * 0.35))""# }
        if let weight { attributes += #" font-weight="\#(weight)""# }
        if let rotate { attributes += #" transform="rotate(\#(number(rotate)) \#(number(x)) \#(number(y)))""# }
        return "<text \(attributes)>\(escape(content))</text>"
    }

    /// A polyline path through `points`; nil entries (undefined values)
    /// break the line into separate pieces instead of bridging the gap.
    static func path(_ points: [(Double, Double)?], stroke: String, width: Double = 2,
                     dash: String? = nil) -> String? {
        var commands: [String] = []
        var penDown = false
        for point in points {
            guard let (x, y) = point else { penDown = false; continue }
            commands.append("\(penDown ? "L" : "M")\(number(x)) \(number(y))")
            penDown = true
        }
        guard !commands.isEmpty else { return nil }
        let dashAttribute = dash.map { #" stroke-dasharray="\#($0)""# } ?? ""
        return #"<path d="\#(commands.joined(separator: " "))" fill="none" stroke="\#(stroke)" "#
            + #"stroke-width="\#(number(width))" stroke-linejoin="round" stroke-linecap="round"\#(dashAttribute)/>"#
    }

    /// Rough width of `text` at `size` px in a sans-serif font, for layout
    /// decisions (how many tick labels fit). Digits are ~0.6 em wide.
    static func estimatedWidth(_ text: String, size: Double) -> Double {
        Double(text.count) * size * 0.6
    }
}
