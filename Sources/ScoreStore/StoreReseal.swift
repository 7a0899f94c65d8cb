import DroptraceSupport
import Foundation

extension ScoreFile {
    /// Accepts a store as it now is after a change droptrace did not make
    /// (h5py opening it for writing rewrites cached superblock fields; an
    /// attribute a user added), which its checksum refuses as damaged: a
    /// copy with the checksum renewed is read completely by `validate`
    /// (every group droptrace stores, through the crash-safe probe), and
    /// only then replaces the store, atomically. Nothing else changes (its
    /// permissions are kept).
    /// - Parameter validate: reads the store at the URL it is given, throwing
    ///   on anything droptrace would refuse in it.
    /// - Returns: false when the file has no checksum to renew (a store from
    ///   before it, or rewritten by h5repack: read as it is).
    /// - Throws: `DroptraceError` naming `url` when it is no droptrace store
    ///   or what `validate` throws (the store is then left as it was).
    public static func reseal(_ url: URL, validate: (URL) throws -> Void) throws -> Bool {
        let path = url.path
        let version = FileVersion.current(path)  // before it is read: what is sealed is that version
        let file = try RegularFile(path: path)
        let bytes = try file.bytes(file.size, at: 0)
        if bytes.starts(with: HDF5Checksum.hdf5Signature) { return false }
        let userBlock = HDF5Checksum.userBlockSize
        guard bytes.starts(with: HDF5Checksum.magic), bytes.count > userBlock,
              bytes[userBlock...].starts(with: HDF5Checksum.hdf5Signature)
        else {
            throw DroptraceError("is not a droptrace store (no checksum block followed by an HDF5 file)", path: path)
        }
        var status = stat()
        let mode = stat(path, &status) == 0 ? status.st_mode & 0o7777 : 0o644
        try AtomicFileReplacement.replace(path, signatures: signatures, expected: version) { temporary in
            // The store's own permissions, not the umask's.
            try HDF5Checksum.sealed(Array(bytes[userBlock...])).withUnsafeBytes {
                try FileOutput.writeNewFile($0, at: temporary, mode: mode)
            }
            try validate(URL(fileURLWithPath: temporary))
        }
        return true
    }
}
