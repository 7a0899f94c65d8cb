/// Which keys of its sequence each query row may attend to, for rows that
/// do not see every earlier key (DeepSeek Sparse Attention's top-k keys;
/// see `causalAttention(keySelection:)`); a row without an entry sees all
/// of them. A selection may hold one choice per row for every head, or one
/// per group of consecutive query heads (`groups`: MiniMax-M3's indexer
/// chooses per indexer head, head h reading group h / (heads / groups)).
public struct KeySelection: Sendable {
    /// Per row and group (row · groups + group), whether each key offset of
    /// its sequence is kept, or nil for all.
    private var kept: [[Bool]?]
    /// The choices each row holds: 1 for all heads, else one per group of heads.
    public let groups: Int

    public init(rows: Int, groups: Int = 1) {
        precondition(groups >= 1)
        self.groups = groups
        kept = Array(repeating: nil, count: rows * groups)
    }

    /// Row `row` (for its heads of group `group`) keeps only the keys at
    /// offsets `keys` of its sequence, all below `length`.
    public mutating func keep(row: Int, group: Int = 0, keys: [Int], length: Int) {
        var flags = [Bool](repeating: false, count: length)
        for key in keys { flags[key] = true }
        kept[row * groups + group] = flags
    }

    /// Whether row `row` (its heads of group `group`) may read the key at offset `key` of its sequence.
    public func keeps(row: Int, group: Int = 0, key: Int) -> Bool {
        guard let flags = kept[row * groups + group] else { return true }
        return key < flags.count && flags[key]
    }

    /// The group of query head `head` of `heads`.
    @inline(__always)
    public func group(ofHead head: Int, heads: Int) -> Int { groups == 1 ? 0 : head / (heads / groups) }

    /// Sets the score of every key `row` may not read to −∞ (the softmax
    /// then gives it no weight): `scores` holds the keys at offsets `keys`
    /// of its sequence, for query head `head` of `heads`.
    public func mask(row: Int, head: Int = 0, heads: Int = 1, scores: UnsafeMutablePointer<Float>, keys: Range<Int>) {
        guard let flags = kept[row * groups + group(ofHead: head, heads: heads)] else { return }
        for (j, key) in keys.enumerated() where !(key < flags.count && flags[key]) { scores[j] = -.infinity }
    }
}
