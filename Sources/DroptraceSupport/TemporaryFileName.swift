import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The name of the temporary file droptrace writes next to a file it
/// replaces: `.<target>.tmp-<pid>`, hidden, in the target's directory
/// (rename(2) is atomic only within one file system), and distinct per
/// process so two writers never share one.
public enum TemporaryFileName {
    public static func forTarget(_ target: String, pid: Int32 = getpid()) -> String {
        ".\(target).tmp-\(pid)"
    }

    /// Bytes a temporary name adds to its target's: ".", ".tmp-" and a pid of up to 10 digits.
    static let extraBytes = 16
    /// Linux's limits: NAME_MAX, and PATH_MAX less its terminating NUL.
    static let nameBytes = 255, pathBytes = 4095

    /// Throws unless droptrace can write at `path` through its temporary
    /// name: that name (`extraBytes` longer) within the bytes a file name may
    /// have, and its absolute path, with `room` more bytes for the files
    /// written inside a directory, within the bytes a path may have. Checked
    /// before any work, so a legal but long name fails at once, saying why.
    /// - Throws: `DroptraceError` naming `path`.
    public static func checkFits(_ path: String, room: Int = 0) throws {
        let url = URL(fileURLWithPath: path)
        let name = url.lastPathComponent.utf8.count
        guard name + extraBytes <= nameBytes else {
            throw DroptraceError(
                "the name is \(name) bytes; droptrace writes it through a temporary name \(extraBytes) bytes longer, over the "
                    + "\(nameBytes) a file name may have: choose a name of at most \(nameBytes - extraBytes) bytes", path: path)
        }
        let full = url.path.utf8.count
        guard full + extraBytes + room <= pathBytes else {
            throw DroptraceError(
                "the path is \(full) bytes; with the names droptrace writes there, over the \(pathBytes) a path may have: "
                    + "choose a shorter one", path: path)
        }
    }

    /// The target of `name` when it is a temporary name `forTarget` made for
    /// a process that is gone (or for this one, which is not writing it
    /// now): what a run killed while writing left behind. Nil otherwise.
    public static func leftoverTarget(_ name: String) -> String? {
        guard let (target, pid) = parse(name), pid == getpid() || !processExists(pid) else { return nil }
        return target
    }

    private static func processExists(_ pid: Int32) -> Bool {
        kill(pid, 0) == 0 || errno == EPERM
    }

    /// The target and pid of a name `forTarget` made, or nil for any other
    /// name: stale-file cleanup removes only names this returns a target
    /// for, so a user's own hidden files are never touched.
    public static func parse(_ name: String) -> (target: String, pid: Int32)? {
        guard name.hasPrefix("."), let marker = name.range(of: ".tmp-", options: .backwards),
              marker.lowerBound > name.startIndex
        else { return nil }
        let target = name[name.index(after: name.startIndex)..<marker.lowerBound]
        let digits = name[marker.upperBound...]
        guard !target.isEmpty, !digits.isEmpty, digits.count <= 10, digits.allSatisfy(\.isASCII),
              digits.allSatisfy(\.isNumber), let pid = Int32(digits), pid > 0
        else { return nil }
        return (String(target), pid)
    }
}
