import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import TensorEngine
import Testing

/// Falcon-H1 (`falcon_h1`): attention and a Mamba-2 mixer side by side in
/// every layer, one token mixer, with FalconH1Config's µP multipliers and
/// defaults. The scores are checked against transformers with every other
/// family too.
@Suite struct FalconH1Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "falcon_h1-f32"

    static let mutants: [Mutant] = [
        Mutant(name, "mamba_d_ssm", "0"), Mutant(name, "mamba_d_ssm", "-1"),
        Mutant(name, "mamba_d_ssm", "70"), Mutant(name, "mamba_d_ssm", "9223372036854775807"),
        Mutant(name, "mamba_d_ssm", "1.5"),
        Mutant(name, "mamba_n_heads", "5"), Mutant(name, "mamba_n_heads", "null"),
        Mutant(name, "mamba_n_groups", "4"),
        Mutant(name, "mamba_d_head", "7"), Mutant(name, "mamba_d_head", "\"x\""),
        Mutant(name, "mamba_d_conv", "0"),
        Mutant(name, "mamba_d_state", "-1"), Mutant(name, "mamba_d_state", "1000000000000"),
        Mutant(name, "time_step_limit", "[0.0]"), Mutant(name, "time_step_limit", "null"),
        Mutant(name, "mamba_use_mlp", "false"),
        Mutant(name, "mlp_multipliers", "[1.0]"), Mutant(name, "mlp_multipliers", "[1.0, 1e39]"),
        Mutant(name, "ssm_multipliers", "[1.0, 1.0, 1.0, 1.0]"), Mutant(name, "ssm_multipliers", "\"x\""),
        Mutant(name, "key_multiplier", "null"), Mutant(name, "embedding_multiplier", "1e39"),
        Mutant(name, "lm_head_multiplier", "null"), Mutant(name, "attention_in_multiplier", "\"x\""),
        Mutant(name, "attention_out_multiplier", "true"), Mutant(name, "ssm_in_multiplier", "-1e300"),
        Mutant(name, "ssm_out_multiplier", "null"),
        Mutant(name, "mamba_rms_norm", "\"yes\""),
        Mutant(name, "rms_norm_eps", "0"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The layer's token mixer as config.json describes it.
    static func mixer(_ model: any LanguageModel, _ index: Int = 0) throws -> AttentionBesideMamba2 {
        guard case .attentionBesideMamba2(let both)? = try model.block(index).attention?.mixer else {
            throw DroptraceError("layer \(index) is not attention beside Mamba-2")
        }
        return both
    }

    /// Every layer runs attention and a Mamba-2 mixer of mamba_d_ssm's
    /// width side by side, each scaled by its multipliers; the keys, the MLP
    /// and the logits have theirs.
    @Test func everyLayerIsAttentionBesideMamba2WithItsMultipliers() throws {
        let model = try EditedFixture(Self.name).load()
        let config = try FixtureFiles.config(Self.name)
        func float(_ key: String) -> Float { Float(config[key] as! Double) }
        for index in 0..<model.layerCount {
            let both = try Self.mixer(model, index)
            #expect(both.mamba.heads == Mamba2Heads(heads: 6, headDim: 12, groups: 2, stateSize: 8, convolutionKernel: 4))
            #expect(both.mamba.heads.innerWidth == config["mamba_d_ssm"] as? Int)
            #expect(both.mamba.norm == nil)
            #expect(both.attentionInputScale == float("attention_in_multiplier"))
            #expect(both.attentionOutputScale == float("attention_out_multiplier"))
            #expect(both.mambaInputScale == float("ssm_in_multiplier"))
            #expect(both.mambaOutputScale == float("ssm_out_multiplier"))
            #expect(both.attention.keyScale == float("key_multiplier"))
            #expect(both.attention.layout.headDim == config["head_dim"] as? Int)
        }
        // The µP vector: z | x | B | C | dt columns, each part its ssm_multipliers entry.
        let h = try Self.mixer(model).mamba.heads, ssm = (config["ssm_multipliers"] as! [Double]).map { Float($0) }
        let widths = [h.innerWidth, h.innerWidth, h.groupWidth, h.groupWidth, h.heads]
        #expect(try Self.mixer(model).mamba.projectionScales == zip(ssm, widths).flatMap { Array(repeating: $0, count: $1) })
        let mlp = (config["mlp_multipliers"] as! [Double]).map { Float($0) }
        let branch = try #require(try model.block(0).mlp)
        #expect(branch.outputScale == mlp[1])
        guard case .gated(_, _, let activation) = branch.feedForward else { Issue.record("not a gated MLP"); return }
        #expect(activation == .scaledInput(.silu, by: mlp[0]))
        #expect(try model.head().logitScale == float("lm_head_multiplier"))
    }

    /// FalconH1Config's defaults: each multiplier 1, mamba_d_ssm 1024 (null:
    /// mamba_expand × hidden_size), no gated RMSNorm, out_proj without bias.
    @Test func defaultsAreFalconH1Configs() throws {
        let keys = [
            "embedding_multiplier", "lm_head_multiplier", "key_multiplier", "attention_in_multiplier", "attention_out_multiplier",
            "ssm_in_multiplier", "ssm_out_multiplier", "mlp_multipliers", "ssm_multipliers",
        ]
        let plain = try EditedFixture(Self.name) { config in for key in keys { config[key] = nil } }.load()
        let both = try Self.mixer(plain)
        #expect(both.attentionInputScale == 1 && both.attentionOutputScale == 1 && both.mambaInputScale == 1 && both.mambaOutputScale == 1)
        #expect(both.attention.keyScale == 1 && both.mamba.projectionScales!.allSatisfy { $0 == 1 })
        #expect(try plain.head().logitScale == 1)
        // Null lists are all ones too, as FalconH1Config fills them.
        let nullLists = try EditedFixture(Self.name) { $0["ssm_multipliers"] = NSNull(); $0["mlp_multipliers"] = NSNull() }.load()
        #expect(try Self.mixer(nullLists).mamba.projectionScales!.allSatisfy { $0 == 1 })
        #expect(try nullLists.block(0).mlp?.outputScale == 1)
        // mamba_d_ssm absent is 1024 wide: mamba_d_head 12 × 6 heads is not.
        try EditedFixture(Self.name) { $0["mamba_d_ssm"] = nil }.expectRefused(naming: "mamba_d_ssm")
        // Null is mamba_expand × hidden_size, 96, of heads 16 wide; with mamba_d_head "auto" the weights refuse it.
        try EditedFixture(Self.name) { $0["mamba_d_ssm"] = NSNull() }.expectRefused(naming: "mamba_expand × hidden_size")
        #expect(throws: DroptraceError.self) {
            try EditedFixture(Self.name) { $0["mamba_d_ssm"] = NSNull(); $0["mamba_d_head"] = "auto" }.load().block(0)
        }
        // Without projectors_bias out_proj has none: the fixture's stored bias is then not read.
        let unbiased = try EditedFixture(Self.name) { $0["projectors_bias"] = nil }.load()
        #expect(try Self.mixer(unbiased).mamba.output.bias == nil)
        #expect(try Self.mixer(unbiased).mamba.projection.bias != nil)
        // mamba_rms_norm asks for the gated norm's weights, which the fixture does not store.
        #expect(throws: DroptraceError.self) { try EditedFixture(Self.name) { $0["mamba_rms_norm"] = true }.load().block(0) }
        // mamba_use_mlp true (the released configs) is read as transformers reads it.
        _ = try EditedFixture(Self.name) { $0["mamba_use_mlp"] = true }.load().block(0)
    }

    /// Each multiplier moves the scores (vs 1).
    @Test(arguments: [
        "key_multiplier", "attention_in_multiplier", "attention_out_multiplier", "ssm_in_multiplier", "ssm_out_multiplier",
        "embedding_multiplier",
    ])
    func multiplierMovesTheScores(_ key: String) throws {
        let scaled = try EditedFixture(Self.name).attentionScores()
        let unit = try EditedFixture(Self.name) { $0[key] = 1.0 }.attentionScores()
        #expect(zip(scaled, unit).map { abs($0 - $1) }.max()! > 1e-4, "\(key)")
    }

    /// Prefill then one token at a time carries each layer's keys and values
    /// and its Mamba-2 state side by side: the result is the batched
    /// forward's, also with a layer's token mixer or MLP or a block dropped.
    @Test func cachedDecodingMatchesTheForward() throws {
        let model = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model(Self.name)))
        try expectCachedDecodingMatchesTheForward(
            model, tokens: 20, prefill: 12,
            plans: [.none, DropPlan(attention: [0]), DropPlan(attention: [2]), DropPlan(mlp: [1]), DropPlan(blocks: [3])],
            label: Self.name)
    }

    /// Every score of the fixture close to transformers'.
    @Test func scoresMatchTransformersClosely() throws {
        try expectScoresMatchTransformers(Self.name)
    }
}
