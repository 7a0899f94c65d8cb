/// A coding key naming any config.json member: for the keys a config class
/// reads by a name spelled at run time (rope sections, per-layer-type
/// entries, a family's alternative spellings, dotted paths).
public struct ConfigKey: CodingKey, Hashable {
    public var stringValue: String
    public var intValue: Int? { nil }
    public init(_ name: String) { stringValue = name }
    public init(stringValue: String) { self.stringValue = stringValue }
    public init?(intValue: Int) { nil }
}
