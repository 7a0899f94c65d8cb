import Architectures
import CheckpointIO
import DroptraceSupport
import Evaluation
import Foundation
import Scoring
import Tokenization

/// Everything `droptrace drop` is asked to do.
public struct DropRequest: Sendable {
    public var checkpoint: URL
    public var target: DropTarget
    public var count: Int
    public var iterative = false
    public var consecutive = false
    /// What `consecutive` ranks contiguous blocks by.
    public var blockMetric = BlockGapMetric.cosine
    public var calibration: CalibrationSource
    public var evaluation: CalibrationSource?
    /// lm-evaluation-harness tasks, scored on the full and the dropped model.
    public var tasks: [TaskRequest] = []
    /// Few-shot examples per prompt for tasks without their own count; nil: 0.
    public var numFewshot: Int?
    public var export: URL?
    /// Where to write the block drop as a mergekit passthrough YAML (`MergekitSlices`).
    public var exportMergekit: URL?
    /// Lengths timed and when the timing rounds stop.
    public var speed = SpeedOptions()

    public init(checkpoint: URL, target: DropTarget, count: Int, calibration: CalibrationSource) {
        self.checkpoint = checkpoint
        self.target = target
        self.count = count
        self.calibration = calibration
    }
}

/// Full vs dropped.
public struct Comparison<Value: Codable & Sendable & Equatable>: Codable, Sendable, Equatable {
    public var full: Value
    public var dropped: Value

    public init(full: Value, dropped: Value) {
        self.full = full
        self.dropped = dropped
    }
}

/// What `droptrace drop` found and measured; its --json output.
public struct DropResult: Encodable, Sendable {
    public var target: String
    public var count: Int
    public var iterative: Bool
    /// The n-gap metric contiguous blocks were chosen by (consecutive block drops only).
    public var blockMetric: String?
    public var droppedAttention: [Int]
    public var droppedMLP: [Int]
    public var droppedBlocks: [Int]
    /// 1 − importance of every module of the full model (NaN as null).
    public var similarities: [String: [Double?]]
    public var perplexity: Comparison<Double>?
    /// Per task, lm-evaluation-harness's metrics (`acc`, `acc_norm`, their
    /// stderr, `n`) of the full and the dropped model.
    public var tasks: [String: Comparison<TaskMetrics>]?
    /// The paper's average over the tasks (`EvaluationResult.average`), full and dropped.
    public var average: Comparison<Double>?
    public var speed: SpeedComparison
    /// Speed-up in percent (dropped vs full) at the headline length: the
    /// median over paired rounds of prefill throughput and decode latency.
    public var prefillSpeedupPercent: Double
    public var decodeSpeedupPercent: Double
    /// Whether each speed-up is more than noise (`PairedSpeed.verdict`).
    public var prefillVerdict: SpeedVerdict
    public var decodeVerdict: SpeedVerdict
    public var flopsSavedPercent: Double
    public var kvCacheSavedPercent: Double
    /// The paper's speedup-degradation ratio: performance lost (%) per speed-up (%),
    /// on the average over tasks when tasks were given, else on perplexity;
    /// nil when the decode speed-up is within noise.
    public var sdr: Double?
    public var export: String?
    public var exportMergekit: String?

    enum CodingKeys: String, CodingKey {
        case target, count, iterative, similarities, perplexity, tasks, average, speed, sdr, export
        case exportMergekit = "export_mergekit"
        case blockMetric = "block_metric"
        case droppedAttention = "dropped_attention"
        case droppedMLP = "dropped_mlp"
        case droppedBlocks = "dropped_blocks"
        case prefillSpeedupPercent = "prefill_speedup_percent"
        case decodeSpeedupPercent = "decode_speedup_percent"
        case prefillVerdict = "prefill_verdict"
        case decodeVerdict = "decode_verdict"
        case flopsSavedPercent = "flops_saved_percent"
        case kvCacheSavedPercent = "kv_cache_saved_percent"
    }
}

