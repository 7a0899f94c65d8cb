import DroptraceSupport
import Foundation

/// The checkpoints of the series the last `trace` (or `run`, `slurm
/// finalize`) left without a row, and why, so a report read later (from
/// cron, say) says what it lacks. In the score file:
///
///     /failed           group, absent when the last run failed on nothing
///       name    string [F]   the checkpoint's name (its directory's)
///       error   string [F]   the error the run logged, one line
///     /pending          group, absent when the last run left nothing for later
///       name    string [P]   the checkpoint's name
///       reason  string [P]   why it waits, one line: still being written (with
///                            what discovery saw), or its Slurm shard tasks queued
///
/// A checkpoint that failed to score has no row; one whose perplexity or task
/// accuracy failed keeps its row. A pending checkpoint has no row, unless it
/// is being saved again in place: its row stays as last scored until then.
/// Each run replaces the record with its own, so a checkpoint mended or
/// scored since is no longer listed.
public struct UnscoredCheckpoints: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var name: String
        /// The error logged (`failed`), or why the checkpoint waits (`pending`).
        public var reason: String

        public init(name: String, reason: String) {
            self.name = name
            self.reason = reason
        }
    }

    /// In the order the run met them, each name and reason on one line of
    /// at most `reasonLimit` bytes (as stored, so a record equals its round trip).
    public private(set) var failed: [Entry]
    public private(set) var pending: [Entry]

    public init(failed: [Entry] = [], pending: [Entry] = []) {
        self.failed = failed.map(Self.oneLine)
        self.pending = pending.map(Self.oneLine)
    }

    public var isEmpty: Bool { failed.isEmpty && pending.isEmpty }

    /// The record's groups, each with the dataset holding its reasons.
    public static let groups = [(group: "failed", reason: "error"), (group: "pending", reason: "reason")]
    /// The longest reason kept, in bytes: a message past it is cut at a character boundary with "…".
    static let reasonLimit = 4096

    private var lists: [[Entry]] { [failed, pending] }

    /// Writes `/failed` and `/pending` into a store being written; neither when empty.
    public func write(into file: HDF5File) throws {
        for ((group, reason), entries) in zip(Self.groups, lists) where !entries.isEmpty {
            try file.createGroup(group)
            try file.createDataset("\(group)/name", strings: entries.map(\.name))
            try file.createDataset("\(group)/\(reason)", strings: entries.map(\.reason))
        }
    }

    /// The record of `file`; empty when it has none (stores written before it was kept).
    /// - Throws: `DroptraceError` naming the dataset when a group is not two
    ///   string datasets of one length holding one line each.
    public static func read(from file: HDF5File) throws -> UnscoredCheckpoints {
        var lists: [[Entry]] = []
        for (group, reason) in groups {
            guard try file.exists(group) else {
                lists.append([])
                continue
            }
            func list(_ dataset: String) throws -> [String] {
                let strings = try file.dataset("\(group)/\(dataset)")
                guard strings.shape.count == 1 else {
                    throw DroptraceError("/\(group)/\(dataset) has shape \(strings.shape), not a list: the file was changed by other software",
                                         path: file.filePath)
                }
                return try strings.readStrings()
            }
            let (names, reasons) = (try list("name"), try list(reason))
            guard names.count == reasons.count else {
                throw DroptraceError("/\(group)/name holds \(names.count) names but /\(group)/\(reason) \(reasons.count) values", path: file.filePath)
            }
            for (dataset, values) in [("name", names), (reason, reasons)] {
                if let index = values.firstIndex(where: { !ScoreFileMetadata.isOneLine($0, atMost: reasonLimit + 3) }) {
                    throw DroptraceError(
                        "/\(group)/\(dataset)[\(index)] is not one line of text (empty, a control character or over \(reasonLimit) bytes)",
                        path: file.filePath)
                }
            }
            lists.append(zip(names, reasons).map { Entry(name: $0, reason: $1) })
        }
        return UnscoredCheckpoints(failed: lists[0], pending: lists[1])
    }

    private static func oneLine(_ entry: Entry) -> Entry {
        Entry(name: oneLine(entry.name), reason: oneLine(entry.reason))
    }

    /// `text` on one line of at most `reasonLimit` bytes (and "…"), as the reader requires.
    static func oneLine(_ text: String) -> String {
        var line = SystemError.oneLine(text)
        if line.isEmpty { line = "?" }
        guard line.utf8.count > reasonLimit else { return line }
        var cut = ""
        for character in line {
            guard cut.utf8.count + String(character).utf8.count <= reasonLimit else { break }
            cut.append(character)
        }
        return cut + "…"
    }
}
