/// Per-row cosine similarities, accumulated in Float64.
public enum Cosine {
    /// cos(a_r, b_r) for every row r; nil if any element of either matrix is
    /// NaN or infinite (the norms then are too), so callers can report where.
    public static func rows(_ a: Matrix, _ b: Matrix) -> [Double]? {
        precondition(a.rows == b.rows && a.cols == b.cols)
        let width = a.cols
        var result = [Double](repeating: 0, count: a.rows)
        var finite = true
        a.data.withUnsafeBufferPointer { pa in
            b.data.withUnsafeBufferPointer { pb in
                result.withUnsafeMutableBufferPointer { out in
                    parallelFor(chunks: a.rows, minimumChunk: 64) { rows in
                        for r in rows {
                            out[r] = cosine(pa.baseAddress! + r * width, pb.baseAddress! + r * width, width)
                        }
                    }
                }
            }
        }
        for value in result where !value.isFinite { finite = false }
        return finite ? result : nil
    }

    /// The mean of `rows(a, b)`, or nil when non-finite values appear.
    public static func mean(_ a: Matrix, _ b: Matrix) -> Double? {
        guard let values = rows(a, b), !values.isEmpty else { return nil }
        return values.reduce(0, +) / Double(values.count)
    }

    @inline(__always)
    static func cosine(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Double {
        let (dot, xx, yy) = VectorKernels.active.dotAndNorms(x, y, n)
        // torch.nn.functional.cosine_similarity clamps the norm product at eps = 1e-8.
        let norms = (xx * yy).squareRoot()
        if !norms.isFinite || !dot.isFinite { return .nan }
        return dot / max(norms, 1e-8)
    }
}
