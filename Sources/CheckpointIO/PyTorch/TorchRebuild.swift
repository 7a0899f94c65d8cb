import DroptraceSupport

/// What the allowed torch globals stand for, evaluated as data: REDUCE on one
/// of them yields the value torch would rebuild, never runs anything.
enum TorchRebuild {
    static func call(_ function: TorchGlobal, _ arguments: [PickleValue], path: String, pickleName: String) throws -> PickleValue {
        func fail(_ message: String) -> DroptraceError {
            DroptraceError("\(pickleName): \(function.qualifiedName) \(message)", path: path)
        }
        switch function {
        case .orderedDict:
            // OrderedDict() — torch never passes items, but a list of pairs is plain data too.
            let dict = PickleDict()
            if let first = arguments.first {
                guard arguments.count == 1, case .list(let pairs) = first else { throw fail("called with unexpected arguments") }
                for pair in pairs.items {
                    guard case .tuple(let kv, _) = pair, kv.count == 2 else { throw fail("called with something other than pairs") }
                    dict.entries.append((kv[0], kv[1]))
                }
            }
            return .dict(dict)

        case .rebuildTensor, .rebuildTensorV2, .rebuildTensorV3:
            // The parameters of torch._utils' functions, the optional metadata last:
            // (storage, offset, size, stride[, requires_grad, backward_hooks[, dtype], metadata=None]).
            let accepted = switch function {
            case .rebuildTensor: 4...4
            case .rebuildTensorV2: 6...7
            default: 7...8
            }
            guard accepted.contains(arguments.count) else {
                throw fail("called with \(arguments.count) arguments, expected \(accepted.count == 1 ? "\(accepted.lowerBound)" : "\(accepted.lowerBound) or \(accepted.upperBound)")")
            }
            guard case .storage(let storage) = arguments[0] else { throw fail("called on \(arguments[0].kind), not a storage") }
            guard case .int(let offset) = arguments[1], offset >= 0,
                  let shape = integers(arguments[2]), let strides = integers(arguments[3]),
                  shape.count == strides.count, shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 })
            else { throw fail("called with a malformed offset, size or stride") }
            // torch sets tensor.requires_grad from it, which takes a bool and nothing else.
            if function != .rebuildTensor {
                guard case .bool = arguments[4] else { throw fail("called with requires_grad \(arguments[4].kind), not a bool") }
            }
            var element = storage.element
            if function == .rebuildTensorV3 {
                guard case .global(.dtype(let dtype, _)) = arguments[6] else { throw fail("called without a dtype") }
                element = dtype
            }
            return .tensor(TorchTensorRecord(storage: storage, element: element, offset: offset, shape: shape, strides: strides))

        case .rebuildParameter:
            // (data, requires_grad, backward_hooks[, state]), the last in _rebuild_parameter_with_state.
            guard (3...4).contains(arguments.count) else { throw fail("called with \(arguments.count) arguments, expected 3 or 4") }
            guard case .tensor(let tensor) = arguments.first else { throw fail("called on something other than a tensor") }
            guard case .bool = arguments[1] else { throw fail("called with requires_grad \(arguments[1].kind), not a bool") }
            return .tensor(tensor)

        case .storageClass, .dtype:
            throw DroptraceError(
                "refusing to load: the pickle calls \(function.qualifiedName), which is not part of a PyTorch state dict (nothing was executed)",
                path: path)
        }
    }

    /// The persistent id torch.save writes for a storage:
    /// `("storage", storage_type, key, location, numel)` in the zip format,
    /// with a sixth field, `view_metadata`, in the legacy one; torch.load
    /// unpacks exactly these fields and fails on any other count.
    static func storage(_ id: PickleValue, legacy: Bool = false, path: String, pickleName: String) throws -> PickleValue {
        func fail(_ message: String) -> DroptraceError { DroptraceError("\(pickleName): \(message)", path: path) }
        let shape = legacy ? "('storage', type, key, location, numel, view_metadata)" : "('storage', type, key, location, numel)"
        guard case .tuple(let fields, _) = id, fields.count == (legacy ? 6 : 5), case .string("storage") = fields[0] else {
            let found = if case .tuple(let fields, _) = id { "a tuple of \(fields.count) fields" } else { id.kind }
            throw fail("persistent id is \(found), not a \(shape) tuple")
        }
        guard case .global(.storageClass(let element, _)) = fields[1] else {
            throw fail("persistent id names \(fields[1].kind) where a torch storage class belongs")
        }
        guard case .string(let key) = fields[2], case .int(let count) = fields[4], count >= 0 else {
            throw fail("persistent id has a malformed storage key or size")
        }
        if fields.count > 5, case .tuple = fields[5] {
            throw fail("storage \(key.forErrorMessage) is a view of another storage (written by a very old torch); re-save the checkpoint with a current torch.save")
        }
        return .storage(TorchStorageReference(element: element, key: key, count: count))
    }

    private static func integers(_ value: PickleValue) -> [Int]? {
        guard case .tuple(let items, _) = value else { return nil }
        var result: [Int] = []
        for item in items {
            guard case .int(let number) = item else { return nil }
            result.append(number)
        }
        return result
    }
}
