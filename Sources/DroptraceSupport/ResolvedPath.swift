import Foundation

/// Paths compared as the file system sees them, so an output given through a
/// symbolic link or with `..` is still recognised as lying inside an input.
public enum ResolvedPath {
    /// `url`'s absolute path as the kernel walks it: component by component,
    /// each symbolic link resolved before the `..` after it applies
    /// (`series/link/../out` is beside the link's target, not `series/out`),
    /// as far as the path exists; the rest (an output directory need not
    /// exist yet) is appended as written, `.` and `..` applied.
    public static func of(_ url: URL) -> String {
        var resolved = "/"
        let components = url.absoluteURL.path.split(separator: "/", omittingEmptySubsequences: true)
        for (index, component) in components.enumerated() {
            let next = (resolved == "/" ? "" : resolved) + "/" + component
            guard let real = realpath(next, nil) else {
                let rest = components[index...].joined(separator: "/")
                return URL(fileURLWithPath: resolved).appendingPathComponent(rest).standardizedFileURL.path
            }
            resolved = String(cString: real)
            free(real)
        }
        return resolved
    }

    /// Whether `path` is `directory` or lies inside it, both resolved (`of`).
    public static func isWithin(_ path: URL, _ directory: URL) -> Bool {
        let inner = of(path), outer = of(directory)
        return inner == outer || inner.hasPrefix(outer.hasSuffix("/") ? outer : outer + "/")
    }
}
