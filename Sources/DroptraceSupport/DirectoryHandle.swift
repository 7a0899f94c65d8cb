import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An open output directory. Files in it are created, replaced, listed and
/// removed through its descriptor (`openat(2)` and friends) and never
/// through a symbolic link, so in a directory others can write to, a link
/// planted where droptrace writes is refused instead of followed, and
/// renaming the directory away cannot redirect a write.
public final class DirectoryHandle {
    /// The directory's path, for messages.
    public let path: String
    private let descriptor: Int32

    private init(descriptor: Int32, path: String) {
        self.descriptor = descriptor
        self.path = path
    }

    deinit { close(descriptor) }

    /// Opens the directory at `path`, creating it and missing parents
    /// (`mkdir -p`). The path itself may be a symbolic link: the user named it.
    public static func create(at path: String) throws -> DirectoryHandle {
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += (prefix.isEmpty || prefix.hasSuffix("/") ? "" : "/") + component
            if mkdir(prefix, 0o777) != 0 && errno != EEXIST {
                throw DroptraceError("cannot create directory: \(SystemError.describe())", path: prefix)
            }
        }
        let descriptor = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw DroptraceError("cannot open directory: \(SystemError.describe())", path: path)
        }
        return DirectoryHandle(descriptor: descriptor, path: path)
    }

    /// The full path of `name` in this directory, for messages.
    public func path(of name: String) -> String {
        (path as NSString).appendingPathComponent(name)
    }

    /// Opens the subdirectory `name`, creating it if missing and `create`.
    /// - Throws: `DroptraceError` naming it if it is a symbolic link or not a
    ///   directory (or missing, without `create`).
    public func subdirectory(_ name: String, create: Bool = true) throws -> DirectoryHandle {
        if create && mkdirat(descriptor, name, 0o777) != 0 && errno != EEXIST {
            throw DroptraceError("cannot create directory: \(SystemError.describe())", path: path(of: name))
        }
        let child = openat(descriptor, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard child >= 0 else { throw refusal(of: name, errno: errno) }
        return DirectoryHandle(descriptor: child, path: path(of: name))
    }

    /// Opens the regular file `name` for reading and writing, creating it
    /// (mode 0644) if missing. Never a symbolic link, a FIFO or device, nor
    /// a file with other hard links (which a truncation would clobber).
    /// The caller closes the returned descriptor.
    public func openRegularFile(_ name: String) throws -> Int32 {
        let file = openat(descriptor, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0o644)
        guard file >= 0 else { throw refusal(of: name, errno: errno) }
        var status = stat()
        guard fstat(file, &status) == 0, status.st_mode & S_IFMT == S_IFREG, status.st_nlink == 1 else {
            close(file)
            throw DroptraceError(
                "refusing to use it: not a regular file droptrace created (a FIFO, device or hard link); remove it",
                path: path(of: name))
        }
        return file
    }

    /// Replaces the file `name` with `bytes` so that readers, and a crash,
    /// see either the old file or the complete new one: the bytes go to a
    /// new temporary file (`writeTemporary`), which is renamed over `name`.
    /// Call `sync()` after the last replacement to make the renames durable.
    public func replaceFile(_ name: String, with bytes: [UInt8]) throws {
        try writeTemporary(for: name, bytes)
        try moveTemporaryIntoPlace(name)
    }

    /// Writes `bytes` to `name`'s temporary file (`TemporaryFileName`,
    /// created with O_EXCL and never through a link) and fsyncs it, leaving
    /// `name` as it is until `moveTemporaryIntoPlace(name)`; so several files
    /// can be written first and then all moved into place. A failed write
    /// removes the temporary file; those of killed runs are removed first.
    public func writeTemporary(for name: String, _ bytes: [UInt8]) throws {
        let temporary = TemporaryFileName.forTarget(name)
        removeStaleTemporaryFiles(targets: [name])
        unlinkat(descriptor, temporary, 0)  // a leftover of a killed run that had our pid
        let file = openat(descriptor, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        guard file >= 0 else {
            throw DroptraceError("cannot create temporary file \(temporary): \(SystemError.describe())",
                                 path: path(of: name))
        }
        do {
            defer { close(file) }
            try bytes.withUnsafeBytes { try FileOutput.writeAll($0, to: file, path: path(of: name)) }
            try FileOutput.sync(file, path: path(of: name))
        } catch {
            unlinkat(descriptor, temporary, 0)
            throw error
        }
    }

    /// Renames `name`'s temporary file over `name`.
    public func moveTemporaryIntoPlace(_ name: String) throws {
        let temporary = TemporaryFileName.forTarget(name)
        if renameat(descriptor, temporary, descriptor, name) != 0 {
            let reason = SystemError.describe()
            unlinkat(descriptor, temporary, 0)
            throw DroptraceError("cannot move the new file into place: \(reason)", path: path(of: name))
        }
    }

    /// Removes `name`'s temporary file, if any.
    public func discardTemporary(of name: String) {
        unlinkat(descriptor, TemporaryFileName.forTarget(name), 0)
    }

    /// Flushes the directory itself, making earlier renames durable.
    public func sync() throws {
        try FileOutput.sync(descriptor, path: path)
    }

    /// Removes `name` if it is a regular file; a link, directory or anything
    /// else is left alone. Returns whether it removed the file.
    @discardableResult
    public func removeRegularFile(_ name: String) -> Bool {
        var status = stat()
        guard fstatat(descriptor, name, &status, AT_SYMLINK_NOFOLLOW) == 0, status.st_mode & S_IFMT == S_IFREG
        else { return false }
        return unlinkat(descriptor, name, 0) == 0
    }

    /// Removes the temporary files that runs killed while replacing one of
    /// `targets` left behind: only names `TemporaryFileName` makes for those
    /// targets, only regular files, and only when no process with that pid
    /// is alive. Returns the names removed.
    @discardableResult
    public func removeStaleTemporaryFiles(targets: Set<String>) -> [String] {
        entryNames().filter { name in
            guard let target = TemporaryFileName.leftoverTarget(name), targets.contains(target) else { return false }
            return removeRegularFile(name)
        }
    }

    /// Names of the directory's entries, "." and ".." excluded; empty if it
    /// cannot be read.
    public func entryNames() -> [String] {
        let listing = dup(descriptor)
        guard listing >= 0, let stream = fdopendir(listing) else {
            if listing >= 0 { close(listing) }
            return []
        }
        defer { closedir(stream) }
        rewinddir(stream)
        var names: [String] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// The subdirectories of `path` whose names are not UTF-8, which
    /// Foundation's listings leave out: printable ASCII as it is, other
    /// bytes as `\xNN` ("run\xff"), for one-line messages.
    public static func nonUTF8Subdirectories(of path: String) -> [String] {
        guard let stream = opendir(path) else { return [] }
        defer { closedir(stream) }
        var names: [String] = []
        while let entry = readdir(stream) {
            let bytes = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
            guard String(validating: bytes, as: UTF8.self) == nil else { continue }
            var status = stat()
            let found = withUnsafeBytes(of: entry.pointee.d_name) { name in
                fstatat(dirfd(stream), name.baseAddress!.assumingMemoryBound(to: CChar.self), &status, 0) == 0
            }
            guard found, status.st_mode & S_IFMT == S_IFDIR else { continue }
            names.append(bytes.map { (0x20..<0x7F).contains($0) ? String(UnicodeScalar($0)) : String(format: "\\x%02x", $0) }.joined())
        }
        return names.sorted()
    }

    private func refusal(of name: String, errno code: Int32) -> DroptraceError {
        // O_NOFOLLOW reports a link as ELOOP, or as ENOTDIR with O_DIRECTORY.
        var status = stat()
        let isLink = fstatat(descriptor, name, &status, AT_SYMLINK_NOFOLLOW) == 0 && status.st_mode & S_IFMT == S_IFLNK
        if isLink || code == ELOOP {
            return DroptraceError(
                "is a symbolic link, which droptrace does not follow in an output directory; remove it",
                path: path(of: name))
        }
        if code == ENOTDIR { return DroptraceError("is not a directory", path: path(of: name)) }
        return DroptraceError("cannot open: \(SystemError.describe(code))", path: path(of: name))
    }
}

/// Writing whole buffers to descriptors, with one-line errors.
public enum FileOutput {
    /// Writes all of `bytes`, retrying short writes and EINTR.
    public static func writeAll(_ bytes: UnsafeRawBufferPointer, to descriptor: Int32, path: String) throws {
        var offset = 0
        while offset < bytes.count {
            let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw DroptraceError("cannot write: \(SystemError.describe())", path: path)
            }
            offset += written
        }
    }

    public static func sync(_ descriptor: Int32, path: String) throws {
        if fsync(descriptor) != 0 {
            throw DroptraceError("cannot flush to disk: \(SystemError.describe())", path: path)
        }
    }

    /// Writes `bytes` to a new file at `path` (mode 0644 less the umask, or
    /// exactly `mode` when given) and fsyncs it. Fails if anything, a
    /// symbolic link included, already exists there, so a link planted
    /// under a temporary name is never followed. A failed write removes the
    /// partial file.
    public static func writeNewFile(_ bytes: UnsafeRawBufferPointer, at path: String, mode: mode_t? = nil) throws {
        let file = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode == nil ? 0o644 : 0o600)
        guard file >= 0 else {
            throw DroptraceError("cannot create: \(SystemError.describe())", path: path)
        }
        do {
            defer { close(file) }
            if let mode, fchmod(file, mode) != 0 {
                throw DroptraceError("cannot set its permissions: \(SystemError.describe())", path: path)
            }
            try writeAll(bytes, to: file, path: path)
            try sync(file, path: path)
        } catch {
            unlink(path)
            throw error
        }
    }
}
