// JSON-aware mutations for config.json and tokenizer.json: a value anywhere
// in the document replaced by one that breaks naive arithmetic or typing, a
// key dropped or added, a regex replaced by a hostile one.

import Foundation

/// Literals JSONSerialization cannot write (out of Int64/Double range, deep
/// nesting) go in as placeholder strings and are swapped in after writing.
private let rawLiterals = [
    "18446744073709551616", "9223372036854775808", "99999999999999999999999", "1e400", "-1e400", "-0",
    "1.0000000000000002", String(repeating: "[", count: 600) + String(repeating: "]", count: 600),
]
private let placeholder = "\u{1}raw"

/// Numbers, wrong types and NaN-ish strings.
private let hostileValues: [Any] = [
    0, -1, 1, 2, 3, Int.max, Int.min, 4_294_967_296, 1 << 40, 1e300, -1e300, 0.5, 1.5, 2.0, 1e-300, -0.0,
    "NaN", "Infinity", "-Infinity", "-1", "", "x", "llama", NSNull(), true, false, [Any](), [0], [String: Any](),
    ["type": "linear", "factor": 0], "\u{0}",
] + rawLiterals.indices.map { "\(placeholder)\($0)" }

/// Keys droptrace's architectures and tokenizer read, for adding where absent.
private let addedKeys = [
    "head_dim", "num_key_value_heads", "rope_scaling", "partial_rotary_factor", "rotary_pct", "sliding_window",
    "layer_types", "tie_word_embeddings", "drop_attn_list", "drop_mlp_list", "num_local_experts",
    "num_experts_per_tok", "vocab_size", "max_position_embeddings", "n_positions", "n_embd", "n_head", "n_layer",
    "hidden_act", "hidden_activation", "rope_theta", "final_logit_softcapping", "attn_logit_softcapping",
    "query_pre_attn_scalar", "use_parallel_residual", "intermediate_size", "n_inner", "num_hidden_layers",
    "byte_fallback", "fuse_unk", "unk_token", "ignore_merges", "continuing_subword_prefix", "end_of_word_suffix",
    "dropout", "add_prefix_space", "trim_offsets", "use_regex", "prepend_scheme", "split",
]

/// Regexes that are invalid, catastrophic or far outside what tokenizers use.
private let hostileRegexes = [
    "(a*)*b", "(a|a)*$", "[", "(", "\\", "(?<=x)", "(?<!\\s)", "\\p{Foo}", "a{99999999}", "a{2,1}", "\\u{110000}",
    "(?i)", "", "$", "^", "(?:)*", "\\d+|\\p{L}+|[^\\s\\p{L}\\p{N}]+", "(((((((((((((((((((((((((((((((x)))))))))))))))))))))))))))))))",
    ".*.*.*.*.*.*=.*", "\\s+(?!\\S)|\\s+", "[\\x{0}-\\x{10FFFF}]", "\\b", "(?=a)*", "\\1", "[a-\\d]",
]

private enum Step { case key(String), index(Int) }

private func paths(_ value: Any, _ prefix: [Step], _ into: inout [[Step]]) {
    into.append(prefix)
    if let object = value as? [String: Any] {
        for (key, child) in object { paths(child, prefix + [.key(key)], &into) }
    } else if let array = value as? [Any] {
        for (index, child) in array.enumerated() { paths(child, prefix + [.index(index)], &into) }
    }
}

/// `value` with the node at `path` replaced by `change(node)`, or removed where it returns nil.
private func rewrite(_ value: Any, _ path: ArraySlice<Step>, _ change: @escaping (Any) -> Any?) -> Any? {
    guard let step = path.first else { return change(value) }
    switch step {
    case .key(let key):
        guard var object = value as? [String: Any], let child = object[key] else { return value }
        object[key] = rewrite(child, path.dropFirst(), change)
        return object
    case .index(let index):
        guard var array = value as? [Any], array.indices.contains(index) else { return value }
        if let new = rewrite(array[index], path.dropFirst(), change) { array[index] = new } else { array.remove(at: index) }
        return array
    }
}

/// One JSON-aware mutation; false when `bytes` is not JSON (the caller then mutates bytes).
/// `modelTypes` are the values `model_type` is switched among.
func mutateJSON(_ bytes: inout [UInt8], modelTypes: [String], _ random: inout Random) -> Bool {
    guard let document = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]) else { return false }
    var all: [[Step]] = []
    paths(document, [], &all)
    let op = random.below(10)
    // Mostly the structure (normalizer, pre_tokenizer, decoder, added tokens,
    // model settings) rather than the thousands of vocab and merges entries.
    let structural = all.filter { !$0.dropLast().contains { if case .key(let key) = $0 { return key == "vocab" || key == "merges" }; return false } }
    let pool = random.below(4) == 0 || structural.isEmpty ? all : structural
    var path = pool[random.below(pool.count)]
    // Aim ops 2 and 3 mostly at regexes and model_type when the document has any.
    let aimed = all.filter { if case .key(let key)? = $0.last { return key == "Regex" || key == "model_type" }; return false }
    if (2...3).contains(op), !aimed.isEmpty, random.below(3) > 0 { path = aimed[random.below(aimed.count)] }
    let parentKey: String? = { if case .key(let key)? = path.last { return key }; return nil }()
    let value = hostileValues[random.below(hostileValues.count)]
    let key = addedKeys[random.below(addedKeys.count)]
    let regex = hostileRegexes[random.below(hostileRegexes.count)]
    let modelType = modelTypes.isEmpty ? "llama" : modelTypes[random.below(modelTypes.count)]
    let change: (Any) -> Any?
    switch op {
    case 0: // drop the node
        change = { _ in nil }
    case 1: // add a key droptrace reads
        change = { node in
            guard var object = node as? [String: Any] else { return value }
            object[key] = value
            return object
        }
    case 2: // switch model_type, or a hostile regex in place of a string
        change = { node in parentKey == "model_type" ? modelType : node is String ? regex : node }
    case 3: // a hostile fragment appended to a regex or string
        change = { node in (node as? String).map { $0 + regex } ?? node }
    default: // a hostile value
        change = { _ in value }
    }
    guard let mutated = rewrite(document, path[...], change),
        let data = try? JSONSerialization.data(withJSONObject: mutated, options: [.fragmentsAllowed, .withoutEscapingSlashes]),
        var text = String(data: data, encoding: .utf8)
    else { return false }
    for (index, literal) in rawLiterals.enumerated() {
        text = text.replacingOccurrences(of: "\"\\u0001raw\(index)\"", with: literal)
    }
    bytes = Array(text.utf8)
    return true
}
