import TensorEngine

/// A run of consecutive layers a model passes through more than once
/// (Dory's recurrent section: DoryModel runs layers `n_input_layers` ..<
/// `n_input_layers + n_recurrent_layers` `n_recurrent_loops` times between
/// its input and output layers). Each pass begins with
///
///     x ← norm(x) + norm(x₀)
///
/// x₀ the stream entering the first pass: every loop restarts from the
/// input section's output. The entries belong to the model, not to a
/// layer: they run whatever layers are dropped, also when the loop keeps none.
///
/// Scoring a looped layer's modules averages them over its passes (each
/// pass's tokens are as many as the calibration's, so it is the mean cosine
/// over all of them); its boundary state (block gaps) is the stream entering
/// it on the last pass. Dropping a looped layer drops it from every pass, as
/// an export with one recurrent layer fewer runs.
public struct LayerLoop: Sendable {
    /// The looped layers, in order (empty: only the entries run).
    public let layers: Range<Int>
    /// How many times the layers run (at least 1).
    public let passes: Int
    /// The norm of each entry (Dory's final `norm`).
    public let entryNorm: Normalization
    /// Whether passes before the last read the layer's key/value cache
    /// without writing it, the last one writing it (Dory's
    /// `recurrent_kv_cache_mode` "last_loop"), instead of one cache per pass
    /// ("per_loop"). Decoding only: a pass over whole sequences has no cache.
    public let sharesCacheAcrossPasses: Bool

    public init(layers: Range<Int>, passes: Int, entryNorm: Normalization, sharesCacheAcrossPasses: Bool = false) {
        precondition(passes >= 1 && layers.lowerBound >= 0)
        self.layers = layers
        self.passes = passes
        self.entryNorm = entryNorm
        self.sharesCacheAcrossPasses = sharesCacheAcrossPasses
    }

    /// One step of a forward pass.
    public enum Step: Sendable, Equatable {
        /// Layer `index` on pass `pass` (0 for a layer outside the loop).
        case layer(Int, pass: Int)
        /// The entry of pass `pass`.
        case entry(pass: Int)
    }

    /// The steps of a forward pass over `layerCount` layers, in order.
    public func steps(layerCount: Int) -> [Step] {
        var steps = (0..<min(layers.lowerBound, layerCount)).map { Step.layer($0, pass: 0) }
        for pass in 0..<passes {
            steps.append(.entry(pass: pass))
            steps += layers.map { .layer($0, pass: pass) }
        }
        return steps + (layers.upperBound..<max(layerCount, layers.upperBound)).map { .layer($0, pass: 0) }
    }

    /// The passes layer `index` runs.
    public func passes(of index: Int) -> Int { layers.contains(index) ? passes : 1 }

    /// The entries' state along one forward pass: x₀ once the first entry saw it.
    public struct Entries {
        let norm: Normalization
        private var start: Matrix? = nil

        public init(_ loop: LayerLoop) { norm = loop.entryNorm }

        /// The stream beginning pass `pass`, from the stream `x` reaching it.
        public mutating func enter(_ x: Matrix, pass: Int) -> Matrix {
            let normed = norm(x)
            if pass == 0 { start = normed }
            return normed.adding(start!)
        }
    }
}

extension LanguageModel {
    /// The steps of one forward pass: every layer once in order, or the
    /// model's loop's passes between the layers before and after it.
    public var layerSteps: [LayerLoop.Step] {
        layerLoop?.steps(layerCount: layerCount) ?? (0..<layerCount).map { .layer($0, pass: 0) }
    }

    /// The passes layer `index` runs in one forward pass.
    public func passes(of index: Int) -> Int { layerLoop?.passes(of: index) ?? 1 }
}
