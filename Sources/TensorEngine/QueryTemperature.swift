import Foundation

/// Llama 4's attention temperature tuning: after rotary, the queries at
/// position p are multiplied by 1 + β · ln(1 + ⌊(p + offset) / original⌋),
/// which leaves the first positions unchanged and sharpens attention
/// logarithmically beyond them. Keys and values are not scaled. Computed in
/// float32, as torch does.
/// - Ministral 3 (transformers' `get_llama_4_attn_scale`,
///   models/ministral3/modeling_ministral3.py): offset 0, β
///   `llama_4_scaling_beta`, original `original_max_position_embeddings`;
/// - Llama 4's NoPE layers (`Llama4TextAttention`, models/llama4/): offset 1,
///   β `attn_scale`, original `floor_scale`.
///
/// With `growth` `.power` the factor is instead exp(β · ln(1 + (p + offset) /
/// original)), (1 + (p + offset) / original)^β without the floor (Beam's
/// scalable softmax on its NoPE layers, `compute_attention_scaling`: offset
/// 1, β 0.1, original 2048).
public struct QueryTemperature: Sendable, Equatable {
    /// β: `rope_parameters.llama_4_scaling_beta` (Ministral 3), `attn_scale` (Llama 4).
    public let beta: Float
    /// The span of positions each step of the floor covers (positive):
    /// `rope_parameters.original_max_position_embeddings` (Ministral 3),
    /// `floor_scale` (Llama 4).
    public let originalMaxPositions: Int
    /// Added to the 0-based position before the division (Llama 4 counts
    /// positions from 1 there).
    public let positionOffset: Int
    /// How the factor grows with the position.
    public let growth: Growth

    public enum Growth: Sendable, Equatable {
        /// 1 + β · ln(1 + ⌊(p + offset) / original⌋) (Llama 4, Ministral 3).
        case flooredLog
        /// exp(β · log1p((p + offset) / original)) (Beam).
        case power
    }

    public init(beta: Float, originalMaxPositions: Int, positionOffset: Int = 0, growth: Growth = .flooredLog) {
        precondition(originalMaxPositions > 0 && positionOffset >= 0)
        self.beta = beta
        self.originalMaxPositions = originalMaxPositions
        self.positionOffset = positionOffset
        self.growth = growth
    }

    /// The factor on the queries at `position` (0-based).
    public func factor(position: Int) -> Float {
        let share = Float(position + positionOffset) / Float(originalMaxPositions)
        switch growth {
        case .flooredLog: return 1 + beta * logf(1 + share.rounded(.down))
        case .power: return expf(beta * log1pf(share))
        }
    }

    /// Multiplies `columns` (the query columns) of each row by the factor of
    /// its position; rows are `rowStride` apart, row r at `positions[r]`.
    public func apply(to rows: UnsafeMutablePointer<Float>, rowStride: Int, columns: Range<Int>, positions: [Int]) {
        // The floored factor is 1 below `originalMaxPositions`.
        for (row, position) in positions.enumerated() where growth == .power || position + positionOffset >= originalMaxPositions {
            let factor = factor(position: position)
            let start = rows + row * rowStride
            for column in columns { start[column] *= factor }
        }
    }
}
