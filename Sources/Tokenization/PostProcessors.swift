/// One step of the `post_processor` section: adds special tokens around the
/// encoded sequence (only when asked to).
protocol PostProcessor: Sendable {
    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int]
}

/// ByteLevel as a post-processor only trims offsets; ids are untouched.
struct IdentityPostProcessor: PostProcessor {
    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int] { ids }
}

/// TemplateProcessing's single-sequence template, e.g. `<bos> $A`.
struct TemplatePostProcessor: PostProcessor {
    enum Piece: Sendable {
        case specialTokens([Int])
        case sequence
    }
    let pieces: [Piece]

    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int] {
        var output: [Int] = []
        output.reserveCapacity(ids.count + pieces.count)
        for piece in pieces {
            switch piece {
            case .sequence: output.append(contentsOf: ids)
            case .specialTokens(let special): if addSpecialTokens { output.append(contentsOf: special) }
            }
        }
        return output
    }
}

/// RobertaProcessing and BertProcessing: `cls $A sep`.
struct SurroundingPostProcessor: PostProcessor {
    let first: Int
    let last: Int

    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int] {
        addSpecialTokens ? [first] + ids + [last] : ids
    }
}

struct SequencePostProcessor: PostProcessor {
    let steps: [PostProcessor]

    func process(_ ids: [Int], addSpecialTokens: Bool) -> [Int] {
        steps.reduce(ids) { partial, step in step.process(partial, addSpecialTokens: addSpecialTokens) }
    }
}
