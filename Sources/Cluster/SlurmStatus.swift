import DroptraceSupport
import Foundation
import Pipeline
import ScoreStore

/// `droptrace slurm status`: the state of every submitted (checkpoint,
/// shard) of an output directory, from the store, the partials, the queue
/// (squeue) and, where the cluster keeps it, accounting (sacct).
public struct SlurmStatus: Codable, Sendable, Equatable {
    public enum State: String, Codable, Sendable {
        /// The checkpoint's row is in scores.h5 (shards merged).
        case stored
        /// This shard's partial is written; the finalize job will merge it.
        case partialDone = "partial done"
        case running
        case pending
        /// Submitted, no longer queued, and no result: cancelled, failed,
        /// timed out or lost (`detail` says which when sacct knows).
        case failed
    }

    public struct Unit: Codable, Sendable, Equatable {
        public var checkpoint: String
        public var shard: Int
        public var shards: Int
        public var state: State
        /// "<array job>_<task>" of its latest submission.
        public var job: String
        /// Slurm's own state name, or why it counts as failed.
        public var detail: String
    }

    public struct Finalize: Codable, Sendable, Equatable {
        public var job: Int
        /// PENDING, RUNNING, …, or ENDED once Slurm has forgotten it; with
        /// its exit code when it left one; "DEFERRED to finalize job N" when
        /// it found shard tasks still queued and job N took over.
        public var state: String
        public var log: String
    }

    public var outDir: String
    public var units: [Unit] = []
    public var finalize: [Finalize] = []
    /// Store rows no submission produced (scored by a local run).
    public var storedLocally: [String] = []

