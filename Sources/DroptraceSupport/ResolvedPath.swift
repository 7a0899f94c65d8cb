import Foundation

/// Paths compared as the file system sees them, so an output given through a
/// symbolic link or with `..` is still recognised as lying inside an input.
public enum ResolvedPath {
    /// `url`'s absolute path with the symbolic links of its longest existing
    /// ancestor resolved (an output directory need not exist yet).
    public static func of(_ url: URL) -> String {
        var existing = url.standardizedFileURL
        var rest: [String] = []
        while !FileManager.default.fileExists(atPath: existing.path), existing.path != "/" {
            rest.insert(existing.lastPathComponent, at: 0)
            existing.deleteLastPathComponent()
        }
        return rest.reduce(existing.resolvingSymlinksInPath()) { $0.appendingPathComponent($1) }.standardizedFileURL.path
    }

    /// Whether `path` is `directory` or lies inside it, both resolved (`of`).
    public static func isWithin(_ path: URL, _ directory: URL) -> Bool {
        let inner = of(path), outer = of(directory)
        return inner == outer || inner.hasPrefix(outer.hasSuffix("/") ? outer : outer + "/")
    }
}
