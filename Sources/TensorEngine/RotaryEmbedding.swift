import Foundation

/// Rotary position embedding in the "rotate half" convention of Hugging Face
/// (dimension j pairs with j + d/2), applied to the first `rotaryDim`
/// dimensions of each head; the rest pass through (partial rotary).
///
/// The rotated width never exceeds the head, whatever the frequencies: the
/// kernel cannot write outside a head (configs that ask for more are refused
/// before this is built, by `RopeSettings`).
public struct RotaryEmbedding: Sendable {
    /// The rotated dimensions per head: two per frequency, at most `headDim`.
    public let rotaryDim: Int
    /// The width of one head.
    public let headDim: Int
    /// One inverse frequency per rotated pair, already scaled (linear, llama3).
    public let inverseFrequencies: [Float]
    /// Multiplies cos and sin (1 except for YaRN-style scalings).
    public let attentionScaling: Float
    /// Other frequencies for sequences longer than a length (LongRoPE).
    public let longContext: LongContext?
    /// Angles, cosines and sines computed in Float64 and rounded once to
    /// Float32, as Ergo's rotary embedding computes them (position × the
    /// float32 frequency, cos and sin times the scaling, all in float64);
    /// otherwise the angle is a Float32 product, as transformers' others compute it.
    public var anglesInDouble = false

    /// The frequencies a sequence uses when it is longer than `beyondLength`
    /// tokens, one per rotated pair like `inverseFrequencies`.
    public struct LongContext: Sendable {
        public let beyondLength: Int
        public let inverseFrequencies: [Float]
        /// Multiplies cos and sin of such a sequence in place of
        /// `attentionScaling` when given (PhiMoE's `long_mscale`).
        public let attentionScaling: Float?

        public init(beyondLength: Int, inverseFrequencies: [Float], attentionScaling: Float? = nil) {
            self.beyondLength = beyondLength
            self.inverseFrequencies = inverseFrequencies
            self.attentionScaling = attentionScaling
        }
    }

    public init(inverseFrequencies: [Float], headDim: Int, attentionScaling: Float = 1, longContext: LongContext? = nil) {
        precondition(longContext == nil || longContext!.inverseFrequencies.count == inverseFrequencies.count)
        self.inverseFrequencies = inverseFrequencies
        self.headDim = max(0, headDim)
        self.rotaryDim = min(2 * inverseFrequencies.count, self.headDim / 2 * 2)
        self.attentionScaling = attentionScaling
        self.longContext = longContext
    }

    /// Whether each row rotates with the long-context frequencies: rows whose
    /// positions count up by one form a sequence (a batch's sequences each
    /// start at 0; a decoding step is its own row), and a sequence is as long
    /// as its last position + 1.
    func usesLongContext(_ positions: [Int]) -> [Bool] {
        guard let longContext else { return [] }
        var result = [Bool](repeating: false, count: positions.count)
        var end = positions.count
        while end > 0 {
            var start = end - 1
            while start > 0, positions[start - 1] == positions[start] - 1 { start -= 1 }
            let long = positions[end - 1] >= longContext.beyondLength
            for r in start..<end { result[r] = long }
            end = start
        }
        return result
    }

    /// The unscaled frequencies base^(−2i/dim), computed in Float32 the way
    /// transformers does, so angles agree to the last bit at long positions.
    public static func defaultInverseFrequencies(base: Double, rotaryDim: Int) -> [Float] {
        stride(from: 0, to: rotaryDim, by: 2).map { i in
            1 / powf(Float(base), Float(i) / Float(rotaryDim))
        }
    }

    /// Rotates the heads starting at `headOffsets` in every row of `buffer`
    /// (rows of `rowStride` values, one per position); `positions[r]` is row
    /// r's position within its own sequence. Heads that would not fit in a
    /// row are left alone.
    public func apply(
        to buffer: UnsafeMutablePointer<Float>, rowStride: Int, headOffsets: [Int], positions: [Int]
    ) {
        let half = rotaryDim / 2
        let headOffsets = headOffsets.filter { $0 >= 0 && $0 <= rowStride - headDim }
        let shortFrequencies = inverseFrequencies
        let longFrequencies = longContext?.inverseFrequencies ?? []
        let long = usesLongContext(positions)
        let shortScaling = attentionScaling, longScaling = longContext?.attentionScaling ?? attentionScaling
        let anglesInDouble = anglesInDouble
        parallelFor(chunks: positions.count, minimumChunk: 32) { rows in
            // Raw buffers: the rotation loop then compiles to vector code (array
            // accesses kept their bounds checks and ran scalar).
            let cosines = UnsafeMutablePointer<Float>.allocate(capacity: max(1, half))
            let sines = UnsafeMutablePointer<Float>.allocate(capacity: max(1, half))
            defer {
                cosines.deallocate()
                sines.deallocate()
            }
            for r in rows {
                let isLong = !long.isEmpty && long[r]
                let frequencies = isLong ? longFrequencies : shortFrequencies
                let scaling = isLong ? longScaling : shortScaling
                if anglesInDouble {
                    let position = Double(positions[r]), scaling = Double(scaling)
                    for j in 0..<half {
                        let angle = position * Double(frequencies[j])
                        cosines[j] = Float(cos(angle) * scaling)
                        sines[j] = Float(sin(angle) * scaling)
                    }
                } else {
                    let position = Float(positions[r])
                    for j in 0..<half {
                        let angle = position * frequencies[j]
                        cosines[j] = cos(angle) * scaling
                        sines[j] = sin(angle) * scaling
                    }
                }
                let row = buffer + r * rowStride
                for offset in headOffsets {
                    Self.rotate(row + offset, half: half, cosines: cosines, sines: sines)
                }
            }
        }
    }

    /// (a, b) → (a·cos − b·sin, b·cos + a·sin) for the pairs (j, j + half) of
    /// one head; each product rounded on its own, as PyTorch computes
    /// q·cos + rotate_half(q)·sin (no fused multiply-add).
    @inline(__always)
    private static func rotate(
        _ head: UnsafeMutablePointer<Float>, half: Int, cosines: UnsafePointer<Float>, sines: UnsafePointer<Float>
    ) {
        let second = head + half
        for j in 0..<half {
            let a = head[j], b = second[j]
            head[j] = a * cosines[j] - b * sines[j]
            second[j] = b * cosines[j] + a * sines[j]
        }
    }
}
