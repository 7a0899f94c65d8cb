import Dropping
import Foundation
import TensorEngine

/// The readable form of a drop result.
struct DropTable {
    let result: DropResult

    init(_ result: DropResult) { self.result = result }

    var text: String {
        var lines: [String] = []
        let mode = result.iterative ? "iterative" : result.blockMetric.map { "contiguous, by \($0)" } ?? "one-shot"
        lines.append("Dropped (\(result.target), \(result.count), \(mode)):")
        if !result.droppedBlocks.isEmpty { lines.append("  blocks     \(list(result.droppedBlocks))") }
        lines.append("  attention  \(list(result.droppedAttention))")
        lines.append("  mlp        \(list(result.droppedMLP))")
        lines.append("")
        lines.append(row("", "full", "dropped"))
        if let perplexity = result.perplexity {
            lines.append(row("perplexity", format(perplexity.full, 3), format(perplexity.dropped, 3)))
        }
        for (name, metrics) in (result.tasks ?? [:]).sorted(by: { $0.key < $1.key }) {
            lines.append(row("\(name) acc", format(metrics.full.acc, 4), format(metrics.dropped.acc, 4)))
            if let full = metrics.full.acc_norm, let dropped = metrics.dropped.acc_norm {
                lines.append(row("\(name) acc_norm", format(full, 4), format(dropped, 4)))
            }
        }
        if let average = result.average {
            lines.append(row("average (paper)", format(average.full, 4), format(average.dropped, 4)))
        }
        let speed = result.speed
        lines.append(row("prefill tokens/s", format(speed.full.prefillTokensPerSecond, 0), format(speed.dropped.prefillTokensPerSecond, 0)))
        lines.append(row("  (IQR)", range(speed.headline.prefill.full, 0), range(speed.headline.prefill.dropped, 0)))
        lines.append(row("decode ms/token", format(speed.full.decodeMillisecondsPerToken, 3), format(speed.dropped.decodeMillisecondsPerToken, 3)))
        lines.append(row("  (IQR)", range(speed.headline.decode.full, 3), range(speed.headline.decode.dropped, 3)))
        lines.append(row("GFLOPs/token", format(speed.full.flopsPerToken / 1e9, 4), format(speed.dropped.flopsPerToken / 1e9, 4)))
        lines.append(row("KV cache bytes/token", "\(speed.full.kvCacheBytesPerToken)", "\(speed.dropped.kvCacheBytesPerToken)"))
        lines.append("")
        let headline = speed.headline
        lines.append("speed: batch 1, context/generate \(headline.context)/\(headline.generate), medians of \(DropRun.rounds(speed.rounds)) "
            + "alternating full and dropped (\(speed.stopped.rawValue), \(DropRun.seconds(speed.seconds))); "
            + "\(speed.threads) thread\(speed.threads == 1 ? "" : "s"), \(speed.precision.rawValue), \(speed.matrixKernel)")
        lines.append("speed-up, dropped vs full (median of the paired rounds [IQR]):")
        lines.append("  prefill \(speedup(headline.prefill))")
        lines.append("  decode  \(speedup(headline.decode))")
        for other in speed.lengths.dropLast() {
            lines.append("  decode at \(other.context)/\(other.generate): \(speedup(other.decode))")
        }
        lines.append("FLOPs saved \(format(result.flopsSavedPercent, 1))% (analytic: dropped/full \(format(speed.flopsRatio, 3)) FLOPs per token, "
            + "measured \(format(speed.decodeTimeRatio, 3)) decode time), KV cache saved \(format(result.kvCacheSavedPercent, 1))%")
        let basis = result.average == nil ? "perplexity" : "the task average"
        if let sdr = result.sdr {
            // Not finite only from a perplexity or average that is not: no ratio to speak of.
            let value = sdr.isFinite ? format(sdr, 3) : "n/a (\(basis) not finite)"
            lines.append("SDR (performance lost % per decode speed-up %, on \(basis)): \(value)")
        } else if result.decodeVerdict == .withinNoise && (result.average != nil || result.perplexity != nil) {
            lines.append("SDR (performance lost % per decode speed-up %, on \(basis)): n/a (decode speed-up within noise)")
        }
        if let export = result.export { lines.append("exported to \(export)") }
        if let yaml = result.exportMergekit { lines.append("mergekit passthrough configuration: \(yaml)") }
        return lines.joined(separator: "\n")
    }

    private func list(_ values: [Int]) -> String { values.isEmpty ? "none" : values.map(String.init).joined(separator: ", ") }
    private func row(_ a: String, _ b: String, _ c: String) -> String {
        a.padding(toLength: 26, withPad: " ", startingAt: 0) + b.padding(toLength: 14, withPad: " ", startingAt: 0) + c
    }
    /// `value` with `digits` decimals; "inf" for an infinite one (a perplexity
    /// that overflowed) and "n/a" for NaN (undefined), where printf would
    /// write "inf", "nan" or "-nan" depending on the sign bit.
    private func format(_ value: Double, _ digits: Int) -> String {
        if value.isNaN { return "n/a" }
        if value.isInfinite { return value > 0 ? "inf" : "-inf" }
        return String(format: "%.\(digits)f", value)
    }
    private func range(_ spread: Spread, _ digits: Int) -> String { "\(format(spread.q1, digits))–\(format(spread.q3, digits))" }

    /// A speed-up as its verdict: a signed percentage only when it is more
    /// than noise, and a measured slow-down said plainly.
    private func speedup(_ paired: PairedSpeed) -> String {
        let percent = paired.speedupPercent
        func signed(_ value: Double) -> String { value.isNaN ? "n/a" : (value >= 0 ? "+" : "−") + format(abs(value), 1) + "%" }
        let numbers = "\(signed(percent.median)) [\(signed(percent.q1)), \(signed(percent.q3))]"
        let test = paired.pValue < 0.001 ? "sign test p < 0.001" : String(format: "sign test p = %.3f", paired.pValue)
        switch paired.verdict {
        case .faster:
            return "\(numbers), faster in \(paired.droppedFasterRounds) of \(DropRun.rounds(paired.rounds)) (\(test))"
        case .slower:
            return "dropped model measured SLOWER: \(numbers), slower in \(paired.droppedSlowerRounds) of \(DropRun.rounds(paired.rounds)) (\(test))"
        case .withinNoise:
            return "within noise (\(numbers), faster in \(paired.droppedFasterRounds) of \(DropRun.rounds(paired.rounds)), \(test))"
        }
    }
}
