import Foundation
import TensorEngine

/// The MLP of a block.
public enum FeedForward: Sendable {
    /// down(act(gate(x)) · up(x)), with gate and up stacked into one
    /// projection whose first half is the gate (SwiGLU, GeGLU).
    case gated(gateUp: Linear, down: Linear, activation: Activation)
    /// `gated` with each row's gate cut at its mean plus `stdMultiplier`
    /// standard deviations (population) before the activation, relu(g − cut)
    /// (Gemma 3n's activation sparsity, `_gaussian_topk`: the multiplier is
    /// the standard normal's quantile of the layer's target sparsity).
    case sparseGated(gateUp: Linear, down: Linear, activation: Activation, stdMultiplier: Float)
    /// down(act(up(x)))   (GPT-2, GPT-NeoX).
    case plain(up: Linear, down: Linear, activation: Activation)
    /// Top-k routed experts (Mixtral); the router belongs to the MLP, so
    /// dropping the MLP drops it too.
    case mixture(MixtureOfExperts)
    /// down(act(gateUp(x))) with gate and up interleaved in gateUp's output
    /// (columns 2i, 2i + 1) and the clamped SwiGLU (gpt-oss's experts).
    case clampedGated(gateUp: Linear, down: Linear, activation: ClampedSwiGLU)
    /// Several MLPs reading the same input, each between its own input and
    /// output norms, their outputs summed in order (Gemma 4's dense MLP
    /// beside its mixture of experts): one module, dropped as a whole.
    indirect case parallel([FeedForwardPart])
    /// An MLP whose hidden rows are normalised before its down projection
    /// (BitNet's `ffn_sub_norm`: down(norm(act(gate(x)) · up(x)))).
    indirect case hiddenNormed(FeedForward, norm: Normalization)
    /// A dense MLP plus experts retrieved by product keys, routed across
    /// each sequence's rows (Doge's CDMoE; `ProductKeyExperts`).
    indirect case productKeys(ProductKeyExperts)
    /// Experts chosen by a router MLP that also reads the state the last
    /// router before it left (ZAYA's; `CarriedRouterMixture`).
    case carriedRouter(CarriedRouterMixture)
    /// RWKV's channel mixing, whose token shifts read each row's
    /// predecessor in its sequence (`RwkvChannelMixing`).
    case rwkvChannelMixing(RwkvChannelMixing)

    /// Whether the MLP reads and leaves a router state in the pass's `BlockCarry`.
    public var carriesRouterState: Bool {
        if case .carriedRouter = self { true } else { false }
    }

    /// Bytes of the widest intermediate (gate|up's output) one pass holds.
    /// Its rows are independent, so the MLP runs over chunks of tokens that
    /// keep it this small: at 8192 tokens TinyLlama's gate|up alone would be
    /// 369 MB, the largest buffer of the forward pass (it makes room for the
    /// next block's weights, expanded meanwhile), while GEMMs of a thousand
    /// rows run as fast as of eight thousand.
    static let intermediateBudget = 64 << 20
    /// Fewer rows than this per engine thread make slower GEMMs.
    static let minimumRowsPerThread = 256

    /// Bytes of a tile's first product output (`Stages.tileRows`), within
    /// `minimumTileRows...maximumTileRows` rows. Smaller tiles keep the
    /// intermediate in cache; larger ones stream the weights (46 MB of
    /// gate|up on the 1.1B shape, beyond the last-level cache) fewer times.
    /// Measured on Zen 5 with AVX512-BF16, 2 threads, whole bf16 score runs
    /// against whole products: tiles of 512 rows 2.5% faster on the 1.1B
    /// shape (186-row tiles 2% slower), on the mid model within the noise.
    static let tileBytes = 24 << 20
    static let minimumTileRows = 32
    static let maximumTileRows = 512

