import DroptraceSupport
import Foundation

/// Keeping a store beside itself under another name, never deleting it, so
/// whatever it holds can be recovered: one that cannot be read (for
/// `--force`) or whose every row belongs to replaced checkpoints is renamed;
/// one holding what a user added is kept as it was before a rewrite.
public enum StoreAside {
    /// Renames `store` to `<name>.<label>-<UTC time>` (with `-2`, `-3`, ...
    /// if that name is taken; an earlier store set aside is never replaced).
    /// - Returns: the new location.
    /// - Throws: `DroptraceError` naming the store when it cannot be renamed.
    public static func setAside(_ store: URL, as label: String = "damaged", at date: Date = Date()) throws -> URL {
        try place(store, label: label, date: date) { candidate in
            rename(store.path, candidate.path) == 0
        }
    }

    /// Keeps `store` as it is now under `<name>.<label>-<UTC time>` as well
    /// (a hard link, or a copy where the file system has none), while it
    /// stays in place until a rewrite replaces it.
    /// - Returns: the new name.
    /// - Throws: `DroptraceError` naming the store when neither can be made.
    public static func keepCopy(_ store: URL, as label: String, at date: Date = Date()) throws -> URL {
        try place(store, label: label, date: date) { candidate in
            link(store.path, candidate.path) == 0
                || (try? FileManager.default.copyItem(at: store.resolvingSymlinksInPath(), to: candidate)) != nil
        }
    }

    private static func place(_ store: URL, label: String, date: Date, by move: (URL) -> Bool) throws -> URL {
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
            guard move(candidate) else {
                throw DroptraceError("cannot set the store aside: \(SystemError.describe())", path: store.path)
            }
            return candidate
        }
        throw DroptraceError("cannot set the store aside: too many earlier ones beside it", path: store.path)
    }
}
