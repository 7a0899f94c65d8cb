/// A row-major Float32 matrix: one row per token, one column per feature.
public struct Matrix: Sendable {
    public var rows: Int
    public var cols: Int
    public var data: [Float]

    public init(rows: Int, cols: Int, data: [Float]) {
        precondition(data.count == rows * cols, "matrix data does not match \(rows)×\(cols)")
        self.rows = rows
        self.cols = cols
        self.data = data
    }

    public init(zeros rows: Int, _ cols: Int) {
        self.init(rows: rows, cols: cols, data: [Float](repeating: 0, count: rows * cols))
    }

    /// A matrix whose elements are written by `body` before it is read.
    public init(uninitialized rows: Int, _ cols: Int, _ body: (UnsafeMutablePointer<Float>) -> Void) {
        self.rows = rows
        self.cols = cols
        data = [Float](unsafeUninitializedCapacity: rows * cols) { buffer, count in
            body(buffer.baseAddress!)
            count = rows * cols
        }
    }

    public subscript(row: Int, col: Int) -> Float {
        get { data[row * cols + col] }
        set { data[row * cols + col] = newValue }
    }

    public func row(_ index: Int) -> ArraySlice<Float> {
        data[(index * cols)..<((index + 1) * cols)]
    }

    /// self += other, elementwise.
    public mutating func add(_ other: Matrix) {
        precondition(rows == other.rows && cols == other.cols)
        let count = data.count
        data.withUnsafeMutableBufferPointer { dst in
            other.data.withUnsafeBufferPointer { src in
                parallelFor(chunks: count, minimumChunk: 1 << 16) { range in
                    let at = range.lowerBound
                    VectorKernels.active.add(dst.baseAddress! + at, src.baseAddress! + at, into: dst.baseAddress! + at, count: range.count)
                }
            }
        }
    }

    /// self + other, elementwise, in one pass (no copy of self first: these
    /// are the residual-stream sums, T×d each, on every layer).
    public func adding(_ other: Matrix) -> Matrix {
        precondition(rows == other.rows && cols == other.cols)
        let count = data.count
        return data.withUnsafeBufferPointer { a in
            other.data.withUnsafeBufferPointer { b in
                Matrix(uninitialized: rows, cols) { out in
                    parallelFor(chunks: count, minimumChunk: 1 << 16) { range in
                        let at = range.lowerBound
                        VectorKernels.active.add(a.baseAddress! + at, b.baseAddress! + at, into: out + at, count: range.count)
                    }
                }
            }
        }
    }
}

extension Matrix {
    /// Rows `range` [range.count, cols].
    public func rows(_ range: Range<Int>) -> Matrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows)
        return Matrix(rows: range.count, cols: cols, data: Array(data[(range.lowerBound * cols)..<(range.upperBound * cols)]))
    }
}