    /// The MLP's output for the rows of `x`, the sequences `sequences`
    /// (nil: one); only product-key experts route across a sequence's rows,
    /// only experts routed by token (`MixtureOfExperts.RoutingRule.tokenHashed`) read `tokenIDs`,
    /// only a carried router (`carriedRouter`) reads and leaves its state in `carry`,
    /// only RWKV's channel mixing the decoder's rows there (`BlockCarry.shiftedRows`).
    public func callAsFunction(_ x: Matrix, sequences: [Range<Int>]?, tokenIDs: [Int]? = nil, carry: BlockCarry? = nil) -> Matrix {
        if case .productKeys(let experts) = self { return experts(x, sequences: sequences ?? [0..<x.rows]) }
        if case .rwkvChannelMixing(let mixing) = self { return mixing(x, sequences: sequences ?? [0..<x.rows], carried: carry?.shiftedRows) }
        if case .carriedRouter(let mixture) = self {
            guard let carry else { preconditionFailure("a router that reads the last router's state needs the pass's BlockCarry") }
            let (output, state) = mixture(x, state: carry.routerState)
            carry.routerState = state
            return output
        }
        if case .mixture(let experts) = self, experts.routesByToken {
            guard let tokenIDs, tokenIDs.count == x.rows else { preconditionFailure("experts routed by token need the rows' tokens") }
            return experts(x, routerInput: x, tokenIDs: tokenIDs)
        }
        return self(x)
    }

    /// The MLP's output for the rows of `x`: [tokens, hidden] → [tokens, hidden].
    public func callAsFunction(_ x: Matrix) -> Matrix {
        if let stages, let tileRows = stages.tileRows(for: x.rows) { return tiled(x, stages, tileRows: tileRows) }
        return callAsFunction(x, rowsPerChunk: rowsPerChunk(x.rows))
    }

    /// The same, computed `rowsPerChunk` rows at a time, each chunk read in
    /// place from `x` and written in place to the output, each product of a
    /// chunk split across the engine's threads. Every output row depends on
    /// its input row alone; only the GEMM library's choice of kernel for the
    /// chunk's row count can change the last bit (as the engine's split of
    /// rows across threads already does).
    func callAsFunction(_ x: Matrix, rowsPerChunk: Int) -> Matrix {
        if case .mixture(let experts) = self { return experts(x) }
        if case .productKeys(let experts) = self { return experts(x, sequences: [0..<x.rows]) }
        // Alone, a carried router reads no earlier state (as the first layer's).
        if case .carriedRouter(let mixture) = self { return mixture(x, state: nil).output }
        if case .rwkvChannelMixing(let mixing) = self { return mixing(x, sequences: [0..<x.rows], carried: nil) }
        if case .parallel(let parts) = self {
            var sum = parts[0](x)
            for part in parts.dropFirst() { sum.add(part(x)) }
            return sum
        }
        guard let stages else { preconditionFailure("only a mixture of experts or parallel MLPs have no stages") }
        let chunk = max(1, rowsPerChunk > 0 ? rowsPerChunk : x.rows), width = stages.down.outFeatures
        return x.data.withUnsafeBufferPointer { xs in
            Matrix(uninitialized: x.rows, width) { out in
                for start in stride(from: 0, to: x.rows, by: chunk) {
                    stages.run(rows: min(chunk, x.rows - start), xs.baseAddress! + start * x.cols, into: out + start * width)
                }
            }
        }
    }

    /// The same in tiles of `tileRows` rows, each tile's products and
    /// activation on one thread (`Stages.tileRows`): a tile's intermediate
    /// is read back while it is still in cache (as far as it fits), the
    /// hidden rows are rounded for down as they are made, and no thread
    /// waits for another between the steps.
    func tiled(_ x: Matrix, _ stages: Stages, tileRows: Int) -> Matrix {
        let tiles = (x.rows + tileRows - 1) / tileRows, width = stages.down.outFeatures
        return x.data.withUnsafeBufferPointer { xs in
            Matrix(uninitialized: x.rows, width) { out in
                parallelFor(chunks: tiles) { range in
                    let buffers = Stages.TileBuffers(stages, rows: tileRows)
                    for tile in range {
                        let first = tile * tileRows
                        stages.run(tile: min(tileRows, x.rows - first), xs.baseAddress! + first * x.cols, buffers, into: out + first * width)
                    }
                }
            }
        }
    }

    /// Rows per chunk for `rows` tokens: chunks of equal size whose
    /// intermediate stays within `intermediateBudget`; all rows at once for a
    /// mixture of experts, which gathers its own rows per expert, and for
    /// parallel MLPs, each of which chunks its own rows.
    func rowsPerChunk(_ rows: Int) -> Int {
        guard let width = stages?.first.outFeatures, width > 0 else { return rows }
        let limit = max(Self.intermediateBudget / (width * MemoryLayout<Float>.size), Self.minimumRowsPerThread * EngineThreads.count)
        guard rows > limit else { return rows }
        let chunks = (rows + limit - 1) / limit
        return (rows + chunks - 1) / chunks
    }

