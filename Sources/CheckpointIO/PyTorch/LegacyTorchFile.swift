import DroptraceSupport

/// torch.save's format before the zip archive (still written with
/// `_use_new_zipfile_serialization=False`): five pickles in a row — the magic
/// number, the protocol version 1001, a sys_info dict, the object, the sorted
/// list of storage keys — then each storage in that order as an 8-byte
/// little-endian element count followed by its raw bytes.
struct LegacyTorchFile {
    static let magicNumber: [UInt8] = [0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19] // 0x1950a86a20f9469cfc6c
    static let protocolVersion = 1001

    let path: String
    let root: PickleValue
    /// Bytes of each storage, by key.
    let storages: [String: UnsafeRawBufferPointer]

    /// A pickle starting with PROTO 2 and LONG1 of the magic number's width.
    static func looksLegacy(_ bytes: UnsafeRawBufferPointer) -> Bool {
        bytes.count >= 4 && bytes[0] == 0x80 && bytes[2] == 0x8A && bytes[3] == UInt8(magicNumber.count)
    }

    init(bytes: UnsafeRawBufferPointer, path: String) throws {
        self.path = path
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
            let storage = try TorchRebuild.storage(id, path: path, pickleName: objectPickle.pickleName)
            if case .storage(let reference) = storage { declared[reference.key] = reference }
            return storage
        }
        let keysPickle = PickleMachine(bytes: bytes, path: path, pickleName: "legacy torch.save storage-key list")
        let (keyList, afterKeys) = try keysPickle.run(from: afterObject)
        guard case .list(let keys) = keyList else {
            throw DroptraceError("legacy torch.save storage-key list is \(keyList.kind), not a list", path: path)
        }

        var storages: [String: UnsafeRawBufferPointer] = [:]
        var reader = ByteReader(bytes, at: afterKeys, end: bytes.count, path: path, what: "legacy torch.save storage data (the file is truncated)")
        for item in keys.items {
            guard case .string(let key) = item, let reference = declared[key] else {
                throw DroptraceError("legacy torch.save storage-key list names \(item.kind) that no tensor uses", path: path)
            }
            let count = try reader.int64()
            guard count >= 0, count == reference.count else {
                throw DroptraceError("storage \(key.forErrorMessage) has \(count) elements on disk but the pickle declares \(reference.count)", path: path)
            }
            let (length, overflow) = count.multipliedReportingOverflow(by: reference.element.byteSize)
            guard !overflow else { throw DroptraceError("storage \(key.forErrorMessage) has an impossible size", path: path) }
            storages[key] = try reader.raw(length)
        }
        self.root = root
        self.storages = storages
    }

    func storage(_ reference: TorchStorageReference) throws -> UnsafeRawBufferPointer {
        guard let bytes = storages[reference.key] else {
            throw DroptraceError("storage \(reference.key.forErrorMessage) is not among the file's storages", path: path)
        }
        return try TorchCheckpointFile.checked(bytes, reference, path: path)
    }
}
