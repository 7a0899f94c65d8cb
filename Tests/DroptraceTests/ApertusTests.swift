import Architectures
import Foundation
import TensorEngine
import Testing

/// Apertus: the xIELU activation with each layer's learned parameters, and
/// transformers' llama3 rotary defaults for configs that name none.
@Suite struct ApertusTests {
    /// transformers' XIELUActivation (float32) with alpha_p 0.3, alpha_n −0.7
    /// and the default beta 0.5, eps −1e-6, at these inputs.
    static let transformersValues: [(x: Float, y: Float)] = [
        (-30, 11.19239616394043), (-3, 0.35133910179138184), (-0.25, -0.09898753464221954),
        (-1e-7, -8.628670116195281e-07), (0, -9.031856507135672e-07), (1e-7, 5.000000768973223e-08),
        (0.5, 0.4635888338088989), (2, 4.417421340942383), (25, 546.4720458984375),
    ]

    @Test func xIELUMatchesTransformers() {
        let activation = XIELU(alphaP: 0.3, alphaN: -0.7, beta: 0.5, eps: -1e-6)
        var matrix = Matrix(rows: 1, cols: Self.transformersValues.count, data: Self.transformersValues.map(\.x))
        Activation.xIELU(activation).apply(inPlace: &matrix)
        for (value, expected) in zip(matrix.data, Self.transformersValues) {
            #expect(abs(value - expected.y) <= 1e-6 * max(1, abs(expected.y)), "xIELU(\(expected.x))")
        }
    }

    /// Each layer's MLP is down(xIELU(up x)) with that layer's own parameters.
    @Test func eachLayerUsesItsOwnXIELUParameters() throws {
        let model = try EditedFixture("apertus-f32").load()
        var parameters: [XIELU] = []
        for index in 0..<model.layerCount {
            guard case .plain(_, _, .xIELU(let p))? = try model.block(index).mlp?.feedForward else {
                Issue.record("layer \(index) has no plain xIELU MLP")
                continue
            }
            parameters.append(p)
        }
        #expect(parameters.count == model.layerCount)
        #expect(Set(parameters.map(\.alphaP)).count > 1, "trained layers differ")
    }

    @Test func namedActivationReplacesXIELU() throws {
        let model = try EditedFixture("apertus-f32") { $0["hidden_act"] = "relu" }.load()
        guard case .plain(_, _, .relu)? = try model.block(0).mlp?.feedForward else {
            Issue.record("hidden_act relu not used")
            return
        }
    }

    @Test func unknownActivationIsRefused() throws {
        try EditedFixture("apertus-f32") { $0["hidden_act"] = "swiglu_limit" }.expectRefused(naming: "activation")
    }

    /// Without rope_parameters or rope_scaling transformers uses llama3
    /// scaling with base 12e6, whatever rope_theta says.
    @Test func silentRopeIsTransformersLlama3Default() throws {
        let silent = try EditedFixture("apertus-f32") {
            $0["rope_parameters"] = nil
            $0["rope_theta"] = 10_000.0
        }.load()
        let explicit = try EditedFixture("apertus-f32") {
            $0["rope_parameters"] = [
                "rope_type": "llama3", "rope_theta": 12_000_000.0, "factor": 8.0,
                "original_max_position_embeddings": 8192, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            ] as [String: Any]
        }.load()
        let frequencies = try [silent, explicit].map { try #require(try $0.block(0).attention?.attention.rotary).inverseFrequencies }
        #expect(frequencies[0] == frequencies[1])
    }
}
