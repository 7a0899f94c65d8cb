import Foundation

/// Mistral Large 4's softmax scaling (transformers'
/// `MistralLarge4TextSoftmaxScaling`, models/mistral_large4/): each query
/// head h at 0-based position p is multiplied by
///
///     scale_h · ln(p + 1) + bias_h,
///
/// learned per head (`softmax_scaling.scale`, `softmax_scaling.bias`),
/// computed in float32 as torch does. A scalar per head and row, so it may
/// be applied before or after rotary.
public struct LogPositionQueryScale: Sendable {
    public let scale: [Float]
    public let bias: [Float]

    public init(scale: [Float], bias: [Float]) {
        precondition(scale.count == bias.count)
        self.scale = scale
        self.bias = bias
    }

    /// Multiplies the `width` columns from `headOffsets[h]` of each row by
    /// head h's factor; rows are `rowStride` apart, row r at `positions[r]`.
    public func apply(to rows: UnsafeMutablePointer<Float>, rowStride: Int, headOffsets: [Int], width: Int, positions: [Int]) {
        precondition(headOffsets.count == scale.count)
        for (row, position) in positions.enumerated() {
            let logPosition = logf(Float(position + 1)), start = rows + row * rowStride
            for (h, offset) in headOffsets.enumerated() {
                let product = scale[h] * logPosition
                let factor = product + bias[h]
                for column in offset..<(offset + width) { start[column] *= factor }
            }
        }
    }
}
