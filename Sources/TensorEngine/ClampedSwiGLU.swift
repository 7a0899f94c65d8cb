import Foundation

/// The gated activation of gpt-oss's experts (transformers `GptOssExperts._apply_gate`):
/// for a gate value g and an up value u,
///
///     g' = min(g, limit),  u' = clamp(u, −limit, limit)
///     out = (u' + 1) · g' · sigmoid(alpha · g')
///
/// config.json's `swiglu_limit` and `swiglu_alpha` (7.0 and 1.702 by default).
/// The projection producing gate and up interleaves them: column 2i is the
/// gate and column 2i + 1 the up value of hidden unit i.
public struct ClampedSwiGLU: Sendable, Equatable {
    public let alpha: Float
    public let limit: Float

    public init(alpha: Float, limit: Float) {
        self.alpha = alpha
        self.limit = limit
    }

    @inline(__always)
    public func apply(gate: Float, up: Float) -> Float {
        let g = min(gate, limit)
        let u = min(max(up, -limit), limit)
        return (u + 1) * (g / (1 + exp(-(g * alpha))))
    }

    /// out[i] = apply(gate: gateUp[2i], up: gateUp[2i + 1]) for i < count.
    @inline(__always)
    public func applyInterleaved(_ gateUp: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { out[i] = apply(gate: gateUp[2 * i], up: gateUp[2 * i + 1]) }
    }
}
