import Foundation

/// A worker's buffer of up to `capacity` rows of activations, `width` wide,
/// held as a layer's matrix products read them in `arithmetic`: float32 as
/// they are (f32), rounded to bfloat16 and kept as float32 (emulated bf16),
/// or bfloat16 bits (the bf16 units).
///
/// Rows are rounded as they are set: a tile rounded right before its
/// product is still in cache when the product reads it, and an activation
/// written row by row into it is never stored in float32 at full size.
/// Owned by one thread at a time; the memory is freed with the buffer, or
/// goes back to the `ScratchBlocks` it came from.
public final class ProductRows {
    public let arithmetic: MatrixArithmetic
    public let capacity: Int
    public let width: Int
    private let storage: UnsafeMutableRawPointer
    /// The pool the storage goes back to, for a scratch buffer.
    private let pool: ScratchBlocks?

    /// Room for `rows` rows of `width` values (at least one of each).
    public init(rows: Int, width: Int, arithmetic: MatrixArithmetic) {
        self.arithmetic = arithmetic
        capacity = max(1, rows)
        self.width = max(1, width)
        storage = .allocate(byteCount: capacity * self.width * Self.elementSize(arithmetic), alignment: 64)
        pool = nil
    }

    /// Room for as many of `rows` rows of `width` values as one of `pool`'s
    /// blocks holds (at least one row: a row wider than a block gets a
    /// buffer of its own), in a block taken from `pool`.
    static func scratch(
        rows: Int, width: Int, arithmetic: MatrixArithmetic, from pool: ScratchBlocks = .shared
    ) -> ProductRows {
        let bytesPerRow = bytesPerRow(width: width, arithmetic)
        guard bytesPerRow <= pool.bytes else { return ProductRows(rows: 1, width: width, arithmetic: arithmetic) }
        return ProductRows(
            block: pool.take(), of: pool, rows: min(max(1, rows), pool.bytes / bytesPerRow), width: width,
            arithmetic: arithmetic)
    }

    private init(block: UnsafeMutableRawPointer, of pool: ScratchBlocks, rows: Int, width: Int, arithmetic: MatrixArithmetic) {
        self.arithmetic = arithmetic
        capacity = rows
        self.width = max(1, width)
        storage = block
        self.pool = pool
    }

    deinit {
        if let pool { pool.give(storage) } else { storage.deallocate() }
    }

    /// Bytes a value takes in `arithmetic`'s buffers.
    static func elementSize(_ arithmetic: MatrixArithmetic) -> Int {
        arithmetic == .bf16Native ? MemoryLayout<UInt16>.size : MemoryLayout<Float>.size
    }

    /// Bytes a row of `width` values (at least one) takes in `arithmetic`'s buffers.
    static func bytesPerRow(width: Int, _ arithmetic: MatrixArithmetic) -> Int {
        max(1, width) * elementSize(arithmetic)
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

/// Fixed-size blocks for the rows a product rounds on the fly, kept for
/// reuse rather than freed.
///
/// Every emulated-bf16 product rounds its input rows into a worker's
/// buffer of up to 16 MB, a few per layer per worker. From the one heap the
/// engine allocates from (`EngineMemory.reuseFreedBuffers`), buffers that
/// large, freed between the next layer's weights and activations, left
/// holes later blocks did not fit: the heap grew by the holes, layer after
/// layer (on a 2-core Zen 3 with OpenBLAS, a 1.1B model's peak resident
/// memory went from 0.77 GB in f32 to 1.32 GB in bf16). Blocks of one size
/// taken from and given back to a pool keep their place instead.
final class ScratchBlocks: @unchecked Sendable {
    /// The engine's pool: 16 MB blocks, the rounding budget of a worker's
    /// product; at most one per engine thread and one for the caller kept.
    static let shared = ScratchBlocks(bytes: 16 << 20) { EngineThreads.count + 1 }

    /// Bytes per block.
    let bytes: Int
    private let limit: @Sendable () -> Int
    private let lock = NSLock()
    private var free: [UnsafeMutableRawPointer] = []

    /// Blocks of `bytes` bytes, at most `limit()` of them kept when given back.
    init(bytes: Int, keeping limit: @escaping @Sendable () -> Int) {
        self.bytes = bytes
        self.limit = limit
    }

    deinit { for block in free { block.deallocate() } }

    /// Blocks given back and kept, not taken since.
    var kept: Int { lock.withLock { free.count } }

    /// A block of `bytes` bytes, 64-byte aligned: the last one kept, else a new one.
    func take() -> UnsafeMutableRawPointer {
        lock.withLock { free.popLast() } ?? .allocate(byteCount: bytes, alignment: 64)
    }

    /// Gives back a block `take` returned: kept while fewer than `limit()`
    /// are, else freed.
    func give(_ block: UnsafeMutableRawPointer) {
        let kept = lock.withLock {
            guard free.count < limit() else { return false }
            free.append(block)
            return true
        }
        if !kept { block.deallocate() }
    }
}
