import DroptraceSupport
import Foundation
import Pipeline

/// A one-line progress bar at the bottom of stderr, drawn only when stderr
/// is a terminal so that logs and cron mail stay clean. It shares the line
/// with the log (`TerminalStatus`), so log lines scroll above it.
final class ProgressBar: TraceProgress {
    private let status: TerminalStatus
    private var label: String

    init(label: String = "", status: TerminalStatus = .standardError) {
        self.label = label
        self.status = status
    }

    /// Shows the checkpoint alone: its layer count is known only once its
    /// first layer is done, and a made-up total would be wrong.
    func checkpointStarted(_ index: Int, of total: Int, name: String) {
        label = "checkpoint \(index)/\(total) \(name)"
        status.show(label)
    }

    func layerFinished(_ done: Int, of total: Int) {
        update(done, total)
    }

    func update(_ done: Int, _ total: Int) {
        guard total > 0 else { return }
        let width = 30
        let filled = width * min(max(done, 0), total) / total
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        status.show("\(label.isEmpty ? "" : label + " ")[\(bar)] \(done)/\(total) layers")
    }

    func finished() {
        status.clear()
    }
}
