import Crypto
import DroptraceSupport
import Foundation
import Pipeline

/// Where Slurm runs keep their files in an output directory (which must
/// be on a file system every node sees):
///
///     OUT_DIR/slurm/submissions.json        what was submitted (SubmissionRecord)
///     OUT_DIR/slurm/<submission>/array-<k>.units, array-<k>.sbatch, finalize.sbatch
///     OUT_DIR/slurm/<submission>/logs/      one log per array task, one for finalize
///     OUT_DIR/partials/<checkpoint>/shard-<I>-of-<N>.h5   finished shards, until finalize merges them
public struct ClusterLayout: Sendable {
    public let outDir: URL

    public init(outDir: URL) {
        self.outDir = outDir.standardizedFileURL
    }

    public var slurmDirectory: URL { outDir.appendingPathComponent("slurm") }

    /// Opens OUT_DIR/slurm, creating it (and OUT_DIR); a symbolic link or
    /// anything but a directory there is refused, so nothing droptrace
    /// writes for Slurm (lock, scripts, work units, logs, record) lands elsewhere.
    public func openSlurmDirectory() throws -> DirectoryHandle {
        try DirectoryHandle.create(at: outDir.path).subdirectory(slurmDirectory.lastPathComponent)
    }
    public var recordName: String { "submissions.json" }
    public var record: URL { slurmDirectory.appendingPathComponent(recordName) }
    public var store: URL { outDir.appendingPathComponent("scores.h5") }
    public var partialsDirectory: URL { outDir.appendingPathComponent(ShardPartials.directoryName) }

    /// The file `droptrace slurm task` writes for shard `shard` of `shards` of a checkpoint.
    public func partial(checkpoint: String, shard: Int, shards: Int) -> URL {
        partialsDirectory.appendingPathComponent(checkpoint).appendingPathComponent(ShardPartials.fileName(index: shard, count: shards))
    }

    /// The finished shards waiting in `partials/` for a finalize job (by
    /// their files' names), in no order.
    public var unmergedPartials: [(checkpoint: String, shard: CalibrationShard)] {
        let files = FileManager.default
        let checkpoints = (try? files.contentsOfDirectory(atPath: partialsDirectory.path)) ?? []
        return checkpoints.flatMap { name in
            ((try? files.contentsOfDirectory(atPath: partialsDirectory.appendingPathComponent(name).path)) ?? [])
                .compactMap(ShardPartials.shard(named:)).map { (name, $0) }
        }
    }

    /// Whether any finished shard waits in `partials/` for a finalize job.
    public var hasUnmergedPartials: Bool { !unmergedPartials.isEmpty }

    /// The Slurm job name of every job submitted for this output directory:
    /// `droptrace:` and the first 12 hex digits of the SHA-256 of its path
    /// with symbolic links resolved, so `squeue --name` finds exactly this
    /// directory's jobs, however the directory is reached.
    public var jobName: String {
        let digest = SHA256.hash(data: Data(ResolvedPath.of(outDir).utf8))
        return "droptrace:" + digest.prefix(6).map { String(format: "%02x", $0) }.joined()
    }
}

/// One array task's work: shard `shard` (0-based) of `shards` of a checkpoint's calibration windows.
public struct WorkUnit: Codable, Sendable, Hashable {
    /// The checkpoint's directory name (its row name in the store).
    public var checkpoint: String
    /// The checkpoint's directory, absolute.
    public var directory: String
    public var shard: Int
    public var shards: Int
    /// `CheckpointFingerprint` of its files when submitted.
    public var fingerprint: String

    public init(checkpoint: String, directory: String, shard: Int, shards: Int, fingerprint: String) {
        self.checkpoint = checkpoint
        self.directory = directory
        self.shard = shard
        self.shards = shards
        self.fingerprint = fingerprint
    }

    /// The units file line the array script reads: `<shard>\t<shards>\t<directory>`.
    var line: String { "\(shard)\t\(shards)\t\(directory)" }

    /// Refuses a directory the units file cannot hold on one line.
    static func checkRepresentable(_ directory: String) throws {
        if directory.contains(where: { $0 == "\t" || $0.isNewline || $0 == "\0" }) {
            throw DroptraceError(
                "its path holds a tab or line break, which a Slurm units file cannot carry; rename the directory",
                path: directory)
        }
    }
}
