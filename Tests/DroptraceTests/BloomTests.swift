import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// BLOOM's ALiBi slopes, its width keys and the keys it refuses. The scores
/// themselves are checked against transformers with every other family
/// (`ScoringReferenceTests`), key/value-cache decoding with ALiBi by
/// `DropTests`.
@Suite struct BloomTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("bloom-f32", "n_head", "5"),
        Mutant("bloom-f32", "n_layer", "0"),
        Mutant("bloom-f32", "layer_norm_epsilon", "0"),
        Mutant("bloom-f32", "n_embed", "-48"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// transformers' `_get_alibi_slopes` (torch 2.x, float32), for a power of
    /// two and for counts past one (BLOOM-176B has 112 heads).
    @Test func slopesAreTransformers() {
        #expect(ALiBi.slopes(heads: 1) == [0.00390625])
        #expect(ALiBi.slopes(heads: 6) == [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125])
        let sixteen = ALiBi.slopes(heads: 16)
        #expect(sixteen.count == 16)
        #expect(sixteen[0] == 0.7071067690849304 && sixteen[1] == 0.4999999701976776 && sixteen[15] == 0.0039062488358467817)
        let twelve = ALiBi.slopes(heads: 12)
        #expect(twelve[7] == 0.00390625 && twelve[8] == 0.7071067690849304 && twelve[11] == 0.0883883386850357)
        let bloom176B = ALiBi.slopes(heads: 112)
        #expect(bloom176B.count == 112)
        for (head, slope) in [(0, 0.9170040488243103), (63, 0.003906251396983862), (64, 0.9576032757759094), (111, 0.016316769644618034)] {
            #expect(abs(bloom176B[head] - Float(slope)) <= Float(slope).ulp, "head \(head): \(bloom176B[head]) vs \(slope)")
        }
    }

    /// BLOOM's own configs give the width as `n_embed`, which BloomConfig
    /// reads over `hidden_size`; errors then name `n_embed`.
    @Test func nEmbedIsTheWidthWhenGiven() throws {
        let model = try EditedFixture("bloom-f32") { $0["n_embed"] = $0["hidden_size"]; $0["hidden_size"] = 64 }.load()
        #expect(model.hiddenSize == 48)
        let error = #expect(throws: DroptraceError.self) { try EditedFixture("bloom-f32") { $0["n_embed"] = 64 }.load() }
        #expect(error?.message.contains("n_embed") == true, "\(String(describing: error))")
    }

    /// A residual taken after the input norm is another block than the one
    /// droptrace computes: refused, naming the key.
    @Test func residualAfterTheNormIsRefused() {
        let error = #expect(throws: DroptraceError.self) {
            try EditedFixture("bloom-f32") { $0["apply_residual_connection_post_layernorm"] = true }.load()
        }
        #expect(error?.message.contains("apply_residual_connection_post_layernorm") == true, "\(String(describing: error))")
        #expect(error?.path?.hasSuffix("config.json") == true)
    }

    /// Every attention layer carries the model's slopes and no rotary.
    @Test func attentionCarriesTheSlopes() throws {
        let attention = try EditedFixture("bloom-f32").load().block(2).attention?.attention
        #expect(attention?.alibi == ALiBi(slopes: ALiBi.slopes(heads: 6)) && attention?.rotary == nil)
    }
}
