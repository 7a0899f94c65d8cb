import Analysis
import Foundation

/// How numbers appear in the report. Undefined values (NaN: no previous
/// checkpoint, a constant vector) show as an em dash, never as "nan".
enum NumberFormatting {
    static let undefined = "—"

    /// Fixed decimals: 4 for importance scores, 3 for correlations and
    /// overlaps; in scientific notation from 10¹², where fixed digits would
    /// run on (a perplexity of 1e300 filled a table cell with 301 digits).
    static func fixed(_ value: Double, _ decimals: Int) -> String {
        guard value.isFinite else { return undefined }
        if abs(value) >= 1e12 { return String(format: "%.\(decimals)e", value) }
        let text = String(format: "%.\(decimals)f", value)
        // "-0.000" reads as a sign where there is none.
        return Double(text) == 0 ? String(format: "%.\(decimals)f", 0.0) : text
    }

    /// An importance score: 4 decimals; a nonzero score that would print
    /// as 0.0000 (below 5e-5: near-identity modules of a deep model) in
    /// scientific notation, 3 significant digits, so it reads as small, not zero.
    static func score(_ value: Double) -> String {
        value != 0 && abs(value) < 5e-5 ? String(format: "%.2e", value) : fixed(value, 4)
    }
    static func correlation(_ value: Double) -> String { fixed(value, 3) }

    /// A step as an integer, "—" when unknown (-1).
    static func step(_ step: Int64) -> String { step >= 0 ? String(step) : undefined }

    /// Token counts with thousands separators: 2,048,000.
    static func grouped(_ value: Int64) -> String {
        guard value >= 0 else { return undefined }
        let digits = String(value)
        var result = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { result.append(",") }
            result.append(digit)
        }
        return result
    }

    /// A layer list: "1, 3, 4".
    static func layers(_ layers: [Int]) -> String {
        layers.isEmpty ? undefined : layers.map(String.init).joined(separator: ", ")
    }

    /// An interval as "[low, high]" with `decimals` decimals, "—" when undefined.
    static func interval(_ interval: ConfidenceInterval, _ decimals: Int) -> String {
        interval.isDefined ? "[\(fixed(interval.low, decimals)), \(fixed(interval.high, decimals))]" : undefined
    }

    /// What follows an importance score `value` in a table with intervals:
    /// " [0.1200, 0.1270]", " —" for an undefined interval of a defined
    /// score, nothing when no interval is given or the score itself is
    /// undefined (its "—" says it).
    static func scoreInterval(of value: Double, _ interval: ConfidenceInterval?) -> String {
        guard value.isFinite, let interval else { return "" }
        return " " + (interval.isDefined ? "[\(score(interval.low)), \(score(interval.high))]" : undefined)
    }

    /// `scoreInterval` for a value shown with `decimals` decimals (a correlation).
    static func intervalAfter(_ value: Double, _ interval: ConfidenceInterval, _ decimals: Int) -> String {
        value.isFinite ? " " + self.interval(interval, decimals) : ""
    }

    static func percent(_ fraction: Double) -> String {
        guard fraction.isFinite else { return undefined }
        return String(format: "%.0f%%", fraction * 100)
    }
}
