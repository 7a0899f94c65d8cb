/// A worker's buffer of up to `capacity` rows of activations, `width` wide,
/// held as a layer's matrix products read them in `arithmetic`: float32 as
/// they are (f32), rounded to bfloat16 and kept as float32 (emulated bf16),
/// or bfloat16 bits (the bf16 units).
///
/// Rows are rounded as they are set: a tile rounded right before its
/// product is still in cache when the product reads it, and an activation
/// written row by row into it is never stored in float32 at full size.
/// Owned by one thread at a time; the memory is freed with the buffer.
public final class ProductRows {
    public let arithmetic: MatrixArithmetic
    public let capacity: Int
    public let width: Int
    private let storage: UnsafeMutableRawPointer

    /// Room for `rows` rows of `width` values (at least one of each).
    public init(rows: Int, width: Int, arithmetic: MatrixArithmetic) {
        self.arithmetic = arithmetic
        capacity = max(1, rows)
        self.width = max(1, width)
        storage = .allocate(byteCount: capacity * self.width * Self.elementSize(arithmetic), alignment: 64)
    }

    deinit { storage.deallocate() }

    /// Bytes a value takes in `arithmetic`'s buffers.
    static func elementSize(_ arithmetic: MatrixArithmetic) -> Int {
        arithmetic == .bf16Native ? MemoryLayout<UInt16>.size : MemoryLayout<Float>.size
    }

    /// Sets rows `first ..< first + count` from `count` rows at `source`,
    /// `stride` values apart (`width` of each is read).
    public func set(rows first: Int, count: Int, from source: UnsafePointer<Float>, stride: Int) {
        precondition(first >= 0 && count >= 0 && first + count <= capacity && stride >= width)
        if stride == width { return setDense(first * width, count * width, source) }
        for r in 0..<count { setDense((first + r) * width, width, source + r * stride) }
    }

    /// Sets row `row` from the `width` values at `source`.
    public func set(row: Int, from source: UnsafePointer<Float>) {
        set(rows: row, count: 1, from: source, stride: width)
    }

    /// `count` values from `source` into the elements from `offset` on.
    private func setDense(_ offset: Int, _ count: Int, _ source: UnsafePointer<Float>) {
        switch arithmetic {
        case .f32:
            (storage.assumingMemoryBound(to: Float.self) + offset).update(from: source, count: count)
        case .bf16Emulated:
            BFloat16.round(source, into: storage.assumingMemoryBound(to: Float.self) + offset, count: count)
        case .bf16Native:
            BFloat16.convert(source, into: storage.assumingMemoryBound(to: UInt16.self) + offset, count: count)
        }
    }

    /// The rows from the first on, as a product's left operand (`width` apart).
    var operand: BLAS.Operand {
        arithmetic == .bf16Native
            ? .bits(UnsafePointer(storage.assumingMemoryBound(to: UInt16.self)))
            : .float(UnsafePointer(storage.assumingMemoryBound(to: Float.self)))
    }
}
