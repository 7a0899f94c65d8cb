import Cluster
import Foundation
import Testing

/// The one-node Slurm that scripts/slurm-cluster.sh starts (CI sets
/// DROPTRACE_SLURM=1 after starting it). Cluster tests run when it answers;
/// without it they pass vacuously on a developer's machine, but fail under
/// CI=true, where a missing cluster is a broken setup, not a reason to skip.
enum SlurmCluster {
    static let client = SlurmClient()

    /// Whether the cluster answers (`sinfo` shows a node that takes jobs).
    static let isUp: Bool = {
        guard SlurmClient.isInstalled("sinfo"), let output = try? client.run("sinfo", ["--noheader", "--format=%T"]),
              output.status == 0
        else { return false }
        return output.stdout.split(separator: "\n").contains { ["idle", "mixed", "allocated", "completing"].contains($0.trimmingCharacters(in: .whitespaces)) }
    }()

    /// True when the test can use the cluster; records a failure when it
    /// cannot and CI=true (or DROPTRACE_SLURM=1 promised a cluster).
    static func required(sourceLocation: SourceLocation = #_sourceLocation) -> Bool {
        if isUp { return true }
        let environment = ProcessInfo.processInfo.environment
        if environment["CI"] == "true" || environment["DROPTRACE_SLURM"] == "1" {
            Issue.record("no Slurm cluster answers `sinfo`; start one with scripts/slurm-cluster.sh", sourceLocation: sourceLocation)
        }
        return false
    }

    /// Cancels every job of `outDir` (test cleanup) and waits until none is queued.
    static func cancelAll(_ outDir: URL) {
        let name = ClusterLayout(outDir: outDir).jobName
        _ = try? client.run("scancel", ["--name=\(name)"])
        for _ in 0..<100 {
            guard let queued = try? client.queue(name: name), !queued.isEmpty else { return }
            Thread.sleep(forTimeInterval: 0.2)
        }
    }

    /// The queued jobs of `outDir`.
    static func queue(_ outDir: URL) throws -> [SlurmClient.QueuedJob] {
        try client.queue(name: ClusterLayout(outDir: outDir).jobName)
    }

    /// Polls `condition` every 0.25 s for at most `seconds`.
    static func waitUntil(seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: 0.25)
        }
        return try condition()
    }
}
