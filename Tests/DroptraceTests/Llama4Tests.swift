import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Llama 4's layers as Llama4TextConfig resolves them (NoPE, chunked, sparse
/// and dense), its defaults, the keys it refuses, the exports' per-layer
/// lists, and Llama4ForConditionalGeneration's language model read from
/// `text_config`. The scores themselves are checked against transformers
/// with every other family (`ScoringReferenceTests`), the key/value-cache
/// decoding against the batched forward with them (`DropTests`, `DropSpeedTests`).
@Suite struct Llama4Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        // Llama4TextModel builds its chunked mask for every model: None fails there.
        Mutant("llama4_text-f32", "attention_chunk_size", "null"),
        Mutant("llama4_text-f32", "attention_chunk_size", "0"),
        Mutant("llama4_text-f32", "attention_chunk_size", "1e300"),
        Mutant("llama4_text-f32", "floor_scale", "0"),
        Mutant("llama4_text-f32", "floor_scale", "-8"),
        // Llama4TextConfig types attn_scale as a float.
        Mutant("llama4_text-f32", "attn_scale", "\"x\""),
        Mutant("llama4_text-f32", "no_rope_layers", "[1, 1, 2, 1]"),
        // Indexed by layer: a shorter list fails.
        Mutant("llama4_text-f32", "no_rope_layers", "[1, 1]"),
        Mutant("llama4_text-f32", "no_rope_layers", "\"1101\""),
        Mutant("llama4_text-f32", "layer_types", "[\"chunked_attention\", \"sliding_attention\", \"full_attention\", \"chunked_attention\"]"),
        Mutant("llama4_text-f32", "layer_types", "[\"chunked_attention\"]"),
        Mutant("llama4_text-f32", "num_experts_per_tok", "5"),
        Mutant("llama4_text-f32", "num_experts_per_tok", "0"),
        Mutant("llama4_text-f32", "num_local_experts", "0"),
        Mutant("llama4_text-f32", "num_local_experts", "3"),
        Mutant("llama4_text-f32", "intermediate_size_mlp", "0"),
        Mutant("llama4_text-f32", "use_qk_norm", "\"yes\""),
        Mutant("llama4_text-f32", "moe_layers", "[1.5]"),
        Mutant("llama4-f32", "text_config.attention_chunk_size", "0", key: "text_config.attention_chunk_size"),
        Mutant("llama4-f32", "text_config.floor_scale", "null", key: "text_config.floor_scale"),
        Mutant("llama4-f32", "text_config.no_rope_layers", "[1, 1, 2, 1]", key: "text_config.no_rope_layers"),
        Mutant("llama4-f32", "text_config.num_experts_per_tok", "5", key: "text_config.num_experts_per_tok"),
        Mutant("llama4-f32", "text_config.hidden_size", "64", key: "hidden_size"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// The rules behind the lists, used when config.json leaves them out,
    /// refuse the intervals they divide by.
    @Test func intervalsAreRefusedWhenTheyAreUsed() throws {
        try EditedFixture("llama4_text-f32") {
            $0["no_rope_layers"] = nil
            $0["no_rope_layer_interval"] = 0
        }.expectRefused(naming: "no_rope_layer_interval")
        try EditedFixture("llama4_text-f32") {
            $0["moe_layers"] = nil
            $0["interleave_moe_layer_step"] = 0
        }.expectRefused(naming: "interleave_moe_layer_step")
        // With the lists given, the intervals are not read.
        let listed = try EditedFixture("llama4_text-f32") {
            $0["no_rope_layer_interval"] = 0
            $0["interleave_moe_layer_step"] = 0
        }.load()
        #expect(listed.layerCount == 4)
    }

    /// Rotary layers rotate interleaved pairs, L2-normalise each query and
    /// key head after the rotation and attend within chunks; the NoPE layer
    /// has neither and scales its queries by the temperature; sparse layers
    /// route top-1 by the sigmoid with the score on the expert input, plus a
    /// shared expert; dense layers are SwiGLU of width intermediate_size_mlp.
    @Test func layersAsLlama4TextConfigResolvesThem() throws {
        let model = try EditedFixture("llama4_text-f32").load()
        for layer in 0..<4 {
            let block = try model.block(layer)
            let attention = try #require(block.attention?.attention)
            if layer == 2 {
                #expect(attention.rotary == nil && attention.queryKeyNorm == nil && attention.chunkSize == nil)
                #expect(attention.queryTemperature == QueryTemperature(beta: 0.5, originalMaxPositions: 4, positionOffset: 1))
            } else {
                #expect(attention.rotary != nil && attention.queryTemperature == nil && attention.chunkSize == 10)
                #expect(attention.queryKeyNormAfterRotary)
                guard case .perHead(.rms(let weight, _), .rms(let keyWeight, _))? = attention.queryKeyNorm else {
                    Issue.record("layer \(layer): no per-head RMS q/k norms")
                    continue
                }
                #expect(weight == [Float](repeating: 1, count: 12) && keyWeight == weight)
            }
            switch block.mlp?.feedForward {
            case .mixture(let moe)? where layer % 2 == 1:
                guard case .sigmoidOfTopK = moe.rule else { Issue.record("layer \(layer): not sigmoid routing"); break }
                #expect(moe.weightsScaleInput && moe.experts.count == 4 && moe.expertsPerToken == 1 && moe.sharedExperts.count == 1)
                if case .gated(let gateUp, _, _) = moe.experts[0] { #expect(gateUp.outFeatures == 64) }
            case .gated(let gateUp, _, _)? where layer % 2 == 0:
                #expect(gateUp.outFeatures == 2 * 96)
            default:
                Issue.record("layer \(layer): unexpected MLP")
            }
        }
    }

    /// Without the temperature tuning the NoPE layer leaves its queries alone;
    /// without the q/k norms the rotary layers have none.
    @Test func switchesTurnFeaturesOff() throws {
        let model = try EditedFixture("llama4_text-f32") {
            $0["attn_temperature_tuning"] = false
            $0["use_qk_norm"] = false
        }.load()
        #expect(try model.block(2).attention?.attention.queryTemperature == nil)
        #expect(try model.block(0).attention?.attention.queryKeyNorm == nil)
    }

    /// Llama 4 counts positions from 1 in the temperature:
    /// 1 + β · ln(1 + ⌊(p + 1) / floor_scale⌋).
    @Test func temperatureCountsPositionsFromOne() {
        let temperature = QueryTemperature(beta: 0.5, originalMaxPositions: 4, positionOffset: 1)
        for position in 0..<3 { #expect(temperature.factor(position: position) == 1) }
        for position in [3, 6, 7, 100] {
            let expected = 1 + 0.5 * log(1 + Double((position + 1) / 4))
            #expect(abs(Double(temperature.factor(position: position)) - expected) < 1e-6 * expected, "position \(position)")
        }
        var rows: [Float] = [2, 2, 2, 2]
        rows.withUnsafeMutableBufferPointer {
            temperature.apply(to: $0.baseAddress!, rowStride: 2, columns: 0..<1, positions: [2, 3])
        }
        #expect(rows[0] == 2 && rows[1] == 2 && rows[2] == 2 * temperature.factor(position: 3) && rows[3] == 2)
    }

    /// A null `attention_chunk_size` without `layer_types` makes every layer
    /// full attention (Llama4TextConfig ≥ 5.25 chunks no layer then): the
    /// scores are those of `layer_types` all full_attention. Beside chunked
    /// `layer_types` it is refused (the mutants).
    @Test func nullChunkSizeAttendsFully() throws {
        let unchunked = try EditedFixture("llama4_text-f32") {
            $0["attention_chunk_size"] = NSNull()
            $0["layer_types"] = nil
        }
        for layer in 0..<4 { #expect(try unchunked.load().block(layer).attention?.attention.chunkSize == nil) }
        let full = try EditedFixture("llama4_text-f32") { $0["layer_types"] = Array(repeating: "full_attention", count: 4) }
        #expect(try unchunked.attentionScores() == full.attentionScores())
    }

    /// Llama4TextConfig's rules when the lists are left out: every
    /// `no_rope_layer_interval`-th layer NoPE (default 4), every
    /// `interleave_moe_layer_step`-th sparse, chunked attention on the rotary
    /// layers; an empty `no_rope_layers` is none. Absent keys take the class's
    /// defaults (chunks of 8192, temperature over 8192 positions with 0.1,
    /// head_dim 128, which the fixture's 12-wide heads contradict).
    @Test func defaultsOfLlama4TextConfig() throws {
        let derived = try EditedFixture("llama4_text-f32") {
            for key in ["no_rope_layers", "moe_layers", "layer_types", "attention_chunk_size", "floor_scale", "attn_scale"] { $0[key] = nil }
            $0["no_rope_layer_interval"] = nil
        }.load()
        for layer in 0..<4 {
            let attention = try #require(try derived.block(layer).attention?.attention)
            #expect((attention.rotary == nil) == (layer == 3))
            #expect(attention.chunkSize == (layer == 3 ? nil : 8192))
        }
        #expect(try derived.block(3).attention?.attention.queryTemperature == QueryTemperature(beta: 0.1, originalMaxPositions: 8192, positionOffset: 1))
        let empty = try EditedFixture("llama4_text-f32") { $0["no_rope_layers"] = [Int]() }.load()
        #expect(try empty.block(2).attention?.attention.rotary == nil && empty.block(1).attention?.attention.rotary != nil)
        // layer_types decides the chunks, whatever the rotary flags.
        let typed = try EditedFixture("llama4_text-f32") {
            $0["layer_types"] = ["full_attention", "chunked_attention", "chunked_attention", "full_attention"]
        }.load()
        #expect(try typed.block(0).attention?.attention.chunkSize == nil && typed.block(2).attention?.attention.chunkSize == 10)
        let error = #expect(throws: DroptraceError.self) { try EditedFixture("llama4_text-f32") { $0["head_dim"] = nil }.load() }
        #expect(error?.message.contains("head_dim") == true, "\(String(describing: error))")
    }

    /// A block-drop export spells out what the config left to rules, and
    /// keeps the kept layers' entries of the lists it gives, so transformers
    /// reloads every layer as it was.
    @Test func exportsRenumberThePerLayerLists() throws {
        let listed = try EditedFixture("llama4_text-f32").exportedConfig(droppingBlocks: [0])
        #expect(listed["no_rope_layers"] as? [Int] == [1, 0, 1])
        #expect(listed["moe_layers"] as? [Int] == [0, 2])
        #expect(listed["layer_types"] as? [String] == ["chunked_attention", "full_attention", "chunked_attention"])
        for emptyFlags in [false, true] {
            let derived = try EditedFixture("llama4_text-f32") {
                for key in ["moe_layers", "layer_types"] { $0[key] = nil }
                $0["no_rope_layers"] = emptyFlags ? [Int]() : nil
            }.exportedConfig(droppingBlocks: [0])
            #expect(derived["num_hidden_layers"] as? Int == 3)
            #expect(derived["no_rope_layers"] as? [Int] == [1, 0, 1])
            #expect(derived["moe_layers"] as? [Int] == [0, 2])
            #expect(derived["layer_types"] as? [String] == ["chunked_attention", "full_attention", "chunked_attention"])
        }
        let wrapped = try EditedFixture("llama4-f32").exportedConfig(droppingBlocks: [2])
        let text = try #require(wrapped["text_config"] as? [String: Any])
        #expect(text["num_hidden_layers"] as? Int == 3 && wrapped["num_hidden_layers"] == nil)
        #expect(text["no_rope_layers"] as? [Int] == [1, 1, 1] && text["moe_layers"] as? [Int] == [1, 2])
    }

    /// llama4 reads its sizes from `text_config`, its weights under
    /// `language_model.model.`, and ties its head by the text config's
    /// `tie_word_embeddings` (the top-level one is not read).
    @Test func llama4ReadsTextConfig() throws {
        let model = try EditedFixture("llama4-f32").load()
        #expect(model.layerCount == 4 && model.vocabularySize == 512)
        #expect(model.layerNaming.configSection == "text_config")
        #expect(model.layerNaming.prefix == "language_model.model.layers.")
        #expect(try model.block(2).attention?.attention.queryTemperature != nil)
        func headless(_ change: @escaping (inout [String: Any]) -> Void) throws -> EditedFixture {
            let fixture = try EditedFixture("llama4-f32", change)
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name.hasSuffix("lm_head.weight") } }
            return fixture
        }
        let tied = try headless { config in
            var text = config["text_config"] as! [String: Any]
            text["tie_word_embeddings"] = true
            config["text_config"] = text
        }
        #expect(try tied.load().head().vocabularySize == 512)
        let error = #expect(throws: DroptraceError.self) { try headless { $0["tie_word_embeddings"] = true }.load().head() }
        #expect(error?.message.contains("lm_head.weight") == true, "\(String(describing: error))")
    }

    /// Llama4TextMoe in double precision: each of a token's top-k experts
    /// (by router logit) runs on the token times σ(its logit), the outputs
    /// summed with the shared expert's; here with k = 2 of 3, which the
    /// fixture (top-1) does not reach.
    @Test func sigmoidRoutingScalesTheExpertInput() {
        var generator = SystemRandomNumberGenerator()
        let d = 6, inner = 4, count = 3, tokens = 5
        func random(_ n: Int) -> [Float] { (0..<n).map { _ in Float.random(in: -1...1, using: &generator) } }
        func expert() -> (gateUp: [Float], down: [Float]) { (random(2 * inner * d), random(d * inner)) }
        let experts = (0..<count).map { _ in expert() }, shared = expert(), router = random(count * d)
        func feedForward(_ e: (gateUp: [Float], down: [Float])) -> FeedForward {
            .gated(
                gateUp: Linear(weight: e.gateUp, bias: nil, inFeatures: d, outFeatures: 2 * inner),
                down: Linear(weight: e.down, bias: nil, inFeatures: inner, outFeatures: d), activation: .silu)
        }
        let moe = MixtureOfExperts(
            router: Linear(weight: router, bias: nil, inFeatures: d, outFeatures: count), experts: experts.map(feedForward),
            expertsPerToken: 2, rule: .sigmoidOfTopK, sharedExperts: [feedForward(shared)], weightsScaleInput: true)
        let x = Matrix(rows: tokens, cols: d, data: random(tokens * d))
        let output = moe(x)
        func run(_ e: (gateUp: [Float], down: [Float]), _ input: [Double]) -> [Double] {
            let gateUp = (0..<(2 * inner)).map { o in (0..<d).reduce(0.0) { $0 + Double(e.gateUp[o * d + $1]) * input[$1] } }
            let hidden = (0..<inner).map { i in gateUp[i] / (1 + exp(-gateUp[i])) * gateUp[inner + i] }
            return (0..<d).map { o in (0..<inner).reduce(0.0) { $0 + Double(e.down[o * inner + $1]) * hidden[$1] } }
        }
        for t in 0..<tokens {
            let token = (0..<d).map { Double(x[t, $0]) }
            let logits = (0..<count).map { e in (0..<d).reduce(0.0) { $0 + Double(router[e * d + $1]) * token[$1] } }
            let top = (0..<count).sorted { logits[$0] > logits[$1] }.prefix(2)
            var expected = run(shared, token)
            for e in top {
                let score = 1 / (1 + exp(-logits[e]))
                for (j, value) in run(experts[e], token.map { $0 * score }).enumerated() { expected[j] += value }
            }
            for j in 0..<d { #expect(abs(Double(output[t, j]) - expected[j]) < 1e-5, "token \(t) column \(j)") }
        }
    }
}
