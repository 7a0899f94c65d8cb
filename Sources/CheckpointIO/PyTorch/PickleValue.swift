/// The values a torch.save state-dict pickle can build. Nothing here is ever
/// executed: globals are names from an allow-list, and "calls" to them are
/// recorded as data (a tensor description, an empty dict).
indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    /// An integer too wide for Int (LONG1), as its little-endian two's-complement bytes.
    case wideInt([UInt8])
    case float(Double)
    case string(String)
    /// With its depth (`PickleMachine.depth(of:)`), computed once when the
    /// tuple is built: tuples may share sub-tuples through the memo
    /// (BINGET), so walking the items again would take time exponential in
    /// the nesting.
    case tuple([PickleValue], depth: Int)
    /// Lists and dicts are mutated after creation (APPENDS, SETITEMS) while
    /// also sitting in the memo, so they are shared references.
    case list(PickleList)
    case dict(PickleDict)
    case global(TorchGlobal)
    case storage(TorchStorageReference)
    case tensor(TorchTensorRecord)

    /// A short description for error messages.
    var kind: String {
        switch self {
        case .none: "None"
        case .bool: "a bool"
        case .int, .wideInt: "an int"
        case .float: "a float"
        case .string: "a string"
        case .tuple: "a tuple"
        case .list: "a list"
        case .dict: "a dict"
        case .global(let global): global.qualifiedName
        case .storage: "a storage"
        case .tensor: "a tensor"
        }
    }
}

/// How deep a container nests (`PickleMachine` bounds it) and whether it
/// already sits inside another one (then it may no longer change).
struct PickleNesting {
    /// 1 for an empty container; 1 + the deepest item's depth otherwise.
    var depth = 1
    var isNested = false
}

final class PickleList {
    var items: [PickleValue] = []
    var nesting = PickleNesting()
}

final class PickleDict {
    /// Insertion order is kept (a state dict is an OrderedDict).
    var entries: [(key: PickleValue, value: PickleValue)] = []
    var nesting = PickleNesting()

    func value(forKey key: String) -> PickleValue? {
        for entry in entries {
            if case .string(let name) = entry.key, name == key { return entry.value }
        }
        return nil
    }
}

/// A persistent id `("storage", storage_type, key, location, numel)`: one
/// storage of the archive, by key.
struct TorchStorageReference {
    var element: TorchElementType
    var key: String
    /// Elements (of `element`) the storage holds, as recorded by torch.save.
    var count: Int
}

/// A tensor as `_rebuild_tensor_v2` describes it: a view into a storage.
struct TorchTensorRecord {
    var storage: TorchStorageReference
    /// The element type of the tensor (differs from the storage's only for
    /// `_rebuild_tensor_v3`, whose storage is untyped bytes).
    var element: TorchElementType
    var offset: Int
    var shape: [Int]
    var strides: [Int]
}
