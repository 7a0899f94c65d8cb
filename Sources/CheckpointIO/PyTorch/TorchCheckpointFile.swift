import DroptraceSupport
import Foundation

/// A torch.save file (`pytorch_model.bin`) holding a state dict, read without
/// Python: the zip archive torch has written since 1.6 (`<archive>/data.pkl`
/// plus one stored entry per storage, `<archive>/data/<key>`), or the older
/// stream of pickles followed by raw storages.
///
/// The file is mapped, and contiguous float tensors point into the mapping
/// like safetensors ones, so a large checkpoint is never read as a whole.
public final class TorchCheckpointFile: @unchecked Sendable {
    public let path: String
    public let tensors: [String: TensorSlice]

    public init(path: String) throws {
        self.path = path
        let file = try MappedFile(path: path)
        let bytes = file.bytes
        let loaded: (root: PickleValue, storage: (TorchStorageReference) throws -> UnsafeRawBufferPointer)
        if ZipArchive.looksLikeZip(bytes) {
            loaded = try Self.readZip(bytes, path: path)
        } else if LegacyTorchFile.looksLegacy(bytes) {
            let legacy = try LegacyTorchFile(bytes: bytes, path: path)
            loaded = (legacy.root, legacy.storage)
        } else {
            throw DroptraceError(
                file.size == 0
                    ? "empty file, not a PyTorch checkpoint"
                    : "not a PyTorch checkpoint: neither the zip archive torch.save writes nor its legacy format",
                path: path)
        }

        var tensors: [String: TensorSlice] = [:]
        for (name, record) in try TorchStateDict.tensors(in: loaded.root, path: path) {
            let storageBytes = try loaded.storage(record.storage)
            if let slice = try TorchStateDict.slice(
                name: name, tensor: record, storageBytes: storageBytes, owner: file, path: path)
            {
                tensors[name] = slice
            }
        }
        self.tensors = tensors
    }

    /// Reads `<archive>/data.pkl`; storages come from `<archive>/data/<key>`.
    private static func readZip(_ bytes: UnsafeRawBufferPointer, path: String)
        throws -> (root: PickleValue, storage: (TorchStorageReference) throws -> UnsafeRawBufferPointer)
    {
        let archive = try ZipArchive(bytes: bytes, path: path)
        // torch names the top folder after the file it saved to; find it by its data.pkl.
        guard let pickleName = archive.names.first(where: { $0.hasSuffix("/data.pkl") && $0.split(separator: "/").count == 2 })
        else {
            throw DroptraceError("zip archive has no <archive>/data.pkl entry; not a torch.save checkpoint", path: path)
        }
        let prefix = String(pickleName.dropLast("data.pkl".count))
        if archive.entries[prefix + "byteorder"] != nil {
            let order = String(decoding: try archive.data(prefix + "byteorder"), as: UTF8.self)
            guard order == "little" else {
                throw DroptraceError(
                    order == "big" ? "checkpoint was saved with big-endian byte order; only little-endian is supported"
                        : "zip entry \(prefix.forErrorMessage)byteorder holds \"\(order.forErrorMessage)\" instead of \"little\" or \"big\"",
                    path: path)
            }
        }
        let shownName = pickleName.forErrorMessage
        let machine = PickleMachine(bytes: try archive.data(pickleName), path: path, pickleName: shownName)
        let root = try machine.run { id in try TorchRebuild.storage(id, path: path, pickleName: shownName) }.value
        let storage = { (reference: TorchStorageReference) throws -> UnsafeRawBufferPointer in
            let name = prefix + "data/" + reference.key
            guard archive.entries[name] != nil else {
                throw DroptraceError("zip archive lacks entry \(name.forErrorMessage) for storage \(reference.key.forErrorMessage) named in \(shownName)", path: path)
            }
            return try checked(try archive.data(name), reference, path: path)
        }
        return (root, storage)
    }

    /// The storage's bytes, checked to hold as many elements as the pickle declares.
    static func checked(_ bytes: UnsafeRawBufferPointer, _ reference: TorchStorageReference, path: String) throws -> UnsafeRawBufferPointer {
        let (needed, overflow) = reference.count.multipliedReportingOverflow(by: reference.element.byteSize)
        guard !overflow, needed <= bytes.count else {
            throw DroptraceError(
                "storage \(reference.key.forErrorMessage) holds \(bytes.count) bytes but the pickle declares \(reference.count) \(reference.element.name) elements",
                path: path)
        }
        return UnsafeRawBufferPointer(rebasing: bytes[0..<needed])
    }

    /// The length a complete file must have, or nil when it is visibly
    /// unfinished (no zip end-of-central-directory record yet, or a legacy
    /// file that ends inside its storages). Used to tell a checkpoint still
    /// being written from a finished one.
    public static func expectedLength(path: String) -> Int? {
        guard let file = try? MappedFile(path: path) else { return nil }
        if ZipArchive.looksLikeZip(file.bytes) { return ZipArchive.expectedLength(file.bytes) }
        if LegacyTorchFile.looksLegacy(file.bytes), (try? LegacyTorchFile(bytes: file.bytes, path: path)) != nil { return file.size }
        return nil
    }
}
