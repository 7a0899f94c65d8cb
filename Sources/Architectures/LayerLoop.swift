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
/// Or two stacks run in nested cycles (`Stacks`, HRM-Text's L and H
/// modules), each invocation of a stack an entry followed by its layers.
///
/// Scoring a looped layer's modules averages them over its passes (each
/// pass's tokens are as many as the calibration's, so it is the mean cosine
/// over all of them); its boundary state (block gaps) is the stream entering
/// it on the last pass. Dropping a looped layer drops it from every pass, as
/// an export with one recurrent layer fewer runs.
public struct LayerLoop: Sendable {
    /// Layer invocations per forward pass droptrace runs at most (the
    /// released looped configs run tens): a config past it is refused before
    /// anything is sized by it, as a pass through it would not end.
    public static let maximumInvocations = 1 << 16

    /// The looped layers, in order (empty: only the entries run).
    public let layers: Range<Int>
    /// How many times the layers run (at least 1); with `stacks`, the most
    /// any layer runs (the low stack's).
    public let passes: Int
    /// The norm of each entry (Dory's final `norm`; the stacks' final norm).
    public let entryNorm: Normalization
    /// Whether passes before the last read the layer's key/value cache
    /// without writing it, the last one writing it (Dory's
    /// `recurrent_kv_cache_mode` "last_loop"), instead of one cache per pass
    /// ("per_loop"). Decoding only: a pass over whole sequences has no cache.
    public let sharesCacheAcrossPasses: Bool
    /// The two stacks, where the loop is HRM's cycles (nil: one section).
    public let stacks: Stacks?

    public init(layers: Range<Int>, passes: Int, entryNorm: Normalization, sharesCacheAcrossPasses: Bool = false) {
        precondition(passes >= 1 && layers.lowerBound >= 0)
        self.layers = layers
        self.passes = passes
        self.entryNorm = entryNorm
        self.sharesCacheAcrossPasses = sharesCacheAcrossPasses
        stacks = nil
    }

    /// HRM-Text's cycles (`HrmTextModel.forward`): with z_H the scaled
    /// embedding and z_L the stored start `lowStart` (`z_L_init`), each of
    /// `highCycles` cycles runs the low stack `lowCycles` times on z_L + z_H,
    /// then the high stack on z_H + z_L, each invocation's output normed by
    /// the stack's final norm (`entryNorm`, applied by the next entry, or
    /// for the last invocation by the head) becoming its state. Invocation k
    /// of the forward pass is entry k; a low layer runs highCycles ·
    /// lowCycles passes, a high layer highCycles; each pass of a layer has a
    /// cache of its own, as transformers' one slot per invocation.
    public init(stacks: Stacks, entryNorm: Normalization) {
        precondition(stacks.highCycles >= 1 && stacks.lowCycles >= 1 && stacks.low.upperBound == stacks.high.lowerBound)
        layers = stacks.low.lowerBound..<stacks.high.upperBound
        passes = stacks.highCycles * stacks.lowCycles
        self.entryNorm = entryNorm
        sharesCacheAcrossPasses = false
        self.stacks = stacks
    }

    /// Two stacks of consecutive layers in nested cycles (`init(stacks:entryNorm:)`).
    public struct Stacks: Sendable {
        public let low: Range<Int>
        public let high: Range<Int>
        public let highCycles: Int
        public let lowCycles: Int
        /// The low state before its first invocation, one value per column.
        public let lowStart: [Float]

        public init(low: Range<Int>, high: Range<Int>, highCycles: Int, lowCycles: Int, lowStart: [Float]) {
            self.low = low
            self.high = high
            self.highCycles = highCycles
            self.lowCycles = lowCycles
            self.lowStart = lowStart
        }

        /// Whether invocation `k` runs the high stack.
        func isHigh(_ k: Int) -> Bool { k % (lowCycles + 1) == lowCycles }
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
        if let stacks {
            var steps: [Step] = []
            for high in 0..<stacks.highCycles {
                for low in 0..<stacks.lowCycles {
                    steps.append(.entry(pass: high * (stacks.lowCycles + 1) + low))
                    steps += stacks.low.map { .layer($0, pass: high * stacks.lowCycles + low) }
                }
                steps.append(.entry(pass: high * (stacks.lowCycles + 1) + stacks.lowCycles))
                steps += stacks.high.map { .layer($0, pass: high) }
            }
            return steps
        }
        var steps = (0..<min(layers.lowerBound, layerCount)).map { Step.layer($0, pass: 0) }
        for pass in 0..<passes {
            steps.append(.entry(pass: pass))
            steps += layers.map { .layer($0, pass: pass) }
        }
        return steps + (layers.upperBound..<max(layerCount, layers.upperBound)).map { .layer($0, pass: 0) }
    }

    /// The passes layer `index` runs.
    public func passes(of index: Int) -> Int {
        if let stacks, stacks.high.contains(index) { return stacks.highCycles }
        return layers.contains(index) ? passes : 1
    }

    /// The entries' state along one forward pass: x₀ once the first entry
    /// saw it; the stacks' two states.
    public struct Entries {
        let norm: Normalization
        let stacks: Stacks?
        private var start: Matrix? = nil
        private var high: Matrix? = nil

        public init(_ loop: LayerLoop) {
            norm = loop.entryNorm
            stacks = loop.stacks
        }

        /// The stream beginning pass `pass` (with stacks: invocation `pass`),
        /// from the stream `x` reaching it.
        public mutating func enter(_ x: Matrix, pass: Int) -> Matrix {
            guard let stacks else {
                let normed = norm(x)
                if pass == 0 { start = normed }
                return normed.adding(start!)
            }
            if pass == 0 {
                // z_H: the embedding; z_L: its start, on every row.
                high = x
                start = Matrix(rows: x.rows, cols: x.cols, data: Array((0..<x.rows).map { _ in stacks.lowStart }.joined()))
            } else if stacks.isHigh(pass - 1) {
                high = norm(x)
            } else {
                start = norm(x)
            }
            return stacks.isHigh(pass) ? high!.adding(start!) : start!.adding(high!)
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
