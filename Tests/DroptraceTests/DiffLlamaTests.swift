@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// DiffLlama (`diffllama`): config refusals, the differential attention's
/// λ and λ_init by layer, its value halves and group norm, and the block
/// drops an export can carry. The scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`, `DropTests`).
@Suite struct DiffLlamaTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("diffllama-f32", "rms_norm_eps", "0"),
        // DiffLlamaAttention refuses dropout above 0, and cannot compare null with it.
        Mutant("diffllama-f32", "attention_dropout", "0.1"), Mutant("diffllama-f32", "attention_dropout", "null"),
        Mutant("diffllama-f32", "attention_dropout", "\"none\""),
        // An odd count of key/value heads cannot be split in halves.
        Mutant("diffllama-f32", "num_key_value_heads", "1"),
        Mutant("diffllama-f32", "attention_bias", "1"),
        // Sizes the tensors contradict.
        Mutant("diffllama-f32", "num_key_value_heads", "4"), Mutant("diffllama-f32", "head_dim", "8"),
        Mutant("diffllama-f32", "num_hidden_layers", "3"), Mutant("diffllama-f32", "vocab_size", "500"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Without num_key_value_heads every head has its own keys and values
    /// (DiffLlamaConfig's rule): the fixture's two are then contradicted.
    @Test func absentKeyValueHeadsAreTheAttentionHeads() {
        let fixture = try? EditedFixture("diffllama-f32") { $0["num_key_value_heads"] = nil }
        fixture?.expectRefused(naming: "num_key_value_heads")
    }

    /// Each layer's λ_init follows its index, λ is the lambda vectors' (the
    /// fixture's drawn away from 0), and the group norm's weights are 1 − λ_init.
    @Test func lambdaPerLayer() throws {
        let model = try EditedFixture("diffllama-f32").load()
        for layer in 0..<model.layerCount {
            let differential = try #require(try model.block(layer).attention?.attention.differential)
            let lambdaInit = 0.8 - 0.6 * exp(-0.3 * Double(layer))
            #expect(abs(differential.lambdaInit - lambdaInit) < 1e-15)
            #expect(abs(Double(differential.lambda) - lambdaInit) > 1e-3, "layer \(layer): λ is λ_init")
            guard case .rms(let weight, let eps) = differential.norm else { Issue.record("no RMS group norm"); continue }
            #expect(weight.count == 24 && weight.allSatisfy { $0 == Float(1 - lambdaInit) } && eps == Float(1e-5))
        }
    }

    /// Two query heads of 2 over two key/value heads of 1 column: the first
    /// pass reads value head 0, the second value head 1; head 0 minus λ
    /// times head 1, each pass's column side by side, RMS-normalised.
    @Test func combinationOfTheTwoPasses() {
        let layout = QKVLayout(numHeads: 2, numKVHeads: 2, headDim: 1)
        let differential = DifferentialAttention(q1: [0], k1: [0], q2: [0], k2: [0], layer: 0, headDim: 1, eps: 0)
        #expect(abs(differential.lambda - 0.2) < 1e-7)
        // q0 q1 k0 k1 v0 v1: each query sees only its own position, so the output is the value it reads.
        let qkv = Matrix(rows: 1, cols: 6, data: [1, 1, 1, 1, 3, 5])
        let out = differential(qkv, layout: layout) { rows in
            Matrix(rows: 1, cols: 2, data: [rows.data[4], rows.data[5]])
        }
        // Pass 0 reads v0 for both kv heads, pass 1 v1: [3 − 0.2 · 3, 5 − 0.2 · 5] = [2.4, 4], normalised, times 1 − 0.2.
        let (a, b): (Float, Float) = (3 - 0.2 * 3, 5 - 0.2 * 5)
        let rms = ((a * a + b * b) / 2).squareRoot()
        #expect(abs(out.data[0] - a / rms * 0.8) < 1e-6 && abs(out.data[1] - b / rms * 0.8) < 1e-6, "\(out.data)")
    }

    /// Removing a block moves the later layers to indices of other λ_init:
    /// refused, unless no kept attention moves (the last block, or later
    /// layers whose attention is dropped too).
    @Test func exportsKeepEveryAttentionAtItsIndex() throws {
        let model = try EditedFixture("diffllama-f32").load()
        let problem = model.exportProblem(DropPlan(blocks: [1]))
        #expect(problem?.contains("λ_init") == true && problem?.contains("layer 2") == true, "\(String(describing: problem))")
        #expect(model.exportProblem(DropPlan(blocks: [3])) == nil)
        #expect(model.exportProblem(DropPlan(blocks: [2, 3])) == nil)
        #expect(model.exportProblem(DropPlan(attention: [3], blocks: [2])) == nil)
        #expect(model.exportProblem(DropPlan(attention: [0, 2])) == nil)
    }
}
