import DroptraceSupport
import Foundation

/// The checkpoints the last `trace` (or `run`, `slurm finalize`) of a
/// series failed on, with the one-line error it logged for each, so a report
/// read later (from cron, say) says what it lacks and why. In the score file:
///
///     /failed           group, absent when the last run failed on nothing
///       name    string [F]   the checkpoint's name (its directory's)
///       error   string [F]   the error the run logged, one line
///
/// A checkpoint that failed to score has no row; one whose perplexity or task
/// accuracy failed keeps its row. Each run replaces the record with its own
/// failures, so a checkpoint mended since is no longer listed.
public struct FailedCheckpoints: Sendable, Equatable {
    public struct Failure: Sendable, Equatable {
        public var name: String
        public var error: String

        public init(name: String, error: String) {
            self.name = name
            self.error = error
        }
    }

    /// In the order the run met them, each name and error on one line of
    /// at most `errorLimit` bytes (as stored, so a record equals its round trip).
    public private(set) var failures: [Failure]

    public init(_ failures: [Failure] = []) {
        self.failures = failures.map { Failure(name: Self.oneLine($0.name), error: Self.oneLine($0.error)) }
    }

    public static let group = "failed"
    /// The longest error kept, in bytes: a message past it is cut at a character boundary with "…".
    static let errorLimit = 4096

    /// Writes `/failed` into a store being written; nothing when there are no failures.
    public func write(into file: HDF5File) throws {
        guard !failures.isEmpty else { return }
        try file.createGroup(Self.group)
        try file.createDataset("\(Self.group)/name", strings: failures.map(\.name))
        try file.createDataset("\(Self.group)/error", strings: failures.map(\.error))
    }

    /// The record of `file`; empty when it has none (stores written before it was kept).
    /// - Throws: `DroptraceError` naming the dataset when `/failed` is not two
    ///   string datasets of one length holding one line each.
    public static func read(from file: HDF5File) throws -> FailedCheckpoints {
        guard try file.exists(group) else { return FailedCheckpoints() }
        let names = try file.dataset("\(group)/name").readStrings()
        let errors = try file.dataset("\(group)/error").readStrings()
        guard names.count == errors.count else {
            throw DroptraceError("/\(group)/name holds \(names.count) names but /\(group)/error \(errors.count) errors", path: file.filePath)
        }
        for (dataset, values) in [("name", names), ("error", errors)] {
            if let index = values.firstIndex(where: { !ScoreFileMetadata.isOneLine($0, atMost: errorLimit + 3) }) {
                throw DroptraceError(
                    "/\(group)/\(dataset)[\(index)] is not one line of text (empty, a control character or over \(errorLimit) bytes)",
                    path: file.filePath)
            }
        }
        return FailedCheckpoints(zip(names, errors).map { Failure(name: $0, error: $1) })
    }

    /// `text` on one line of at most `errorLimit` bytes (and "…"), as the reader requires.
    static func oneLine(_ text: String) -> String {
        var line = SystemError.oneLine(text)
        if line.isEmpty { line = "?" }
        guard line.utf8.count > errorLimit else { return line }
        var cut = ""
        for character in line {
            guard cut.utf8.count + String(character).utf8.count <= errorLimit else { break }
            cut.append(character)
        }
        return cut + "…"
    }
}
