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
/// scoped to the names under it), in the order it applies them. Checkpoint
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
        var renamedFrom: [String: String] = [:]
        for name in names.sorted() {
            let renamed = rename(collapses ? collapsingPair(name) : name, rules)
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

    /// A rule of `transformers`, compiled.
    struct Rule {
        let pattern: NSRegularExpression
        let replacement: String
        let scope: [String]
    }

    /// `name` through every rule in order (`WeightTransform.rename_source_key`):
    /// a scoped rule reads the name after the first of its prefixes it begins
    /// with (none: the rule leaves it), the whole name otherwise; the first
    /// occurrence of the text its first match covers is replaced by its
    /// replacement, `\1` there standing for the match's first group, and the
    /// prefix put back.
    static func rename(_ name: String, _ rules: [Rule]) -> String {
        rules.reduce(name) { name, rule in
            var prefix = ""
            if !rule.scope.isEmpty {
                guard let scope = rule.scope.first(where: { name.hasPrefix($0) }) else { return name }
                prefix = scope
            }
            let key = String(name.dropFirst(prefix.count))
            guard let match = rule.pattern.firstMatch(in: key, range: NSRange(key.startIndex..., in: key)),
                  let range = Range(match.range, in: key) else { return name }
            var replacement = rule.replacement
            if replacement.contains("\\1"), match.numberOfRanges > 1, let group = Range(match.range(at: 1), in: key) {
                replacement = replacement.replacingOccurrences(of: "\\1", with: key[group])
            }
            let matched = String(key[range])
            // Python's str.replace(old, new, 1): an empty match puts the replacement first.
            let first = matched.isEmpty ? key.startIndex..<key.startIndex : key.range(of: matched)!
            return prefix + key.replacingCharacters(in: first, with: replacement)
        }
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

    /// `transformers`, compiled.
    static let compiled: [String: [Rule]] = transformers.mapValues { rules in
        rules.map { Rule(pattern: try! NSRegularExpression(pattern: $0.pattern), replacement: $0.replacement, scope: $0.scope) }
    }
    private static let compiledKept: [String: [NSRegularExpression]] = keptAsStored.mapValues { patterns in
        patterns.map { try! NSRegularExpression(pattern: $0) }
    }
}
