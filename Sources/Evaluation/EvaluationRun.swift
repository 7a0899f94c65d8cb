import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring

/// `droptrace eval`: one checkpoint, optionally with modules dropped, on a task suite.
public enum EvaluationRun {
    /// Loads the checkpoint and its tokenizer (or the one in `tokenizer`,
    /// `--tokenizer`), checks the drop lists against its layers, and evaluates `suite`.
    /// - Throws: `DroptraceError` naming the checkpoint for a layer index
    ///   outside the model, and whatever loading or `TaskSuite.evaluate` throws.
    public static func run(
        checkpoint location: URL, suite: TaskSuite, plan: DropPlan, tokenizer directory: URL? = nil,
        warn: (String) -> Void = { _ in }, progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }
    ) throws -> EvaluationResult {
        let checkpoint = try Checkpoint(location: location)
        let model = try ModelRegistry.load(checkpoint)
        for (option, layers) in [("--drop-attention", plan.attention), ("--drop-mlp", plan.mlp), ("--drop-blocks", plan.blocks)] {
            if let bad = layers.sorted().first(where: { !(0..<model.layerCount).contains($0) }) {
                throw DroptraceError(
                    "\(option): layer \(bad) is not among the model's \(model.layerCount) layers (numbered from 0)", path: location.path)
            }
        }
        let tokenizer = try EvaluationTokenizer.load(
            for: checkpoint, from: directory, purpose: "evaluation", requestedBy: location.path, warn: warn)
        return try suite.evaluate(model: model, plan: plan, tokenizer: tokenizer, progress: progress)
    }
}
