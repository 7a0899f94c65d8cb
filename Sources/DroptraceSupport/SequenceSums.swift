import Foundation

/// One module type's float64 statistics per calibration sequence s and layer
/// l, each [S][L] (NaN where the module is dropped or absent).
public struct ModuleSequenceSums: Sendable, Codable {
    /// Σ_t cos(x_t, y_t) over the tokens t of sequence s.
    public var cosineSum: [[Double]]
    /// Σ_t arccos(clamp(cos(x_t, y_t), −1, 1)) / π: angular distance in
    /// [0, 1] (Gromov et al., "The Unreasonable Ineffectiveness of the Deeper
    /// Layers"; PruneMe).
    public var angularDistanceSum: [[Double]]
    /// cos(x_t, y_t) at the last token of sequence s (PruneMe's choice).
    public var lastTokenCosine: [[Double]]

    public init(cosineSum: [[Double]], angularDistanceSum: [[Double]], lastTokenCosine: [[Double]]) {
        self.cosineSum = cosineSum
        self.angularDistanceSum = angularDistanceSum
        self.lastTokenCosine = lastTokenCosine
    }

    /// All NaN, [sequences][layers]: what a module never scored holds.
    public init(sequences: Int, layers: Int) {
        let undefined = [[Double]](repeating: [Double](repeating: .nan, count: layers), count: sequences)
        self.init(cosineSum: undefined, angularDistanceSum: undefined, lastTokenCosine: undefined)
    }
}

/// Block-gap totals over all tokens of all sequences, each [L][L]: entry
/// [i][n − 1] is for the block-boundary states h_i and h_{i+n}, NaN where
/// i + n > L.
public struct BlockGapSums: Sendable, Codable {
    /// Σ cos(h_i, h_{i+n}) over every token.
    public var cosineSum: [[Double]]
    /// Σ arccos(clamp(cos, −1, 1)) / π over every token.
    public var angularDistanceSum: [[Double]]
    /// Σ over sequences of the angular distance at each sequence's last token.
    public var lastTokenAngularDistanceSum: [[Double]]

    public init(cosineSum: [[Double]], angularDistanceSum: [[Double]], lastTokenAngularDistanceSum: [[Double]]) {
        self.cosineSum = cosineSum
        self.angularDistanceSum = angularDistanceSum
        self.lastTokenAngularDistanceSum = lastTokenAngularDistanceSum
    }

    /// All NaN, [layers][layers].
    public init(layers: Int) {
        let undefined = [[Double]](repeating: [Double](repeating: .nan, count: layers), count: layers)
        self.init(cosineSum: undefined, angularDistanceSum: undefined, lastTokenAngularDistanceSum: undefined)
    }
}

/// The float64 statistics of one scoring pass from which every mean is
/// derived: per calibration sequence for the modules, totals for the block
/// gaps. Calibration shards scored apart merge into exactly the sums of one
/// pass over all sequences (`merged`), up to the order of additions.
///
/// S = number of sequences, L = number of layers.
public struct SequenceSums: Sendable, Codable {
    /// Tokens of each sequence, [S].
    public var tokens: [Int]
    public var attention: ModuleSequenceSums
    public var mlp: ModuleSequenceSums
    public var block: ModuleSequenceSums
    public var blockGap: BlockGapSums

    /// Names of the module types as in the store ("attention", "mlp", "block").
    public static let moduleNames = ["attention", "mlp", "block"]

    public init(
        tokens: [Int], attention: ModuleSequenceSums, mlp: ModuleSequenceSums, block: ModuleSequenceSums,
        blockGap: BlockGapSums
    ) {
        self.tokens = tokens
        self.attention = attention
        self.mlp = mlp
        self.block = block
        self.blockGap = blockGap
    }

    /// All NaN, for sequences of `tokens` and `layers` layers: filled in by a scoring pass.
    public init(tokens: [Int], layers: Int) {
        let empty = ModuleSequenceSums(sequences: tokens.count, layers: layers)
        self.init(tokens: tokens, attention: empty, mlp: empty, block: empty, blockGap: BlockGapSums(layers: layers))
    }

