import CheckpointIO
import Foundation
import Pipeline
import Testing

/// Checkpoint names of the published series and of the training frameworks:
/// what each says, and the one order a series is traced in.
@Suite struct CheckpointNamingTests {
    typealias Parts = CheckpointName.Parts

    @Test func everySchemeGivesItsStepAndTokens() {
        let cases: [(String, Parts)] = [
            ("checkpoint-1500", Parts(step: 1500)),                                          // Trainer
            ("step143000", Parts(step: 143_000)),                                            // Pythia
            ("step-125000", Parts(step: 125_000)),                                           // SmolLM
            ("step_300", Parts(step: 300)),
            ("global_step42", Parts(step: 42)),                                              // DeepSpeed
            ("step1000-tokens4B", Parts(step: 1000, tokens: 4_000_000_000)),                 // OLMo
            ("stage1-step476848-tokens2000B", Parts(stage: 1, step: 476_848, tokens: 2_000_000_000_000)),  // OLMo 2
            ("stage2-ingredient3-step11931-tokens50B",
             Parts(stage: 2, ingredient: 3, step: 11931, tokens: 50_000_000_000)),
            ("step-480k-token-1007B", Parts(step: 480_000, tokens: 1_007_000_000_000)),     // TinyLlama
            ("step-001000-2BT", Parts(step: 1000, tokens: 2_000_000_000)),                   // FineWeb ablations
            ("ckpt_042", Parts(index: 42)),                                                  // Amber
            ("stage1-step1000-tokens2097", Parts(stage: 1, step: 1000, tokens: 2097)),
        ]
        for (name, parts) in cases {
            #expect(CheckpointName.parse(name) == parts, "\(name)")
        }
        // TinyLlama's published checkpoints, as their Hub repositories name them (a download into a
        // directory of the repository's name) and without the repository's part: units in either case,
        // tokens with decimals, with and without `token-`.
        let tinyLlama: [(String, Parts)] = [
            ("TinyLlama-1.1B-step-50K-105b", Parts(step: 50_000, tokens: 105_000_000_000)),
            ("TinyLlama-1.1B-intermediate-step-240k-503b", Parts(step: 240_000, tokens: 503_000_000_000)),
            ("TinyLlama-1.1B-intermediate-step-480k-1T", Parts(step: 480_000, tokens: 1_000_000_000_000)),
            ("TinyLlama-1.1B-intermediate-step-715k-1.5T", Parts(step: 715_000, tokens: 1_500_000_000_000)),
            ("TinyLlama-1.1B-intermediate-step-955k-token-2T", Parts(step: 955_000, tokens: 2_000_000_000_000)),
            ("TinyLlama-1.1B-intermediate-step-1195k-token-2.5T", Parts(step: 1_195_000, tokens: 2_500_000_000_000)),
            ("TinyLlama-1.1B-intermediate-step-1431k-3T", Parts(step: 1_431_000, tokens: 3_000_000_000_000)),
        ]
        for (name, parts) in tinyLlama {
            #expect(CheckpointName.parse(name) == parts, "\(name)")
            let short = String(name[name.range(of: "step")!.lowerBound...])
            #expect(CheckpointName.parse(short) == parts, "\(short)")
        }
        #expect(CheckpointName.parse("step1000-tokens0.000001T") == Parts(step: 1000, tokens: 1_000_000))
        // A count that is no whole number of tokens is no token count.
        for name in ["step5-tokens1.5", "step-1k-token-1.0001K", "step-480k-1.T", "step-480k-.5T", "TinyLlama-step-5"] {
            #expect(CheckpointName.parse(name) == nil, "\(name)")
        }
        // Another script's digits and a trailing line break follow no rule (`$` matched before the break).
        for name in ["runs", "checkpoint-", "best-checkpoint-3", "final", "ckpt_", "step-10-2XT", "stage1-tokens5B",
                     "checkpoint-\u{661}\u{660}", "ckpt_\u{967}", "checkpoint-10\n", "ckpt_3\n"] {
            #expect(CheckpointName.parse(name) == nil, "\(name)")
        }
    }

