import Foundation
import Pipeline

/// A one-line progress bar on stderr, drawn only when stderr is a terminal
/// so that logs and cron mail stay clean.
final class ProgressBar: TraceProgress {
    private let enabled: Bool
    private var label: String
    private var drawn = false

    init(label: String = "", enabled: Bool = isatty(STDERR_FILENO) == 1) {
        self.label = label
        self.enabled = enabled
    }

    func checkpointStarted(_ index: Int, of total: Int, name: String) {
        label = "checkpoint \(index)/\(total) \(name)"
        update(0, 1)
    }

    func layerFinished(_ done: Int, of total: Int) {
        update(done, total)
    }

    func update(_ done: Int, _ total: Int) {
        guard enabled, total > 0 else { return }
        let width = 30
        let filled = width * done / total
        let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
        FileHandle.standardError.write(Data("\r\u{1B}[2K\(label) [\(bar)] \(done)/\(total) layers".utf8))
        drawn = true
    }

    func finished() {
        if drawn { FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8)) }
        drawn = false
    }
}
