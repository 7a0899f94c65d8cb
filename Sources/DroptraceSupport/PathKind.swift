import Foundation

/// What a path names, following symbolic links as `FileManager.fileExists`
/// does (a link to nothing is `missing`).
public enum PathKind: Equatable, Sendable {
    case missing, directory, other

    /// The kind of `path`.
    public static func of(_ path: String) -> PathKind {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return .missing }
        return isDirectory.boolValue ? .directory : .other
    }

    /// The kind of the file `url` names.
    public static func of(_ url: URL) -> PathKind { of(url.path) }
}
