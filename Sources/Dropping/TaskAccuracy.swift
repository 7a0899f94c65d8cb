import Architectures
import DroptraceSupport
import Foundation
import Tokenization

/// A zero-shot multiple-choice item, as HellaSwag/ARC/PIQA-style task files
/// hold them: `{"context": "...", "choices": [" a", " b"], "label": 0}`.
public struct MultipleChoiceItem: Sendable, Equatable {
    public var context: String
    public var choices: [String]
    public var label: Int

    /// Reads a JSONL task file; errors name the file and line.
    public static func load(_ url: URL) throws -> [MultipleChoiceItem] {
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw DroptraceError("task file not found", path: url.path)
        }
        let data = try RegularFile.contents(path: url.path)
        var items: [MultipleChoiceItem] = []
        for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let text = line.trimmingCharacters(in: .whitespaces)
            if text.isEmpty { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
                throw DroptraceError("line \(number + 1): not a JSON object", path: url.path)
            }
            guard let context = object["context"] as? String, let choices = object["choices"] as? [String],
                  let label = (object["label"] as? NSNumber)?.intValue
            else {
                throw DroptraceError("line \(number + 1): needs \"context\" (string), \"choices\" (list of strings) and \"label\" (integer)", path: url.path)
            }
            guard choices.count >= 2, (0..<choices.count).contains(label) else {
                throw DroptraceError("line \(number + 1): needs two or more choices and a label among them", path: url.path)
            }
            items.append(MultipleChoiceItem(context: context, choices: choices, label: label))
        }
        guard !items.isEmpty else { throw DroptraceError("no task items", path: url.path) }
        return items
    }
}

/// Accuracy the way lm-evaluation-harness scores multiple choice: each
/// choice's summed log-likelihood given the context; acc picks the highest,
/// acc_norm the highest per UTF-8 byte of the choice.
public struct TaskScores: Sendable, Equatable {
    public var accuracy: Double
    public var normalizedAccuracy: Double
    /// Per item, per choice.
    public var logLikelihoods: [[Double]]

    public static func evaluate(
        model: any LanguageModel, plan: DropPlan, tokenizer: Tokenizer, items: [MultipleChoiceItem], sourcePath: String
    ) throws -> TaskScores {
        // Continuation tokens are those of context+choice past the context's own
        // encoding, so a token spanning the boundary belongs to the choice.
        var wholes: [[Int]] = []
        var continuations: [Range<Int>] = []
        for (number, item) in items.enumerated() {
            let context = try tokenizer.encode(item.context)
            for choice in item.choices {
                let whole = try tokenizer.encode(item.context + choice)
                guard whole.count > context.count, Array(whole.prefix(context.count)) == context else {
                    throw DroptraceError(
                        "item \(number + 1): the choice \(choice.debugDescription) does not extend the context's tokens",
                        path: sourcePath)
                }
                guard whole.count - 1 <= model.maxPositions else {
                    throw DroptraceError(
                        "item \(number + 1) is longer than the model's \(model.maxPositions) positions", path: sourcePath)
                }
                wholes.append(whole)
                continuations.append(context.count..<whole.count)
            }
        }
        // One pass over every choice; row p of a sequence predicts token p + 1.
        let batch = TokenBatch(sequences: wholes.map { Array($0.dropLast()) })
        let hidden = try LayerwiseForward(model: model, plan: plan).run(batch)
        var targets = [Int](repeating: -1, count: batch.tokenCount)
        for (sequence, range) in batch.sequences.enumerated() {
            for position in continuations[sequence] { targets[range.lowerBound + position - 1] = wholes[sequence][position] }
        }
        let logProbabilities = try model.head().logProbabilities(hidden, targets: targets)

        var logLikelihoods: [[Double]] = []
        var correct = 0, correctNormalized = 0
        var sequence = 0
        for item in items {
            var perChoice: [Double] = []
            for _ in item.choices {
                let start = batch.sequences[sequence].lowerBound
                perChoice.append(continuations[sequence].reduce(0.0) { $0 + logProbabilities[start + $1 - 1] })
                sequence += 1
            }
            let normalized = zip(perChoice, item.choices).map { $0 / Double($1.utf8.count) }
            if argmax(perChoice) == item.label { correct += 1 }
            if argmax(normalized) == item.label { correctNormalized += 1 }
            logLikelihoods.append(perChoice)
        }
        return TaskScores(
            accuracy: Double(correct) / Double(items.count),
            normalizedAccuracy: Double(correctNormalized) / Double(items.count), logLikelihoods: logLikelihoods)
    }

    private static func argmax(_ values: [Double]) -> Int {
        values.indices.max { values[$0] < values[$1] || (values[$0] == values[$1] && $0 > $1) }!
    }
}