    public var sequenceCount: Int { tokens.count }
    public var layerCount: Int { blockGap.cosineSum.count }

    /// The module types with their names, in `moduleNames` order.
    public var modules: [(name: String, sums: ModuleSequenceSums)] {
        [("attention", attention), ("mlp", mlp), ("block", block)]
    }

    /// Σ tokens over all sequences, in Float64 (no overflow whatever the counts).
    public var totalTokens: Double { tokens.reduce(0.0) { $0 + Double($1) } }

    /// Per layer, mean cos over all tokens: Σ_s cosineSum[s][l] / Σ_s tokens[s], [L].
    public func meanCosine(_ module: ModuleSequenceSums) -> [Double] {
        let total = totalTokens
        return (0..<layerCount).map { layer in
            module.cosineSum.reduce(0.0) { $0 + $1[layer] } / total
        }
    }

    /// Mean cos(h_i, h_{i+n}) over all tokens, [L][L] as `blockGap`.
    public var blockGapMeanCosine: [[Double]] {
        let total = totalTokens
        return blockGap.cosineSum.map { row in row.map { $0 / total } }
    }

    /// Angular distance arccos(clamp(cosine, −1, 1)) / π, in [0, 1].
    @inline(__always)
    public static func angularDistance(_ cosine: Double) -> Double {
        acos(min(max(cosine, -1), 1)) / Double.pi
    }

    /// Checks that every array has the shape of `tokens` and `layerCount`,
    /// counts are at least 1 (no calibration sequence is empty) and their
    /// total fits in an Int.
    /// - Throws: `DroptraceError` (without a path) saying what is wrong.
    public func validate() throws {
        let (sequences, layers) = (sequenceCount, layerCount)
        if layers < 1 { throw DroptraceError("per-sequence sums have no layers") }
        if let count = tokens.first(where: { $0 < 1 }) {
            throw DroptraceError("per-sequence token count \(count) is negative or zero; every calibration sequence has at least one token")
        }
        var total = 0
        for count in tokens {
            let (sum, overflow) = total.addingReportingOverflow(count)
            if overflow { throw DroptraceError("per-sequence token counts add up to more than \(Int.max)") }
            total = sum
        }
        func check(_ values: [[Double]], rows: Int, _ what: String) throws {
            guard values.count == rows, values.allSatisfy({ $0.count == layers }) else {
                throw DroptraceError("per-sequence \(what) is not [\(rows)][\(layers)]")
            }
        }
        for (name, module) in modules {
            try check(module.cosineSum, rows: sequences, "\(name) cosine sums")
            try check(module.angularDistanceSum, rows: sequences, "\(name) angular distance sums")
            try check(module.lastTokenCosine, rows: sequences, "\(name) last-token cosines")
        }
        try check(blockGap.cosineSum, rows: layers, "block-gap cosine sums")
        try check(blockGap.angularDistanceSum, rows: layers, "block-gap angular distance sums")
        try check(blockGap.lastTokenAngularDistanceSum, rows: layers, "block-gap last-token angular distance sums")
        try checkDomains()
    }

    /// Throws unless every sum is one a pass can give (NaN aside, where
    /// undefined): cosines in [−1, 1] and angular distances in [0, 1], summed
    /// over a sequence's tokens, over all tokens (block gaps) or over the
    /// sequences (last token); with room for rounding.
    private func checkDomains() throws {
        func check(_ values: [[Double]], _ what: String, over count: (Int) -> Int, _ unit: String, signed: Bool) throws {
            for (row, entries) in values.enumerated() {
                let limit = Double(count(row)) * (1 + 1e-6) + 1e-6
                if let bad = entries.first(where: { !$0.isNaN && !((signed ? -limit : -1e-6)...limit).contains($0) }) {
                    let summed = signed ? "cosines in [−1, 1]" : "angular distances in [0, 1]"
                    throw DroptraceError(
                        "per-sequence \(what) holds \(bad) in row \(row), which \(summed) summed over \(count(row)) \(unit) cannot give")
                }
            }
        }
        for (name, module) in modules {
            try check(module.cosineSum, "\(name) cosine sums", over: { tokens[$0] }, "tokens", signed: true)
            try check(module.angularDistanceSum, "\(name) angular distance sums", over: { tokens[$0] }, "tokens", signed: false)
            try check(module.lastTokenCosine, "\(name) last-token cosines", over: { _ in 1 }, "token", signed: true)
        }
        let total = tokens.reduce(0) { $0.addingReportingOverflow($1).partialValue }
        try check(blockGap.cosineSum, "block-gap cosine sums", over: { _ in total }, "tokens", signed: true)
        try check(blockGap.angularDistanceSum, "block-gap angular distance sums", over: { _ in total }, "tokens", signed: false)
        try check(blockGap.lastTokenAngularDistanceSum, "block-gap last-token angular distance sums", over: { _ in sequenceCount },
                  "sequences", signed: false)
    }

