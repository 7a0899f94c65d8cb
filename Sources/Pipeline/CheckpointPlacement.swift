import CheckpointIO
import DroptraceSupport
import Foundation

/// Outputs never go inside a checkpoint: training deletes and replaces
/// checkpoint directories (the Trainer's `save_total_limit` removes
/// `checkpoint-<N>` folders whole), and whatever droptrace wrote there with
/// them; files beside the weights would also look like the checkpoint's own.
/// `trace` and `run` (the store and report) and `compare` (the report) share
/// the rule. Checked from the paths alone, before anything is created.
enum CheckpointPlacement {
    /// The entries of series `directory` named like checkpoints, finished or
    /// not (each may be a link to a checkpoint elsewhere); none when it cannot be listed.
    static func checkpoints(inSeries directory: URL) -> [URL] {
        CheckpointName.entries(in: directory).map { directory.appendingPathComponent($0) }
    }

    /// Throws when `output` is one of `checkpoints` or lies inside one (both
    /// resolved through links), or when it is or lies inside any other
    /// checkpoint: a directory named like one that holds weight files
    /// (`CheckpointLayout.holdsNoWeights`), as another run's rotated
    /// checkpoints are. A folder merely named like a checkpoint is none, nor
    /// a model directory of another name: the Trainer's output directory,
    /// holding the final model beside its `checkpoint-<N>` folders, is where
    /// outputs often go.
    /// Nor may `output` lie in one of `series` under a name a checkpoint
    /// takes, before that checkpoint exists: the store would stand among
    /// the checkpoints as one, and the checkpoint of that name replace it;
    /// a Trainer's staging name (`tmp-checkpoint-<N>`) included, which is
    /// renamed into the checkpoint and meanwhile held back from every trace.
    /// - Parameter contents: what would be lost with it ("the store", "the report").
    /// - Throws: `DroptraceError` naming `output` and the checkpoint.
    static func checkOutside(_ output: URL, checkpoints: [URL], series: [URL] = [], contents: String) throws {
        func refusal(_ checkpoint: URL) -> DroptraceError {
            DroptraceError(
                "lies inside checkpoint \(checkpoint.standardizedFileURL.lastPathComponent), which training may replace "
                    + "or delete with \(contents) in it; choose an output directory outside the checkpoints",
                path: output.path)
        }
        for checkpoint in checkpoints where ResolvedPath.isWithin(output, checkpoint) { throw refusal(checkpoint) }
        let resolved = ResolvedPath.of(output)
        for directory in series.map(ResolvedPath.of) where resolved.hasPrefix(directory + "/") {
            let entry = resolved.dropFirst(directory.count + 1).prefix { $0 != "/" }
            if CheckpointName.isCheckpointOrStaging(String(entry)) { throw refusal(URL(fileURLWithPath: directory).appendingPathComponent(String(entry))) }
        }
        // Each ancestor, by the components of the path: a URL's parents never reach "/" from a relative path.
        var components = resolved.split(separator: "/")
        while let last = components.last {
            let directory = URL(fileURLWithPath: "/" + components.joined(separator: "/"))
            if CheckpointName.isCheckpointOrStaging(String(last)) && !CheckpointLayout.holdsNoWeights(directory) { throw refusal(directory) }
            components.removeLast()
        }
    }
}
