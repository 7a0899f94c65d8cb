import ArgumentParser
import Foundation
import Scoring
import TensorEngine

/// Calibration data options shared by the scoring commands.
struct CalibrationOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Calibration data: JSONL with one {\"input_ids\": [...]} per line, or UTF-8 text tokenised with the checkpoint's tokenizer.json.",
        valueName: "file"))
    var calibration: String

    @Option(help: ArgumentHelp(
        "Tokens per calibration window for text (default \(CalibrationSource.defaultTextSeqLen), capped at the model's positions); JSONL lines longer than this are cut.",
        valueName: "n"))
    var seqLen: Int?

    @Option(help: ArgumentHelp(
        "Number of windows (text, default every full window up to \(CalibrationSource.defaultTextSamples)) or lines (JSONL, default all) to use.",
        valueName: "n"))
    var samples: Int?

    func validate() throws {
        if let seqLen, seqLen < 1 { throw ValidationError("--seq-len must be at least 1") }
        if let samples, samples < 1 { throw ValidationError("--samples must be at least 1") }
    }

    var source: CalibrationSource {
        CalibrationSource(url: URL(fileURLWithPath: calibration), seqLen: seqLen, samples: samples)
    }
}

/// Compute options.
struct EngineOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Threads for BLAS and the engine's loops (default: all cores).", valueName: "n"))
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func apply() {
        EngineThreads.set(threads ?? ProcessInfo.processInfo.activeProcessorCount)
        EngineMemory.reuseFreedBuffers()
    }
}
