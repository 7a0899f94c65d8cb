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
