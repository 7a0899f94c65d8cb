import DroptraceSupport
import Foundation

/// The MLP nonlinearities of the supported families, by their Hugging Face names.
public enum Activation: Sendable, Equatable {
    case silu
    case gelu
    /// The tanh approximation, as GPT-2 ("gelu_new") and Gemma use it.
    case geluTanh
    case relu
    /// The rest of transformers' `ACT2FN` that take no parameters, per element.
    case quickGELU, clippedGELU, reluSquared, relu6, leakyReLU, sigmoid, hyperbolicTangent, identity, mish, laplace, hardswish, sqrtSoftplus
    /// xIELU with one layer's learned parameters (Apertus; not built from a
    /// name, as its parameters are tensors).
    case xIELU(XIELU)
    /// act(x · factor): an activation of its input times a float32 factor
    /// (Falcon-H1's gate multiplier, `act(gate_proj(x) · m)`).
    indirect case scaledInput(Activation, by: Float)
    /// A gated MLP's activation with both inputs clipped at `limit`:
    /// min(act(gate), limit) · clamp(up, −limit, limit) (transformers'
    /// per-layer SwiGLU limits of Ling 3's experts, BailingHybridExperts);
    /// alone, min(act(x), limit).
    indirect case clipped(Activation, limit: Float)
    /// A gated MLP's activation with its inputs clamped at `limit` before it:
    /// act(min(gate, limit)) · clamp(up, −limit, limit) (Hunyuan V4's routed
    /// experts, `HYV4Experts._apply_gate`); alone, act(min(x, limit)).
    indirect case clampedInput(Activation, limit: Float)

    /// The activation config.json's `key` names (`hidden_act`, or the
    /// family's own: `activation_function`, `hidden_activation`, ...).
    public init(huggingFaceName name: String, key: String = "hidden_act", configPath: String) throws {
        guard let activation = Self.byHuggingFaceName[name] else {
            throw DroptraceError(
                "\(key) is \"\(name)\", an activation droptrace does not implement (supported: \(Self.huggingFaceNames.joined(separator: ", ")))",
                path: configPath)
        }
        self = activation
    }

    /// The `hidden_act` names droptrace reads: transformers' `ACT2FN` but
    /// `prelu`, whose slope is a parameter, and `xielu`, Apertus's own.
    private static let byHuggingFaceName: [String: Activation] = [
        "silu": .silu, "swish": .silu, "gelu": .gelu, "gelu_python": .gelu,
        "gelu_new": .geluTanh, "gelu_pytorch_tanh": .geluTanh, "gelu_fast": .geluTanh, "gelu_accurate": .geluTanh,
        "gelu_python_tanh": .geluTanh, "gelu_10": .clippedGELU, "quick_gelu": .quickGELU, "relu": .relu,
        "relu2": .reluSquared, "relu6": .relu6, "leaky_relu": .leakyReLU, "sigmoid": .sigmoid, "tanh": .hyperbolicTangent,
        "linear": .identity, "mish": .mish, "laplace": .laplace, "hardswish": .hardswish, "sqrtsoftplus": .sqrtSoftplus,
    ]

    /// `byHuggingFaceName`'s names, sorted.
    public static let huggingFaceNames = byHuggingFaceName.keys.sorted()

    /// torch's softplus (beta 1, threshold 20).
    @inline(__always)
    private static func softplus(_ x: Float) -> Float { x > 20 ? x : log1p(exp(x)) }

