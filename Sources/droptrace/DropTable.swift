import Dropping
import Foundation

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
        lines.append(row("decode ms/token", format(speed.full.decodeMillisecondsPerToken, 3), format(speed.dropped.decodeMillisecondsPerToken, 3)))
        lines.append(row("GFLOPs/token", format(speed.full.flopsPerToken / 1e9, 4), format(speed.dropped.flopsPerToken / 1e9, 4)))
        lines.append(row("KV cache bytes/token", "\(speed.full.kvCacheBytesPerToken)", "\(speed.dropped.kvCacheBytesPerToken)"))
        lines.append("")
        lines.append("speed-up: prefill \(format(result.prefillSpeedupPercent, 1))%, decode \(format(result.decodeSpeedupPercent, 1))%; "
            + "FLOPs saved \(format(result.flopsSavedPercent, 1))%, KV cache saved \(format(result.kvCacheSavedPercent, 1))%")
        if let sdr = result.sdr {
            let basis = result.average == nil ? "perplexity" : "the task average"
            lines.append("SDR (performance lost % per decode speed-up %, on \(basis)): \(format(sdr, 3))")
        }
        if let export = result.export { lines.append("exported to \(export)") }
        if let yaml = result.exportMergekit { lines.append("mergekit passthrough configuration: \(yaml)") }
        return lines.joined(separator: "\n")
    }

    private func list(_ values: [Int]) -> String { values.isEmpty ? "none" : values.map(String.init).joined(separator: ", ") }
    private func row(_ a: String, _ b: String, _ c: String) -> String {
        a.padding(toLength: 26, withPad: " ", startingAt: 0) + b.padding(toLength: 14, withPad: " ", startingAt: 0) + c
    }
    private func format(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }
}
