import Foundation

/// JSON text of a JSONSerialization object that keeps each number's kind:
/// floats keep their decimal point (JSONSerialization writes 8.0 as 8, which
/// transformers' strict config classes, and droptrace with them, refuse for a
/// float setting), booleans stay booleans. Keys are sorted.
enum KindPreservingJSON {
    static func data(_ object: Any) -> Data { Data(text(object).utf8) }

    static func text(_ value: Any) -> String {
        switch value {
        case is NSNull:
            return "null"
        case let text as String:
            let data = try! JSONSerialization.data(withJSONObject: [text], options: [.withoutEscapingSlashes])
            return String(String(decoding: data, as: UTF8.self).dropFirst().dropLast())
        case let items as [Any]:
            return "[" + items.map(text).joined(separator: ", ") + "]"
        case let object as [String: Any]:
            return "{" + object.keys.sorted().map { text($0) + ": " + text(object[$0]!) }.joined(separator: ", ") + "}"
        case let number as NSNumber:
            switch String(cString: number.objCType) {
            case "c", "B": return number.boolValue ? "true" : "false"
            case "d", "f":
                let double = number.doubleValue
                return double.isFinite ? "\(double)" : (double.isNaN ? "NaN" : (double > 0 ? "Infinity" : "-Infinity"))
            default: return number.stringValue
            }
        default:
            return "\(value)"
        }
    }
}
