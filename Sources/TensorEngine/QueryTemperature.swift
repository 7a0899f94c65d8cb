import Foundation

/// Llama 4's attention temperature tuning, as Ministral 3 applies it
/// (transformers' `get_llama_4_attn_scale`, models/ministral3/modeling_ministral3.py):
/// after rotary, the queries at position p are multiplied by
/// 1 + β · ln(1 + ⌊p / original⌋), which leaves the first `original`
/// positions unchanged and sharpens attention logarithmically beyond them.
/// Keys and values are not scaled. Computed in float32, as torch does.
public struct QueryTemperature: Sendable, Equatable {
    /// β: `rope_parameters.llama_4_scaling_beta`.
    public let beta: Float
    /// The span of positions each step of the floor covers:
    /// `rope_parameters.original_max_position_embeddings` (positive).
    public let originalMaxPositions: Int

    public init(beta: Float, originalMaxPositions: Int) {
        precondition(originalMaxPositions > 0)
        self.beta = beta
        self.originalMaxPositions = originalMaxPositions
    }

    /// The factor on the queries at `position` (0-based).
    public func factor(position: Int) -> Float {
        1 + beta * logf(1 + (Float(position) / Float(originalMaxPositions)).rounded(.down))
    }

    /// Multiplies `columns` (the query columns) of each row by the factor of
    /// its position; rows are `rowStride` apart, row r at `positions[r]`.
    public func apply(to rows: UnsafeMutablePointer<Float>, rowStride: Int, columns: Range<Int>, positions: [Int]) {
        for (row, position) in positions.enumerated() where position >= originalMaxPositions {
            let factor = factor(position: position)
            let start = rows + row * rowStride
            for column in columns { start[column] *= factor }
        }
    }
}
