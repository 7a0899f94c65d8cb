import Foundation
import Testing
import TensorEngine

/// The vectorised exp and activations against libm in Float64.
@Suite struct VectorMathTests {
    /// Points spread over exp's whole float range, plus the edges.
    static let inputs: [Float] = stride(from: -87.0, through: 88.0, by: 0.0137).map { Float($0) }
        + [0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 0.34657359, -0.34657359, 88.3, -87.3]

    @Test func expIsWithinFourUlpOfLibm() {
        var worst = 0.0
        for x in Self.inputs {
            let exact = Foundation.exp(Double(x))
            let error = abs(Double(VectorMath.exp(x)) - exact) / exact
            worst = max(worst, error)
        }
        #expect(worst < 4 * Double(Float.ulpOfOne), "max relative error \(worst)")
    }

    @Test func expUnderflowsToZeroAndNeverReturnsNaN() {
        for x: Float in [-90, -200, -.infinity, -1e30] {
            #expect(VectorMath.exp(x) < 1e-37)
        }
        #expect(VectorMath.exp(Float(100)).isFinite)
    }

    @Test func softmaxPiecesAgreeWithScalarCode() {
        var row = (0..<37).map { Float(sin(Double($0)) * 9) }
        let maximum = VectorMath.maximum(row, count: row.count)
        #expect(maximum == row.max())
        let exact = row.map { Foundation.exp(Double($0 - maximum)) }
        let sum = row.withUnsafeMutableBufferPointer { VectorMath.expInPlace($0.baseAddress!, count: 37, shift: maximum) }
        #expect(abs(Double(sum) - exact.reduce(0, +)) / exact.reduce(0, +) < 1e-6)
        for (value, reference) in zip(row, exact) {
            #expect(abs(Double(value) - reference) <= 4e-7 * reference)
        }
    }

    @Test(arguments: [Activation.silu, .geluTanh, .gelu, .relu, .xIELU(XIELU(alphaP: 0.3, alphaN: -0.7, beta: 0.5, eps: -1e-6))])
    func activationsMatchTheirDefinition(_ activation: Activation) {
        func exact(_ x: Double) -> Double {
            switch activation {
            case .silu: x / (1 + Foundation.exp(-x))
            case .geluTanh: 0.5 * x * (1 + tanh(0.79788456080286536 * (x + 0.044715 * x * x * x)))
            case .gelu: 0.5 * x * (1 + erf(x / 2.0.squareRoot()))
            case .relu: max(0, x)
            case .xIELU(let p):
                x > 0
                    ? Double(p.alphaP) * x * x + Double(p.beta) * x
                    : (expm1(min(x, Double(p.eps))) - x) * Double(p.alphaN) + Double(p.beta) * x
            }
        }
        let xs = stride(from: -30.0, through: 30.0, by: 0.0371).map { Float($0) } + [-100, 100, 0]
        var matrix = Matrix(rows: 1, cols: xs.count, data: xs)
        activation.apply(inPlace: &matrix)
        var gated = [Float](repeating: 0, count: xs.count)
        let up = xs.map { _ in Float(2) }
        activation.applyGated(gate: xs, up: up, into: &gated, count: xs.count)
        for (index, x) in xs.enumerated() {
            let reference = exact(Double(x))
            let tolerance = 2e-6 * max(1, abs(reference))
            #expect(abs(Double(matrix.data[index]) - reference) <= tolerance, "\(activation)(\(x))")
            #expect(abs(Double(gated[index]) - 2 * reference) <= 2 * tolerance, "gated \(activation)(\(x))")
        }
    }
}
