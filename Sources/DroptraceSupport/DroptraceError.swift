/// An error a user can act on: which file, and what is wrong with it.
///
/// Every failure droptrace reports is one line, `path: message`, so that a
/// cron log or a terminal shows the culprit without a stack trace.
public struct DroptraceError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file or directory the problem is in, when there is one.
    public var path: String?
    public var message: String
    /// The system failed (an I/O error, no process could be started), not
    /// the file: the same read may succeed when run again, and the file is
    /// not to be judged damaged for it.
    public var isTransient: Bool

    public init(_ message: String, path: String? = nil, isTransient: Bool = false) {
        self.path = path
        self.message = message
        self.isTransient = isTransient
    }

    public var description: String {
        if let path { return "\(path): \(message)" }
        return message
    }
}

extension Sequence<String> {
    /// The first `limit` items joined by ", ", with ", …" when there are
    /// more: a list of names short enough for a one-line message.
    public func shownInMessage(atMost limit: Int = 3) -> String {
        let items = Array(self)
        return items.prefix(limit).joined(separator: ", ") + (items.count > limit ? ", …" : "")
    }
}

extension DroptraceError {
    /// `body`'s value, or nil when it throws — as `try?` — except for a
    /// failure of the system (`isTransient`: an I/O error), which is rethrown:
    /// for the checks that read "cannot be parsed" as "not written yet", a
    /// disk that fails to read is neither.
    public static func nilUnlessTransient<T>(_ body: () throws -> T?) throws -> T? {
        do {
            return try body()
        } catch let error as DroptraceError where error.isTransient {
            throw error
        } catch {
            return nil
        }
    }
}
