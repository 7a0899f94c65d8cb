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

    /// Whether an attention layer or MLP is dropped in a block that stays:
    /// what LLM-Drop's `drop_attn_list` / `drop_mlp_list` say, and plain
    /// transformers cannot.
    public var dropsModulesOfKeptBlocks: Bool { !attention.subtracting(blocks).isEmpty || !mlp.subtracting(blocks).isEmpty }

    /// The plan on a model whose layers lack `absent`'s modules: a drop of
    /// a module a layer lacks drops nothing, and a layer left without any
    /// module is a dropped block (a Nemotron-H layer's mixer or MLP is the
    /// whole layer, so its export removes the layer). Layers with both
    /// modules keep their module drops as they are, and a layer that lacks
    /// both (Mllama's cross-attention layers on text) stays unless dropped whole.
    public func onLayers(lacking absent: DropPlan) -> DropPlan {
        guard !absent.isEmpty else { return self }
        var plan = DropPlan(attention: attention.subtracting(absent.attention), mlp: mlp.subtracting(absent.mlp), blocks: blocks)
        for layer in absent.attention.union(absent.mlp) where plan.attention.contains(layer) || plan.mlp.contains(layer) {
            let empty = (absent.attention.contains(layer) || plan.attention.contains(layer))
                && (absent.mlp.contains(layer) || plan.mlp.contains(layer))
            guard empty else { continue }
            plan.blocks.insert(layer)
            plan.attention.remove(layer)
            plan.mlp.remove(layer)
        }
        return plan
    }

    public func dropsAttention(_ layer: Int) -> Bool { blocks.contains(layer) || attention.contains(layer) }
    public func dropsMLP(_ layer: Int) -> Bool { blocks.contains(layer) || mlp.contains(layer) }

    /// LLM-Drop's config.json keys for checkpoints exported with attention
    /// or MLP layers removed.
    public static let attentionKey = "drop_attn_list"
    public static let mlpKey = "drop_mlp_list"

    /// The drops recorded in a checkpoint's config.json (empty for ordinary
    /// checkpoints), read as LLM-Drop's configuration classes read them: each
    /// entry an integer, the index of a dropped layer, or a boolean at a
    /// layer's position, true when that layer is dropped (LLM-Drop saves
    /// its models' lists as one boolean per layer).
    /// - Throws: `DroptraceError` naming config.json for an entry of another
    ///   kind or a layer the model does not have.
    public init(config checkpoint: Checkpoint, layerCount: Int) throws {
        let document = checkpoint.configDocument
        func layers(_ key: String) throws -> Set<Int> {
            guard let value = document.member(key) else { return [] }
            if case .null = value { return [] }
            guard case .array(let entries) = value else { throw invalid(key) }
            var indices: Set<Int> = []
            for (position, entry) in entries.enumerated() {
                switch entry {
                case .integer(let index): indices.insert(index)
                case .bool(let dropped): if dropped { indices.insert(position) }
                default: throw invalid(key)
                }
            }
            if let bad = indices.sorted().first(where: { $0 < 0 || $0 >= layerCount }) {
                throw DroptraceError("\"\(key)\" names layer \(bad), but the model has \(layerCount)", path: checkpoint.configURL.path)
            }
            return indices
        }
        func invalid(_ key: String) -> DroptraceError {
            DroptraceError("\"\(key)\" must be a list of layer indices or of one true/false per layer", path: checkpoint.configURL.path)
        }
        self.init(attention: try layers(Self.attentionKey), mlp: try layers(Self.mlpKey))
    }
}
