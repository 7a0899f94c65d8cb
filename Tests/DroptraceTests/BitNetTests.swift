@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// BitNet b1.58 (`bitnet`): Llama's block with the attention output and the
/// MLP's hidden rows normalised before their projections, BitNetConfig's
/// defaults and refusals. The scores themselves are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct BitNetTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "bitnet-f32"

    static let mutants: [Mutant] = [
        // attn_sub_norm normalises hidden_size values: 4 heads of 16 are 64.
        Mutant(name, "head_dim", "16"), Mutant(name, "num_attention_heads", "5"),
        // BitNetConfig declares no head_dim: a float one reaches the projections' sizes (TypeError).
        Mutant(name, "head_dim", "12.0"),
        // Ternary weights packed for the bitnet kernels are not the master weights.
        Mutant(name, "quantization_config", #"{"quant_method": "bitnet", "linear_class": "autobitlinear"}"#),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every attention normalises its output before o_proj; every MLP its
    /// squared-ReLU-gated hidden rows before down_proj.
    @Test func subNormsAsBitNetBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            #expect(block.attention?.attention?.attendedNorm != nil)
            guard case .hiddenNormed(.gated(_, _, let activation), _)? = block.mlp?.feedForward else {
                Issue.record("layer \(index)'s MLP is not a gated MLP with its hidden rows normalised")
                continue
            }
            #expect(activation == .reluSquared)
        }
    }

    /// Without rope parameters the rotary base is BitNetConfig's 5e5 (the fixture's).
    @Test func omittedKeysTakeBitNetConfigDefaults() throws {
        let base = try EditedFixture(Self.name).attentionScores()
        #expect(try EditedFixture(Self.name) { $0["rope_parameters"] = nil; $0["rope_theta"] = nil }.attentionScores() == base)
        #expect(try EditedFixture(Self.name) { $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 10_000.0] }.attentionScores() != base)
    }
}
