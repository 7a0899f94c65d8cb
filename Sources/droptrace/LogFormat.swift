import Foundation
import Logging

/// One line per message on stderr: `2026-01-31T12:00:00Z warning: message`,
/// timestamped so cron logs show when each step happened.
struct TimestampedLogHandler: LogHandler {
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let stamp = ISO8601DateFormatter().string(from: Date())
        FileHandle.standardError.write(Data("\(stamp) \(event.level): \(event.message)\n".utf8))
    }
}
