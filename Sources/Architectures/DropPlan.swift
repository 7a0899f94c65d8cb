import CheckpointIO
import DroptraceSupport
import Foundation

/// Which modules of a model are dropped: a dropped attention layer or MLP
/// passes its residual through unchanged (the module and its norm are gone);
/// a dropped block is the identity.
public struct DropPlan: Sendable, Equatable, Hashable {
    public var attention: Set<Int>
    public var mlp: Set<Int>
    public var blocks: Set<Int>

    public init(attention: Set<Int> = [], mlp: Set<Int> = [], blocks: Set<Int> = []) {
        self.attention = attention
        self.mlp = mlp
        self.blocks = blocks
    }

    public static let none = DropPlan()

    public var isEmpty: Bool { attention.isEmpty && mlp.isEmpty && blocks.isEmpty }

    public func union(_ other: DropPlan) -> DropPlan {
        DropPlan(attention: attention.union(other.attention), mlp: mlp.union(other.mlp), blocks: blocks.union(other.blocks))
    }

    public func dropsAttention(_ layer: Int) -> Bool { blocks.contains(layer) || attention.contains(layer) }
    public func dropsMLP(_ layer: Int) -> Bool { blocks.contains(layer) || mlp.contains(layer) }

    /// LLM-Drop's config.json keys for checkpoints exported with attention
    /// or MLP layers removed.
    public static let attentionKey = "drop_attn_list"
    public static let mlpKey = "drop_mlp_list"

    /// The drops recorded in a checkpoint's config.json (empty for ordinary checkpoints).
    public init(config checkpoint: Checkpoint, layerCount: Int) throws {
        let object = (try? JSONSerialization.jsonObject(with: checkpoint.configData) as? [String: Any]) ?? [:]
        func layers(_ key: String) throws -> Set<Int> {
            guard let value = object[key], !(value is NSNull) else { return [] }
            // Indices such as 1e300 or 2.5 are refused, not saturated or truncated.
            guard let list = value as? [NSNumber], case let indices = list.compactMap({ Int(exactly: $0.doubleValue) }),
                  indices.count == list.count else {
                throw DroptraceError("\"\(key)\" must be a list of layer indices", path: checkpoint.configURL.path)
            }
            if let bad = indices.first(where: { $0 < 0 || $0 >= layerCount }) {
                throw DroptraceError("\"\(key)\" names layer \(bad), but the model has \(layerCount)", path: checkpoint.configURL.path)
            }
            return Set(indices)
        }
        self.init(attention: try layers(Self.attentionKey), mlp: try layers(Self.mlpKey))
    }
}