extension DropRequest {
    /// What the options alone make impossible (the command line refuses it
    /// as invalid usage), or nil.
    public static func optionProblem(
        target: DropTarget, count: Int, iterative: Bool, consecutive: Bool, blockMetric: BlockGapMetric, exportsMergekit: Bool
    ) -> String? {
        if count < 1 { return "--count must be at least 1" }
        if consecutive && target != .block { return "--consecutive applies to --target block only" }
        if consecutive && iterative { return "--consecutive and --iterative cannot be combined" }
        if blockMetric != .cosine && !consecutive { return "--block-metric applies to --target block --consecutive only" }
        if exportsMergekit && target != .block {
            return "--export-mergekit applies to --target block only: mergekit's passthrough keeps or removes whole layers"
        }
        return nil
    }

    /// Refuses `--export` and `--export-mergekit` paths that are the same
    /// or lie one inside the other (resolved as the file system sees them,
    /// `ResolvedPath`): one output would be written into or over the other,
    /// and that failed only after the whole run. nil when they are apart.
    public static func exportPathsProblem(export: URL?, exportMergekit: URL?) -> String? {
        guard let export, let yaml = exportMergekit else { return nil }
        let relation: String
        if ResolvedPath.of(export) == ResolvedPath.of(yaml) {
            relation = "are the same path"
        } else if ResolvedPath.isWithin(yaml, export) {
            relation = "put the mergekit file inside the export directory"
        } else if ResolvedPath.isWithin(export, yaml) {
            relation = "put the export directory inside the mergekit file's path"
        } else {
            return nil
        }
        return "--export \(export.path) and --export-mergekit \(yaml.path) \(relation); give each its own path"
    }
}