    /// The steps of every MLP but a mixture or parallel MLPs; nil for those.
    var stages: Stages? {
        switch self {
        case .gated(let gateUp, let down, let activation):
            let width = gateUp.outFeatures / 2
            return Stages(first: gateUp, down: down, inPlace: false) { both, row in
                activation.applyGated(gate: both, up: both + width, into: row, count: width)
            }
        case .sparseGated(let gateUp, let down, let activation, let multiplier):
            let width = gateUp.outFeatures / 2
            return Stages(first: gateUp, down: down, inPlace: false) { both, row in
                FeedForward.cutGaussianTopK(both, count: width, stdMultiplier: multiplier)
                activation.applyGated(gate: both, up: both + width, into: row, count: width)
            }
        case .clampedGated(let gateUp, let down, let activation):
            return Stages(first: gateUp, down: down, inPlace: false) { both, row in
                activation.applyInterleaved(both, into: row, count: down.inFeatures)
            }
        case .plain(let up, let down, let activation):
            return Stages(first: up, down: down, inPlace: true) { wide, row in
                activation.apply(inPlace: wide, count: up.outFeatures)
                if row != wide { row.update(from: wide, count: up.outFeatures) }
            }
        case .hiddenNormed(let inner, let norm):
            guard let stages = inner.stages else { return nil }
            return Stages(first: stages.first, down: stages.down, inPlace: stages.inPlace) { wide, row in
                stages.hiddenRow(wide, row)
                norm.normalize(inPlace: row, count: stages.down.inFeatures)
            }
        case .mixture, .parallel, .productKeys, .carriedRouter, .rwkvChannelMixing:
            return nil
        }
    }

    /// relu(g − (mean + std · multiplier)) over the `count` values at `gate`,
    /// in place: mean and population standard deviation accumulated in
    /// float64 and rounded to float32, the cut formed in float32, as torch's
    /// `mean`, `std(unbiased=False)` and their float32 sum.
    static func cutGaussianTopK(_ gate: UnsafeMutablePointer<Float>, count: Int, stdMultiplier: Float) {
        var sum = 0.0
        for i in 0..<count { sum += Double(gate[i]) }
        let mean = sum / Double(count)
        var squares = 0.0
        for i in 0..<count { squares += (Double(gate[i]) - mean) * (Double(gate[i]) - mean) }
        let std = Float((squares / Double(count)).squareRoot())
        let cut = Float(mean) + std * stdMultiplier
        for i in 0..<count { gate[i] = max(gate[i] - cut, 0) }
    }

    /// The standard normal's quantile of `p` as torch's
    /// `Normal(0, 1).icdf` gives it in float32: erfinv(2p − 1) · √2 (+∞ at 1).
    public static func standardNormalQuantile(_ p: Float) -> Float {
        let y = 2 * p - 1
        if y == 1 { return .infinity }
        return Float(inverseErf(Double(y))) * Float(2.0.squareRoot())
    }

    /// erf⁻¹(y) for −1 < y < 1: Giles' single-precision approximation,
    /// refined by Newton steps on erf.
    static func inverseErf(_ y: Double) -> Double {
        let w = -log((1 - y) * (1 + y))
        var x: Double
        if w < 5 {
            let t = w - 2.5
            var p = 2.81022636e-08
            for c in [3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941] {
                p = c + p * t
            }
            x = p * y
        } else {
            let t = w.squareRoot() - 3
            var p = -0.000200214257
            for c in [0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047, 1.00167406, 2.83297682] {
                p = c + p * t
            }
            x = p * y
        }
        for _ in 0..<3 {
            x -= (erf(x) - y) / (2 / Double.pi.squareRoot() * exp(-x * x))
        }
        return x
    }

    /// An MLP as three steps: `first` (gate|up, or up), the hidden row
    /// `hiddenRow(firstRow, into)` makes of each row of its output (which it
    /// may overwrite), and `down`. `inPlace`: the hidden row is as wide as
    /// the first's and `into` may be `firstRow` itself.
    struct Stages {
        let first: Linear
        let down: Linear
        let inPlace: Bool
        let hiddenRow: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void

