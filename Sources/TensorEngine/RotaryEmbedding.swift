import Foundation

/// Rotary position embedding in the "rotate half" convention of Hugging Face
/// (dimension j pairs with j + d/2), applied to the first `rotaryDim`
/// dimensions of each head; the rest pass through (partial rotary).
public struct RotaryEmbedding: Sendable {
    public let rotaryDim: Int
    /// One inverse frequency per rotated pair, already scaled (linear, llama3).
    public let inverseFrequencies: [Float]
    /// Multiplies cos and sin (1 except for YaRN-style scalings).
    public let attentionScaling: Float

    public init(inverseFrequencies: [Float], attentionScaling: Float = 1) {
        self.inverseFrequencies = inverseFrequencies
        self.rotaryDim = 2 * inverseFrequencies.count
        self.attentionScaling = attentionScaling
    }

    /// The unscaled frequencies base^(−2i/dim), computed in Float32 the way
    /// transformers does, so angles agree to the last bit at long positions.
    public static func defaultInverseFrequencies(base: Double, rotaryDim: Int) -> [Float] {
        stride(from: 0, to: rotaryDim, by: 2).map { i in
            1 / powf(Float(base), Float(i) / Float(rotaryDim))
        }
    }

    /// Rotates the heads starting at `headOffsets` in every row of `buffer`;
    /// `positions[r]` is row r's position within its own sequence.
    public func apply(
        to buffer: UnsafeMutablePointer<Float>, rowStride: Int, headOffsets: [Int], positions: [Int]
    ) {
        let half = rotaryDim / 2
        let frequencies = inverseFrequencies
        let scaling = attentionScaling
        parallelFor(chunks: positions.count, minimumChunk: 32) { rows in
            var cosines = [Float](repeating: 0, count: half)
            var sines = [Float](repeating: 0, count: half)
            for r in rows {
                let position = Float(positions[r])
                for j in 0..<half {
                    let angle = position * frequencies[j]
                    cosines[j] = cos(angle) * scaling
                    sines[j] = sin(angle) * scaling
                }
                let row = buffer + r * rowStride
                for offset in headOffsets {
                    let head = row + offset
                    for j in 0..<half {
                        let a = head[j], b = head[j + half]
                        head[j] = a * cosines[j] - b * sines[j]
                        head[j + half] = b * cosines[j] + a * sines[j]
                    }
                }
            }
        }
    }
}
