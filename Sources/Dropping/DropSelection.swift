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
    /// MLP, then lower layer; an undefined importance after every defined one,
    /// which NaN's comparisons would have scattered).
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
            // A layer whose attention and MLP are both dropped is a dropped block already.
            for i in 0..<layers where !(plan.dropsAttention(i) && plan.dropsMLP(i)) {
                candidates.append((Module(kind: .block, layer: i), scores.block[i]))
            }
        }
        return candidates.sorted { a, b in
            if a.1.isNaN != b.1.isNaN { return b.1.isNaN }
            if a.1 != b.1, !a.1.isNaN { return a.1 < b.1 }
            if a.0.kind != b.0.kind { return a.0.kind == .attention }
            return a.0.layer < b.0.layer
        }
    }

    /// Why the model cannot run with a plan's modules dropped, nil when it
    /// can (`LanguageModel.planProblem`: Gemma 4's sharing layers left with
    /// no layer to take keys and values from); and the modules a selection
    /// passed over for it, with why, in the order it met them.
    public final class Feasibility {
        let problem: (DropPlan) -> String?
        public private(set) var passedOver: [(module: Module, reason: String)] = []

        public init(problem: @escaping (DropPlan) -> String?) { self.problem = problem }

        /// A model that runs with any modules dropped.
        public static var always: Feasibility { Feasibility { _ in nil } }

        /// The first of `ranked` whose drop beside `plan` the model can run,
        /// the ones before it passed over.
        func first(_ ranked: [(Module, Double)], beside plan: DropPlan) -> Module? {
            for (module, _) in ranked {
                guard let reason = problem(plan.union(DropSelection.plan([module]))) else { return module }
                if !passedOver.contains(where: { $0.module == module }) { passedOver.append((module, reason)) }
            }
            return nil
        }
    }

    /// The K least important modules of `target` that `configured` (the
    /// checkpoint's own drops and the modules its layers lack,
    /// `LanguageModel.unavailableModules`) left, all from one scoring pass;
    /// a module whose drop beside the less important ones the model could
    /// not run is passed over for the next (`feasibility`).
    /// - Throws: `DroptraceError` for a bad count, or when fewer than K can be dropped together.
    public static func oneShot(
        _ target: DropTarget, count: Int, scores: ModuleScores, configured: DropPlan = .none, checkpoint: String? = nil,
        feasibility: Feasibility = .always
    ) throws -> DropPlan {
        try check(target, count: count, layers: scores.layerCount, configured: configured, checkpoint: checkpoint)
        var candidates = ranked(target, scores, excluding: configured), chosen = DropPlan.none
        for _ in 0..<count {
            guard let next = feasibility.first(candidates, beside: chosen) else { throw tooFew(count, checkpoint: checkpoint) }
            chosen = chosen.union(plan([next]))
            candidates.removeAll { $0.0 == next }
        }
        return try checkedJoint(chosen, target, configured: configured, layers: scores.layerCount, checkpoint: checkpoint)
    }

    static func tooFew(_ count: Int, checkpoint: String?) -> DroptraceError {
        DroptraceError("no \(count) of the modules can be dropped together and leave a model that runs; choose fewer", path: checkpoint)
    }

    /// Drops one module at a time, rescoring the dropped model in between
    /// (`rescore` returns the scores with a plan applied); modules
    /// `configured` drops are never chosen, nor ones whose drop the model
    /// could not run (`feasibility`).
    public static func iterative(
        _ target: DropTarget, count: Int, layers: Int, configured: DropPlan = .none, checkpoint: String? = nil,
        feasibility: Feasibility = .always, rescore: (DropPlan) throws -> ModuleScores
    ) throws -> (plan: DropPlan, steps: [ModuleScores]) {
        try check(target, count: count, layers: layers, configured: configured, checkpoint: checkpoint)
        var current = DropPlan.none
        var steps: [ModuleScores] = []
        for _ in 0..<count {
            let scores = try rescore(current)
            steps.append(scores)
            let candidates = ranked(target, scores, excluding: current.union(configured))
            if candidates.isEmpty { break }
            guard let next = feasibility.first(candidates, beside: current) else { throw tooFew(count, checkpoint: checkpoint) }
            current = current.union(plan([next]))
        }
        return (try checkedJoint(current, target, configured: configured, layers: layers, checkpoint: checkpoint), steps)
    }

    /// `plan`, unless a joint drop took every attention or every MLP layer
    /// left: refused as `--target attention` or `mlp` refuses it, naming `checkpoint`.
    private static func checkedJoint(
        _ plan: DropPlan, _ target: DropTarget, configured: DropPlan, layers: Int, checkpoint: String?
    ) throws -> DropPlan {
        guard target == .joint else { return plan }
        let all = plan.union(configured)
        for (kind, drops) in [("attention", all.dropsAttention), ("MLP", all.dropsMLP)] where (0..<layers).allSatisfy(drops) {
            throw DroptraceError(
                "this joint drop of \(plan.attention.count + plan.mlp.count) modules would drop every \(kind) layer of the "
                    + "model; choose fewer", path: checkpoint)
        }
        return plan
    }

    /// The K contiguous blocks whose boundary states, before the first and
    /// after the last, are most similar by `metric` (LLM-Drop's consecutive
    /// block drop with the cosine, Gromov et al.'s / PruneMe's with the
    /// angular distances; ties to the lower index). Contiguous in the model
    /// as it runs: blocks `configured` (the checkpoint's own drop lists)
    /// drops whole are identities, skipped over and not counted, as in
    /// `oneShot`. Runs whose drop the model could not run (`feasibility`) are passed over.
    /// - Throws: `DroptraceError` for a bad count, or when `scores` carry no
    ///   sums for an angular metric.
    public static func consecutiveBlocks(
        count: Int, scores: ModuleScores, metric: BlockGapMetric = .cosine, configured: DropPlan = .none,
        checkpoint: String? = nil, feasibility: Feasibility = .always
    ) throws -> DropPlan {
        try check(.block, count: count, layers: scores.layerCount, configured: configured, checkpoint: checkpoint)
        guard let matrix = scores.blockGap(metric) else {
            throw DroptraceError("the scores carry no \(metric.displayName.lowercased()) of the block gaps")
        }
        let kept = (0..<scores.layerCount).filter { !(configured.dropsAttention($0) && configured.dropsMLP($0)) }
        var best: (blocks: ArraySlice<Int>, value: Double)?
        for first in 0...(kept.count - count) {
            let blocks = kept[first..<(first + count)]
            // h before the first and after the last: the identities between them change nothing.
            let row = matrix[blocks.first!], span = blocks.last! - blocks.first!
            guard span < row.count, !row[span].isNaN, feasibility.problem(DropPlan(blocks: Set(blocks))) == nil else { continue }
            let value = row[span]
            if let current = best?.value, metric.lowerIsMoreRedundant ? value >= current : value <= current { continue }
            best = (blocks, value)
        }
        guard let best else {
            throw DroptraceError("no block of \(count) layers has a defined \(metric.displayName.lowercased())")
        }
        return DropPlan(blocks: Set(best.blocks))
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

    /// Refuses counts that would leave nothing to drop or drop everything
    /// `configured` (the checkpoint's own drops) left of the modules the
    /// layers have (`absent`: those they lack, `LanguageModel.absentModules`),
    /// naming `checkpoint`.
    static func check(
        _ target: DropTarget, count: Int, layers: Int, configured: DropPlan = .none, absent: DropPlan = .none,
        checkpoint: String? = nil
    ) throws {
        let unavailable = configured.union(absent)
        let attention = (0..<layers).filter { !unavailable.dropsAttention($0) }.count
        let mlp = (0..<layers).filter { !unavailable.dropsMLP($0) }.count
        let available = switch target {
        case .attention: attention
        case .mlp: mlp
        case .block: (0..<layers).filter { !(unavailable.dropsAttention($0) && unavailable.dropsMLP($0)) }.count
        case .joint: attention + mlp
        }
        let left = configured.isEmpty ? "" : " left (its config.json drops the others)"
        guard count >= 1 else { throw DroptraceError("--count must be at least 1", path: checkpoint) }
        // A kind of module no layer has (a Mamba stack's MLP): no count can choose from it.
        let lacksMLP = layers > 0 && (0..<layers).allSatisfy(absent.dropsMLP)
        let lacksAttention = layers > 0 && (0..<layers).allSatisfy(absent.dropsAttention)
        let lacking: String? = switch target {
        case .mlp: lacksMLP ? "an MLP" : nil
        case .attention: lacksAttention ? "an attention (token mixer)" : nil
        case .joint: lacksMLP ? "an MLP" : lacksAttention ? "an attention (token mixer)" : nil
        case .block: nil
        }
        if let kind = lacking {
            throw DroptraceError(
                "no layer of the model has \(kind) module to drop; choose another --target (block drops whole layers)", path: checkpoint)
        }
        // A joint drop keeps one attention and one MLP layer (`checkedJoint`): refused before any scoring.
        if target == .joint, count < available, count > available - 2 {
            throw DroptraceError(
                "--count \(count) would drop every attention or every MLP layer of the model\(left); a joint drop keeps "
                    + "at least one of each: choose at most \(available - 2)", path: checkpoint)
        }
        guard count < available else {
            let every = switch target {
            case .attention: "attention layer"
            case .mlp: "MLP layer"
            case .block: "block"
            case .joint: "attention and MLP module"
            }
            throw DroptraceError(
                count == available
                    ? "--count \(count) would drop every \(every) of the model\(left); choose fewer"
                    : "--count \(count) is larger than the model's \(available) \(target == .joint ? "attention and MLP modules" : "layers")\(left)",
                path: checkpoint)
        }
    }
}
