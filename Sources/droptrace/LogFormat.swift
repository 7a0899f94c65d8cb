import DroptraceSupport
import Foundation
import Logging

/// One line per message on stderr: `2026-01-31T12:00:00Z warning: message`,
/// timestamped so cron logs show when each step happened. Line breaks and
/// control characters in a message (from a file name, or a library's
/// multi-line text) become spaces, so each message stays one line and can
/// never move the terminal's cursor. Written through `TerminalStatus`, so
/// lines scroll above the progress bar instead of running into it. A
/// message longer than `maximumLength` characters (a megabyte-long
/// checkpoint name quoted in an error) keeps its start and its end.
struct TimestampedLogHandler: LogHandler {
    static let maximumLength = 4096

    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]
    var output: TerminalStatus = .standardError

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let stamp = ISO8601DateFormatter().string(from: Date())
        output.printLine("\(stamp) \(event.level): \(Self.bounded(SystemError.oneLine("\(event.message)")))")
    }

    /// `text`, or its first and last parts with how much was left out between them.
    static func bounded(_ text: String) -> String {
        guard text.count > maximumLength else { return text }
        let head = maximumLength / 2, tail = maximumLength / 4
        return "\(text.prefix(head)) … (\(text.count - head - tail) characters left out) … \(text.suffix(tail))"
    }
}
