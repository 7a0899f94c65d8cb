import DroptraceSupport
import Foundation

/// The lines of a calibration file, read in pieces as they are asked for.
///
/// A run uses the first `samples` sequences; a file of millions of lines (or
/// one of gigabytes with no newline) must cost no more memory or time than
/// the lines that give them, so nothing past the line being returned is read
/// (beyond one read-ahead chunk), and a line longer than `maximumLineLength`
/// is refused by its number instead of being gathered whole.
struct CalibrationLines {
    /// The longest line read: a JSONL line of 1M token ids is about 7 MB, a
    /// text line a paragraph or a document; this bounds a file without newlines.
    static let maximumLineLength = 1 << 24
    static let chunkSize = 1 << 16

    let file: RegularFile
    private(set) var lineNumber = 0
    /// Byte offset in the file of the start of the last line returned.
    private(set) var lineStart = 0
    private var pending: [UInt8] = []
    private var pendingStart = 0
    private var readOffset = 0
    private let limit: Int

    init(_ file: RegularFile, maximumLineLength: Int = Self.maximumLineLength) {
        self.file = file
        limit = maximumLineLength
    }

    /// The next line with its `\n` (the last line may lack one), nil at the end of the file.
    mutating func next() throws -> ArraySlice<UInt8>? {
        var searchFrom = pendingStart
        while true {
            if let newline = pending[searchFrom...].firstIndex(of: 0x0A) {
                if newline - pendingStart > limit { throw tooLong() }
                return take(through: newline + 1)
            }
            searchFrom = pending.count
            if pending.count - pendingStart > limit { throw tooLong() }
            guard readOffset < file.size else {
                if pendingStart == pending.count {
                    // Every line was read: its bytes must all be of one version of the file.
                    try file.checkUnchanged()
                    return nil
                }
                return take(through: pending.count)
            }
            // Drop consumed bytes before growing, so the buffer holds at most one line and one chunk.
            if pendingStart > 0 {
                pending.removeFirst(pendingStart)
                searchFrom -= pendingStart
                pendingStart = 0
            }
            let count = min(Self.chunkSize, file.size - readOffset)
            pending += try file.bytes(count, at: readOffset)
            readOffset += count
        }
    }

    private mutating func take(through end: Int) -> ArraySlice<UInt8> {
        lineNumber += 1
        lineStart = readOffset - (pending.count - pendingStart)
        let line = pending[pendingStart..<end]
        pendingStart = end
        return line
    }

    private func tooLong() -> DroptraceError {
        DroptraceError(
            "line \(lineNumber + 1) is longer than \(limit) bytes, the most droptrace reads as one line "
                + "(a file without newlines?)", path: file.path)
    }
}
