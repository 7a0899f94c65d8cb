import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// NanoChat's defaults as NanoChatConfig has them, its weightless norms,
/// reversed rotation and soft-capped logits; the scores themselves are
/// checked against transformers with every other family (`ScoringReferenceTests`).
@Suite struct NanoChatTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("nanochat-f32", "rms_norm_eps", "0.0"),
        Mutant("nanochat-f32", "rms_norm_eps", "null"),
        Mutant("nanochat-f32", "final_logit_softcapping", "-1.0"),
        Mutant("nanochat-f32", "attention_bias", "1"),
        Mutant("nanochat-f32", "hidden_act", "null"),
        Mutant("nanochat-f32", "num_attention_heads", "5"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every norm is an RMSNorm of ones; the per-head q/k norms follow the
    /// rotation, whose frequencies are the default ones negated; the MLP is
    /// fc2(relu2(fc1 x)) without biases; the logits are capped at 15 unless
    /// config.json says otherwise (null: not capped).
    @Test func blockAsNanoChatBuilds() throws {
        let model = try EditedFixture("nanochat-f32") { $0["final_logit_softcapping"] = nil }.load()
        let block = try model.block(0)
        let attention = try #require(block.attention?.attention)
        guard case .rms(let weight, _)? = block.attention?.inputNorm, case .perHead(let query, _)? = attention.queryKeyNorm,
              case .rms(let queryWeight, _) = query, case .plain(let up, let down, let activation)? = block.mlp?.feedForward
        else {
            Issue.record("not weightless RMSNorms, per-head q/k norms and a plain MLP")
            return
        }
        #expect(weight.allSatisfy { $0 == 1 } && queryWeight.count == 12 && queryWeight.allSatisfy { $0 == 1 })
        #expect(attention.queryKeyNormAfterRotary && up.bias == nil && down.bias == nil && activation == .reluSquared)
        let frequencies = try #require(attention.rotary?.inverseFrequencies)
        #expect(frequencies == RotaryEmbedding.defaultInverseFrequencies(base: 10000, rotaryDim: 12).map { -$0 })
        #expect(try model.head().logitSoftcap == 15)
        let uncapped = try EditedFixture("nanochat-f32") { $0["final_logit_softcapping"] = NSNull() }.load()
        #expect(try uncapped.head().logitSoftcap == nil)
    }

    /// The reversed rotation is the usual one by −angle: rotating a pair
    /// forward at position p and back undoes it.
    @Test func reversedRotationUndoesTheUsualOne() {
        let frequencies: [Float] = [0.5]
        let forward = RotaryEmbedding(inverseFrequencies: frequencies, headDim: 2)
        let backward = RotaryEmbedding(inverseFrequencies: frequencies.map { -$0 }, headDim: 2)
        var pair: [Float] = [0.6, -0.8]
        pair.withUnsafeMutableBufferPointer {
            forward.apply(to: $0.baseAddress!, rowStride: 2, headOffsets: [0], positions: [3])
            backward.apply(to: $0.baseAddress!, rowStride: 2, headOffsets: [0], positions: [3])
        }
        #expect(abs(pair[0] - 0.6) < 1e-6 && abs(pair[1] + 0.8) < 1e-6)
    }
}
