/// A learned bias of every key per key/value head, added to its scaled
/// scores before the softmax, with a cap on how many keys a query sees:
/// where a sequence is longer than `keep`, each query attends only to the
/// `keep` keys of highest bias among those it may see (Doge's dynamic mask
/// attention, transformers' `prepare_dynamic_mask`: the top `keep_window_size`
/// of each row of the causal mask plus the biases, the others masked).
public struct KeyBiases: Sendable {
    /// [rows, kvHeads]: the key of row r carries `values[r * kvHeads + g]` for key/value head g.
    public let values: [Float]
    public let kvHeads: Int
    /// The most keys a query of a sequence longer than this attends to; nil: all.
    public let keep: Int?

    public init(values: [Float], kvHeads: Int, keep: Int?) {
        precondition(kvHeads > 0 && values.count % kvHeads == 0)
        precondition(keep.map { $0 > 0 } ?? true)
        self.values = values
        self.kvHeads = kvHeads
        self.keep = keep
    }

    /// Adds to `scores` (the scores of the keys at offsets `keys` of a
    /// sequence of `length` keys whose first row is `start`) each key's bias
    /// for key/value head `kvHead`, and sets the scores of the keys the
    /// query does not keep to −∞ (the softmax then gives them no weight).
    /// The kept keys are those torch.topk keeps of the query's row of the
    /// mask (the biases, the float32 minimum where the query may not look),
    /// keys of equal bias (repeated tokens' values in the first layer) as its
    /// CPU kernel chooses them (`TorchTopK`).
    public func apply(_ scores: UnsafeMutablePointer<Float>, kvHead: Int, start: Int, length: Int, keys: Range<Int>) {
        let bias = { (key: Int) in values[(start + key) * kvHeads + kvHead] }
        guard let keep, length > keep, keys.count > keep else {
            for (j, key) in keys.enumerated() { scores[j] += bias(key) }
            return
        }
        var row = (0..<length).map { key in (value: keys.contains(key) ? bias(key) : -Float.greatestFiniteMagnitude, index: key) }
        TorchTopK.select(&row, k: keep)
        var kept = [Bool](repeating: false, count: length)
        for entry in row.prefix(keep) { kept[entry.index] = true }
        for (j, key) in keys.enumerated() {
            if kept[key] { scores[j] += bias(key) } else { scores[j] = -.infinity }
        }
    }
}
