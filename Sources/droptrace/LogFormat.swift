import DroptraceSupport
import Foundation
import Logging

/// One line per message on stderr: `2026-01-31T12:00:00Z warning: message`,
/// timestamped so cron logs show when each step happened. Line breaks and
/// control characters in a message (from a file name, or a library's
/// multi-line text) become spaces, so each message stays one line and can
/// never move the terminal's cursor. Written through `TerminalStatus`, so
/// lines scroll above the progress bar instead of running into it.
struct TimestampedLogHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var output: TerminalStatus = .standardError

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let stamp = ISO8601DateFormatter().string(from: Date())
        output.printLine("\(stamp) \(event.level): \(SystemError.oneLine("\(event.message)"))")
    }
}
