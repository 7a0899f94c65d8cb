import DroptraceSupport
import Foundation

/// A JSON scalar that stands in for a key config.json omits (the default a
/// transformers config class gives it).
public enum ConfigDefault: Sendable, Equatable, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByStringLiteral, ExpressibleByBooleanLiteral
{
    case integer(Int)
    case number(Double)
    case string(String)
    case boolean(Bool)
    /// JSON null: a key the config class does not read from this section (`ConfigSection.overrides`).
    case null

    public init(integerLiteral value: Int) { self = .integer(value) }
    public init(floatLiteral value: Double) { self = .number(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .boolean(value) }

    /// The value as JSONSerialization represents it.
    var json: Any {
        switch self {
        case .integer(let value): return value
        case .number(let value): return value
        case .string(let value): return value
        case .boolean(let value): return value
        case .null: return NSNull()
        }
    }
}

/// Where a model family reads its configuration in config.json: the top
/// level, or one object member of it — the `text_config` of a multimodal
/// checkpoint (Gemma-3's `Gemma3ForConditionalGeneration`), whose language
/// model sizes live there — or a member of such a member, named by its
/// dotted path (Qwen2.5-Omni's `thinker_config.text_config`), completed
/// with the defaults the family's transformers config class gives the keys
/// the file omits (released multimodal configs spell out only what differs
/// from them).
public struct ConfigSection: Sendable, Equatable {
    /// The member holding the family's keys, a dotted path for a nested
    /// one (`thinker_config.text_config`); nil for the top level.
    public var name: String?
    /// Values of keys the section omits (a key present with `null` stays null).
    public var defaults: [String: ConfigDefault]
    /// Values that replace the section's own: what the config class derives
    /// whatever the file says (Nemotron-H's `num_hidden_layers`, the length
    /// of its layer list).
    public var overrides: [String: ConfigDefault]
    /// The only keys the config class reads from the member, the others
    /// read as absent (FuyuConfig builds its text config from a fixed list
    /// of top-level keys: `ConfigValueKinds.flatTextConfigKeys`); nil: all.
    public var keys: Set<String>?

    public init(
        _ name: String? = nil, defaults: [String: ConfigDefault] = [:], overrides: [String: ConfigDefault] = [:], keys: Set<String>? = nil
    ) {
        self.name = name
        self.defaults = defaults
        self.overrides = overrides
        self.keys = keys
    }

    /// config.json's top level as written.
    public static let topLevel = ConfigSection()

    /// `key` as config.json writes it: under the section's member
    /// (`text_config.sliding_window`), or as is at the top level.
    public func qualified(_ key: String) -> String {
        (name.map { $0 + "." } ?? "") + key
    }

    /// The members leading from the top level to the section (none for the top level).
    public var path: [String] { name.map { ConfigSection.members(of: $0) } ?? [] }

    /// The members a dotted section name (`thinker_config.text_config`) passes through.
    public static func members(of name: String) -> [String] { name.split(separator: ".").map(String.init) }
}

extension Checkpoint {
    /// The section's JSON object with the aliases its class reads
    /// (`Checkpoint.sectionAliases`) and its defaults filled in. An absent or
    /// null member reads as an empty object, as transformers builds the
    /// sub-config from its defaults then.
    /// - Throws: `DroptraceError` naming config.json when the member is not an object.
    public func configObject(_ section: ConfigSection) throws -> [String: Any] {
        guard let top = try? JSONSerialization.jsonObject(with: decodedConfigData) as? [String: Any] else {
            throw DroptraceError("not valid JSON", path: configURL.path)
        }
        var object = top
        // A nested section's members in turn: one absent or null is its class's defaults, whose own members are too.
        for (depth, member) in section.path.enumerated() {
            switch object[member] {
            case nil, is NSNull:
                object = [:]
            case let inner as [String: Any]:
                object = inner
            default:
                let name = section.path.prefix(depth + 1).joined(separator: ".")
                throw DroptraceError("key \"\(name)\" has the wrong type (expected an object)", path: configURL.path)
            }
        }
        if let keys = section.keys { object = object.filter { keys.contains($0.key) } }
        // An alias of the section's class written alone is read as the key it stands for, as transformers sets
        // it: in file order, so that of two aliases of one key the later is read.
        if let aliases = sectionAliases[section.name ?? ""], case .object(let members)? = document(of: section) {
            for (alias, _) in members {
                guard let target = aliases[alias], !members.contains(where: { $0.key == target }), let value = object[alias] else { continue }
                object[target] = value
            }
        }
        for (key, value) in section.defaults where object[key] == nil { object[key] = value.json }
        for (key, value) in section.overrides { object[key] = value.json }
        return object
    }

