import DroptraceSupport
import Foundation

/// Setting aside a store that cannot be read (for `--force`) or whose every
/// row belongs to replaced checkpoints: it is renamed beside itself, never
/// deleted, so whatever it still holds can be recovered.
public enum DamagedStore {
    /// Renames `store` to `<name>.<label>-<UTC time>` (with `-2`, `-3`, ...
    /// if that name is taken; an earlier store set aside is never replaced).
    /// - Returns: the new location.
    /// - Throws: `DroptraceError` naming the store when it cannot be renamed.
    public static func setAside(_ store: URL, as label: String = "damaged", at date: Date = Date()) throws -> URL {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        let base = "\(store.lastPathComponent).\(label)-\(formatter.string(from: date))"
        let directory = store.deletingLastPathComponent()
        for attempt in 1...1000 {
            let candidate = directory.appendingPathComponent(attempt == 1 ? base : "\(base)-\(attempt)")
            var status = stat()
            if lstat(candidate.path, &status) == 0 { continue }
            // The run holds the directory's lock, so the name stays free until the rename.
            guard rename(store.path, candidate.path) == 0 else {
                throw DroptraceError("cannot set the store aside: \(SystemError.describe())", path: store.path)
            }
            return candidate
        }
        throw DroptraceError("cannot set the store aside: too many earlier ones beside it",
                             path: store.path)
    }
}
