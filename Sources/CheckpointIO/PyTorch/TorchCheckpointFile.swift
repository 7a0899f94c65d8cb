import DroptraceSupport
import Foundation

/// A torch.save file (`pytorch_model.bin`) holding a state dict, read without
/// Python: the zip archive torch has written since 1.6 (`<archive>/data.pkl`
/// plus one stored entry per storage, `<archive>/data/<key>`), or the older
/// stream of pickles followed by raw storages.
///
/// Only the pickles and zip records are read when opening; contiguous float
/// tensors are read from the file when expanded, like safetensors ones, so a
/// large checkpoint is never read as a whole.
public final class TorchCheckpointFile: @unchecked Sendable {
    public let path: String
    public let tensors: [String: TensorSlice]
    /// Tensors of element types droptrace does not read (int64 `position_ids`,
    /// bool masks), name → torch dtype; an error only when read as weights.
    public let otherTensors: [String: String]

    /// A storage: where its bytes are in the file.
    typealias StorageRange = (offset: Int, count: Int)

    public init(path: String) throws {
        self.path = path
        let file = try RegularFile(path: path)
        let prefix = try file.bytes(min(file.size, 16), at: 0)
        let loaded: (root: PickleValue, storage: (TorchStorageReference) throws -> StorageRange)
        if ZipArchive.looksLikeZip(prefix) {
            loaded = try Self.readZip(file)
        } else if LegacyTorchFile.looksLegacy(prefix) {
            let legacy = try LegacyTorchFile(file: file)
            loaded = (legacy.root, legacy.storage)
        } else {
            throw DroptraceError(
                file.size == 0
                    ? "empty file, not a PyTorch checkpoint"
                    : "not a PyTorch checkpoint: neither the zip archive torch.save writes nor its legacy format",
                path: path)
        }

        var tensors: [String: TensorSlice] = [:]
        var otherTensors: [String: String] = [:]
        for (name, record) in try TorchStateDict.tensors(in: loaded.root, path: path) {
            let storage = try loaded.storage(record.storage)
            if let slice = try TorchStateDict.slice(name: name, tensor: record, storage: storage, file: file) {
                tensors[name] = slice
            } else {
                otherTensors[name] = record.element.name
            }
        }
        try file.checkUnchanged()
        self.tensors = tensors
        self.otherTensors = otherTensors
    }

    /// Reads `<archive>/data.pkl`; storages come from `<archive>/data/<key>`.
    private static func readZip(_ file: RegularFile)
        throws -> (root: PickleValue, storage: (TorchStorageReference) throws -> StorageRange)
    {
        let path = file.path
        let archive = try ZipArchive(file: file)
        // torch names the top folder after the file it saved to; find it by its data.pkl.
        guard let pickleName = archive.names.first(where: { $0.hasSuffix("/data.pkl") && $0.split(separator: "/").count == 2 })
        else {
            throw DroptraceError("zip archive has no <archive>/data.pkl entry; not a torch.save checkpoint", path: path)
        }
        let prefix = String(pickleName.dropLast("data.pkl".count))
        // torch.load refuses an archive with a record outside its top folder.
        if let stray = archive.names.first(where: { !$0.hasPrefix(prefix) }) {
            throw DroptraceError("zip entry \(stray.forErrorMessage) lies outside the archive's folder \(prefix.forErrorMessage)", path: path)
        }
        try TorchArchiveRecords.check(archive, prefix: prefix)
        let shownName = pickleName.forErrorMessage
        let machine = PickleMachine(bytes: try archive.contents(pickleName), path: path, pickleName: shownName)
        let root = try machine.run { id in try TorchRebuild.storage(id, path: path, pickleName: shownName) }.value
        let storage = { (reference: TorchStorageReference) throws -> StorageRange in
            let name = prefix + "data/" + reference.key
            guard archive.entries[name] != nil else {
                throw DroptraceError("zip archive lacks entry \(name.forErrorMessage) for storage \(reference.key.forErrorMessage) named in \(shownName)", path: path)
            }
            return try checked(try archive.range(name), reference, path: path)
        }
        return (root, storage)
    }

    /// The storage's bytes, checked to hold exactly as many elements as the
    /// pickle declares: torch.load refuses a record of any other size (the
    /// bytes past the declared ones belong to no tensor torch would load).
    static func checked(_ range: StorageRange, _ reference: TorchStorageReference, path: String) throws -> StorageRange {
        let (needed, overflow) = reference.count.multipliedReportingOverflow(by: reference.element.byteSize)
        guard !overflow, needed == range.count else {
            throw DroptraceError(
                "storage \(reference.key.forErrorMessage) holds \(range.count) bytes but the pickle declares \(reference.count) \(reference.element.name) elements (\(overflow ? "more than 2^63" : String(needed)) bytes)",
                path: path)
        }
        return range
    }

    /// The length a complete file must have, or nil when it is visibly
    /// unfinished (no zip end-of-central-directory record yet, or a legacy
    /// file that ends inside its storages). Used to tell a checkpoint still
    /// being written from a finished one. A file that is not a regular file
    /// gives 0, so that opening it reports the problem.
    public static func expectedLength(path: String) throws -> Int? {
        guard let file = try? RegularFile(path: path) else { return 0 }
        guard let prefix = try DroptraceError.nilUnlessTransient({ try file.bytes(min(file.size, 16), at: 0) }) else { return nil }
        if ZipArchive.looksLikeZip(prefix) { return try ZipArchive.expectedLength(file) }
        if LegacyTorchFile.looksLegacy(prefix), try DroptraceError.nilUnlessTransient({ try LegacyTorchFile(file: file) }) != nil {
            return file.size
        }
        return nil
    }
}
