import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A file as one version of it: device, inode, size and modification time.
/// Every write moves the modification time and a replacement brings another
/// inode, so two identities differ when the file was changed or replaced in
/// between (the change time is left out: a hard link or chmod moves it
/// without touching the bytes).
public struct FileIdentity: Equatable, Sendable {
    var device: UInt64, inode: UInt64, size: Int64
    var seconds: Int, nanoseconds: Int

    init(_ info: stat) {
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        seconds = info.st_mtim.tv_sec
        nanoseconds = info.st_mtim.tv_nsec
    }

    /// The identity of the file at `path` (symbolic links followed); nil
    /// when there is none.
    public static func of(_ path: String) -> FileIdentity? {
        var info = stat()
        return stat(path, &info) == 0 ? FileIdentity(info) : nil
    }
}

/// The version of a file a writer read before replacing it: no file, or
/// one `FileIdentity`. A replacement is refused when the file is another by
/// then (something else wrote there while the writer worked).
public enum FileVersion: Equatable, Sendable {
    case absent
    case present(FileIdentity)

    /// The file at `path` as it is now.
    public static func current(_ path: String) -> FileVersion {
        FileIdentity.of(path).map(FileVersion.present) ?? .absent
    }
}
