import ArgumentParser
import Foundation
import Pipeline

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare several traced runs of one architecture (seeds of a recipe, say) in one report.",
        discussion: """
            Reads OUT_DIR/scores.h5 of each run (as `trace` wrote it; nothing is rescored) and writes \
            DIR/report.md with figures in DIR/figures/: per checkpoint the mean and spread (min, max, standard \
            deviation) of importance per layer and module type across runs, the agreement of the runs' drop-k \
            sets (mean pairwise Jaccard), and each run's own verdict. Checkpoints are matched by tokens seen \
            when every checkpoint records them, else by step, else by name; a checkpoint missing from some runs \
            is a gap there. The runs must share model_type, num_layers, hidden_size and layer shapes; different calibration data is \
            allowed and stated in the report. DIR may not be a trace's output directory, nor lie inside a \
            checkpoint (one of a compared run's series, or another run's: a directory named like a checkpoint \
            that holds weight files), as for trace: training deletes checkpoint directories.

            Exit codes: 0 done; 1 error, one line naming the file; 64 invalid usage; 75 another run holds DIR's lock.
            """
    )

    @Argument(help: ArgumentHelp("Output directories of `trace` (or their scores.h5), at least two.", valueName: "out-dir"))
    var stores: [String]

    @Option(name: .shortAndLong, help: "Directory for the comparison's report.md and figures/.")
    var output: String

    @Option(help: "Report title.")
    var title: String?

    func validate() throws {
        if stores.count < 2 { throw ValidationError("give at least two output directories to compare") }
        if let problem = title.flatMap(TraceOptions.titleProblem) { throw ValidationError("--\(problem)") }
    }

    func run() throws {
        try runLocked { log in
            let report = try CompareRuns.run(
                stores: stores.map { URL(commandLinePath: $0) }, output: URL(commandLinePath: output), title: title)
            log.info("report: \(report.path)")
        }
    }
}
