import DroptraceSupport
import Foundation

/// Runs Slurm's own commands (sbatch, squeue, scontrol, sacct, scancel) and
/// reads their answers. Each call is bounded: at most `timeout` seconds and
/// `maxOutput` bytes of output, so a hung controller or a flood of jobs
/// cannot hang or exhaust droptrace.
public struct SlurmClient: Sendable {
    /// Seconds one command may take.
    public var timeout: TimeInterval = 120
    /// Bytes of standard output kept per command.
    public static let maxOutput = 64 << 20

    public init() {}

    /// What a Slurm command printed.
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs `command` (found on PATH) with `arguments`, never through a shell.
    /// - Throws: `DroptraceError` naming the command when it is not
    ///   installed, cannot start, or runs longer than `timeout`.
    public func run(_ command: String, _ arguments: [String]) throws -> Output {
        guard let executable = Self.find(command) else {
            throw DroptraceError("not found on PATH; is this a Slurm cluster (or a login node with slurm-client)?", path: command)
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        do { try process.run() } catch {
            throw DroptraceError("cannot start: \(SystemError.summary(of: error))", path: executable)
        }
        // Both pipes are drained on their own threads so neither can fill
        // and block the child; the timeout ends a hung command.
        nonisolated(unsafe) var stdout = [UInt8](), stderr = [UInt8]()
        let group = DispatchGroup()
        for (handle, isOut) in [(out.fileHandleForReading, true), (err.fileHandleForReading, false)] {
            DispatchQueue.global().async(group: group) {
                let bytes = Self.readBounded(handle, limit: isOut ? Self.maxOutput : 1 << 16)
                if isOut { stdout = bytes } else { stderr = bytes }
            }
        }
        if group.wait(timeout: .now() + timeout) == .timedOut {
            process.terminate()
            group.wait()
            process.waitUntilExit()
            throw DroptraceError("gave no answer within \(Int(timeout)) s (is slurmctld up?)", path: command)
        }
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self))
    }

    /// Like `run`, but a non-zero exit is an error carrying the command's
    /// first line of stderr.
    public func check(_ command: String, _ arguments: [String]) throws -> String {
        let output = try run(command, arguments)
        guard output.status == 0 else {
            let reason = output.stderr.split(separator: "\n").first.map(String.init) ?? "exit code \(output.status)"
            throw DroptraceError("failed: \(SystemError.oneLine(reason))", path: command)
        }
        return output.stdout
    }

    /// Whether `command` is installed.
    public static func isInstalled(_ command: String) -> Bool { find(command) != nil }

    private static func find(_ command: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(command)" }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Reads `handle` to its end, keeping at most `limit` bytes (the rest is
    /// read and dropped so the writer never blocks).
    private static func readBounded(_ handle: FileHandle, limit: Int) -> [UInt8] {
        var kept = [UInt8]()
        while let chunk = try? handle.read(upToCount: 1 << 16), !chunk.isEmpty {
            if kept.count < limit { kept += chunk.prefix(limit - kept.count) }
        }
        return kept
    }
}

extension SlurmClient {
    /// One job (or array element) in the queue.
    public struct QueuedJob: Sendable, Equatable {
        /// The job id, or for an array element the array's job id.
        public var jobID: Int
        /// The array task id; nil for a job that is not an array, or for
        /// an array's pending elements still shown as one range (`--array` avoids that).
        public var arrayTaskID: Int?
        /// Slurm's state name (PENDING, RUNNING, COMPLETING, …).
        public var state: String
    }

    /// The jobs named `name` still in the queue (pending, running, completing,
    /// suspended), one entry per array element.
    public func queue(name: String) throws -> [QueuedJob] {
        let text = try check("squeue", ["--noheader", "--array", "--name=\(name)", "--format=%F|%K|%T"])
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: "|", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count == 3, let job = Int(fields[0]), job > 0 else { return nil }
            return QueuedJob(jobID: job, arrayTaskID: Int(fields[1]), state: fields[2])
        }
    }

    /// The controller's MaxArraySize (array task ids run from 0 to it − 1).
    public func maxArraySize() throws -> Int {
        let text = try check("scontrol", ["show", "config"])
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            if parts.count == 2, parts[0] == "MaxArraySize", let value = Int(parts[1]), value >= 1 { return value }
        }
        throw DroptraceError("prints no MaxArraySize", path: "scontrol show config")
    }

    /// Submits `script` with `options`; returns the job id (`sbatch --parsable`).
    public func submit(script: String, options: [String]) throws -> Int {
        let text = try check("sbatch", ["--parsable"] + options + [script])
        // --parsable prints "<id>" or "<id>;<cluster>".
        guard let first = text.split(separator: "\n").last?.split(separator: ";").first,
              let id = Int(first.trimmingCharacters(in: .whitespaces)), id > 0
        else { throw DroptraceError("printed no job id: \(SystemError.oneLine(text))", path: "sbatch") }
        return id
    }

    /// A job's state and exit code while the controller still knows it
    /// (`scontrol show job`; it forgets ended jobs after MinJobAge); nil then.
    public func jobState(_ job: Int) throws -> (state: String, exitCode: Int32)? {
        let output = try run("scontrol", ["show", "job", "--oneliner", String(job)])
        guard output.status == 0 else { return nil }
        var state: String?, exit: Int32 = 0
        for field in output.stdout.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            if field.hasPrefix("JobState=") { state = String(field.dropFirst("JobState=".count)) }
            if field.hasPrefix("ExitCode=") {
                exit = Int32(field.dropFirst("ExitCode=".count).split(separator: ":").first ?? "") ?? 0
            }
        }
        return state.map { ($0, exit) }
    }

    /// States of ended jobs from accounting (`sacct`), keyed by "<job>" or
    /// "<job>_<task>"; empty when the cluster keeps no accounting.
    public func accounting(jobs: [Int]) -> [String: String] {
        guard !jobs.isEmpty, SlurmClient.isInstalled("sacct"),
              let output = try? run("sacct", ["--noheader", "--parsable2", "--allocations",
                                              "--jobs=\(jobs.map(String.init).joined(separator: ","))", "--format=JobID,State"]),
              output.status == 0
        else { return [:] }
        var states: [String: String] = [:]
        for line in output.stdout.split(separator: "\n") {
            let fields = line.split(separator: "|")
            guard fields.count >= 2 else { continue }
            // "CANCELLED by 0" → "CANCELLED".
            states[String(fields[0])] = fields[1].split(separator: " ").first.map(String.init)
        }
        return states
    }

    /// The states Slurm gives a job that has ended.
    public static let endedStates: Set<String> = [
        "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
    ]
}
