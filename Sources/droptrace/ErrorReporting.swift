import ArgumentParser
import DroptraceSupport
import Foundation
import Logging

/// Runs a command body with a logger, turning failures into one-line
/// messages on stderr and a non-zero exit code.
func runReportingErrors(_ body: (Logger) throws -> Void) throws {
    // Past a file-size limit (ulimit -f), a write then fails with EFBIG and
    // is reported like a full disk, instead of the signal killing the run.
    signal(SIGXFSZ, SIG_IGN)
    let log = DroptraceLogging.logger()
    do {
        try ProcessLimits.prepare()
        try body(log)
        // Results printed to standard output (--json, tables) must all have reached
        // it: a full disk (or /dev/full) is a failure, not success with half a file.
        if fflush(stdout) != 0 || ferror(stdout) != 0 {
            throw DroptraceError("cannot write: \(SystemError.describe())", path: "standard output")
        }
    } catch let error as DroptraceError {
        log.error("\(error.description)")
        throw ExitCode.failure
    } catch let error as ExitCode {
        throw error
    } catch {
        log.error("\(SystemError.summary(of: error))")
        throw ExitCode.failure
    }
}

enum DroptraceLogging {
    nonisolated(unsafe) private static var bootstrapped = false

    /// Logs go to stderr with timestamps; DROPTRACE_LOG_LEVEL (trace, debug,
    /// info, notice, warning, error) sets how much.
    static func logger() -> Logger {
        if !bootstrapped {
            LoggingSystem.bootstrap { _ in
                var handler = TimestampedLogHandler()
                handler.logLevel = ProcessInfo.processInfo.environment["DROPTRACE_LOG_LEVEL"]
                    .flatMap(Logger.Level.init(rawValue:)) ?? .info
                return handler
            }
            bootstrapped = true
        }
        return Logger(label: "droptrace")
    }
}
