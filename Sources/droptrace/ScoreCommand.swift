import ArgumentParser
import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Pipeline
import Scoring
import Reporting
import ScoreStore

struct ScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score one checkpoint: attention, MLP and block importance plus block-gap similarities.",
        discussion: """
            Reads a checkpoint of model_type \(ModelRegistry.supportedModelTypes.joined(separator: ", ")): \
            a Hugging Face directory (config.json with model.safetensors, pytorch_model.bin \
            or their sharded index files), a single .safetensors/.bin file with config.json beside it, or a \
            llama.cpp .gguf file (configuration and tokenizer inside; \(GGMLType.supportedNames)). PyTorch pickles are parsed, never executed. droptrace runs the calibration \
            tokens through the model layer by layer and writes an HDF5 file:

              /checkpoints/{name,step,tokens}                        [C]
              /scores/{attention,mlp,block}                          float32 [C, L]
              /similarity/block_gap                                  float32 [C, L, L]
              /per_sequence/..., /similarity/block_gap_sums/...      float64 sums (README)

              /scores/<module>_angular_distance[_last_token]         float32 [C, L]
              /similarity/block_gap_angular_distance[_last_token]    float32 [C, L, L]

            with C = 1. An existing output file is replaced only once the new one is complete, and only if it is an earlier `score` output: any other file at that path, such as one of the run's inputs or a trace's scores.h5, is refused before any work.

            On standard output (--json: the same as JSON) it prints each layer's attention, MLP and block \
            importance, which layers each method would drop \
            (LLM-Drop's 1 - cos, identical to ShortGPT's Block Influence for blocks; Gromov et al.'s angular \
            distance arccos(cos)/pi over all tokens and at the last token, as PruneMe) and, for every block \
            size n below the layer count, the best contiguous block to drop by each metric, with 0-based layer indices.

            Example:
              droptrace score runs/checkpoint-1000 --calibration calib.txt --seq-len 256 --samples 32 --output scores.h5

            Exit codes: 0 success; 1 bad input or failure, one line naming the file; 64 invalid usage.
            """
    )

    @Argument(help: "Checkpoint directory, or one .safetensors, .bin or .gguf file.")
    var checkpoint: String

    @OptionGroup var calibration: CalibrationOptions

    @Option(name: .shortAndLong, help: "HDF5 file to write.")
    var output: String

    @OptionGroup var engine: EngineOptions

    @OptionGroup var precision: PrecisionOptions

    @Flag(help: "Print the scores and the comparison of methods as JSON on standard output instead of tables.")
    var json = false

    func validate() throws {
        // "out/" names a directory; the file would be written as "out".
        if output.hasSuffix("/") {
            throw ValidationError("--output names a directory (it ends in /); give the score file's path, e.g. \(output)scores.h5")
        }
    }

    func run() throws {
        try runLocked { log in
            try engine.apply()
            precision.apply()
            try ScoreFile.checkOneCheckpointOutput(URL(commandLinePath: output))
            let location = URL(commandLinePath: checkpoint)
            let home = CheckpointLayout.home(of: location)
            let name = CheckpointDiscovery.rowName(of: home)
            let place = try CheckpointDiscovery.trainingPlace(
                of: PathKind.of(home) == .directory ? home : home.deletingLastPathComponent(), name: name)
            place.warnings.forEach { log.warning("\($0)") }
            log.info("scoring \(checkpoint)")
            let progress = ProgressBar(label: name)
            let scored = try CheckpointScoring.run(
                checkpoint: location, calibration: calibration.source,
                warn: { log.warning("\($0)") }, progress: progress.update)
            progress.finished()
            log.info("scored \(scored.layerCount) layers on \(scored.calibration.tokenCount) calibration tokens in \(precision.summary)")

            let row = CheckpointRow(scores: scored.scores, name: name, step: place.step, tokens: place.tokens)
            let file = ScoreFile(metadata: .init(scored, precision: precision.precision), rows: [row])
            // Again: a trace may have written its store there while this one was scored. In a trace's
            // output directory, under its lock (a trace writing there now holds it: exit 75), and only
            // over the file as checked.
            let outputURL = URL(commandLinePath: output)
            let lock = try RunLock.ofOutputDirectory(outputURL.deletingLastPathComponent())
            defer { withExtendedLifetime(lock) {} }
            let version = FileVersion.current(output)
            try ScoreFile.checkOneCheckpointOutput(outputURL)
            _ = try file.write(to: outputURL, expected: version)
            log.info("wrote \(output)")
            if json {
                print(try ScoresJSON(checkpoint: name, scored: scored, row: row, metadata: file.metadata).encoded())
            } else {
                print(PeerMetricTables.summary(of: row))
            }
        }
    }
}
