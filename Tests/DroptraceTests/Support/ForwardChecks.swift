import Architectures
import CheckpointIO
@testable import Dropping
import Foundation
import Scoring
import TensorEngine
import Testing

/// Every score of fixture `name` (JSONL and text calibration, float32
/// compute) within `tolerance` of transformers' in reference.json.
func expectScoresMatchTransformers(_ name: String, tolerance: Double = 1e-7, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(name)))
    for (kind, sequences) in [("jsonl", FixtureFiles.jsonlSequences()), ("text", FixtureFiles.textInputIDs(name))] {
        let scores = try ImportanceScorer(model: model).score(sequences, calibrationPath: "fixture")
        let reference = try #require(FixtureFiles.scores(name, kind, "float32_compute"), sourceLocation: sourceLocation)
        let difference = reference.maxDifference(
            attention: scores.attention, mlp: scores.mlp, block: scores.block, blockGap: scores.blockGap)
        #expect(difference <= tolerance, "\(name) \(kind): max |droptrace − transformers| = \(difference)", sourceLocation: sourceLocation)
    }
}

/// Key/value-cache decoding of `model`'s first `tokens` tokens of JSONL
/// sequence `sequence`, then (after `reset`) of the next one, under each of
/// `plans`: prefill of the first `prefill`, then one token at a time, from
/// a decoder that shares the full model's weights; both the prefill's last
/// row and the last step's equal the batched forward's to 1e-4. (Another
/// sequence after the reset: a state the reset left behind would give the
/// first sequence's numbers.)
func expectCachedDecodingMatchesTheForward(
    _ model: any LanguageModel, tokens count: Int, prefill: Int, plans: [DropPlan], label: String, sequence: Int = 0,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let all = FixtureFiles.jsonlSequences()
    let sequences = [all[sequence], all[(sequence + 1) % all.count]].map { Array($0.prefix(count)) }
    precondition(sequences.allSatisfy { $0.count == count } && sequences[0] != sequences[1])
    let full = try IncrementalDecoder(model: model, plan: .none, capacity: count)
    for plan in plans {
        let decoder = try full.dropping(plan, capacity: count)
        for tokens in sequences {
            let expected = try LayerwiseForward(model: model, plan: plan).run(TokenBatch(sequences: [tokens]))
            decoder.reset()
            let prefilled = decoder.prefill(embedded: try decoder.embedded(Array(tokens.prefix(prefill))))
            let lastPrefilled = expected.data[((prefill - 1) * expected.cols)..<(prefill * expected.cols)]
            #expect(
                zip(prefilled.data, lastPrefilled).map { abs($0 - $1) }.max()! < 1e-4, "\(label) \(plan) prefill", sourceLocation: sourceLocation)
            var last = prefilled
            for position in prefill..<tokens.count { last = try decoder.step(token: tokens[position], position: position) }
            #expect(
                zip(last.data, expected.data.suffix(expected.cols)).map { abs($0 - $1) }.max()! < 1e-4, "\(label) \(plan) decode",
                sourceLocation: sourceLocation)
        }
    }
}
