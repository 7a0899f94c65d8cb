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
        "Tokens per calibration window for text (default \(CalibrationSource.defaultTextSeqLen), or the model's positions when it has fewer; a larger value given is refused); when given, JSONL lines longer than this are cut (without it, a line longer than the model's positions is refused).",
        valueName: "n"))
    var seqLen: Int?

    @Option(help: ArgumentHelp(
        "Number of windows (text, default every full window up to \(CalibrationSource.defaultTextSamples)) or lines (JSONL, default all) to use.",
        valueName: "n"))
    var samples: Int?

    @OptionGroup var tokenizer: TokenizerOption

    func validate() throws {
        if let seqLen, seqLen < 1 { throw ValidationError("--seq-len must be at least 1") }
        if let samples, samples < 1 { throw ValidationError("--samples must be at least 1") }
    }

    var source: CalibrationSource { textSource(calibration) }

    /// Another text or JSONL file (`--eval`) cut and tokenised as the calibration is.
    func textSource(_ path: String) -> CalibrationSource {
        CalibrationSource(url: URL(commandLinePath: path), seqLen: seqLen, samples: samples, tokenizer: tokenizer.directory)
    }
}

/// The tokenizer text is read with, where checkpoints were saved without theirs.
struct TokenizerOption: ParsableArguments {
    @Option(name: .customLong("tokenizer"), help: ArgumentHelp(
        "Directory whose tokenizer.json (and tokenizer_config.json, when there is one) reads text — calibration, --eval, tasks — instead of each checkpoint's, as AutoTokenizer.from_pretrained(dir) would: for checkpoints saved without their tokenizer (give the base model's directory). Checked before anything runs.",
        valueName: "dir"))
    var path: String?

    var directory: URL? { path.map { URL(commandLinePath: $0) } }
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

    /// - Throws: `DroptraceError` when the threads cannot all start.
    func apply() throws {
        EngineThreads.set(threads ?? ProcessInfo.processInfo.activeProcessorCount)
        try EngineThreads.checkCanStart()
        EngineMemory.reuseFreedBuffers()
        // Which library, kernel and instruction set the matrix products run on
        // (chosen from CPUID); DROPTRACE_LOG_LEVEL=debug shows it.
        let logger = DroptraceLogging.logger()
        MatrixKernels.ignoredSettings.forEach { logger.warning("\($0)") }
        if BLAS.isSequentialBuild && EngineThreads.count > 1 && MatrixKernels.active.f32 == .openBLAS {
            logger.warning("\(BLAS.sequentialBuildWarning)")
        }
        logger.debug("matrix kernels: \(MatrixKernels.selectionSummary)")
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

/// Negative numbers given to options, made values for the parser.
///
/// swift-argument-parser takes every argument starting with "-" for an
/// option, so `--samples -3` or `--drop-k 2 -1` ended in "Missing value" or
/// "Unknown option '-1'" instead of the option's own check ("--samples must
/// be at least 1", a usage error, exit 64). No option of droptrace is named
/// by a digit, so an argument that is `-` and a number is a value: it is
/// attached to the long option whose values it follows.
enum NegativeValues {
    /// `arguments` (without the program name) with each negative number
    /// attached to its option: `--samples -3` becomes `--samples=-3`, and
    /// one after values that are numbers repeats the option, `--drop-k 2 -1`
    /// becoming `--drop-k 2 --drop-k=-1` (an array option collects every
    /// occurrence; of a single-value option the last is taken, as when it is
    /// given twice). Everything else is left as it is: a negative number
    /// after a short option, a positional argument or `--`, and a missing
    /// value (`--drop-k --force`, `--samples` last), which stays a usage error.
    static func attached(_ arguments: [String]) -> [String] {
        var result: [String] = []
        // The long option the arguments since it are values of: nil after a
        // short option or a value that is no number (a positional argument).
        var option: String?
        for (index, argument) in arguments.enumerated() {
            if argument == "--" {
                // Past the terminator everything is a value already.
                return result + arguments[index...]
            }
            if isNegativeNumber(argument), let name = option {
                if result.last == name {
                    result[result.count - 1] = "\(name)=\(argument)"
                } else {
                    result.append("\(name)=\(argument)")
                }
                continue
            }
            if argument.hasPrefix("--") {
                option = String(argument.prefix { $0 != "=" })
            } else if argument.hasPrefix("-") || !isNumber(argument) {
                option = nil
            }
            result.append(argument)
        }
        return result
    }

    /// `-` followed by a digit, or by a point and a digit (`-1`, `-0.5`, `-.5`, `-1,2`).
    static func isNegativeNumber(_ argument: String) -> Bool {
        argument.hasPrefix("-") && isNumber(String(argument.dropFirst()))
    }

    /// Starts like a number: a digit, or a point and a digit.
    private static func isNumber(_ argument: String) -> Bool {
        let body = argument.hasPrefix(".") ? argument.dropFirst() : Substring(argument)
        return body.first?.isASCII == true && body.first?.isNumber == true
    }
}

/// The arithmetic of the engine's matrix products, shared by the commands
/// that compute (`run` and `slurm` take it from the pipeline file).
struct PrecisionOptions: ParsableArguments {
    static let help = """
        Arithmetic of the matrix products: f32 (float32 throughout) or bf16 (weights rounded once to bfloat16, \
        activations rounded to bfloat16 at matrix-product inputs, float32 accumulation and residual stream; on the \
        CPU's AMX units, or its AVX512-BF16 units where they outrun float32 (timed once per run), elsewhere emulated \
        with the same rounding). See README, Precision.
        """

    @Option(help: ArgumentHelp(help, valueName: "f32|bf16"))
    var precision: Precision = .f32

    /// Sets the engine's precision; before any model is loaded.
    func apply() { EnginePrecision.set(precision) }

    /// "bf16, matrix products on oneDNN 2.6.3 matmul bf16 (avx512_core_bf16)", as the report's Precision row says it.
    var summary: String { "\(precision.rawValue), matrix products on \(MatrixKernels.description(for: precision))" }
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
