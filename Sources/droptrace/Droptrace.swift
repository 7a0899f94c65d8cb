import ArgumentParser
import DroptraceSupport
import Foundation

@main
struct Droptrace: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "droptrace",
        abstract: "Measure how redundant each attention layer, MLP and block of a transformer is.",
        discussion: """
            Importance of a module = 1 − mean cosine similarity between its input and its output on the \
            residual stream over calibration tokens ("What Matters in Transformers? Not All Attention is \
            Needed", He et al., 2024). Low importance means the module barely changes its input and can be dropped.

            Exit codes: 0 success; 1 bad input or failure (the message names the file); 3 slurm finalize \
            deferred to a new finalize job (shard tasks still queued); 64 invalid usage; 75 another run holds the output directory (trace, run, report, compare, slurm finalize) or another \
            slurm submit runs for it, or a slurm task was interrupted and should run again.
            """,
        version: DroptraceVersion.string,
        subcommands: [
            ScoreCommand.self, TraceCommand.self, RunCommand.self, ReportCommand.self, CompareCommand.self, DropCommand.self,
            EvalCommand.self, SlurmCommand.self, ResealCommand.self,
        ]
    )

    /// Parses the command line with negative numbers given to options
    /// attached to them (`NegativeValues`), so that the commands' own checks
    /// refuse them.
    static func main() {
        // A log reader that goes away (`2>&1 | head`, a log shipper that exits) must not kill a run at its
        // next log line: writes to it fail with EPIPE and are dropped (results on standard output that
        // cannot be written still fail the command).
        signal(SIGPIPE, SIG_IGN)
        if let argument = firstArgumentNotUTF8() {
            exit(withError: ValidationError(
                "argument '\(argument)' is not UTF-8 text (� stands for the bytes that are not): droptrace reads its "
                    + "arguments as UTF-8 (a path of such bytes would be looked up under another name: rename the file or directory)"))
        }
        let arguments = Array(CommandLine.arguments.dropFirst())
        if let problem = emptyArgument(arguments) {
            // An empty path would name the working directory; no other option takes an empty value either.
            exit(withError: ValidationError("\(problem): no option or argument of droptrace takes an empty value"))
        }
        do {
            var command = try parseAsRoot(NegativeValues.attached(arguments))
            try command.run()
        } catch where exitCode(for: error) == .success {
            // --help and --version: their text must reach standard output (a full disk, /dev/full) to succeed.
            print(fullMessage(for: error))
            if fflush(stdout) != 0 || ferror(stdout) != 0 {
                let reason = SystemError.describe()
                DroptraceLogging.logger().error("standard output: cannot write: \(reason)")
                Foundation.exit(ExitCode.failure.rawValue)
            }
            Foundation.exit(ExitCode.success.rawValue)
        } catch {
            exit(withError: error)
        }
    }

    /// Where an argument is empty (`--calibration ''`, `--calibration=`, a
    /// positional `''`), said by what precedes it; nil when none is.
    private static func emptyArgument(_ arguments: [String]) -> String? {
        for (index, argument) in arguments.enumerated() {
            if argument.isEmpty {
                return index == 0 ? "the first argument is empty" : "an empty argument follows \(arguments[index - 1].debugDescription)"
            }
            if argument.hasPrefix("--"), argument.hasSuffix("="), argument.count > 3 {
                return "\(argument.dropLast()) is given an empty value"
            }
        }
        return nil
    }

    /// The first argument whose bytes are not UTF-8, as Swift shows it (with
    /// U+FFFD in their place): a path of such bytes would be looked up under
    /// another name and reported "not found".
    private static func firstArgumentNotUTF8() -> String? {
        for index in 1..<Int(CommandLine.argc) {
            guard let argument = CommandLine.unsafeArgv[index] else { continue }
            let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(argument).assumingMemoryBound(to: UInt8.self), count: strlen(argument))
            if String(validating: bytes, as: UTF8.self) == nil { return CommandLine.arguments[index] }
        }
        return nil
    }
}
