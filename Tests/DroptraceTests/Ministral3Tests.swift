import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Ministral 3's defaults, its query temperature and the keys it needs, and
/// Mistral3ForConditionalGeneration's language model read from `text_config`.
/// The scores themselves are checked against transformers with every other
/// family (`ScoringReferenceTests`).
@Suite struct Ministral3Tests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        // transformers' get_llama_4_attn_scale multiplies None by a tensor.
        Mutant("ministral3-f32", "rope_parameters.llama_4_scaling_beta", "null"),
        Mutant("ministral3-f32", "rope_parameters.original_max_position_embeddings", "0"),
        // Ministral3Config types head_dim as int.
        Mutant("ministral3-f32", "head_dim", "null"),
        Mutant("mistral3-f32", "text_config.rope_parameters.llama_4_scaling_beta", "null",
               key: "text_config.rope_parameters.llama_4_scaling_beta"),
        Mutant("mistral3-f32", "text_config.model_type", "\"llama\"", key: "text_config.model_type"),
        // text_config is checked against the table of its own model_type (ministral3's).
        Mutant("mistral3-f32", "text_config.head_dim", "null", key: "text_config.head_dim"),
        Mutant("mistral3-f32", "text_config.pad_token_id", "600", key: "text_config.pad_token_id"),
        Mutant("mistral3-f32", "text_config.hidden_size", "64", key: "hidden_size"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    func temperature(_ fixture: EditedFixture, layer: Int = 0) throws -> QueryTemperature? {
        try fixture.load().block(layer).attention?.attention.queryTemperature
    }

    /// 1 + β · ln(1 + ⌊p / original⌋) in double precision.
    func formula(beta: Double, original: Int, position: Int) -> Double {
        1 + beta * log(1 + Double(position / original))
    }

    @Test func temperatureFactorFollowsLlama4Formula() {
        let temperature = QueryTemperature(beta: 0.1, originalMaxPositions: 8)
        for position in [0, 1, 7] { #expect(temperature.factor(position: position) == 1) }
        for position in [8, 15, 16, 23, 100, 16383, 1_000_000] {
            let expected = formula(beta: 0.1, original: 8, position: position)
            #expect(abs(Double(temperature.factor(position: position)) - expected) < 1e-6 * expected, "position \(position)")
        }
    }

    /// Only the query columns of rows at or beyond the original length are scaled.
    @Test func temperatureScalesQueriesOnly() {
        let temperature = QueryTemperature(beta: 0.5, originalMaxPositions: 2)
        let positions = [0, 1, 2, 5], width = 6, queries = 0..<4
        var rows = (0..<(positions.count * width)).map { Float($0 % 7) + 1 }
        let original = rows
        rows.withUnsafeMutableBufferPointer {
            temperature.apply(to: $0.baseAddress!, rowStride: width, columns: queries, positions: positions)
        }
        for (row, position) in positions.enumerated() {
            let factor = Float(formula(beta: 0.5, original: 2, position: position))
            for column in 0..<width {
                let before = original[row * width + column], after = rows[row * width + column]
                let expected = queries.contains(column) ? before * factor : before
                #expect(abs(after - expected) <= 1e-6 * abs(expected), "row \(row) column \(column)")
            }
        }
    }

    /// The fixture's attention applies the temperature to its queries after
    /// rotary: rows below the original length are as without it, the others'
    /// queries are multiplied by the factor, keys and values never.
    @Test func attentionScalesRotatedQueries() throws {
        let attention = try #require(try EditedFixture("ministral3-f32").load().block(0).attention?.attention)
        let temperature = try #require(attention.queryTemperature)
        let plain = SelfAttention(
            projection: attention.projection, layout: attention.layout, rotary: attention.rotary, output: attention.output,
            scale: attention.scale, slidingWindow: attention.slidingWindow)
        let positions = [0, 1, 2, 9], hidden = 48
        let x = Matrix(rows: positions.count, cols: hidden, data: (0..<(positions.count * hidden)).map { Float(($0 * 37) % 11) / 11 - 0.5 })
        let scaled = attention.projectedQKV(x, positions: positions), unscaled = plain.projectedQKV(x, positions: positions)
        let width = attention.layout.width
        for (row, position) in positions.enumerated() {
            let factor = temperature.factor(position: position)
            #expect((position < temperature.originalMaxPositions) == (factor == 1))
            for column in 0..<width {
                let expected = column < attention.layout.queryWidth ? unscaled.data[row * width + column] * factor
                    : unscaled.data[row * width + column]
                #expect(abs(scaled.data[row * width + column] - expected) <= 1e-6 * max(1, abs(expected)))
            }
        }
    }

    /// β and the original length come from the rope parameters; without
    /// them transformers fails, and so does the load, naming the key. A YaRN
    /// set without an original length takes max_position_embeddings (as
    /// transformers' standardize_rope_params writes it).
    @Test func temperatureKeysAreRequired() throws {
        let fixture = try EditedFixture("ministral3-f32")
        #expect(try temperature(fixture) == QueryTemperature(beta: 0.1, originalMaxPositions: 2))
        try EditedFixture("ministral3-f32", rope: "llama_4_scaling_beta", nil)
            .expectRefused(naming: "rope_parameters.llama_4_scaling_beta")
        try EditedFixture("ministral3-f32") {
            $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 1_000_000.0, "llama_4_scaling_beta": 0.1]
        }.expectRefused(naming: "rope_parameters.original_max_position_embeddings")
        let yarn = try EditedFixture("ministral3-f32", rope: "original_max_position_embeddings", nil)
        #expect(try temperature(yarn)?.originalMaxPositions == 256)
        try EditedFixture("mistral3-f32") { config in
            var text = config["text_config"] as! [String: Any]
            var rope = text["rope_parameters"] as! [String: Any]
            rope["llama_4_scaling_beta"] = nil
            text["rope_parameters"] = rope
            config["text_config"] = text
        }.expectRefused(naming: "text_config.rope_parameters.llama_4_scaling_beta")
    }

    /// Ministral3Config's defaults: YaRN with β 0.1 over 16384 positions
    /// without rope parameters, head_dim 128 (which the fixture's 12-wide
    /// projections contradict), no sliding window.
    @Test func defaultsOfMinistral3Config() throws {
        let defaulted = try EditedFixture("ministral3-f32") { $0["rope_parameters"] = nil }
        #expect(try temperature(defaulted) == QueryTemperature(beta: 0.1, originalMaxPositions: 16384))
        let error = #expect(throws: DroptraceError.self) { try EditedFixture("ministral3-f32") { $0["head_dim"] = nil }.load() }
        #expect(error?.message.contains("head_dim") == true && error?.message.contains("q_proj") == true, "\(String(describing: error))")
        let windowless = try EditedFixture("ministral3-f32") { $0["sliding_window"] = nil }.load()
        #expect(try windowless.block(0).attention?.attention.slidingWindow == nil)
    }

    /// Ministral3Model builds one mask from `sliding_window` for every layer;
    /// `layer_types` does not change it.
    @Test func windowCoversEveryLayer() throws {
        let model = try EditedFixture("ministral3-f32") {
            $0["sliding_window"] = 8
            $0["layer_types"] = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
        }.load()
        for layer in 0..<4 { #expect(try model.block(layer).attention?.attention.slidingWindow == 8) }
    }

    /// mistral3 reads its sizes from `text_config` (exports edit that
    /// section), weights under the language model's prefix, the temperature
    /// of a ministral3 text model; a `mistral` (or unnamed) text model is
    /// Mistral's block without it.
    @Test func mistral3ReadsTextConfig() throws {
        let fixture = try EditedFixture("mistral3-f32")
        let model = try fixture.load()
        #expect(model.layerCount == 4 && model.vocabularySize == 512)
        #expect(model.layerNaming.configSection == "text_config")
        #expect(model.layerNaming.prefix == "language_model.model.layers.")
        #expect(try model.block(0).attention?.attention.queryTemperature == QueryTemperature(beta: 0.1, originalMaxPositions: 2))
        let exported = try fixture.exportedConfig(droppingBlocks: [1])
        #expect((exported["text_config"] as? [String: Any])?["num_hidden_layers"] as? Int == 3)
        #expect(exported["num_hidden_layers"] == nil)
        for textType: String? in ["mistral", nil] {
            let mistral = try EditedFixture("mistral3-f32") { config in
                var text = config["text_config"] as! [String: Any]
                text["model_type"] = textType
                config["text_config"] = text
            }.load()
            #expect(try mistral.block(0).attention?.attention.queryTemperature == nil)
            #expect(try mistral.block(0).attention?.attention.slidingWindow == nil)
        }
        // A mistral text_config with layer_types is MistralConfig's (AutoConfig's reading of it as
        // ministral applies at the top level only): its window covers every layer.
        let windowed = try EditedFixture("mistral3-f32") { config in
            var text = config["text_config"] as! [String: Any]
            text["model_type"] = "mistral"
            text["sliding_window"] = 8
            text["layer_types"] = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
            config["text_config"] = text
        }.load()
        for layer in 0..<4 { #expect(try windowed.block(layer).attention?.attention.slidingWindow == 8) }
    }

    /// Mistral3ForConditionalGeneration ties its head by the top-level
    /// `tie_word_embeddings` (default true), not the text config's: without
    /// a stored head the embedding stands in only when the top level ties.
    @Test func mistral3TiesByTopLevelKey() throws {
        func headless(_ change: @escaping (inout [String: Any]) -> Void) throws -> EditedFixture {
            let fixture = try EditedFixture("mistral3-f32", change)
            try BadInputTests().rewriteWeights(fixture.model) { $0.removeAll { $0.name.hasSuffix("lm_head.weight") } }
            return fixture
        }
        #expect(try headless { $0["tie_word_embeddings"] = nil }.load().head().vocabularySize == 512)
        let untied = try headless { config in
            var text = config["text_config"] as! [String: Any]
            text["tie_word_embeddings"] = true
            config["text_config"] = text
        }
        let error = #expect(throws: DroptraceError.self) { try untied.load().head() }
        #expect(error?.message.contains("lm_head.weight") == true, "\(String(describing: error))")
    }
}
