import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Moves a complete directory (written under a temporary name) into place
/// without ever destroying what is at the destination: only a free path or
/// an empty directory is taken. A directory or file created at the
/// destination meanwhile, by a user or by another droptrace process, is
/// left as it is and the move fails.
public enum DirectoryPlacement {
    /// Why `move` left the directory where it was.
    public enum Failure: Error, Equatable {
        /// The destination is taken: a directory with entries (ENOTEMPTY,
        /// EEXIST) or anything but a directory (ENOTDIR, EEXIST).
        case taken(errno: Int32)
        /// Any other failure of rename(2) (EXDEV, EACCES, …).
        case failed(errno: Int32)
    }

    /// Renames the directory `source` to `destination`. A free destination is
    /// taken with renameat2(RENAME_NOREPLACE) where the C library and the
    /// file system have it, so nothing created there meanwhile is replaced;
    /// an empty directory there (or a free one without RENAME_NOREPLACE) is
    /// taken with rename(2), which replaces only an empty directory, atomically,
    /// and refuses a directory with entries and anything that is no directory.
    /// - Throws: `Failure`; `source` stays where it was.
    public static func move(_ source: String, to destination: String) throws(Failure) {
        if let renameNoReplace {
            if renameNoReplace(AT_FDCWD, source, AT_FDCWD, destination, renameNoReplaceFlag) == 0 { return }
            let code = errno
            // EEXIST: something is there, which rename(2) replaces only if it is an empty directory.
            // EINVAL / ENOSYS: the file system (or kernel) has no RENAME_NOREPLACE; rename(2) is still safe.
            guard code == EEXIST || code == EINVAL || code == ENOSYS else { throw classified(code) }
        }
        if rename(source, destination) == 0 { return }
        throw classified(errno)
    }

    private static func classified(_ code: Int32) -> Failure {
        [EEXIST, ENOTEMPTY, ENOTDIR, EISDIR].contains(code) ? .taken(errno: code) : .failed(errno: code)
    }

    /// RENAME_NOREPLACE of <linux/fs.h>, which the Glibc module does not import.
    private static let renameNoReplaceFlag: UInt32 = 1

    private typealias RenameAt2 = @convention(c) (
        Int32, UnsafePointer<CChar>, Int32, UnsafePointer<CChar>, UInt32
    ) -> Int32

    /// glibc's renameat2 (2.28 and later), looked up at run time: the Glibc
    /// module declares it only under _GNU_SOURCE. Nil where it is missing.
    private static let renameNoReplace: RenameAt2? = {
        #if os(Linux)
        guard let symbol = dlsym(dlopen(nil, RTLD_NOW), "renameat2") else { return nil }
        return unsafeBitCast(symbol, to: RenameAt2.self)
        #else
        return nil
        #endif
    }()
}
