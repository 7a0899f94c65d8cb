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

    /// How the text writes the first non-finite number of a member named
    /// `key` (`NaN`, `Infinity`, `1e400`); nil when it writes none so.
    static func nonFiniteLiteral(in data: Data, key: String) -> String? {
        guard let text = String(data: data.prefix(1 << 22), encoding: .utf8) else { return nil }
        let range = NSRange(text.startIndex..., in: text)
        for match in memberPattern.matches(in: text, range: range) {
            guard let name = Range(match.range(at: 1), in: text), text[name] == key,
                  let literal = Range(match.range(at: 2), in: text), Double(text[literal])?.isFinite != true
            else { continue }
            return String(text[literal])
        }
        return nil
    }

    /// For a decoding failure without a key: a number whose replacement by
    /// an integer (with those before it, in key order) lets `decode` get past
    /// it, as `key "num_attention_heads" holds 1.5, which is not a whole
    /// number in range`; nil when no number is to blame. Found by bisection
    /// over the candidates, in a few decodes however many the file holds;
    /// the file is written out once, each probe splices its numbers in.
    static func unfitMember(in data: Data, decode: (Data) throws -> Void) -> String? {
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else { return nil }
        let all = candidates(in: object, under: [])
        guard !all.isEmpty, let template = ProbeTemplate(object, candidates: all) else { return nil }
        /// Whether `decode` gets past the keyless failure with the first `count` candidates made integers.
        func passes(replacingFirst count: Int) -> Bool {
            do {
                try decode(template.probe(replacingFirst: count))
            } catch let DecodingError.dataCorrupted(context) where context.codingPath.isEmpty {
                return false
            } catch {}
            return true
        }
        guard passes(replacingFirst: all.count) else { return nil }
        // The original fails (`low`) and all replaced passes (`high`): the last candidate to blame is high − 1.
        var low = 0, high = all.count
        while high - low > 1 {
            let middle = (low + high) / 2
            if passes(replacingFirst: middle) { high = middle } else { low = middle }
        }
        let (path, number) = all[high - 1]
        return "key \"\(path.joined(separator: "."))\" holds \(number), which is not a whole number in range"
    }

    /// A config written out once with a marker in place of each candidate
    /// number, so a probe is the text with the markers replaced.
    private struct ProbeTemplate {
        /// The text between markers, and the candidate each marker stands for.
        var pieces: [(text: Data, candidate: Int?)] = []
        /// Each candidate's number as JSONSerialization spells it.
        var spellings: [Data] = []

        init?(_ object: [String: Any], candidates: [([String], NSNumber)]) {
            let tag = "\u{1}" + UUID().uuidString + ":"
            var marked = object
            for (index, (path, number)) in candidates.enumerated() {
                marked = Self.replacing(marked, at: path, with: tag + String(index))
                guard let spelling = try? JSONSerialization.data(withJSONObject: number, options: .fragmentsAllowed) else { return nil }
                spellings.append(spelling)
            }
            guard let text = try? JSONSerialization.data(withJSONObject: marked),
                  let quotedTag = try? JSONSerialization.data(withJSONObject: tag, options: .fragmentsAllowed)
            else { return nil }
            // The tag as written, without its closing quote: `"\u0001<uuid>:`, then the index and `"`.
            let opening = quotedTag.dropLast()
            var rest = text[...]
            while let found = rest.range(of: opening) {
                guard let close = rest[found.upperBound...].firstIndex(of: UInt8(ascii: "\"")),
                      let index = Int(String(decoding: rest[found.upperBound..<close], as: UTF8.self)),
                      candidates.indices.contains(index)
                else { return nil }
                pieces.append((Data(rest[..<found.lowerBound]), index))
                rest = rest[(close + 1)...]
            }
            pieces.append((Data(rest), nil))
            guard pieces.count == candidates.count + 1 else { return nil }
        }

        func probe(replacingFirst count: Int) -> Data {
            var probe = Data()
            for (text, candidate) in pieces {
                probe.append(text)
                if let candidate { probe.append(candidate < count ? Data("1".utf8) : spellings[candidate]) }
            }
            return probe
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
}