    /// Reads the state of `outDir`.
    /// - Throws: `DroptraceError` when `outDir` is no directory, has no
    ///   submission record and no store, or when squeue fails.
    public init(outDir: URL, client: SlurmClient = SlurmClient()) throws {
        let layout = ClusterLayout(outDir: outDir)
        self.outDir = layout.outDir.path
        let kind = PathKind.of(layout.outDir)
        guard kind == .directory else {
            let what = kind == .missing ? "not found" : "not a directory"
            throw DroptraceError("\(what): give the output directory of a `droptrace slurm submit`", path: layout.outDir.path)
        }
        let record = try SubmissionRecord.read(layout)
        let rows = FileManager.default.fileExists(atPath: layout.store.path) ? try ScoreFile.read(from: layout.store).rows : []
        let partials = layout.unmergedPartials
        if record.submissions.isEmpty && rows.isEmpty && partials.isEmpty {
            throw DroptraceError("nothing submitted here yet (no slurm/submissions.json), no partials and no scores.h5", path: layout.outDir.path)
        }
        let queue = try ClusterQueue(layout: layout, record: record, client: client)
        let stored = Dictionary(rows.map { ($0.name, $0.fingerprint) }, uniquingKeysWith: { _, last in last })

        // The latest submission of each (checkpoint, shard, shards), in submission order.
        var latest: [String: (unit: WorkUnit, job: String, order: Int)] = [:]
        var count = 0
        for submission in record.submissions {
            for array in submission.arrays {
                for (index, unit) in array.units.enumerated() {
                    latest["\(unit.checkpoint)\u{0}\(unit.shard)\u{0}\(unit.shards)"] = (unit, "\(array.jobID)_\(index)", count)
                    count += 1
                }
            }
        }
        let order = latest.values.sorted { $0.order < $1.order }
        let ended = order.filter { queue.units[$0.unit] == nil }.map(\.job)
        let accounting = ended.isEmpty ? [:] : client.accounting(jobs: Set(ended.compactMap { $0.split(separator: "_").first.flatMap { Int($0) } }).sorted())
        // Each checkpoint's fingerprint as its files are now, read once: a row stored from files changed
        // since the submit (by its finalize or a local run) is the checkpoint's all the same.
        var current: [String: String?] = [:]
        func currentFingerprint(_ unit: WorkUnit) -> String? {
            if let known = current[unit.checkpoint] { return known }
            let fingerprint = CheckpointDiscovery.currentFingerprint(of: URL(fileURLWithPath: unit.directory))
            current.updateValue(fingerprint, forKey: unit.checkpoint)  // nil kept too: an unreadable checkpoint
            return fingerprint
        }
        for (unit, job, _) in order {
            var state: State, detail = ""
            let partial = layout.partial(checkpoint: unit.checkpoint, shard: unit.shard, shards: unit.shards)
            if let fingerprint = stored[unit.checkpoint],
               fingerprint == unit.fingerprint || unit.fingerprint.isEmpty
               || CheckpointDiscovery.holdsFiles(fingerprint, current: currentFingerprint(unit)) {
                state = .stored
            } else if let queued = queue.units[unit] {
                state = ["RUNNING", "COMPLETING", "CONFIGURING"].contains(queued.state) ? .running : .pending
                detail = queued.state
            } else if FileManager.default.fileExists(atPath: partial.path) {
                if let stale = ShardPartials.staleness(
                    of: partial, checkpoint: unit.checkpoint,
                    fingerprint: currentFingerprint(unit) ?? unit.fingerprint) {
                    state = .failed
                    detail = "its partial \(stale): submit again"
                } else {
                    state = .partialDone
                }
            } else {
                state = .failed
                detail = accounting[job] ?? "ended without a result (see its log)"
            }
            units.append(Unit(checkpoint: unit.checkpoint, shard: unit.shard, shards: unit.shards, state: state, job: job, detail: detail))
        }
        // Shards no submission recorded: `slurm task` run by hand, or a dry run's submit.sh.
        for (checkpoint, shard) in partials.sorted(by: { ($0.checkpoint, $0.shard.count, $0.shard.index) < ($1.checkpoint, $1.shard.count, $1.shard.index) })
        where latest["\(checkpoint)\u{0}\(shard.index)\u{0}\(shard.count)"] == nil {
            units.append(Unit(
                checkpoint: checkpoint, shard: shard.index, shards: shard.count, state: .partialDone, job: "-",
                detail: "no submission recorded it (run by hand); finalize checks and merges it"))
        }
        let submitted = Set(order.map(\.unit.checkpoint))
        storedLocally = rows.map(\.name).filter { !submitted.contains($0) }

        let endedFinalize = record.submissions.compactMap(\.finalizeJob).filter { queue.finalizeJobs[$0] == nil }
        let finalizeAccounting = client.accounting(jobs: endedFinalize)
        for submission in record.submissions {
            guard let job = submission.finalizeJob else { continue }
            let directory = layout.slurmDirectory.appendingPathComponent(submission.id)
            // Deferred jobs, each followed by the one it deferred to (FinalizeDeferral).
            let chain = (submission.deferredFinalizeJobs ?? []) + [job]
            for (deferred, next) in zip(chain, chain.dropFirst()) {
                finalize.append(Finalize(
                    job: deferred, state: "DEFERRED to finalize job \(next)",
                    log: directory.appendingPathComponent("logs/finalize-\(deferred).out").path))
            }
            var state = queue.finalizeJobs[job] ?? "ENDED"
            if state == "ENDED" {
                // The job's script writes its exit code last: none means it never ran to the end.
                if let data = try? RegularFile.contents(path: directory.appendingPathComponent("finalize.exit").path, limit: 64) {
                    state += " (exit code \(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))"
                } else {
                    state += " without an exit code (\(finalizeAccounting[String(job)] ?? "cancelled, or lost with its node"))"
                }
            }
            finalize.append(Finalize(job: job, state: state, log: directory.appendingPathComponent("logs/finalize-\(job).out").path))
        }
    }

    /// A readable table: one line per (checkpoint, shard), then the finalize jobs and a count per state.
    public var table: String {
        var rows = units.map { [$0.checkpoint, "\($0.shard + 1)/\($0.shards)", $0.state.rawValue, $0.job, $0.detail] }
        rows += storedLocally.map { [$0, "-", "stored", "-", "scored by a local run"] }
        let widths = (0..<5).map { column in rows.map { $0[column].count }.max().map { max($0, ["checkpoint", "shard", "state", "job", "detail"][column].count) } ?? 0 }
        func line(_ cells: [String]) -> String {
            zip(cells, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }
        var lines = [line(["checkpoint", "shard", "state", "job", "detail"])] + rows.map(line)
        for job in finalize { lines.append("finalize job \(job.job): \(job.state)  log: \(job.log)") }
        var counts: [String] = []
        for state in [State.stored, .partialDone, .running, .pending, .failed] {
            let count = units.filter { $0.state == state }.count
            if count > 0 { counts.append("\(count) \(state.rawValue)") }
        }
        if !storedLocally.isEmpty { counts.append("\(storedLocally.count) checkpoints stored by local runs") }
        lines.append("shard tasks: " + (counts.isEmpty ? "none" : counts.joined(separator: ", ")))
        return lines.joined(separator: "\n") + "\n"
    }

    /// The same as JSON (sorted keys, for scripts).
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self) + "\n"
    }
}
