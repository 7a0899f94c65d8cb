import DroptraceSupport
import Foundation

/// The optional `slurm:` section of a pipeline file: the defaults of
/// `droptrace slurm submit` (its command-line options override them).
///
///     slurm:
///       shards: 2                # calibration shards per checkpoint (array tasks)
///       array_parallelism: 8     # at most this many tasks at once (sbatch --array=…%8)
///       partition: cpu
///       time: "02:00:00"         # per array task (sbatch --time)
///       cpus_per_task: 16
///       mem: 64G
///       sbatch_args: ["--account=proj42"]
public struct PipelineSlurmSection: Decodable, Sendable, Equatable {
    public var shards: Int?
    public var arrayParallelism: Int?
    public var partition: String?
    public var time: String?
    public var cpusPerTask: Int?
    public var mem: String?
    public var sbatchArgs: [String]?

    public init(
        shards: Int? = nil, arrayParallelism: Int? = nil, partition: String? = nil, time: String? = nil,
        cpusPerTask: Int? = nil, mem: String? = nil, sbatchArgs: [String]? = nil
    ) {
        self.shards = shards
        self.arrayParallelism = arrayParallelism
        self.partition = partition
        self.time = time
        self.cpusPerTask = cpusPerTask
        self.mem = mem
        self.sbatchArgs = sbatchArgs
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case shards, partition, time, mem
        case arrayParallelism = "array_parallelism"
        case cpusPerTask = "cpus_per_task"
        case sbatchArgs = "sbatch_args"
    }

    /// The largest shard count: more shards than this is no longer splitting
    /// a checkpoint's calibration but flooding the queue.
    public static let maxShards = 4096

    /// The section's own setting names, for the unknown-key check.
    static let settingNames = Set(CodingKeys.allCases.map(\.rawValue))

    /// Checks every value. Messages name a setting as the pipeline file
    /// spells it (`slurm.shards`), or with `asOptions` as the command-line
    /// option that gave it (`option --shards`).
    /// - Throws: `DroptraceError("<setting> …", path:)` for the first bad value.
    public func validate(path: String, asOptions: Bool = false) throws {
        func name(_ setting: String) -> String {
            guard asOptions else { return "slurm." + setting }
            return "option --" + (setting == "sbatch_args" ? "sbatch-arg" : setting.replacingOccurrences(of: "_", with: "-"))
        }
        if let shards, !(1...Self.maxShards).contains(shards) {
            throw DroptraceError("\(name("shards")) must be between 1 and \(Self.maxShards)", path: path)
        }
        if let arrayParallelism, !(1...1_000_000).contains(arrayParallelism) {
            throw DroptraceError("\(name("array_parallelism")) must be between 1 and 1000000", path: path)
        }
        if let cpusPerTask, !(1...1_000_000).contains(cpusPerTask) {
            throw DroptraceError("\(name("cpus_per_task")) must be between 1 and 1000000", path: path)
        }
        // Values go to sbatch as single arguments: printable, one line, no spaces.
        for (setting, value) in [("partition", partition), ("time", time), ("mem", mem)] {
            if let value, !Self.isPlainWord(value) {
                throw DroptraceError("\(name(setting)) must be one word of printable characters", path: path)
            }
        }
        for argument in sbatchArgs ?? [] {
            guard argument.hasPrefix("-"), argument.count <= 4096, !argument.contains(where: { $0.isNewline || $0 == "\0" }) else {
                throw DroptraceError(
                    "\(name("sbatch_args")) entries must be sbatch options starting with \"-\" (one line each), e.g. --account=proj42",
                    path: path)
            }
        }
        for argument in sbatchArgs ?? [] {
            let option = argument.prefix { $0 != "=" }
            if let reserved = Self.reservedOptions.first(where: { option == $0 || (($0.count == 2) && argument.hasPrefix($0)) }) {
                throw DroptraceError(
                    "\(name("sbatch_args")) sets \(reserved), which droptrace sets itself on every job (its queue is "
                        + "found by job name, its shards by array index, its logs and order by their own options): leave it out",
                    path: path)
            }
        }
        if (sbatchArgs?.count ?? 0) > 256 {
            throw DroptraceError("\(name("sbatch_args")) holds more than 256 options", path: path)
        }
    }

    /// sbatch options droptrace gives every job itself, long and short.
    static let reservedOptions = [
        "--job-name", "-J", "--array", "-a", "--output", "-o", "--error", "-e", "--dependency", "-d", "--parsable",
        "--wrap", "--open-mode", "--kill-on-invalid-dep", "--signal", "--requeue", "--no-requeue",
    ]

    /// `self` with every setting `other` gives replaced by other's value.
    public func overridden(by other: PipelineSlurmSection) -> PipelineSlurmSection {
        PipelineSlurmSection(
            shards: other.shards ?? shards, arrayParallelism: other.arrayParallelism ?? arrayParallelism,
            partition: other.partition ?? partition, time: other.time ?? time,
            cpusPerTask: other.cpusPerTask ?? cpusPerTask, mem: other.mem ?? mem,
            sbatchArgs: other.sbatchArgs ?? sbatchArgs)
    }

    static func isPlainWord(_ value: String) -> Bool {
        !value.isEmpty && value.count <= 256
            && value.unicodeScalars.allSatisfy { $0.isASCII && $0.value > 0x20 && $0.value < 0x7F }
    }
}
