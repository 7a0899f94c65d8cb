import DroptraceSupport

/// torch.save's format before the zip archive (still written with
/// `_use_new_zipfile_serialization=False`): five pickles in a row — the magic
/// number, the protocol version 1001, a sys_info dict, the object, the sorted
/// list of storage keys — then each storage in that order as an 8-byte
/// little-endian element count followed by its raw bytes.
struct LegacyTorchFile {
    static let magicNumber: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19] // 0x1950a86a20f9469cfc6c
    static let protocolVersion = 1001
    /// The pickles are read from a prefix of the file that grows until they
    /// fit; a state dict's pickles are far smaller than this.
    static let pickleLimit = 1 << 28

    let path: String
    let root: PickleValue
    /// Where each storage's bytes are in the file, by key.
    let storages: [String: (offset: Int, count: Int)]

    /// A pickle starting with PROTO 2 and LONG1 of the magic number's width.
    static func looksLegacy(_ prefix: [UInt8]) -> Bool {
        prefix.count >= 4 && prefix[0] == 0x80 && prefix[2] == 0x8A && prefix[3] == UInt8(magicNumber.count)
    }

    init(file: RegularFile) throws {
        path = file.path
        // Parse from a prefix of the file, growing it while the pickles run past its end.
        var prefixLength = min(file.size, 1 << 20)
        while true {
            let prefix = try file.bytes(prefixLength, at: 0)
            do {
                (root, storages) = try Self.parse(prefix, file: file)
                return
            } catch {
                guard prefixLength < min(file.size, Self.pickleLimit) else { throw error }
                prefixLength = min(file.size, Self.pickleLimit, prefixLength * 8)
            }
        }
    }

    private static func parse(_ bytes: [UInt8], file: RegularFile) throws -> (PickleValue, [String: (offset: Int, count: Int)]) {
        let path = file.path
        let header = PickleMachine(bytes: bytes, path: path, pickleName: "legacy torch.save header")
        let (magic, afterMagic) = try header.run(from: 0)
        guard case .wideInt(let digits) = magic, digits == Self.magicNumber else {
            throw DroptraceError("not a PyTorch checkpoint: the legacy torch.save magic number is missing", path: path)
        }
        let (version, afterVersion) = try header.run(from: afterMagic)
        guard case .int(Self.protocolVersion) = version else {
            throw DroptraceError("legacy torch.save protocol \(version) is not supported (expected \(Self.protocolVersion))", path: path)
        }
        let (sysInfo, afterSysInfo) = try header.run(from: afterVersion)
        if case .dict(let info) = sysInfo, case .bool(false) = info.value(forKey: "little_endian") {
            throw DroptraceError("checkpoint was saved on a big-endian machine; only little-endian is supported", path: path)
        }

        let objectPickle = PickleMachine(bytes: bytes, path: path, pickleName: "legacy torch.save state-dict pickle")
        var declared: [String: TorchStorageReference] = [:]
        let (root, afterObject) = try objectPickle.run(from: afterSysInfo) { id in
            let storage = try TorchRebuild.storage(id, legacy: true, path: path, pickleName: objectPickle.pickleName)
            if case .storage(let reference) = storage { declared[reference.key] = reference }
            return storage
        }
        let keysPickle = PickleMachine(bytes: bytes, path: path, pickleName: "legacy torch.save storage-key list")
        let (keyList, afterKeys) = try keysPickle.run(from: afterObject)
        guard case .list(let keys) = keyList else {
            throw DroptraceError("legacy torch.save storage-key list is \(keyList.kind), not a list", path: path)
        }

        // The storages follow: only their 8-byte counts are read, the data is located.
        var storages: [String: (offset: Int, count: Int)] = [:]
        var position = afterKeys
        for item in keys.items {
            guard case .string(let key) = item, let reference = declared[key] else {
                throw DroptraceError("legacy torch.save storage-key list names \(item.kind) that no tensor uses", path: path)
            }
            guard position <= file.size - 8 else {
                throw DroptraceError("legacy torch.save storage data ends early (the file is truncated)", path: path)
            }
            var reader = ByteReader(try file.bytes(8, at: position), at: 0, end: 8, path: path, what: "legacy torch.save storage size")
            let count = try reader.int64()
            guard count >= 0, count == reference.count else {
                throw DroptraceError("storage \(key.forErrorMessage) has \(count) elements on disk but the pickle declares \(reference.count)", path: path)
            }
            let (length, overflow) = count.multipliedReportingOverflow(by: reference.element.byteSize)
            guard !overflow, length <= file.size - position - 8 else {
                throw DroptraceError(
                    "storage \(key.forErrorMessage) of \(count) \(reference.element.name) elements runs past the end of the file (truncated?)",
                    path: path)
            }
            storages[key] = (position + 8, length)
            position += 8 + length
        }
        return (root, storages)
    }

    func storage(_ reference: TorchStorageReference) throws -> (offset: Int, count: Int) {
        guard let range = storages[reference.key] else {
            throw DroptraceError("storage \(reference.key.forErrorMessage) is not among the file's storages", path: path)
        }
        return try TorchCheckpointFile.checked(range, reference, path: path)
    }
}
