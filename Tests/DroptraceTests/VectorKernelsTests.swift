import DroptraceSupport
import Foundation
import Testing
import TensorEngine

/// The vector kernels at every level this CPU runs (baseline, AVX2, AVX-512)
/// against libm and Float64 references, including the tails shorter than a
/// vector.
@Suite struct VectorKernelsTests {
    static let levels = VectorKernels.runnable

    /// Points spread over exp's whole float range, plus the edges.
    static let inputs: [Float] = stride(from: -87.0, through: 88.0, by: 0.0137).map { Float($0) }
        + [0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 0.34657359, -0.34657359, 88.3, -87.3]

    @Test func theActiveLevelIsTheWidestTheCPUSupports() {
        let cpu = CPUFeatures.current
        #expect(VectorKernels.active.level == VectorKernels.level(for: cpu))
        #if arch(x86_64)
            #expect((VectorKernels.active.level == .avx512) == cpu.avx512)
        #endif
    }

    @Test(arguments: levels)
    func expIsWithinFourUlpOfLibm(_ level: VectorKernels.Level) {
        var values = Self.inputs
        let count = values.count
        _ = values.withUnsafeMutableBufferPointer { VectorKernels(level).expShifted($0.baseAddress!, count: count, shift: 0) }
        var worst = 0.0
        for (x, value) in zip(Self.inputs, values) {
            let exact = Foundation.exp(Double(x))
            worst = max(worst, abs(Double(value) - exact) / exact)
        }
        #expect(worst < 4 * Double(Float.ulpOfOne), "max relative error \(worst) at level \(level)")
    }

    @Test(arguments: levels)
    func expUnderflowsToZeroAndNeverReturnsNaN(_ level: VectorKernels.Level) {
        var values: [Float] = [-90, -200, -.infinity, -1e30, 100]
        _ = values.withUnsafeMutableBufferPointer { VectorKernels(level).expShifted($0.baseAddress!, count: 5, shift: 0) }
        #expect(values[0..<4].allSatisfy { $0 < 1e-37 })
        #expect(values[4].isFinite)
    }

