internal import CHDF5

/// The numeric element kinds the wrapper reads and writes. Kept as a plain
/// enum so the public API does not expose HDF5's C type ids.
public enum HDF5NumericKind: Sendable {
    case float32, float64, int32, int64

    /// The in-memory HDF5 type; HDF5 converts to and from the file's type.
    var nativeTypeID: hid_t {
        switch self {
        case .float32: HDF5Library.ids.nativeFloat
        case .float64: HDF5Library.ids.nativeDouble
        case .int32: HDF5Library.ids.nativeInt32
        case .int64: HDF5Library.ids.nativeInt64
        }
    }

    /// The type written to the file.
    var fileTypeID: hid_t {
        switch self {
        case .float32: HDF5Library.ids.fileFloat32
        case .float64: HDF5Library.ids.fileFloat64
        case .int32: HDF5Library.ids.fileInt32
        case .int64: HDF5Library.ids.fileInt64
        }
    }

    var isInteger: Bool { self == .int32 || self == .int64 }

    /// Bytes per element, for sizing chunks.
    var byteCount: Int {
        switch self {
        case .float32, .int32: 4
        case .float64, .int64: 8
        }
    }
}

/// A Swift number that can be stored as an HDF5 dataset or attribute element.
public protocol HDF5Numeric: Sendable {
    static var hdf5Kind: HDF5NumericKind { get }
    /// Used to size read buffers before HDF5 fills them.
    static var zero: Self { get }
}

extension Float: HDF5Numeric {
    public static var hdf5Kind: HDF5NumericKind { .float32 }
}

extension Double: HDF5Numeric {
    public static var hdf5Kind: HDF5NumericKind { .float64 }
}

extension Int32: HDF5Numeric {
    public static var hdf5Kind: HDF5NumericKind { .int32 }
}

extension Int64: HDF5Numeric {
    public static var hdf5Kind: HDF5NumericKind { .int64 }
}

/// What a dataset or attribute holds, as stored in the file.
public enum HDF5ElementType: Sendable, Equatable, CustomStringConvertible {
    case float(bits: Int)
    case integer(bits: Int, signed: Bool)
    case string(variableLength: Bool)
    /// Compound, enum, opaque, ...: nothing this project writes.
    case other

    public var isNumeric: Bool {
        switch self {
        case .float, .integer: true
        case .string, .other: false
        }
    }

    /// Why values of this stored type cannot be read as `kind`, nil when
    /// they can: not numbers, or floating-point values read as integers
    /// (HDF5 would truncate them: 5.7 layers read as 5, NaN as Int64.min).
    func problem(readingAs kind: HDF5NumericKind) -> String? {
        guard isNumeric else { return "holds \(self) values, not numbers" }
        if kind.isInteger, case .float = self { return "holds \(self) values where droptrace writes integers" }
        // HDF5 clamps what the integer read into cannot hold (2⁶⁴ − 1 read as 2⁶³ − 1): another number, silently.
        if kind.isInteger, case .integer(let bits, let signed) = self, bits > kind.byteCount * 8 || (!signed && bits == kind.byteCount * 8) {
            return "holds \(self) values, which \(kind) cannot hold all of (droptrace writes \(kind))"
        }
        return nil
    }

    public var description: String {
        switch self {
        case .float(let bits): "float\(bits)"
        case .integer(let bits, let signed): signed ? "int\(bits)" : "uint\(bits)"
        case .string(let variableLength): variableLength ? "variable-length string" : "fixed-length string"
        case .other: "unsupported type"
        }
    }

    /// Describes an HDF5 datatype id (a dataset's or an attribute's file type).
    init(typeID: hid_t) {
        let bits = H5Tget_size(typeID) * 8
        switch H5Tget_class(typeID) {
        case H5T_FLOAT:
            self = .float(bits: bits)
        case H5T_INTEGER:
            self = .integer(bits: bits, signed: H5Tget_sign(typeID) != H5T_SGN_NONE)
        case H5T_STRING:
            self = .string(variableLength: H5Tis_variable_str(typeID) > 0)
        default:
            self = .other
        }
    }
}