        /// Rows per tile when `rows` rows run in tiles, one thread each; nil
        /// when they run better as whole products split across the threads:
        /// weights a product must lay out again for its tile (float32
        /// kernels), or too few rows to give every thread a tile.
        func tileRows(for rows: Int) -> Int? {
            guard first.runsRowTiles, down.runsRowTiles else { return nil }
            let tileRows = min(FeedForward.maximumTileRows, max(FeedForward.minimumTileRows,
                FeedForward.tileBytes / max(1, first.outFeatures * MemoryLayout<Float>.size)))
            return rows >= tileRows * EngineThreads.count ? tileRows : nil
        }

        /// The three steps over `rows` rows at `x` into `out`, each step's
        /// rows split across the engine's threads; the intermediates are
        /// held at full size for these rows (one, when `inPlace`).
        func run(rows: Int, _ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>) {
            var wide = Matrix(uninitialized: rows, first.outFeatures) { first.apply(rows: rows, x, into: $0) }
            let hidden = wide.data.withUnsafeMutableBufferPointer { wideRows in
                let wide = wideRows.baseAddress!
                let made = { (hidden: UnsafeMutablePointer<Float>) in
                    parallelFor(chunks: rows, minimumChunk: 16) { range in
                        for r in range { hiddenRow(wide + r * first.outFeatures, hidden + r * down.inFeatures) }
                    }
                }
                guard !inPlace else { made(wide); return nil as Matrix? }
                return Matrix(uninitialized: rows, down.inFeatures, made)
            }
            down.apply(rows: rows, (hidden ?? wide).data, into: out)
        }

        /// One thread's buffers for tiles of up to `rows` rows.
        final class TileBuffers {
            let input: ProductRows
            let hidden: ProductRows
            let wide: UnsafeMutablePointer<Float>
            let row: UnsafeMutablePointer<Float>

            init(_ stages: Stages, rows: Int) {
                input = ProductRows(rows: rows, width: stages.first.inFeatures, arithmetic: stages.first.arithmetic)
                hidden = ProductRows(rows: rows, width: stages.down.inFeatures, arithmetic: stages.down.arithmetic)
                wide = .allocate(capacity: rows * stages.first.outFeatures)
                row = .allocate(capacity: stages.down.inFeatures)
            }

            deinit {
                wide.deallocate()
                row.deallocate()
            }
        }

        /// The three steps over one tile of `rows` rows at `x` into `out`, on
        /// the calling thread: each hidden row rounded for `down` as it is made.
        func run(tile rows: Int, _ x: UnsafePointer<Float>, _ buffers: TileBuffers, into out: UnsafeMutablePointer<Float>) {
            buffers.input.set(rows: 0, count: rows, from: x, stride: first.inFeatures)
            first.applyOnThisThread(buffers.input, rows: rows, into: buffers.wide)
            for r in 0..<rows {
                hiddenRow(buffers.wide + r * first.outFeatures, buffers.row)
                buffers.hidden.set(row: r, from: buffers.row)
            }
            down.applyOnThisThread(buffers.hidden, rows: rows, into: out)
        }
    }
}

/// One of `FeedForward.parallel`'s MLPs: out(mlp(in(x))), either norm
/// optional.
public struct FeedForwardPart: Sendable {
    public let inputNorm: Normalization?
    public let feedForward: FeedForward
    public let outputNorm: Normalization?
    /// A mixture's router reads the part's input x itself, not in(x) as its
    /// experts do (Gemma 4's router, which normalises x its own way:
    /// `MixtureOfExperts.routerNorm`).
    public let routesRawInput: Bool

    public init(inputNorm: Normalization?, feedForward: FeedForward, outputNorm: Normalization?, routesRawInput: Bool = false) {
        if routesRawInput, case .mixture = feedForward {} else { precondition(!routesRawInput) }
        self.inputNorm = inputNorm
        self.feedForward = feedForward
        self.outputNorm = outputNorm
        self.routesRawInput = routesRawInput
    }

    public func callAsFunction(_ x: Matrix) -> Matrix {
        let normed = inputNorm.map { $0(x) } ?? x
        let out: Matrix
        if routesRawInput, case .mixture(let experts) = feedForward {
            out = experts(normed, routerInput: x)
        } else {
            out = feedForward(normed)
        }
        return outputNorm.map { $0(out) } ?? out
    }
}
