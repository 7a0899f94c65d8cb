import DroptraceSupport
import Foundation

/// The MLP nonlinearities of the supported families, by their Hugging Face names.
public enum Activation: String, Sendable {
    case silu
    case gelu
    /// The tanh approximation, as GPT-2 ("gelu_new") and Gemma use it.
    case geluTanh
    case relu

    public init(huggingFaceName name: String, configPath: String) throws {
        switch name {
        case "silu", "swish": self = .silu
        case "gelu": self = .gelu
        case "gelu_new", "gelu_pytorch_tanh", "gelu_fast": self = .geluTanh
        case "relu": self = .relu
        default:
            throw DroptraceError(
                "unsupported activation \"\(name)\" (supported: silu, gelu, gelu_new, gelu_pytorch_tanh, relu)",
                path: configPath)
        }
    }

    @inline(__always)
    public func apply(_ x: Float) -> Float {
        switch self {
        case .silu: return x / (1 + exp(-x))
        case .gelu: return 0.5 * x * (1 + erf(x * 0.70710678118654752))
        case .geluTanh:
            return 0.5 * x * (1 + tanh(0.79788456080286536 * (x + 0.044715 * x * x * x)))
        case .relu: return max(0, x)
        }
    }

    public func apply(inPlace m: inout Matrix) {
        let count = m.data.count
        m.data.withUnsafeMutableBufferPointer { v in
            parallelFor(chunks: count, minimumChunk: 1 << 14) { range in
                for i in range { v[i] = apply(v[i]) }
            }
        }
    }
}