public enum DropRun {
    public static func run(_ request: DropRequest, log: (String) -> Void = { _ in }) throws -> DropResult {
        if let problem = DropRequest.optionProblem(
            target: request.target, count: request.count, iterative: request.iterative, consecutive: request.consecutive,
            blockMetric: request.blockMetric, exportsMergekit: request.exportMergekit != nil) {
            throw DroptraceError(problem)
        }
        // Task files are read and checked before the model is, and where results go before any work.
        let suite = request.tasks.isEmpty ? nil : try TaskSuite(request.tasks, numFewshot: request.numFewshot)
        if let problem = DropRequest.exportPathsProblem(export: request.export, exportMergekit: request.exportMergekit) {
            throw DroptraceError(problem)
        }
        if let yaml = request.exportMergekit { _ = try MergekitSlices.outputDirectory(for: yaml) }
        if let export = request.export {
            try DroppedModelExport.checkOutsideSource(export, checkpoint: request.checkpoint)
            try DroppedModelExport.checkDestination(export)
        }
        let model = try ModelRegistry.load(try Checkpoint(location: request.checkpoint))
        if request.exportMergekit != nil { try MergekitSlices.checkSource(model) }
        if request.export != nil {
            try DroppedModelExport.checkRope(model)
            _ = try DroppedModelExport.companionFiles(of: model.checkpoint.directory)
        }
        try DropSelection.check(
            request.target, count: request.count, layers: model.layerCount, configured: model.configuredDrops,
            absent: model.absentModules, checkpoint: request.checkpoint.path)
        let calibration = try CheckpointScoring.loadCalibration(request.calibration, for: model, warn: log)
        // Perplexity's windows are read (and refused) before any scoring, as the task files are.
        let windows = try request.evaluation.map { source in
            let set = try CheckpointScoring.loadCalibration(source, for: model, as: .evaluation, warn: log)
            try set.checkPredictable(logits: model.outputVocabularySize, vocabularySize: model.vocabularySize)
            return set.sequences
        } ?? calibration.sequences
        let scorer = ImportanceScorer(model: model)
        func score(_ plan: DropPlan) throws -> ModuleScores {
            try scorer.score(calibration.sequences, calibrationPath: request.calibration.url.path, dropping: plan)
        }

        log("scoring \(model.layerCount) layers on \(calibration.tokenCount) calibration tokens")
        let full = try score(.none)
        let feasibility = DropSelection.Feasibility(problem: model.planProblem)
        let plan: DropPlan
        if request.iterative {
            plan = try DropSelection.iterative(
                request.target, count: request.count, layers: model.layerCount, configured: model.unavailableModules,
                checkpoint: request.checkpoint.path, feasibility: feasibility
            ) { current in
                current.isEmpty ? full : try score(current)
            }.plan
        } else if request.consecutive {
            plan = try DropSelection.consecutiveBlocks(
                count: request.count, scores: full, metric: request.blockMetric, configured: model.unavailableModules,
                checkpoint: request.checkpoint.path, feasibility: feasibility)
        } else {
            plan = try DropSelection.oneShot(
                request.target, count: request.count, scores: full, configured: model.unavailableModules,
                checkpoint: request.checkpoint.path, feasibility: feasibility)
        }

        for (module, reason) in feasibility.passedOver {
            log("\(module.kind.rawValue) \(module.layer) kept although ranked for dropping: \(reason)")
        }
        // Refused before anything is evaluated: the export could not be written at the end. A mergekit
        // passthrough renumbers the kept layers as the export does, so what the export refuses it cannot express.
        if request.export != nil || request.exportMergekit != nil, let problem = model.exportProblem(model.exportedPlan(plan)) {
            throw DroptraceError(problem, path: model.checkpoint.configURL.path)
        }
        if request.exportMergekit != nil { try MergekitSlices.checkPlan(model, dropping: model.exportedPlan(plan).blocks) }
        var perplexity: Comparison<Double>?
        if let evaluation = request.evaluation {
            log("perplexity on \(windows.count) windows")
            func loss(_ plan: DropPlan) throws -> Double {
                try LanguageModelLoss.evaluate(model: model, plan: plan, windows: windows, sourcePath: evaluation.url.path).perplexity
            }
            perplexity = Comparison(full: try loss(.none), dropped: try loss(plan))
        }
        var accuracy: Comparison<EvaluationResult>?
        if let suite {
            let tokenizer = try EvaluationTokenizer.load(
                for: model.checkpoint, from: request.calibration.tokenizer, purpose: "task accuracy",
                requestedBy: request.tasks[0].evaluationFile.path)
            log("scoring \(request.tasks.map(\.name).joined(separator: ", ")) on the full and the dropped model")
            accuracy = Comparison(
                full: try suite.evaluate(model: model, plan: .none, tokenizer: tokenizer),
                dropped: try suite.evaluate(model: model, plan: plan, tokenizer: tokenizer))
        }
        let budget = Self.seconds(request.speed.policy.budgetSeconds)
        log("timing prefill and decoding, full and dropped alternately (budget \(budget))")
        let speed = try SpeedMeasurement.compare(model: model, plan: plan, tokens: windows.flatMap { $0 }, options: request.speed)
        log("timed \(Self.rounds(speed.rounds)) in \(Self.seconds(speed.seconds)) (\(speed.stopped.rawValue))")
        if speed.seconds > request.speed.policy.budgetSeconds {
            log("the timing took \(Self.seconds(speed.seconds)), past the budget of \(budget): "
                + "one round at the shortest length (context \(speed.lengths[0].context)) needs that long on this machine")
        }

        var measured = result(request, model: model, plan: plan, scores: full, perplexity: perplexity, accuracy: accuracy, speed: speed)
        // The measurements stand whatever becomes of the exports (a path taken meanwhile, a full disk);
        // each export is in the result once it is written.
        measured.export = nil
        measured.exportMergekit = nil
        do {
            if let export = request.export {
                try DroppedModelExport.write(model: model, plan: plan, to: export)
                measured.export = export.path
                log("exported the dropped model to \(export.path)")
                if model.exportedPlan(plan).dropsModulesOfKeptBlocks {
                    log("plain transformers does not read drop_attn_list / drop_mlp_list: it loads this export with the "
                        + "dropped modules filled with random weights (listed as MISSING in its load report). Load it with "
                        + "LLM-Drop's modeling code (for llama and mistral, config.json's auto_map names LLM-Drop's classes: "
                        + "copy their files into the export and pass trust_remote_code=True), or drop whole blocks "
                        + "(--target block) for a checkpoint plain transformers loads as it is")
                }
            }
            if let yaml = request.exportMergekit {
                try MergekitSlices.write(model: model, plan: plan, to: yaml)
                measured.exportMergekit = yaml.path
                log("wrote the mergekit passthrough configuration \(yaml.path)")
            }
        } catch {
            throw ExportFailed(result: measured, error: error)
        }
        return measured
    }

