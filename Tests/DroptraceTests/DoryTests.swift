@testable import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Dory (`dory`): the looped nGPT — weightless L2 norms, the interpolating
/// sandwich residual, the scaled gated attention and MLP, the head's
/// per-token logit scale; the recurrent section run `n_recurrent_loops`
/// times (`LayerLoop`); DoryConfig's released layout (each layer twice in
/// `layer_types` and the counts) and its defaults and refusals; what an
/// export writes. The scores themselves are checked against transformers
/// with every other family (`DropTests` and the reference suites), and here.
@Suite struct DoryTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "dory-f32"

    static let mutants: [Mutant] = [
        // DoryConfig: the sections must add up to the layers (released counts, halved).
        Mutant(name, "n_input_layers", "4"), Mutant(name, "n_recurrent_layers", "2"), Mutant(name, "n_output_layers", "6"),
        // Sections whose halving or sums leave 64 bits (traps before).
        Mutant(name, "n_input_layers", "-9223372036854775808"), Mutant(name, "n_recurrent_layers", "-9223372036854775808"),
        Mutant(name, "n_output_layers", "-9223372036854775808"), Mutant(name, "n_output_layers", "9223372036854775807"),
        Mutant(name, "num_hidden_layers", "10"),
        Mutant(name, "n_recurrent_loops", "0"), Mutant(name, "recurrent_kv_cache_mode", #""every_loop""#),
        // Loops no pass would finish (ran without end before).
        Mutant(name, "n_recurrent_loops", "4611686018427387904"), Mutant(name, "n_recurrent_loops", "9223372036854775807"),
        Mutant(name, "initializer_range", "0.0"),
        // The types' list must match the (halved) count; no types but the two attentions.
        Mutant(name, "layer_types", #"["sliding_attention", "mlp", "full_attention", "mlp"]"#),
        Mutant(name, "layer_types", #"["sliding_attention", "sliding_attention", "mlp", "mlp", "sliding_attention", "mlp", "sliding_attention", "mlp", "sliding_attention", "mlp", "sliding_attention", "mlp"]"#),
        Mutant(name, "sliding_window", "null"), Mutant(name, "sliding_window", "0"),
        // Sizes the tensors contradict.
        Mutant(name, "head_dim", "16"), Mutant(name, "intermediate_size", "64"), Mutant(name, "num_key_value_heads", "4"),
        Mutant(name, "num_hidden_layers", "14", key: "num_hidden_layers"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    @Test func scoresMatchTransformers() throws {
        try expectScoresMatchTransformers(Self.name)
    }

    /// The released layout is read as DoryConfig halves it: 6 layers, one
    /// input layer, three looped three times, two output layers; every
    /// layer's branches interpolate at per-channel rates between L2 norms,
    /// the attention rotates (every layer), scales its queries per channel,
    /// gates its output and L2-norms it before o_proj; the MLP L2-norms its
    /// hidden rows.
    @Test func loopedSandwichAsDoryBuildsIt() throws {
        let model = try EditedFixture(Self.name).load()
        #expect(model.layerCount == 6)
        let loop = try #require(model.layerLoop)
        #expect(loop.layers == 1..<4 && loop.passes == 3 && !loop.sharesCacheAcrossPasses)
        #expect(model.layerSteps.count == 1 + 3 * (1 + 3) + 2)
        for index in 0..<6 {
            let block = try model.block(index)
            let branch = try #require(block.attention), mlp = try #require(block.mlp)
            for join in [branch.join, mlp.join] {
                guard case .interpolating(let rate)? = join else { Issue.record("layer \(index): no interpolating residual"); continue }
                #expect(rate.count == 48)
            }
            #expect(branch.inputNorm != nil && branch.outputNorm != nil && mlp.inputNorm != nil && mlp.outputNorm != nil)
            let attention = branch.attention!
            #expect(attention.rotary != nil && attention.queryScales?.count == 48 && attention.outputGate != nil)
            #expect(attention.attendedNorm != nil && attention.output.bias != nil)
            #expect(attention.slidingWindow == (index == 3 ? nil : 8))
            guard case .hiddenNormed(.gated, _) = mlp.feedForward else {
                Issue.record("layer \(index): the MLP's hidden rows are not normed")
                continue
            }
        }
    }

    /// The canonical layout (one entry per layer, the counts as they are)
    /// is the same model: the same scores.
    @Test func canonicalLayoutIsTheSameModel() throws {
        let canonical = try EditedFixture(Self.name) { config in
            config["layer_types"] = (config["layer_types"] as! [String]).enumerated().filter { $0.offset % 2 == 0 }.map(\.element)
            for key in ["num_hidden_layers", "n_input_layers", "n_recurrent_layers", "n_output_layers"] {
                config[key] = (config[key] as! Int) / 2
            }
        }
        let released = try EditedFixture(Self.name)
        #expect(try canonical.attentionScores() == released.attentionScores())
        // Left to its defaults, the recurrent section is the rest; the types every fourth full (the fixture's).
        let defaults = try EditedFixture(Self.name) { config in
            (config["n_recurrent_layers"], config["layer_types"]) = (nil, nil)
            for key in ["num_hidden_layers", "n_input_layers", "n_output_layers"] { config[key] = (config[key] as! Int) / 2 }
        }
        #expect(defaults.expectLoads { $0.layerLoop?.layers == 1..<4 })
        #expect(try defaults.attentionScores() == released.attentionScores())
        // Sections that add up but slice from the end (DoryConfig accepts them) are refused.
        try EditedFixture(Self.name) { config in
            (config["n_input_layers"], config["n_recurrent_layers"]) = (-2, 10)
        }.expectRefused(naming: "n_input_layers")
    }

    /// DoryConfig's rope entries as transformers standardises them: an entry
    /// without `rope_theta` takes the top-level one, else 10000 (the class's
    /// `default_theta`), and the default rotation ignores
    /// `partial_rotary_factor` (DoryRotaryEmbedding rotates whole heads):
    /// each edit below is the fixture's model (full 500000, sliding 10000),
    /// as transformers 5.25 scores it; with a scaled rotation the narrower
    /// table fails in DoryAttention, and is refused.
    @Test func ropeEntriesAsTransformersStandardisesThem() throws {
        let released = try EditedFixture(Self.name).attentionScores()
        func entries(_ config: inout [String: Any], _ edit: (inout [String: [String: Any]]) -> Void) {
            var rope = config["rope_parameters"] as! [String: [String: Any]]
            edit(&rope)
            config["rope_parameters"] = rope
        }
        let same: [(inout [String: Any]) -> Void] = [
            { config in entries(&config) { $0["full_attention"]!["partial_rotary_factor"] = 0.5 } },
            { config in config["partial_rotary_factor"] = 0.5 },
            // DoryConfig copies a top-level factor into the entries only when it is not None.
            { config in config["partial_rotary_factor"] = NSNull() },
            { config in entries(&config) { $0["sliding_attention"]!["rope_theta"] = nil } },
            { config in
                entries(&config) { $0["full_attention"]!["rope_theta"] = nil }
                config["rope_theta"] = 500_000.0
            },
        ]
        for edit in same {
            #expect(try EditedFixture(Self.name, edit).attentionScores() == released)
        }
        // A null top-level rope_theta is copied into an entry without one as None, which the rotary set-up fails on.
        try EditedFixture(Self.name) { config in
            entries(&config) { $0["full_attention"]!["rope_theta"] = nil }
            config["rope_theta"] = NSNull()
        }.expectRefused(naming: "rope_theta")
        try EditedFixture(Self.name) { config in
            entries(&config) { $0["full_attention"] = ["rope_type": "linear", "factor": 2.0, "rope_theta": 500_000.0, "partial_rotary_factor": 0.5] }
        }.expectRefused(naming: "partial_rotary_factor")
    }

    /// The loop is what transformers runs: one pass instead of three moves
    /// the scores, and key/value-cache decoding (one cache per pass) equals
    /// the forward pass, with looped and unlooped layers dropped.
    @Test func loopPassesAndCachedDecoding() throws {
        let once = try EditedFixture(Self.name) { $0["n_recurrent_loops"] = 1 }
        #expect(try once.attentionScores() != EditedFixture(Self.name).attentionScores())
        let model = try EditedFixture(Self.name).load()
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 12, prefill: 7,
            plans: [.none, DropPlan(blocks: [2]), DropPlan(attention: [1], mlp: [4]), DropPlan(blocks: [1, 2, 3])], label: "dory")
        // last_loop keeps one cache per looped layer: fewer bytes per token.
        let lastLoop = try EditedFixture(Self.name) { $0["recurrent_kv_cache_mode"] = "last_loop" }.load()
        let perLoopBytes = try IncrementalDecoder(model: model, plan: .none, capacity: 4).cacheBytesPerToken
        let lastLoopBytes = try IncrementalDecoder(model: lastLoop, plan: .none, capacity: 4).cacheBytesPerToken
        #expect(perLoopBytes == lastLoopBytes * 2)
    }

    /// A block-dropped export keeps the released layout: the counts and the
    /// sections doubled, each kept layer's two type entries.
    @Test func exportWritesTheKeptSections() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0, 2])
        #expect(config["num_hidden_layers"] as? Int == 8)
        #expect(config["n_input_layers"] as? Int == 0 && config["n_recurrent_layers"] as? Int == 4 && config["n_output_layers"] as? Int == 4)
        #expect((config["layer_types"] as? [String]) == ["sliding_attention", "mlp", "full_attention", "mlp", "sliding_attention", "mlp", "sliding_attention", "mlp"])
        let canonical = try EditedFixture(Self.name) { config in
            config["layer_types"] = nil
            for key in ["num_hidden_layers", "n_input_layers", "n_output_layers"] { config[key] = (config[key] as! Int) / 2 }
            config["n_recurrent_layers"] = nil
        }.exportedConfig(droppingBlocks: [5])
        #expect(canonical["num_hidden_layers"] as? Int == 5 && canonical["n_output_layers"] as? Int == 1)
        #expect(canonical["n_recurrent_layers"] as? Int == 3 && canonical["n_input_layers"] as? Int == 1)
        #expect((canonical["layer_types"] as? [String])?.count == 5)
    }

    /// The released two-block layout (`layers.<2i>.mixer` the attention,
    /// `layers.<2i+1>.mixer` the MLP, the rates `attn_alpha` / `mlp_alpha`)
    /// is read as transformers' LayerPairCollapse reads it: the same scores;
    /// a pair whose attention block is also stored under transformers' name is refused.
    @Test func releasedTwoBlockLayoutIsTheSameModel() throws {
        let fixture = try EditedFixture(Self.name)
        let pairs = try fixture.scratch.copyOfModel(Self.name, as: "pairs")
        let pattern = try NSRegularExpression(pattern: #"layers\.(\d+)\.(self_attn|mlp|lambda_1|lambda_2)"#)
        try BadInputTests().rewriteWeights(pairs) { entries in
            for index in entries.indices {
                let name = entries[index].name
                guard let match = pattern.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)),
                      let whole = Range(match.range, in: name), let layer = Int(name[Range(match.range(at: 1), in: name)!])
                else { continue }
                let part = String(name[Range(match.range(at: 2), in: name)!])
                let block = ["self_attn": "\(2 * layer).mixer", "mlp": "\(2 * layer + 1).mixer",
                             "lambda_1": "\(2 * layer).attn_alpha", "lambda_2": "\(2 * layer + 1).mlp_alpha"][part]!
                entries[index].name = name.replacingCharacters(in: whole, with: "layers.\(block)")
            }
        }
        let model = try ModelRegistry.load(try Checkpoint(directory: pairs))
        #expect(try ImportanceScorer(model: model).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib").attention
            == fixture.attentionScores())
        let both = try fixture.scratch.copyOfModel(Self.name, as: "both")
        try BadInputTests().rewriteWeights(both) { entries in
            var copy = entries.first { $0.name == "backbone.layers.1.self_attn.sqk" }!
            copy.name = "backbone.layers.2.mixer.sqk"
            entries.append(copy)
        }
        #expect(throws: DroptraceError.self) { _ = try ModelRegistry.load(try Checkpoint(directory: both)) }
    }

    /// mergekit's passthrough cannot rewrite the sections.
    @Test func mergekitIsRefused() throws {
        #expect(throws: DroptraceError.self) { try MergekitSlices.checkSource(try EditedFixture(Self.name).load()) }
    }
}

extension EditedFixture {
    /// Loads and applies `check` to the model; false when it does not load.
    func expectLoads(_ check: (any LanguageModel) -> Bool) -> Bool {
        (try? load()).map(check) ?? false
    }
}
