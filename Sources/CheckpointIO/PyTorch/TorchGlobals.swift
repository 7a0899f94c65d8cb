/// Element types a torch storage or tensor can have.
enum TorchElementType: Equatable {
    case float32, float16, bfloat16, float64
    /// Types droptrace has no use for; tensors of them are left out of the
    /// tensor map (position_ids buffers, attention masks, quantisation tables).
    case other(name: String, byteSize: Int)

    var byteSize: Int {
        switch self {
        case .float32: 4
        case .float16, .bfloat16: 2
        case .float64: 8
        case .other(_, let size): size
        }
    }

    var name: String {
        switch self {
        case .float32: "float32"
        case .float16: "float16"
        case .bfloat16: "bfloat16"
        case .float64: "float64"
        case .other(let name, _): name
        }
    }

    /// The type of torch's legacy typed storage class `torch.<name>`
    /// (what `_rebuild_tensor_v2` pickles), or of torch.storage.UntypedStorage.
    init?(storageClass name: String) {
        switch name {
        case "FloatStorage": self = .float32
        case "HalfStorage": self = .float16
        case "BFloat16Storage": self = .bfloat16
        case "DoubleStorage": self = .float64
        case "LongStorage": self = .other(name: "int64", byteSize: 8)
        case "IntStorage": self = .other(name: "int32", byteSize: 4)
        case "ShortStorage": self = .other(name: "int16", byteSize: 2)
        case "CharStorage": self = .other(name: "int8", byteSize: 1)
        case "ByteStorage", "UntypedStorage": self = .other(name: "uint8", byteSize: 1)
        case "BoolStorage": self = .other(name: "bool", byteSize: 1)
        case "ComplexFloatStorage": self = .other(name: "complex64", byteSize: 8)
        case "ComplexDoubleStorage": self = .other(name: "complex128", byteSize: 16)
        default: return nil
        }
    }

    /// A `torch.<dtype>` global, as `_rebuild_tensor_v3` pickles the dtype.
    init?(dtypeName name: String) {
        switch name {
        case "float32": self = .float32
        case "float16": self = .float16
        case "bfloat16": self = .bfloat16
        case "float64": self = .float64
        case "int64", "uint64", "complex64": self = .other(name: name, byteSize: 8)
        case "int32", "uint32": self = .other(name: name, byteSize: 4)
        case "int16", "uint16": self = .other(name: name, byteSize: 2)
        case "int8", "uint8", "bool", "float8_e5m2", "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz", "float8_e8m0fnu":
            self = .other(name: name, byteSize: 1)
        case "complex128": self = .other(name: name, byteSize: 16)
        default: return nil
        }
    }

    /// The type droptrace reads directly, if any.
    var tensorDType: TensorDType? {
        switch self {
        case .float32: .float32
        case .float16: .float16
        case .bfloat16: .bfloat16
        case .float64, .other: nil
        }
    }
}

/// The only Python globals a state-dict pickle may name. Anything else —
/// os.system, builtins.eval, a model class — is refused before it could matter.
enum TorchGlobal: Equatable {
    case orderedDict
    /// `torch._utils._rebuild_tensor` (storage, offset, size, stride).
    case rebuildTensor
    /// `torch._utils._rebuild_tensor_v2` (storage, offset, size, stride, requires_grad, hooks[, metadata]).
    case rebuildTensorV2
    /// `torch._utils._rebuild_tensor_v3` (untyped storage, offset, size, stride, requires_grad, hooks, dtype[, metadata]).
    case rebuildTensorV3
    /// `torch._utils._rebuild_parameter` / `_rebuild_parameter_with_state`: a tensor wrapped as nn.Parameter.
    case rebuildParameter
    case storageClass(TorchElementType, name: String)
    case dtype(TorchElementType, name: String)

    init?(module: String, name: String) {
        switch (module, name) {
        case ("collections", "OrderedDict"): self = .orderedDict
        case ("torch._utils", "_rebuild_tensor"): self = .rebuildTensor
        case ("torch._utils", "_rebuild_tensor_v2"): self = .rebuildTensorV2
        case ("torch._utils", "_rebuild_tensor_v3"): self = .rebuildTensorV3
        case ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"):
            self = .rebuildParameter
        case ("torch", _), ("torch.storage", "UntypedStorage"):
            if let element = TorchElementType(storageClass: name) {
                self = .storageClass(element, name: name)
            } else if module == "torch", let element = TorchElementType(dtypeName: name) {
                self = .dtype(element, name: name)
            } else {
                return nil
            }
        default: return nil
        }
    }

    var qualifiedName: String {
        switch self {
        case .orderedDict: "collections.OrderedDict"
        case .rebuildTensor: "torch._utils._rebuild_tensor"
        case .rebuildTensorV2: "torch._utils._rebuild_tensor_v2"
        case .rebuildTensorV3: "torch._utils._rebuild_tensor_v3"
        case .rebuildParameter: "torch._utils._rebuild_parameter"
        case .storageClass(_, let name): name == "UntypedStorage" ? "torch.storage.UntypedStorage" : "torch.\(name)"
        case .dtype(_, let name): "torch.\(name)"
        }
    }
}