    @inline(__always)
    public func apply(_ x: Float) -> Float {
        switch self {
        case .silu: return x / (1 + exp(-x))
        case .gelu: return 0.5 * x * (1 + erf(x * 0.70710678118654752))
        case .geluTanh:
            return 0.5 * x * (1 + tanh(0.79788456080286536 * (x + 0.044715 * x * x * x)))
        case .relu: return max(0, x)
        case .quickGELU: return x / (1 + exp(-1.702 * x))
        case .clippedGELU: return min(max(Activation.gelu.apply(x), -10), 10)
        case .reluSquared: return max(0, x) * max(0, x)
        case .relu6: return min(max(0, x), 6)
        case .leakyReLU: return x >= 0 ? x : 0.01 * x
        case .sigmoid: return 1 / (1 + exp(-x))
        case .hyperbolicTangent: return Foundation.tanh(x)
        case .identity: return x
        case .mish: return x * Foundation.tanh(Self.softplus(x))
        case .laplace: return 0.5 * (1 + erf((x - 0.707107) / (0.282095 * 1.4142135623730951)))
        case .hardswish: return x * min(max(x + 3, 0), 6) / 6
        case .sqrtSoftplus: return Self.softplus(x).squareRoot()
        case .xIELU(let xielu): return xielu(x)
        case .scaledInput(let activation, let factor): return activation.apply(x * factor)
        case .clipped(let activation, let limit): return min(activation.apply(x), limit)
        case .clampedInput(let activation, let limit): return activation.apply(min(x, limit))
        }
    }

    /// The vector kernel computing this activation, if there is one.
    private var vectorKernel: VectorKernels.VectorActivation? {
        switch self {
        case .silu: .silu
        case .geluTanh: .geluTanh
        default: nil
        }
    }

    /// out[i] = act(gate[i]) · up[i] for i < count (the gated MLPs).
    @inline(__always)
    public func applyGated(
        gate: UnsafePointer<Float>, up: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count: Int
    ) {
        switch self {
        case .clipped(_, let limit), .clampedInput(_, let limit):
            for i in 0..<count { out[i] = apply(gate[i]) * min(max(up[i], -limit), limit) }
        default:
            if let kernel = vectorKernel {
                VectorKernels.active.gated(kernel, gate: gate, up: up, into: out, count: count)
            } else {
                for i in 0..<count { out[i] = apply(gate[i]) * up[i] }
            }
        }
    }

    public func apply(inPlace m: inout Matrix) {
        let count = m.data.count
        m.data.withUnsafeMutableBufferPointer { v in
            let base = v.baseAddress!
            parallelFor(chunks: count, minimumChunk: 1 << 14) { range in
                apply(inPlace: base + range.lowerBound, count: range.count)
            }
        }
    }

    /// x[i] = act(x[i]) for i < count, on the calling thread.
    @inline(__always)
    public func apply(inPlace x: UnsafeMutablePointer<Float>, count: Int) {
        if let kernel = vectorKernel {
            VectorKernels.active.activate(kernel, x, count: count)
        } else {
            for i in 0..<count { x[i] = apply(x[i]) }
        }
    }
}

/// The xIELU activation (Huang et al. 2024, arXiv:2411.13010) as
/// transformers' `XIELUActivation` computes it (its Python path):
///
///     x > 0:  αp · x² + β · x
///     x ≤ 0:  (expm1(min(x, ε)) − x) · αn + β · x
///
/// with αp = softplus(alpha_p) and αn = β + softplus(alpha_n) from the
/// layer's stored parameters `alpha_p`, `alpha_n` (shape [1]) and buffers
/// `beta`, `eps` (shape []; ε is negative, −1e-6 by default).
public struct XIELU: Sendable, Equatable {
    public let alphaP: Float
    public let alphaN: Float
    public let beta: Float
    public let eps: Float

    /// The activation of the stored (pre-softplus) parameters.
    public init(alphaP rawAlphaP: Float, alphaN rawAlphaN: Float, beta: Float, eps: Float) {
        alphaP = Self.softplus(rawAlphaP)
        alphaN = beta + Self.softplus(rawAlphaN)
        self.beta = beta
        self.eps = eps
    }

    /// torch's softplus: log(1 + eˣ), and x itself above 20.
    static func softplus(_ x: Float) -> Float { x > 20 ? x : log1p(exp(x)) }

    @inline(__always)
    public func callAsFunction(_ x: Float) -> Float {
        x > 0 ? alphaP * x * x + beta * x : (expm1(min(x, eps)) - x) * alphaN + beta * x
    }
}