    @Test(arguments: levels, [1, 7, 16, 37, 64, 100])
    func softmaxPiecesAgreeWithScalarCode(_ level: VectorKernels.Level, count: Int) {
        let kernels = VectorKernels(level)
        var row = (0..<count).map { Float(sin(Double($0)) * 9) }
        let maximum = kernels.maximum(row, count: row.count)
        #expect(maximum == row.max())
        let exact = row.map { Foundation.exp(Double($0 - maximum)) }
        let sum = row.withUnsafeMutableBufferPointer { kernels.expShifted($0.baseAddress!, count: count, shift: maximum) }
        #expect(abs(Double(sum) - exact.reduce(0, +)) / exact.reduce(0, +) < 1e-6)
        for (value, reference) in zip(row, exact) {
            #expect(abs(Double(value) - reference) <= 4e-7 * reference)
        }
        row.withUnsafeMutableBufferPointer { kernels.scale($0.baseAddress!, count: count, by: 1 / sum) }
        #expect(abs(row.reduce(0, +) - 1) < 1e-5)
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
            default:
                Double.nan  // compared with torch in `activationsAreTransformers`
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

    /// Every `hidden_act` name against transformers' `ACT2FN` in float32
    /// (Fixtures/activations.json, scripts/fixtures/make_activation_references.py).
    @Test func activationsAreTransformers() throws {
        let url = FixtureFiles.root.appendingPathComponent("activations.json")
        let reference = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let xs = (reference["x"] as! [NSNumber]).map(\.floatValue)
        let ys = reference["y"] as! [String: [NSNumber]]
        #expect(Set(ys.keys) == Set(Activation.huggingFaceNames))
        for (name, expected) in ys {
            let activation = try Activation(huggingFaceName: name, configPath: "config.json")
            var matrix = Matrix(rows: 1, cols: xs.count, data: xs)
            activation.apply(inPlace: &matrix)
            for (index, y) in expected.map(\.doubleValue).enumerated() {
                #expect(abs(Double(matrix.data[index]) - y) <= 3e-6 * max(1, abs(y)), "\(name)(\(xs[index]))")
            }
        }
        #expect(throws: DroptraceError.self) { try Activation(huggingFaceName: "prelu", configPath: "config.json") }
    }

    /// Every level's activations, tails included, within a few ulp of the active level's.
    @Test(arguments: levels, [VectorKernels.VectorActivation.silu, .geluTanh])
    func levelsAgree(_ level: VectorKernels.Level, activation: VectorKernels.VectorActivation) {
        let xs = stride(from: -12.0, through: 12.0, by: 0.0913).map { Float($0) }  // 263: a tail at every width
        var a = xs, b = xs
        a.withUnsafeMutableBufferPointer { VectorKernels(level).activate(activation, $0.baseAddress!, count: xs.count) }
        b.withUnsafeMutableBufferPointer { VectorKernels.active.activate(activation, $0.baseAddress!, count: xs.count) }
        for (u, v) in zip(a, b) { #expect(abs(u - v) <= 4 * max(abs(v), 1e-6) * Float.ulpOfOne) }
    }

    @Test(arguments: levels, [1, 63, 64, 65, 1000, 4096])
    func blockedSumsMatchFloat64(_ level: VectorKernels.Level, length: Int) {
        var generator = SystemRandomNumberGenerator()
        // An outlier dimension, like the massive activations of trained LLMs.
        var x = (0..<length).map { _ in Float.random(in: -1...1, using: &generator) }
        var y = x.map { $0 + Float.random(in: -0.05...0.05, using: &generator) }
        x[0] = 300
        y[0] = 310
        var dot = 0.0, xx = 0.0, yy = 0.0
        for (a, b) in zip(x, y) {
            dot += Double(a) * Double(b)
            xx += Double(a) * Double(a)
            yy += Double(b) * Double(b)
        }
        let kernels = VectorKernels(level)
        let (fastDot, fastXX, fastYY) = kernels.dotAndNorms(x, y, length)
        #expect(abs(fastDot - dot) <= 1e-6 * abs(dot))
        #expect(abs(fastXX - xx) <= 1e-6 * xx && abs(fastYY - yy) <= 1e-6 * yy)
        #expect(abs(kernels.dot(x, y, length) - dot) <= 1e-6 * abs(dot))
        // The cosine itself, the quantity droptrace reports, to far better than 1e-4.
        #expect(abs(fastDot / (fastXX * fastYY).squareRoot() - dot / (xx * yy).squareRoot()) < 1e-6)
    }

    @Test(arguments: levels, [1, 5, 17, 64, 2051])
    func rmsNormAndAddMatchFloat64(_ level: VectorKernels.Level, length: Int) {
        let kernels = VectorKernels(level)
        let x = (0..<length).map { Float(sin(Double($0) * 0.7) * 3) }
        let weight = (0..<length).map { Float(1 + 0.01 * Double($0 % 13)) }
        var y = [Float](repeating: .nan, count: length)
        kernels.rmsNorm(x, weight: weight, into: &y, length, eps: 1e-6)
        let rms = (x.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(length) + 1e-6).squareRoot()
        for i in 0..<length {
            #expect(abs(Double(y[i]) - Double(weight[i]) * Double(x[i]) / rms) <= 1e-5)
        }
        var sum = [Float](repeating: .nan, count: length)
        kernels.add(x, weight, into: &sum, count: length)
        #expect(sum == zip(x, weight).map { $0 + $1 })
    }

    /// Rounding to bfloat16 at every level equals the scalar rule bit for bit:
    /// ties to even, subnormals, ±inf, overflow to inf, NaN made quiet.
    @Test(arguments: levels)
    func bfloat16RoundingEqualsTheScalarRule(_ level: VectorKernels.Level) {
        let special: [Float] = [
            0, -0.0, 1, -1, .infinity, -.infinity, .nan, Float(bitPattern: 0x7F80_0001), .greatestFiniteMagnitude,
            Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x0000_8001),
            .leastNonzeroMagnitude, 3.3895314e38,
        ]
        let values = special + (0..<200).map { Float(sin(Double($0)) * pow(10, Double($0 % 9) - 4)) }
        for count in [values.count, 3, 17] {
            var rounded = [Float](repeating: 0, count: count)
            var bits = [UInt16](repeating: 0, count: count)
            VectorKernels(level).bf16Round(values, into: &rounded, count: count)
            VectorKernels(level).bf16Convert(values, into: &bits, count: count)
            for i in 0..<count {
                #expect(rounded[i].bitPattern == BFloat16.round(values[i]).bitPattern, "\(values[i])")
                #expect(bits[i] == BFloat16.bits(values[i]), "\(values[i])")
            }
        }
    }
}
