/// Calibration sequences stacked into one matrix of rows, one row per token.
///
/// Every layer runs all tokens of all sequences through each projection in a
/// single GEMM; only attention needs to know where sequences begin and end.
public struct TokenBatch: Sendable {
    public let tokenIDs: [Int]
    /// Row ranges of the individual sequences.
    public let sequences: [Range<Int>]
    /// Each row's position within its own sequence.
    public let positions: [Int]

    public init(sequences: [[Int]]) {
        var ids: [Int] = []
        var ranges: [Range<Int>] = []
        var positions: [Int] = []
        for sequence in sequences {
            ranges.append(ids.count..<(ids.count + sequence.count))
            ids.append(contentsOf: sequence)
            positions.append(contentsOf: 0..<sequence.count)
        }
        tokenIDs = ids
        self.sequences = ranges
        self.positions = positions
    }

    /// One token at an absolute position (incremental decoding).
    public init(token: Int, position: Int) {
        tokenIDs = [token]
        sequences = [0..<1]
        positions = [position]
    }

    /// The same rows, positions and sequences with each token id mapped by `transform`.
    public func mappingTokens(_ transform: (Int) -> Int) -> TokenBatch {
        TokenBatch(tokenIDs: tokenIDs.map(transform), sequences: sequences, positions: positions)
    }

    private init(tokenIDs: [Int], sequences: [Range<Int>], positions: [Int]) {
        (self.tokenIDs, self.sequences, self.positions) = (tokenIDs, sequences, positions)
    }

    public var tokenCount: Int { tokenIDs.count }
    public var longestSequence: Int { sequences.map(\.count).max() ?? 0 }
}