    @Test func hugeNumbersLeaveStepOrTokensUnknownWithoutTrapping() {
        // Each fits in Int64 only before scaling, or not at all.
        func overflowed(_ parts: Parts) -> Parts { var parts = parts; parts.overflowed = true; return parts }
        #expect(CheckpointName.parse("step-9223372036854776k") == overflowed(Parts()))
        #expect(CheckpointName.parse("step99999999999999999999") == overflowed(Parts()))
        #expect(CheckpointName.parse("step5-tokens9223372036854775807T") == overflowed(Parts(step: 5)))
        #expect(CheckpointName.parse("step5-9999999999BT") == overflowed(Parts(step: 5)))
        #expect(CheckpointName.parse("ckpt_99999999999999999999") == overflowed(Parts()))
        #expect(CheckpointName.parse("stage99999999999999999999-step1") == overflowed(Parts(step: 1)))
        #expect(CheckpointName.parse("step9223372036854775807")?.overflowed == false)
    }

    /// OLMo 2's published revisions: stage 2 restarts its steps, and each
    /// ingredient is its own mid-training run from the end of stage 1.
    @Test func olmo2OrdersByStageThenIngredientThenStep() {
        let names = [
            "stage2-ingredient2-step1000-tokens5B", "stage1-step2000-tokens9B", "stage2-ingredient1-step11931-tokens50B",
            "stage1-step476848-tokens2000B", "stage2-ingredient1-step1000-tokens5B", "stage1-step1000-tokens5B",
        ]
        #expect(sortedBySeriesPosition(names) == [
            "stage1-step1000-tokens5B", "stage1-step2000-tokens9B", "stage1-step476848-tokens2000B",
            "stage2-ingredient1-step1000-tokens5B", "stage2-ingredient1-step11931-tokens50B",
            "stage2-ingredient2-step1000-tokens5B",
        ])
    }

    @Test func indexesAndStepsOrderNumericallyNotAsText() {
        #expect(sortedBySeriesPosition(["ckpt_100", "ckpt_99", "ckpt_000"]) == ["ckpt_000", "ckpt_99", "ckpt_100"])
        #expect(sortedBySeriesPosition(["step-1431k-token-3000B", "step-480k-token-1007B", "step-50k-token-105B"])
            == ["step-50k-token-105B", "step-480k-token-1007B", "step-1431k-token-3000B"])
        #expect(sortedBySeriesPosition(["step-1431k-3T", "step-480k-1T", "step-715k-1.5T", "step-1195k-token-2.5T"])
            == ["step-480k-1T", "step-715k-1.5T", "step-1195k-token-2.5T", "step-1431k-3T"])
        #expect(sortedBySeriesPosition(["step-010000-21BT", "step-002000-4BT", "step-167000-350BT"])
            == ["step-002000-4BT", "step-010000-21BT", "step-167000-350BT"])
    }

    /// Amber's `ckpt_<N>` with trainer_state.json steps for some and not
    /// others (the newest, before the Trainer writes it): the index places
    /// them all, never set against a step.
    @Test func anIndexIsNeverComparedWithAStep() {
        let steps: [(String, Int64)] = [("ckpt_1", 10), ("ckpt_2", 25), ("ckpt_3", 50), ("ckpt_4", -1)]
        let ordered = steps.sorted { CheckpointName.position(name: $0.0, step: $0.1) < CheckpointName.position(name: $1.0, step: $1.1) }
        #expect(ordered.map(\.0) == ["ckpt_1", "ckpt_2", "ckpt_3", "ckpt_4"])
    }

    /// The wild case: a series in OLMo 2's layout is found whole, in order,
    /// with the tokens each name carries.
    @Test func olmo2SeriesIsDiscoveredWhole() throws {
        let scratch = try ScratchDirectory()
        let series = try SeriesBuilder(in: scratch)
        let names = [
            "stage1-step1000-tokens5B", "stage1-step2000-tokens9B", "stage1-step476848-tokens2000B",
            "stage2-ingredient1-step1000-tokens5B", "stage2-ingredient1-step11931-tokens50B",
        ]
        for name in names.reversed() { try series.add(step: 0, name: name) }
        let result = try CheckpointDiscovery.scan(series.directory)
        #expect(result.ready.map(\.name) == names)
        #expect(result.ready.map(\.step) == [1000, 2000, 476_848, 1000, 11931])
        #expect(result.ready.map(\.tokens) == [5, 9, 2000, 5, 50].map { $0 * 1_000_000_000 })
        #expect(result.warnings.isEmpty && result.failed.isEmpty && result.incomplete.isEmpty)
    }

    private func sortedBySeriesPosition(_ names: [String]) -> [String] {
        names.sorted { a, b in
            let (x, y) = (
                CheckpointName.position(name: a, step: CheckpointName.step(a) ?? -1),
                CheckpointName.position(name: b, step: CheckpointName.step(b) ?? -1))
            return x != y ? x < y : a < b
        }
    }
}
