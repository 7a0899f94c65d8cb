internal import CHDF5
internal import CHDF5Probe
import DroptraceSupport

/// What a path inside a file points at.
public enum HDF5ObjectKind: Sendable, Equatable {
    case group, dataset, other
}

/// A group: a folder of groups and datasets. Paths given to its methods are
/// relative to it ("analysis/attention") or absolute ("/scores/mlp").
public class HDF5Group: HDF5Object {
    /// Opens the group at `path`.
    public func group(_ path: String) throws -> HDF5Group {
        try ensureOpen()
        let fullPath = childPath(path)
        guard try kind(of: path) == .group else {
            throw DroptraceError("no group \(fullPath)", path: filePath)
        }
        try checkHardLinks(path)
        let groupID = try HDF5Failure.check(H5Gopen2(id, path, HDF5Library.propertyListDefault),
                                            "cannot open group \(fullPath)", path: filePath)
        return HDF5Group(id: groupID, openFile: openFile, objectPath: fullPath, ownsID: true)
    }

    /// Creates the group at `path` and any missing groups above it.
    /// Fails if something already exists there.
    @discardableResult
    public func createGroup(_ path: String) throws -> HDF5Group {
        try ensureOpen()
        let fullPath = childPath(path)
        if try exists(path) {
            throw DroptraceError("cannot create group \(fullPath): it already exists", path: filePath)
        }
        let groupID = try withLinkCreationList { lcpl in
            try HDF5Failure.check(
                H5Gcreate2(id, path, lcpl, HDF5Library.propertyListDefault, HDF5Library.propertyListDefault),
                "cannot create group \(fullPath)", path: filePath)
        }
        return HDF5Group(id: groupID, openFile: openFile, objectPath: fullPath, ownsID: true)
    }

    /// Opens the group at `path`, creating it (and its parents) if missing.
    @discardableResult
    public func requireGroup(_ path: String) throws -> HDF5Group {
        try exists(path) ? group(path) : createGroup(path)
    }

    /// Opens the dataset at `path`.
    public func dataset(_ path: String) throws -> HDF5Dataset {
        try ensureOpen()
        let fullPath = childPath(path)
        guard try kind(of: path) == .dataset else {
            throw DroptraceError("no dataset \(fullPath)", path: filePath)
        }
        try checkHardLinks(path)
        let datasetID = try HDF5Failure.check(H5Dopen2(id, path, HDF5Library.propertyListDefault),
                                              "cannot open dataset \(fullPath)", path: filePath)
        return try HDF5Dataset(id: datasetID, openFile: openFile, objectPath: fullPath)
    }

    /// Whether anything exists at `path`. Checks each component in turn:
    /// HDF5 reports a missing parent, or a dataset used as a parent, as an
    /// error rather than as "no".
    public func exists(_ path: String) throws -> Bool {
        try ensureOpen()
        let prefixes = Self.prefixes(of: path)
        for (index, prefix) in prefixes.enumerated() {
            let found = try HDF5Failure.checkedValue(H5Lexists(id, prefix, HDF5Library.propertyListDefault),
                                                     "cannot look up \(childPath(prefix))", path: filePath)
            if found == 0 { return false }
            if index < prefixes.count - 1, try existingKind(prefix) != .group { return false }
        }
        return true
    }

    /// The paths from `path`'s first component to the whole: "a/b/c" gives
    /// "a", "a/b", "a/b/c" (absolute ones keep their leading "/").
    private static func prefixes(of path: String) -> [String] {
        var prefix = path.hasPrefix("/") ? "/" : ""
        return path.split(separator: "/").map { component in
            if !prefix.isEmpty && !prefix.hasSuffix("/") { prefix += "/" }
            prefix += component
            return prefix
        }
    }

    /// Throws unless every component of `path` (which exists) is a hard
    /// link, the only kind droptrace writes: a soft link would read another
    /// object than the one named, an external link another file, past the
    /// checks made on this one (its checksum, `HDF5Probe`).
    private func checkHardLinks(_ path: String) throws {
        for prefix in Self.prefixes(of: path) {
            let kind = hdf5_link_kind_of(id, prefix)
            guard kind == HDF5_LINK_HARD else {
                let what = switch kind {
                case HDF5_LINK_SOFT: "a soft link"
                case HDF5_LINK_EXTERNAL: "an external link (to another file)"
                case HDF5_LINK_ERROR: "a link libhdf5 cannot read"
                default: "a user-defined link"
                }
                throw DroptraceError(
                    "\(childPath(prefix)) is \(what), which droptrace never writes: the file was changed by other software",
                    path: filePath)
            }
        }
    }

    /// Whether `path` is a group, a dataset or something else; nil if absent.
    public func kind(of path: String) throws -> HDF5ObjectKind? {
        guard try exists(path) else { return nil }
        if path.split(separator: "/").isEmpty { return .group }  // "/" or ""
        return try existingKind(path)
    }

    private func existingKind(_ path: String) throws -> HDF5ObjectKind {
        try withHDF5ID(H5Oopen(id, path, HDF5Library.propertyListDefault), closedBy: H5Oclose,
                       failure: "cannot open \(childPath(path))", path: filePath) { object in
            switch H5Iget_type(object) {
            case H5I_GROUP: .group
            case H5I_DATASET: .dataset
            default: .other
            }
        }
    }

    /// Names of the group's direct children, in HDF5's name order.
    public func childNames() throws -> [String] {
        try ensureOpen()
        var info = H5G_info_t()
        try HDF5Failure.check(H5Gget_info(id, &info), "cannot list \(objectPath)", path: filePath)
        return try (0..<info.nlinks).map { index in
            try readHDF5Name(what: "cannot list \(objectPath)", path: filePath) { buffer, size in
                H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, index, buffer, size,
                                   HDF5Library.propertyListDefault)
            }
        }
    }

    /// Unlinks the group or dataset at `path`. (The space is not reclaimed
    /// in the file, as with h5py's `del`.)
    public func remove(_ path: String) throws {
        try ensureOpen()
        guard try exists(path) else {
            throw DroptraceError("cannot remove \(childPath(path)): it does not exist", path: filePath)
        }
        try HDF5Failure.check(H5Ldelete(id, path, HDF5Library.propertyListDefault),
                              "cannot remove \(childPath(path))", path: filePath)
    }

    /// A link-creation list that creates missing parent groups and stores
    /// link names as UTF-8.
    func withLinkCreationList<Result>(_ body: (hid_t) throws -> Result) throws -> Result {
        try withHDF5ID(H5Pcreate(HDF5Library.ids.linkCreate), closedBy: H5Pclose,
                       failure: "cannot create link-creation property list", path: filePath) { lcpl in
            try HDF5Failure.check(H5Pset_create_intermediate_group(lcpl, 1),
                                  "cannot enable creation of parent groups", path: filePath)
            try HDF5Failure.check(H5Pset_char_encoding(lcpl, H5T_CSET_UTF8),
                                  "cannot set UTF-8 link names", path: filePath)
            return try body(lcpl)
        }
    }
}

/// Calls an HDF5 "get name" function twice: once for the length, once for the
/// bytes. HDF5 names are UTF-8 (or ASCII, a subset).
func readHDF5Name(what: @autoclosure () -> String, path: String,
                  _ getName: (UnsafeMutablePointer<CChar>?, Int) -> Int) throws -> String {
    let length = getName(nil, 0)
    if length < 0 { throw HDF5Failure.error(what(), path: path) }
    var buffer = [CChar](repeating: 0, count: length + 1)
    if getName(&buffer, buffer.count) < 0 { throw HDF5Failure.error(what(), path: path) }
    return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
