import DroptraceSupport
import Foundation

/// transformers' renaming of a checkpoint's tensors on load (the
/// `WeightRenaming` rules of its conversion mapping, `conversion_mapping.py`),
/// for the model types whose checkpoints, as released and as transformers
/// saves them, store names only those rules turn into the modules' names
/// (the generated table `transformers`): EXAONE 3's
/// `transformer.h.<i>.attn.attention.q_proj.weight` is LlamaForCausalLM's
/// `model.layers.<i>.self_attn.q_proj.weight`; Ovis2.5's `llm.model.` is
/// `model.language_model.`. The rules are those transformers collects for the
/// class it loads the model type as: keyed by a class name or a model type,
/// the root model's and its sub-models' (LLaVA-OneVision-1.5's vision tower's
/// scoped to the names under it), in the order it applies them; a group of
/// rules (`GroupWeightRename`: Kimi K2.5's vision tower's norm0 → norm1,
/// norm1 → norm2) renames by its later rules only once a name has matched its
/// first. Checkpoint
/// reads such a checkpoint's tensors under the renamed names; errors name both.
enum TensorRenamings {
    /// For `names`, the renamed name of each one the rules of `modelType`
    /// change, mapped to the stored name; nil when the type has no rules.
    /// - Throws: `DroptraceError` naming `path` when two stored tensors are
    ///   renamed to one name, or one to a name another is stored under
    ///   (transformers would load one of them over the other).
    static func storedNames(of names: [String], modelType: String, path: String) throws -> [String: String]? {
        guard let rules = compiled[modelType] else { return nil }
        let stored = Set(names), collapses = pairCollapsing.contains(modelType), kept = compiledKept[modelType] ?? []
        var renamedFrom: [String: String] = [:], guardsMatched: Set<Int> = []
        // In sorted order, as transformers reads them (a group's guard must match before its other rules act).
        for name in names.sorted() {
            let renamed = rename(collapses ? collapsingPair(name) : name, rules, guardsMatched: &guardsMatched)
            guard renamed != name else { continue }
            // A parameter's own name the rules would rename to no parameter: transformers keeps it
            // (DeepSeek-V4's `model.norm.weight`, which its `.norm.` → `.kv_norm.` rule matches).
            if kept.contains(where: { $0.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil }) { continue }
            if let other = renamedFrom[renamed] ?? (stored.contains(renamed) ? renamed : nil) {
                throw DroptraceError(
                    "tensors '\(other.forErrorMessage)' and '\(name.forErrorMessage)' are both read as '\(renamed.forErrorMessage)' by transformers' renaming of \(modelType) checkpoints; keep one of the two",
                    path: path)
            }
            renamedFrom[renamed] = name
        }
        return renamedFrom
    }

    /// A rule of `transformers` or `groupRules`, compiled: its patterns, each
    /// with its replacement (one; a group's pairs, the first its guard).
    struct Rule {
        let pairs: [(pattern: NSRegularExpression, replacement: String)]
        let scope: [String]

        init(pattern: NSRegularExpression, replacement: String, scope: [String]) {
            self.init(pairs: [(pattern, replacement)], scope: scope)
        }

        init(pairs: [(pattern: NSRegularExpression, replacement: String)], scope: [String]) {
            self.pairs = pairs
            self.scope = scope
        }
    }

    /// `name` through every rule in order, each group's guard taken as
    /// matched (as in the names transformers saves and the releases).
    static func rename(_ name: String, _ rules: [Rule]) -> String {
        var guardsMatched = Set(rules.indices)
        return rename(name, rules, guardsMatched: &guardsMatched)
    }

    /// `name` through every rule in order (`WeightTransform.rename_source_key`):
    /// a scoped rule reads the name after the first of its prefixes it begins
    /// with (none: the rule leaves it), the whole name otherwise; of its
    /// patterns, the one matching first (the earlier at a tie, as in a regular
    /// expression's alternation) acts: the first occurrence of the text its
    /// match covers is replaced by its replacement, `\1` there standing for the
    /// match's first group, and the prefix put back. A group's guard adds the
    /// rule's index to `guardsMatched`; its other pairs act only after that
    /// (`GroupWeightRename`).
    static func rename(_ name: String, _ rules: [Rule], guardsMatched: inout Set<Int>) -> String {
        var name = name
        for (index, rule) in rules.enumerated() {
            var prefix = ""
            if !rule.scope.isEmpty {
                guard let scope = rule.scope.first(where: { name.hasPrefix($0) }) else { continue }
                prefix = scope
            }
            let key = String(name.dropFirst(prefix.count))
            let matches = rule.pairs.enumerated().compactMap { pair in
                pair.element.pattern.firstMatch(in: key, range: NSRange(key.startIndex..., in: key)).map { (pair.offset, $0) }
            }
            guard let (which, match) = matches.min(by: { $0.1.range.location < $1.1.range.location }),
                  let range = Range(match.range, in: key) else { continue }
            if rule.pairs.count > 1 {
                if which == 0 { guardsMatched.insert(index) } else if !guardsMatched.contains(index) { continue }
            }
            var replacement = rule.pairs[which].replacement
            if replacement.contains("\\1"), match.numberOfRanges > 1, let group = Range(match.range(at: 1), in: key) {
                replacement = replacement.replacingOccurrences(of: "\\1", with: key[group])
            }
            let matched = String(key[range])
            // Python's str.replace(old, new, 1): an empty match puts the replacement first.
            let first = matched.isEmpty ? key.startIndex..<key.startIndex : key.range(of: matched)!
            name = prefix + key.replacingCharacters(in: first, with: replacement)
        }
        return name
    }

    /// transformers' `LayerPairCollapse` (Dory's released layout, each decoder
    /// layer stored as an attention block `layers.<2i>.mixer.` and an MLP block
    /// `layers.<2i+1>.mixer.`, the rates as `attn_alpha` / `mlp_alpha`): the
    /// first match of `layers.<n>.(mixer|attn_alpha|mlp_alpha)` becomes
    /// `layers.<n / 2>.` followed by `self_attn` (n even) or `mlp` (n odd),
    /// `lambda_1` or `lambda_2`.
    static func collapsingPair(_ name: String) -> String {
        guard let match = pairPattern.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)),
              let whole = Range(match.range, in: name), let digits = Range(match.range(at: 1), in: name),
              let part = Range(match.range(at: 2), in: name), let index = Int(name[digits])
        else { return name }
        let module = ["attn_alpha": "lambda_1", "mlp_alpha": "lambda_2"][String(name[part])] ?? (index % 2 == 0 ? "self_attn" : "mlp")
        return name.replacingCharacters(in: whole, with: "layers.\(index / 2).\(module)")
    }

    private static let pairPattern = try! NSRegularExpression(pattern: #"layers\.(\d+)\.(mixer|attn_alpha|mlp_alpha)(?=\.|$)"#)

    /// `transformers` with `groupRules` at their positions, compiled.
    static let compiled: [String: [Rule]] = transformers.reduce(into: [:]) { table, entry in
        var rules = entry.value.map { Rule(pattern: try! NSRegularExpression(pattern: $0.pattern), replacement: $0.replacement, scope: $0.scope) }
        for group in groupRules[entry.key] ?? [] {
            rules.insert(Rule(pairs: group.pairs.map { (try! NSRegularExpression(pattern: $0.pattern), $0.replacement) }, scope: group.scope), at: group.position)
        }
        table[entry.key] = rules
    }
    private static let compiledKept: [String: [NSRegularExpression]] = keptAsStored.mapValues { patterns in
        patterns.map { try! NSRegularExpression(pattern: $0) }
    }
}
