import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One output stream shared by log lines and a status line (a progress
/// bar) kept at its bottom. On a terminal every log line first clears the
/// status line and redraws it afterwards, so the two never run into each
/// other; elsewhere (a pipe, a cron log) no status line is drawn at all.
public final class TerminalStatus: @unchecked Sendable {
    /// Standard error, where droptrace logs and draws its progress bar.
    public static let standardError = TerminalStatus(descriptor: STDERR_FILENO)

    /// Whether a status line is drawn (the stream is a terminal).
    public let isTerminal: Bool
    private let output: (String) -> Void
    private let columns: () -> Int?
    private let lock = NSLock()
    /// The status line as drawn, nil when none is shown.
    private var shown: String?

    /// - Parameters:
    ///   - isTerminal: whether to draw a status line.
    ///   - columns: the terminal's width, to keep the status line to one row
    ///     (a wrapped line could not be cleared); nil when unknown.
    ///   - output: writes text to the stream as is.
    public init(isTerminal: Bool, columns: @escaping () -> Int? = { nil }, output: @escaping (String) -> Void) {
        self.isTerminal = isTerminal
        self.columns = columns
        self.output = output
    }

    /// The terminal (or file, or pipe) open as `descriptor`.
    public convenience init(descriptor: Int32) {
        self.init(
            isTerminal: isatty(descriptor) == 1,
            columns: {
                var size = winsize()
                guard ioctl(descriptor, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return nil }
                return Int(size.ws_col)
            },
            output: { text in
                var bytes = Array(text.utf8)[...]
                while !bytes.isEmpty {
                    let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
                    if written < 0 && errno == EINTR { continue }
                    if written <= 0 { return }  // nowhere left to report to
                    bytes = bytes.dropFirst(written)
                }
            })
    }

    /// Writes `line` (which should hold no line break) and a newline, above
    /// the status line if one is shown.
    public func printLine(_ line: String) {
        lock.lock()
        defer { lock.unlock() }
        if let shown {
            output(Self.clearLine + line + "\n" + shown)
        } else {
            output(line + "\n")
        }
    }

    /// Shows `text` as the status line, replacing the one shown; nothing
    /// when not on a terminal.
    public func show(_ text: String) {
        guard isTerminal else { return }
        lock.lock()
        defer { lock.unlock() }
        var line = text
        if let width = columns(), line.count >= width { line = String(line.prefix(max(width - 1, 0))) }
        shown = line
        output(Self.clearLine + line)
    }

    /// Removes the status line.
    public func clear() {
        lock.lock()
        defer { lock.unlock() }
        if shown != nil { output(Self.clearLine) }
        shown = nil
    }

    /// Carriage return, then erase the whole row.
    static let clearLine = "\r\u{1B}[2K"
}
