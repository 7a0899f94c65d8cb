/// Which keys of its sequence each query row may attend to, for rows that
/// do not see every earlier key (DeepSeek Sparse Attention's top-k keys;
/// see `causalAttention(keySelection:)`); a row without an entry sees all
/// of them.
public struct KeySelection: Sendable {
    /// Per row, whether each key offset of its sequence is kept, or nil for all.
    private var kept: [[Bool]?]

    public init(rows: Int) { kept = Array(repeating: nil, count: rows) }

    /// Row `row` keeps only the keys at offsets `keys` of its sequence, all
    /// below `length`.
    public mutating func keep(row: Int, keys: [Int], length: Int) {
        var flags = [Bool](repeating: false, count: length)
        for key in keys { flags[key] = true }
        kept[row] = flags
    }

    /// Whether row `row` may read the key at offset `key` of its sequence.
    public func keeps(row: Int, key: Int) -> Bool {
        guard let flags = kept[row] else { return true }
        return key < flags.count && flags[key]
    }

    /// Sets the score of every key `row` may not read to −∞ (the softmax
    /// then gives it no weight): `scores` holds the keys at offsets `keys`
    /// of its sequence.
    public func mask(row: Int, scores: UnsafeMutablePointer<Float>, keys: Range<Int>) {
        guard let flags = kept[row] else { return }
        for (j, key) in keys.enumerated() where !(key < flags.count && flags[key]) { scores[j] = -.infinity }
    }
}
