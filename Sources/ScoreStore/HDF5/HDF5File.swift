import Foundation
internal import CHDF5
internal import CHDF5Probe
import DroptraceSupport

/// An open HDF5 file. Like h5py's `File`, it *is* its root group: groups,
/// datasets and root attributes are reached directly from it.
///
/// The file is closed by `close()` (which reports errors, e.g. a failed
/// flush) or, failing that, when the last object from it is released.
public final class HDF5File: HDF5Group {
    /// Creates a new file, built in memory and written to `path` by
    /// `close()`, which fails if anything (a symbolic link included) exists
    /// at `path` by then: write to a fresh temporary name and rename it, as
    /// `ScoreFile.write` does. HDF5 itself never writes to disk, so a full
    /// disk is one clean error from `close()` and cannot leave the library
    /// with a half-flushed file; a file never closed is never written.
    ///
    /// The file starts with a user block holding the SHA-256 of the rest
    /// (`HDF5Checksum`), which `open` verifies before libhdf5 reads a byte.
    public static func create(at path: String) throws -> HDF5File {
        HDF5Library.prepareThread()
        let id = try withHDF5ID(H5Pcreate(HDF5Library.ids.fileCreate), closedBy: H5Pclose,
                                failure: "cannot create file-creation property list", path: path) { fcpl in
            try HDF5Failure.check(H5Pset_userblock(fcpl, hsize_t(HDF5Checksum.userBlockSize)),
                                  "cannot reserve the HDF5 user block", path: path)
            return try withFileAccessList(path: path, inMemory: true) { fapl in
                try HDF5Failure.check(
                    H5Fcreate(path, HDF5Library.accessTruncate, fcpl, fapl), "cannot create HDF5 file", path: path)
            }
        }
        return HDF5File(openFile: HDF5OpenFile(id: id, path: path, inMemory: true))
    }

    /// Opens an existing file, read-only unless `writable` (then `close()`
    /// renews its checksum; a file changed in place and never closed keeps
    /// the old one, and is refused as damaged). The file is first read once
    /// in a child process (`HDF5Probe`), so crafted metadata that crashes
    /// libhdf5 is refused instead of crashing this process. Anything but a
    /// regular file (a directory, a FIFO, a device) is refused unread.
    public static func open(at path: String, writable: Bool = false) throws -> HDF5File {
        HDF5Library.prepareThread()
        guard FileManager.default.fileExists(atPath: path) else {
            throw DroptraceError("no such file", path: path)
        }
        // libhdf5 would wait forever on a FIFO and dump its error stack on a directory.
        _ = try RegularFile(path: path)
        // H5Fis_hdf5 looks only for the signature, so it separates "not HDF5
        // at all" from "HDF5 but damaged" (which H5Fopen then explains).
        let signature = H5Fis_hdf5(path)
        if signature == 0 {
            throw DroptraceError("not an HDF5 file (no HDF5 signature found)", path: path)
        }
        _ = try HDF5Failure.checkedValue(signature, "cannot read file", path: path)
        try HDF5Checksum.verify(path)
        try HDF5Probe.check(path)
        let mode = writable ? HDF5Library.accessReadWrite : HDF5Library.accessReadOnly
        let id = try withFileAccessList(path: path) { fapl in
            hdf5_open_begin()
            defer { hdf5_open_end() }
            return try HDF5Failure.check(H5Fopen(path, mode, fapl), "cannot open HDF5 file", path: path)
        }
        return HDF5File(openFile: HDF5OpenFile(id: id, path: path, inMemory: false, writable: writable))
    }

    public static func create(at url: URL) throws -> HDF5File { try create(at: url.path) }
    public static func open(at url: URL, writable: Bool = false) throws -> HDF5File {
        try open(at: url.path, writable: writable)
    }

    private init(openFile: HDF5OpenFile) {
        // The file id doubles as the root group's location; it is closed by
        // `HDF5OpenFile`, not by `HDF5Object`.
        super.init(id: openFile.id, openFile: openFile, objectPath: "/", ownsID: false)
    }

    /// Flushes and closes the file, and every object still open in it.
    /// Objects from this file must not be used afterwards.
    public func close() throws {
        try openFile.close()
    }

    /// The file-access property list every file is opened with.
    private static func withFileAccessList<Result>(
        path: String, inMemory: Bool = false, _ body: (hid_t) throws -> Result
    ) throws -> Result {
        try withHDF5ID(H5Pcreate(HDF5Library.ids.fileAccess), closedBy: H5Pclose,
                       failure: "cannot create file-access property list", path: path) { fapl in
            if inMemory {
                // The "core" driver without a backing store: the file lives in
                // memory, grown 1 MiB at a time, until close() writes its image.
                try HDF5Failure.check(H5Pset_fapl_core(fapl, 1 << 20, false),
                                      "cannot set up an in-memory file", path: path)
            }
            // "Strong": closing the file closes everything in it, so close()
            // really writes the file out even if someone kept a dataset open.
            try HDF5Failure.check(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG),
                                  "cannot set file close degree", path: path)
            return try body(fapl)
        }
    }
}
