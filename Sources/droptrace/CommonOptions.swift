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
    @Option(help: ArgumentHelp("Threads for BLAS and the engine's loops, 1 to \(EngineThreads.maximum) (default: all cores).", valueName: "n"))
    var threads: Int?

    func validate() throws {
        if let threads, !(1...EngineThreads.maximum).contains(threads) {
            throw ValidationError("--threads must be between 1 and \(EngineThreads.maximum)")
        }
    }

    func apply() {
        EngineThreads.set(threads ?? ProcessInfo.processInfo.activeProcessorCount)
        EngineMemory.reuseFreedBuffers()
        // Which library, kernel and instruction set the matrix products run on
        // (chosen from CPUID); DROPTRACE_LOG_LEVEL=debug shows it.
        DroptraceLogging.logger().debug("matrix kernels: \(MatrixKernels.selectionSummary)")
    }
}

extension Precision: ExpressibleByArgument {}

/// Reads a fractional option (seconds, minutes) written in decimal. Swift's
/// Double(String) also reads hexadecimal (0x10 is 16, 0x1p4 too), which the
/// whole-number options already refuse; a value in another base is a typo
/// or a different number than the one meant, so it is refused as a usage error.
func decimalNumber(_ argument: String) throws -> Double {
    let decimal = #/[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?/#
    guard argument.wholeMatch(of: decimal) != nil, let value = Double(argument) else {
        throw ValidationError("not a decimal number")
    }
    return value
}

/// The arithmetic of the engine's matrix products, shared by the commands
/// that compute (`run` and `slurm` take it from the pipeline file).
struct PrecisionOptions: ParsableArguments {
    static let help = """
        Arithmetic of the matrix products: f32 (float32 throughout) or bf16 (weights rounded once to bfloat16, \
        activations rounded to bfloat16 at matrix-product inputs, float32 accumulation and residual stream; on the \
        CPU's AMX or AVX512-BF16 units where it has them, elsewhere emulated with the same rounding). See README, Precision.
        """

    @Option(help: ArgumentHelp(help, valueName: "f32|bf16"))
    var precision: Precision = .f32

    /// Sets the engine's precision; before any model is loaded.
    func apply() { EnginePrecision.set(precision) }
}

/// A command's JSON result with the precision it was computed in added to
/// its top-level keys.
struct WithPrecision<Result: Encodable>: Encodable {
    var result: Result
    var precision: Precision

    private enum CodingKeys: String, CodingKey { case precision }

    func encode(to encoder: Encoder) throws {
        try result.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(precision, forKey: .precision)
    }
}
