import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// GraniteMoE and GraniteMoE-Shared: Granite's multipliers around a
/// mixture of fused SwiGLU experts whose router softmaxes the chosen logits
/// only, and GraniteMoE-Shared's ungated shared MLP; the experts under
/// GraniteMoE's saved names or transformers' own; GraniteMoeConfig's
/// defaults. The scores themselves are checked against transformers with
/// every other family (`ScoringReferenceTests`).
@Suite struct GraniteMoeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("granitemoe-f32", "num_local_experts", "0"),
        Mutant("granitemoe-f32", "num_local_experts", "-1"),
        Mutant("granitemoe-f32", "num_local_experts", "null"),
        // The routers hold 4 rows.
        Mutant("granitemoe-f32", "num_local_experts", "5"),
        Mutant("granitemoe-f32", "num_local_experts", "1152921504606846976"),
        Mutant("granitemoe-f32", "num_experts_per_tok", "0"),
        Mutant("granitemoe-f32", "num_experts_per_tok", "5"),
        Mutant("granitemoe-f32", "num_experts_per_tok", "null"),
        Mutant("granitemoe-f32", "intermediate_size", "1152921504606846976"),
        Mutant("granitemoe-f32", "logits_scaling", "0"),
        Mutant("granitemoe-f32", "residual_multiplier", "1e39"),
        // GraniteMoeConfig takes null multipliers, which its model multiplies by.
        Mutant("granitemoe-f32", "residual_multiplier", "null"),
        Mutant("granitemoe-f32", "attention_multiplier", "null"),
        Mutant("granitemoeshared-f32", "shared_intermediate_size", "-1"),
        Mutant("granitemoeshared-f32", "shared_intermediate_size", "1152921504606846976"),
        // The shared MLP's tensors hold 24 rows per half.
        Mutant("granitemoeshared-f32", "shared_intermediate_size", "16"),
        Mutant("granitemoeshared-f32", "num_local_experts", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every layer's MLP: its mixture, scaled by residual_multiplier as it joins the stream.
    func mixtures(_ model: any LanguageModel) throws -> [MixtureOfExperts] {
        try (0..<model.layerCount).map { layer in
            let branch = try #require(try model.block(layer).mlp)
            #expect(branch.outputScale == 0.22)
            guard case .mixture(let moe) = branch.feedForward else { throw DroptraceError("layer \(layer)'s MLP is not a mixture") }
            return moe
        }
    }

    /// granitemoe-f32: 4 experts of 32, 2 per token by the softmax of their
    /// logits, no shared MLP; granitemoeshared-f32 adds an ungated shared MLP of 24.
    @Test func layersAreTheMixtureAndSharedMLP() throws {
        for moe in try mixtures(try EditedFixture("granitemoe-f32").load()) {
            #expect(moe.experts.count == 4 && moe.expertsPerToken == 2 && moe.sharedExperts.isEmpty)
            guard case .topKThenSoftmax = moe.rule else { Issue.record("not GraniteMoeTopKRouter's rule"); continue }
            guard case .gated(let gateUp, _, _) = moe.experts[0] else { Issue.record("not a gated expert"); continue }
            #expect(gateUp.outFeatures == 2 * 32)
        }
        for moe in try mixtures(try EditedFixture("granitemoeshared-f32").load()) {
            #expect(moe.experts.count == 4 && moe.sharedExperts.count == 1 && moe.sharedExpertGate == nil)
            guard case .gated(let gateUp, let down, _)? = moe.sharedExperts.first else { Issue.record("not a gated shared MLP"); continue }
            #expect(gateUp.outFeatures == 2 * 24 && down.inFeatures == 24, "shared_intermediate_size")
        }
    }

    /// Absent, num_experts_per_tok is 2, num_local_experts 8 (which the
    /// fixture's 4-row routers refuse) and shared_intermediate_size 0; the
    /// key is granitemoeshared's only: granitemoe has no shared MLP whatever it says.
    @Test func defaultsAreGraniteMoeConfigs() throws {
        let one = try mixtures(try EditedFixture("granitemoe-f32") { $0["num_experts_per_tok"] = 1 }.load())
        #expect(one.allSatisfy { $0.expertsPerToken == 1 })
        let two = try mixtures(try EditedFixture("granitemoe-f32") { $0["num_experts_per_tok"] = nil }.load())
        #expect(two.allSatisfy { $0.expertsPerToken == 2 })
        let eight = try EditedFixture("granitemoe-f32") { $0["num_local_experts"] = nil }
        eight.expectRefused(naming: "num_local_experts")
        let noShared = try mixtures(try EditedFixture("granitemoeshared-f32") { $0["shared_intermediate_size"] = nil }.load())
        #expect(noShared.allSatisfy { $0.sharedExperts.isEmpty })
        let ignored = try mixtures(try EditedFixture("granitemoe-f32") { $0["shared_intermediate_size"] = 24 }.load())
        #expect(ignored.allSatisfy { $0.sharedExperts.isEmpty })
    }

    /// The shared MLP moves the scores (the reference tests check how).
    @Test func sharedMLPChangesTheScores() throws {
        let shared = try EditedFixture("granitemoeshared-f32").attentionScores()
        let without = try EditedFixture("granitemoeshared-f32") { $0["shared_intermediate_size"] = 0 }.attentionScores()
        let moved = zip(shared, without).map { abs($0 - $1) }.max()!
        #expect(moved > 1e-4, "the shared MLP moves the attention scores by \(moved)")
    }

    /// GraniteMoE's saved names and transformers' (which it also reads)
    /// give one model; a layer holding both spellings is refused.
    static let spellings = [
        ("block_sparse_moe.input_linear.weight", "block_sparse_moe.experts.gate_up_proj"),
        ("block_sparse_moe.output_linear.weight", "block_sparse_moe.experts.down_proj"),
        ("block_sparse_moe.router.layer.weight", "block_sparse_moe.router.weight"),
    ]

    @Test func transformersNamesReadAsGraniteMoesOwn() throws {
        let saved = try EditedFixture("granitemoeshared-f32")
        let renamed = try EditedFixture("granitemoeshared-f32")
        try BadInputTests().rewriteWeights(renamed.model) { entries in
            for index in entries.indices {
                for (from, to) in Self.spellings where entries[index].name.hasSuffix(from) {
                    entries[index].name = String(entries[index].name.dropLast(from.count)) + to
                }
            }
        }
        #expect(try renamed.attentionScores() == saved.attentionScores())
        let scorer = { (fixture: EditedFixture) in
            try ImportanceScorer(model: try fixture.load()).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib").mlp
        }
        #expect(try scorer(renamed) == scorer(saved))
    }

    @Test(arguments: spellings)
    func bothSpellingsAreRefused(saved: String, renamed: String) throws {
        let fixture = try EditedFixture("granitemoe-f32")
        try BadInputTests().rewriteWeights(fixture.model) { entries in
            if let original = entries.first(where: { $0.name == "model.layers.2." + saved }) {
                var copy = original
                copy.name = "model.layers.2." + renamed
                entries.append(copy)
            }
        }
        do {
            let model = try fixture.load()
            _ = try model.block(2)
            Issue.record("both spellings loaded")
        } catch let error as DroptraceError {
            #expect(error.message.contains(renamed) && error.message.contains(saved) && !error.message.contains("\n"), "\(error)")
        }
    }

    /// Router and experts against transformers' MoE block (`routing_check`).
    @Test func routingMatchesTransformers() throws {
        try expectRoutingMatchesTransformers("granitemoe-f32")
    }
}
