import Architectures
import DroptraceSupport
import Scoring

/// What `droptrace drop` removes.
public enum DropTarget: String, CaseIterable, Sendable {
    case attention, mlp, block
    /// Attention and MLP layers ranked together in one list (Joint Layer Drop).
    case joint
}

/// One droppable module.
public struct Module: Hashable, Sendable, Comparable {
    public enum Kind: String, Sendable { case attention, mlp, block }
    public var kind: Kind
    public var layer: Int

    public static func < (a: Module, b: Module) -> Bool {
        (a.layer, a.kind.rawValue) < (b.layer, b.kind.rawValue)
    }
}

/// LLM-Drop's selection: rank modules by similarity (1 − importance) and
/// drop the most similar, all at once or one at a time with rescoring.
public enum DropSelection {
    /// The candidates of `target` that `plan` has not dropped yet, with their
    /// importance in `scores`, least important first (ties: attention before
    /// MLP, then lower layer).
    static func ranked(_ target: DropTarget, _ scores: ModuleScores, excluding plan: DropPlan) -> [(Module, Double)] {
        var candidates: [(Module, Double)] = []
        let layers = scores.layerCount
        if target == .attention || target == .joint {
            for i in 0..<layers where !plan.dropsAttention(i) { candidates.append((Module(kind: .attention, layer: i), scores.attention[i])) }
        }
        if target == .mlp || target == .joint {
            for i in 0..<layers where !plan.dropsMLP(i) { candidates.append((Module(kind: .mlp, layer: i), scores.mlp[i])) }
        }
        if target == .block {
            for i in 0..<layers where !plan.blocks.contains(i) { candidates.append((Module(kind: .block, layer: i), scores.block[i])) }
        }
        return candidates.sorted { a, b in
            if a.1 != b.1 { return a.1 < b.1 }
            if a.0.kind != b.0.kind { return a.0.kind == .attention }
            return a.0.layer < b.0.layer
        }
    }

    /// The K least important modules of `target`, all from one scoring pass.
    public static func oneShot(_ target: DropTarget, count: Int, scores: ModuleScores) throws -> DropPlan {
        try check(target, count: count, layers: scores.layerCount)
        return plan(ranked(target, scores, excluding: .none).prefix(count).map(\.0))
    }

    /// Drops one module at a time, rescoring the dropped model in between
    /// (`rescore` returns the scores with a plan applied).
    public static func iterative(
        _ target: DropTarget, count: Int, layers: Int, rescore: (DropPlan) throws -> ModuleScores
    ) throws -> (plan: DropPlan, steps: [ModuleScores]) {
        try check(target, count: count, layers: layers)
        var current = DropPlan.none
        var steps: [ModuleScores] = []
        for _ in 0..<count {
            let scores = try rescore(current)
            steps.append(scores)
            guard let next = ranked(target, scores, excluding: current).first?.0 else { break }
            current = current.union(plan([next]))
        }
        return (current, steps)
    }

    /// The K contiguous blocks i..i+K−1 whose boundary states h_i and h_{i+K}
    /// are most similar by `metric` (LLM-Drop's consecutive block drop with
    /// the cosine, Gromov et al.'s / PruneMe's with the angular distances;
    /// ties to the lower i).
    /// - Throws: `DroptraceError` for a bad count, or when `scores` carry no
    ///   sums for an angular metric.
    public static func consecutiveBlocks(
        count: Int, scores: ModuleScores, metric: BlockGapMetric = .cosine
    ) throws -> DropPlan {
        try check(.block, count: count, layers: scores.layerCount)
        guard let matrix = scores.blockGap(metric) else {
            throw DroptraceError("the scores carry no \(metric.displayName.lowercased()) of the block gaps")
        }
        guard let best = metric.best(in: matrix, size: count) else {
            throw DroptraceError("no block of \(count) layers has a defined \(metric.displayName.lowercased())")
        }
        return DropPlan(blocks: Set(best.start..<(best.start + count)))
    }

    static func plan(_ modules: [Module]) -> DropPlan {
        var plan = DropPlan()
        for module in modules {
            switch module.kind {
            case .attention: plan.attention.insert(module.layer)
            case .mlp: plan.mlp.insert(module.layer)
            case .block: plan.blocks.insert(module.layer)
            }
        }
        return plan
    }

    /// Refuses counts that would leave nothing to drop or drop everything,
    /// naming `checkpoint`.
    static func check(_ target: DropTarget, count: Int, layers: Int, checkpoint: String? = nil) throws {
        let available = target == .joint ? 2 * layers : layers
        guard count >= 1 else { throw DroptraceError("--count must be at least 1", path: checkpoint) }
        guard count < available else {
            let every = switch target {
            case .attention: "attention layer"
            case .mlp: "MLP layer"
            case .block: "block"
            case .joint: "attention and MLP module"
            }
            throw DroptraceError(
                count == available
                    ? "--count \(count) would drop every \(every) of the model; choose fewer"
                    : "--count \(count) is larger than the model's \(available) \(target == .joint ? "attention and MLP modules" : "layers")",
                path: checkpoint)
        }
    }
}
