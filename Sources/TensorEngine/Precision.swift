/// The arithmetic of the engine's matrix products.
///
/// - `f32`: float32 inputs, float32 accumulation.
/// - `bf16`: weights rounded once to bfloat16 (exact for bfloat16
///   checkpoints), activations rounded to bfloat16 only at matrix-product
///   inputs, float32 accumulation; the residual stream, norms, softmax,
///   rotary and cosines stay float32. Identical on every CPU up to summation
///   order: on the bf16 units where the CPU has them, else emulated with the
///   same rounding.
public enum Precision: String, Sendable, Codable, CaseIterable {
    case f32
    case bf16
}

/// The process-wide precision of the engine's matrix products, set once by
/// a command before any model is loaded (like `EngineThreads`).
public enum EnginePrecision {
    nonisolated(unsafe) private static var configured = Precision.f32

    public static var current: Precision { configured }

    public static func set(_ precision: Precision) {
        configured = precision
    }
}