    /// `value` seconds as a log line says them: whole seconds from 10 on,
    /// two significant digits below (a budget of 0.001 s read "0 s").
    public static func seconds(_ value: Double) -> String {
        value >= 10 ? "\(Int(value.rounded())) s" : String(format: "%.2g s", value)
    }

    /// "1 round", "N rounds".
    public static func rounds(_ count: Int) -> String { count == 1 ? "1 round" : "\(count) rounds" }

    /// An export failed after everything was measured: `result` holds the
    /// measurements (with only the exports written), `error` what failed.
    public struct ExportFailed: Error {
        public let result: DropResult
        public let error: Error
    }

    static func result(
        _ request: DropRequest, model: any LanguageModel, plan: DropPlan, scores: ModuleScores,
        perplexity: Comparison<Double>?, accuracy: Comparison<EvaluationResult>?, speed: SpeedComparison
    ) -> DropResult {
        let layers = 0..<model.layerCount
        func similarity(_ values: [Double]) -> [Double?] { values.map { $0.isNaN ? nil : 1 - $0 } }
        let decode = speed.headline.decode
        let decodeSpeedup = decode.speedupPercent.median
        var degradation: Double?
        if let accuracy {
            degradation = 100 * (accuracy.full.average - accuracy.dropped.average) / max(accuracy.full.average, 1e-12)
        } else if let perplexity {
            degradation = 100 * (perplexity.dropped / perplexity.full - 1)
        }
        let fullKV = Double(speed.full.kvCacheBytesPerToken)
        return DropResult(
            target: request.target.rawValue, count: request.count, iterative: request.iterative,
            blockMetric: request.consecutive ? request.blockMetric.rawValue : nil,
            droppedAttention: layers.filter(plan.dropsAttention), droppedMLP: layers.filter(plan.dropsMLP),
            droppedBlocks: plan.blocks.sorted(),
            similarities: ["attention": similarity(scores.attention), "mlp": similarity(scores.mlp), "block": similarity(scores.block)],
            perplexity: perplexity,
            tasks: accuracy.map { accuracy in
                accuracy.full.tasks.reduce(into: [:]) { tasks, entry in
                    if let dropped = accuracy.dropped.tasks[entry.key] { tasks[entry.key] = Comparison(full: entry.value, dropped: dropped) }
                }
            },
            average: accuracy.map { Comparison(full: $0.full.average, dropped: $0.dropped.average) }, speed: speed,
            prefillSpeedupPercent: speed.headline.prefill.speedupPercent.median,
            decodeSpeedupPercent: decodeSpeedup,
            prefillVerdict: speed.headline.prefill.verdict, decodeVerdict: decode.verdict,
            flopsSavedPercent: 100 * (1 - speed.dropped.flopsPerToken / speed.full.flopsPerToken),
            kvCacheSavedPercent: fullKV > 0 ? 100 * (1 - Double(speed.dropped.kvCacheBytesPerToken) / fullKV) : 0,
            // Never from noise: a speed-up the rounds cannot tell from zero has no ratio.
            sdr: degradation.flatMap { decode.verdict != .withinNoise && decodeSpeedup != 0 ? $0 / decodeSpeedup : nil },
            export: request.export?.path, exportMergekit: request.exportMergekit?.path)
    }
}