    /// The section of config.json as written, only its `keys` where it has
    /// them (nil: a member that is absent or not an object).
    public func document(of section: ConfigSection) -> JSONValue? {
        // (member(path:) passes through objects only, so only the last needs checking.)
        guard let document = section.name.map({ configDocument.member(path: $0) }) ?? configDocument,
              case .object(let members) = document else { return nil }
        guard let keys = section.keys else { return document }
        return .object(members.filter { keys.contains($0.key) })
    }

    /// Decodes an architecture's configuration type from `section`; errors
    /// name config.json and the key's path (`text_config.hidden_size`).
    public func decodeConfig<Config: Decodable>(_ type: Config.Type, section: ConfigSection) throws -> Config {
        if section == .topLevel { return try decodeConfig(type) }
        return try decodeConfig(type, object: try configObject(section), under: section.name)
    }

    /// Decodes `type` from a JSON object derived from config.json (a section
    /// with its defaults, or settings a family assembles from several keys);
    /// `name` is the member the object stands for, which errors put in front
    /// of the key path.
    public func decodeConfig<Config: Decodable>(_ type: Config.Type, object: [String: Any], under name: String? = nil) throws -> Config {
        let wrapped: [String: Any] = name.map { [$0: object] } ?? object
        guard JSONSerialization.isValidJSONObject(wrapped), let data = try? JSONSerialization.data(withJSONObject: wrapped) else {
            throw DroptraceError("not valid JSON", path: configURL.path)
        }
        guard name != nil else { return try decodeConfig(type, from: data) }
        return try decodeConfig(OnlyMember<Config>.self, from: data).value
    }
}

/// The value of a JSON object's only member, decoded under that member's key
/// so decoding errors carry it in their coding path.
private struct OnlyMember<Value: Decodable>: Decodable {
    let value: Value

    init(from decoder: Decoder) throws {
        let container = try decoder.container(keyedBy: ConfigKey.self)
        guard let key = container.allKeys.first else {
            throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: [], debugDescription: "empty object"))
        }
        do {
            value = try container.decode(Value.self, forKey: key)
        } catch DecodingError.dataCorrupted(let context) where context.codingPath.first?.stringValue != key.stringValue {
            // A value the member's type refuses (`ConfigRules.decodingChecks`) names its key alone.
            throw DecodingError.dataCorrupted(
                DecodingError.Context(codingPath: [key] + context.codingPath, debugDescription: context.debugDescription))
        }
    }
}

extension Checkpoint {
    /// Refuses each of `keys` (dotted paths under `section`) that config.json
    /// writes as anything but a JSON integer. Keys a config class declares no
    /// field for reach the model unchecked, where only an integer sizes a
    /// projection (`reader`, the module that does, fails on null or 12.0).
    /// - Throws: `DroptraceError` naming config.json and the key.
    public func requireIntegers(_ keys: [String], section: ConfigSection = .topLevel, reader: String) throws {
        for key in keys {
            guard let value = document(of: section)?.member(path: key) else { continue }
            guard case .integer = value else {
                throw DroptraceError(
                    "key \"\(section.qualified(key))\" holds \(ConfigValueKinds.spelled(value)), which \(reader) cannot size its projections by (it takes an integer)",
                    path: configURL.path)
            }
        }
    }
}
