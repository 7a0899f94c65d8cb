#if canImport(Glibc)
import Glibc
#endif
import Foundation

extension URL {
    /// A path given on the command line, as an absolute file URL: a relative
    /// path is resolved against the working directory as getcwd(3) gives it.
    /// Foundation's `URL(fileURLWithPath:)` reads the working directory into
    /// a 1024-byte buffer and, below a deeper one, leaves the URL relative:
    /// its parents then run "..", "../..", … and never reach "/". When the
    /// working directory cannot be read (removed), the path stays as given.
    public init(commandLinePath path: String) {
        guard !path.hasPrefix("/"), let buffer = getcwd(nil, 0) else {
            self.init(fileURLWithPath: path)
            return
        }
        defer { free(buffer) }
        // Relative to that directory, as Foundation makes it below a shallower one.
        self.init(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: String(cString: buffer), isDirectory: true))
    }
}
