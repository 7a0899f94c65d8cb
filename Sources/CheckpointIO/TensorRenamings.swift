import DroptraceSupport
import Foundation

/// transformers' renaming of a checkpoint's tensors on load (the
/// `WeightRenaming` rules of its conversion mapping, `conversion_mapping.py`),
/// for the model types whose checkpoints, as released and as transformers
/// saves them, store names only those rules turn into the modules' names
/// (the generated table `transformers`): EXAONE 3's
/// `transformer.h.<i>.attn.attention.q_proj.weight` is LlamaForCausalLM's
/// `model.layers.<i>.self_attn.q_proj.weight`. Checkpoint reads such a
/// checkpoint's tensors under the renamed names; errors name both.
enum TensorRenamings {
    /// For `names`, the renamed name of each one the rules of `modelType`
    /// change, mapped to the stored name; nil when the type has no rules.
    /// - Throws: `DroptraceError` naming `path` when two stored tensors are
    ///   renamed to one name, or one to a name another is stored under
    ///   (transformers would load one of them over the other).
    static func storedNames(of names: [String], modelType: String, path: String) throws -> [String: String]? {
        guard let rules = compiled[modelType] else { return nil }
        let stored = Set(names)
        var renamedFrom: [String: String] = [:]
        for name in names.sorted() {
            let renamed = rename(name, rules)
            guard renamed != name else { continue }
            if let other = renamedFrom[renamed] ?? (stored.contains(renamed) ? renamed : nil) {
                throw DroptraceError(
                    "tensors '\(other.forErrorMessage)' and '\(name.forErrorMessage)' are both read as '\(renamed.forErrorMessage)' by transformers' renaming of \(modelType) checkpoints; keep one of the two",
                    path: path)
            }
            renamedFrom[renamed] = name
        }
        return renamedFrom
    }

    /// `name` through every rule in order: the first occurrence of the rule's
    /// first match replaced by its replacement (`WeightTransform.rename_source_key`).
    static func rename(_ name: String, _ rules: [(pattern: NSRegularExpression, replacement: String)]) -> String {
        rules.reduce(name) { name, rule in
            guard let match = rule.pattern.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)),
                  let range = Range(match.range, in: name),
                  let first = name.range(of: String(name[range])) else { return name }
            return name.replacingCharacters(in: first, with: rule.replacement)
        }
    }

    /// `transformers`, compiled.
    private static let compiled: [String: [(pattern: NSRegularExpression, replacement: String)]] = transformers.mapValues { rules in
        rules.map { (try! NSRegularExpression(pattern: $0.pattern), $0.replacement) }
    }
}
