/// The outputs a row-wise function already gave input rows, by the rows'
/// bits: a row bit-equal to one seen before gets that row's outputs bit for
/// bit.
///
/// transformers' products give bit-equal rows for bit-equal inputs on the
/// CPUs its references are computed on; products that sum a row in an order
/// that depends on its place in the batch (AVX2's kernels, oneDNN's and
/// OpenBLAS's alike: 32 equal rows came out as 2 or 3 distinct ones) break
/// that, turning exact ties between rows (a token repeated before any
/// position has entered the stream) into a choice by rounding noise. The
/// places where such ties decide something discrete unify their rows here:
/// Doge's key biases (`DynamicMask`) and product-key router logits
/// (`ProductKeyExperts`).
public struct EqualRowOutputs: Sendable {
    private var byRow: [[UInt32]: [Float]] = [:]

    public init() {}

    /// Sets each row of `outputs` [rows, n] to the outputs of an earlier row
    /// of `inputs` [rows, m] bit-equal to its own (seen in this call or an
    /// earlier one), and remembers the others.
    public mutating func unify(_ outputs: inout Matrix, inputs: Matrix) {
        precondition(outputs.rows == inputs.rows)
        let width = outputs.cols
        for r in 0..<inputs.rows {
            let key = inputs.row(r).map(\.bitPattern), span = (r * width)..<((r + 1) * width)
            if let known = byRow[key] {
                outputs.data.replaceSubrange(span, with: known)
            } else {
                byRow[key] = Array(outputs.data[span])
            }
        }
    }

    /// `outputs` with the rows of bit-equal `inputs` unified among themselves.
    public static func unified(_ outputs: Matrix, inputs: Matrix) -> Matrix {
        var memory = EqualRowOutputs(), result = outputs
        memory.unify(&result, inputs: inputs)
        return result
    }
}
