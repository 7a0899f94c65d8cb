/// A setting as the user wrote it, so a message about its value names what
/// to change: a command-line option (`--seq-len`), or a pipeline file's key
/// (`seq_len`) together with that file.
public struct UserSetting: Sendable, Equatable {
    /// The option or key, as written: "--seq-len", "seq_len".
    public var name: String
    /// The pipeline file holding the key; nil for the command line.
    public var file: String?

    public init(name: String, file: String? = nil) {
        self.name = name
        self.file = file
    }
}