    /// The sums of one pass over the sequences of `parts` in the order given:
    /// per-sequence arrays are concatenated, block-gap totals added.
    /// - Throws: `DroptraceError` when `parts` is empty, a part is malformed
    ///   (`validate`) or the parts have different layer counts.
    public static func merged(_ parts: [SequenceSums]) throws -> SequenceSums {
        guard let first = parts.first else { throw DroptraceError("nothing to merge") }
        for part in parts {
            try part.validate()
            if part.layerCount != first.layerCount {
                throw DroptraceError("cannot merge sums of \(part.layerCount) and \(first.layerCount) layers")
            }
        }
        func concatenated(_ column: KeyPath<ModuleSequenceSums, [[Double]]>, _ module: KeyPath<SequenceSums, ModuleSequenceSums>) -> [[Double]] {
            parts.flatMap { $0[keyPath: module][keyPath: column] }
        }
        func module(_ path: KeyPath<SequenceSums, ModuleSequenceSums>) -> ModuleSequenceSums {
            ModuleSequenceSums(
                cosineSum: concatenated(\.cosineSum, path), angularDistanceSum: concatenated(\.angularDistanceSum, path),
                lastTokenCosine: concatenated(\.lastTokenCosine, path))
        }
        func added(_ column: KeyPath<BlockGapSums, [[Double]]>) -> [[Double]] {
            parts.dropFirst().reduce(first.blockGap[keyPath: column]) { total, part in
                zip(total, part.blockGap[keyPath: column]).map { zip($0, $1).map(+) }
            }
        }
        let merged = SequenceSums(
            tokens: parts.flatMap(\.tokens), attention: module(\.attention), mlp: module(\.mlp), block: module(\.block),
            blockGap: BlockGapSums(
                cosineSum: added(\.cosineSum), angularDistanceSum: added(\.angularDistanceSum),
                lastTokenAngularDistanceSum: added(\.lastTokenAngularDistanceSum)))
        try merged.validate()  // the token total of all parts may overflow where each did not
        return merged
    }
}

extension SequenceSums: Equatable {
    /// Equal when every value is, NaNs in the same places counting as equal
    /// (a module never scored is NaN, and must equal its own round trip).
    public static func == (lhs: SequenceSums, rhs: SequenceSums) -> Bool {
        func same(_ a: [[Double]], _ b: [[Double]]) -> Bool {
            a.count == b.count && zip(a, b).allSatisfy { x, y in
                x.count == y.count && zip(x, y).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) }
            }
        }
        func same(_ a: ModuleSequenceSums, _ b: ModuleSequenceSums) -> Bool {
            same(a.cosineSum, b.cosineSum) && same(a.angularDistanceSum, b.angularDistanceSum)
                && same(a.lastTokenCosine, b.lastTokenCosine)
        }
        return lhs.tokens == rhs.tokens && same(lhs.attention, rhs.attention) && same(lhs.mlp, rhs.mlp)
            && same(lhs.block, rhs.block) && same(lhs.blockGap.cosineSum, rhs.blockGap.cosineSum)
            && same(lhs.blockGap.angularDistanceSum, rhs.blockGap.angularDistanceSum)
            && same(lhs.blockGap.lastTokenAngularDistanceSum, rhs.blockGap.lastTokenAngularDistanceSum)
    }
}
