import Foundation

/// Names the key behind a number config.json cannot hold, where Foundation
/// does not.
///
/// Foundation's JSONDecoder reports a number that does not fit the decoded
/// type (`1.5` or `1e20` for an `Int` setting) as "The given data was not
/// valid JSON." with an empty coding path, and JSONSerialization refuses a
/// whole file for one number beyond a double's range (`1e400`) or one of the
/// literals Python's `json.dumps` writes for non-finite floats (`NaN`,
/// `Infinity`). Either way the user would learn nothing about which key is
/// wrong; these helpers find it.
enum ConfigNumbers {
    /// For a file JSONSerialization refuses: the first `"key": <number>` whose
    /// number is not finite as a double, or that is `NaN` / `Infinity`, as
    /// `key "rope_theta" holds 1e400, which is not a finite number`; nil when
    /// the file is broken in some other way.
    static func nonFiniteMember(in data: Data) -> String? {
        guard let text = String(data: data.prefix(1 << 22), encoding: .utf8) else { return nil }
        let range = NSRange(text.startIndex..., in: text)
        for match in memberPattern.matches(in: text, range: range) {
            guard let key = Range(match.range(at: 1), in: text), let literal = Range(match.range(at: 2), in: text) else { continue }
            let number = String(text[literal])
            if Double(number)?.isFinite != true {
                return "key \"\(text[key])\" holds \(number), which is not a finite number"
            }
        }
        return nil
    }

    /// For a decoding failure without a key: the first number whose
    /// replacement by an integer lets `decode` get past it, as
    /// `key "num_attention_heads" holds 1.5, which is not a whole number in
    /// range`; nil when no number is to blame.
    static func unfitMember(in data: Data, decode: (Data) throws -> Void) -> String? {
        guard var object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return nil }
        for (path, number) in candidates(in: object, under: []).prefix(64) {
            object = replacing(object, at: path, with: 1)
            defer { object = replacing(object, at: path, with: number) }
            guard let probe = try? JSONSerialization.data(withJSONObject: object) else { continue }
            do {
                try decode(probe)
            } catch let DecodingError.dataCorrupted(context) where context.codingPath.isEmpty {
                continue
            } catch {}
            return "key \"\(path.joined(separator: "."))\" holds \(number), which is not a whole number in range"
        }
        return nil
    }

    /// `data` written again by JSONSerialization, which reads the number
    /// spellings Python reads and Foundation's JSONDecoder refuses (an
    /// exponent on a zero, `0e5`; an underflow, `1e-400`); nil when it is
    /// not a JSON object.
    static func respelled(_ data: Data) -> Data? {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return nil }
        return try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    }

    nonisolated(unsafe) private static let memberPattern = try! NSRegularExpression(
        pattern: #""((?:[^"\\]|\\.){1,200})"\s*:\s*(-?(?:NaN|Infinity|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))"#)

    /// Numbers that are not whole or not within Int64, with their key paths
    /// (objects only: no setting that must be whole sits inside a list).
    private static func candidates(in object: [String: Any], under path: [String]) -> [([String], NSNumber)] {
        object.keys.sorted().flatMap { key -> [([String], NSNumber)] in
            switch object[key] {
            case let member as [String: Any]:
                return candidates(in: member, under: path + [key])
            case let number as NSNumber where !isWholeInt64(number):
                return [(path + [key], number)]
            default:
                return []
            }
        }
    }

    private static func isWholeInt64(_ number: NSNumber) -> Bool {
        let value = number.doubleValue
        return value.rounded() == value && abs(value) < 9.2e18
    }

    private static func replacing(_ object: [String: Any], at path: [String], with value: Any) -> [String: Any] {
        var object = object
        guard let key = path.first else { return object }
        if path.count == 1 {
            object[key] = value
        } else if let member = object[key] as? [String: Any] {
            object[key] = replacing(member, at: Array(path.dropFirst()), with: value)
        }
        return object
    }
}
