import Testing
import TensorEngine

@Suite struct ReductionsTests {
    @Test(arguments: [1, 63, 64, 65, 1000, 4096])
    func blockedSumsMatchFloat64(length: Int) {
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
        let (fastDot, fastXX, fastYY) = Reductions.dotAndNorms(x, y, length)
        #expect(abs(fastDot - dot) <= 1e-6 * abs(dot))
        #expect(abs(fastXX - xx) <= 1e-6 * xx && abs(fastYY - yy) <= 1e-6 * yy)
        #expect(abs(Reductions.dot(x, y, length) - dot) <= 1e-6 * abs(dot))
        // The cosine itself, the quantity droptrace reports, to far better than 1e-4.
        #expect(abs(fastDot / (fastXX * fastYY).squareRoot() - dot / (xx * yy).squareRoot()) < 1e-6)
    }
}
