@testable import Architectures
@testable import CheckpointIO
import DroptraceSupport
import Foundation
@testable import TensorEngine
import Scoring
import Testing

/// Doge (`doge`): config refusals, the residual scales, the dynamic mask
/// (its biases and its cap on the keys) and the product-key experts routed
/// across the sequence as transformers lays them out. The scores themselves
/// are checked against transformers with every other family
/// (`ScoringReferenceTests`, `DropTests`).
@Suite struct DogeTests {
    typealias Mutant = ConfigValidationTests.Mutant

    static let mutants: [Mutant] = [
        Mutant("doge-f32", "rms_norm_eps", "0"),
        // torch.topk fails on a negative count; 0 masks every key (each query spreads over the whole sequence).
        Mutant("doge-f32", "keep_window_size", "0"), Mutant("doge-f32", "keep_window_size", "-1"),
        Mutant("doge-f32", "keep_window_size", "null"), Mutant("doge-f32", "keep_window_size", "8.5"),
        Mutant("doge-f32", "is_moe", "null"),
        // Product keys: ⌊√num_experts⌋² experts are retrievable.
        Mutant("doge-f32", "num_experts", "15"), Mutant("doge-f32", "num_experts", "0"), Mutant("doge-f32", "num_experts", "null"),
        Mutant("doge-f32", "num_experts", "4611686018427387904"),
        Mutant("doge-f32", "num_experts_per_tok", "0"), Mutant("doge-f32", "num_experts_per_tok", "17"),
        Mutant("doge-f32", "num_experts_per_tok", "null"),
        Mutant("doge-f32", "head_dim", "null"),
        // Sizes the tensors contradict.
        Mutant("doge-f32", "num_experts", "64"), Mutant("doge-f32", "num_experts", "9"),
        Mutant("doge-f32", "num_key_value_heads", "4"), Mutant("doge-f32", "num_key_value_heads", "1"),
        Mutant("doge-f32", "intermediate_size", "32"), Mutant("doge-f32", "head_dim", "16"),
        // The weights are the CDMoE's.
        Mutant("doge-f32", "is_moe", "false"),
        Mutant("doge-f32", "attention_bias", "true"), Mutant("doge-f32", "mlp_bias", "true"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        if mutant.path == "attention_bias" || mutant.path == "mlp_bias" {
            // A bias the weights lack is a missing tensor, named as such.
            let scratch = try ScratchDirectory()
            let model = try scratch.copyOfModel(mutant.model, as: "model")
            try mutant.apply(to: model.appendingPathComponent("config.json"))
            #expect(throws: DroptraceError.self) { _ = try ModelRegistry.load(try Checkpoint(directory: model)).block(0) }
            return
        }
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Every branch joins the stream scaled per channel; the attention is
    /// Qwen3's with the dynamic mask (keep 8); the MLP is the dense SwiGLU
    /// beside 4 of 16 experts by 2 × 4 product keys.
    @Test func scaledBranchesDynamicMaskAndProductKeys() throws {
        let model = try EditedFixture("doge-f32").load() as! DogeModel
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            let branch = try #require(block.attention), mlp = try #require(block.mlp)
            for join in [branch.join, mlp.join] {
                guard case .scalingStream(let scale)? = join else { Issue.record("layer \(layer): no residual scale"); continue }
                #expect(scale.count == model.hiddenSize && scale.contains { $0 != 1 }, "the fixture's scales are not ones")
            }
            let attention = branch.attention!
            let mask = try #require(attention.dynamicMask)
            #expect(mask.keep == 8 && mask.rates.count == 2 && mask.rates.allSatisfy { $0 < 0 })
            guard case .perHead? = attention.queryKeyNorm else { Issue.record("layer \(layer): no per-head q/k norms"); continue }
            guard case .productKeys(let experts) = mlp.feedForward else { Issue.record("layer \(layer): no CDMoE"); continue }
            #expect(experts.keys == 4 && experts.expertsPerToken == 4 && !experts.renormalizes)
            guard case .gated = experts.shared else { Issue.record("layer \(layer): the dense MLP is not gated"); continue }
        }
    }

    /// The cap keeps the keys of highest bias, only in sequences longer
    /// than it; the biases join every kept score. Of equal biases at the
    /// cut, those torch.topk keeps (its libstdc++ nth_element's order).
    @Test func keyBiasesKeepTheHighest() {
        let biases = KeyBiases(values: [0.5, 0.9, 0.1, 0.9, 0.3], kvHeads: 1, keep: 2)
        var scores: [Float] = [1, 1, 1, 1, 1]
        biases.apply(&scores, kvHead: 0, start: 0, length: 5, keys: 0..<5)
        #expect(scores == [-.infinity, 1.9, -.infinity, 1.9, -.infinity])
        // Two visible keys of a longer sequence: both kept.
        var early: [Float] = [0, 0]
        biases.apply(&early, kvHead: 0, start: 0, length: 5, keys: 0..<2)
        #expect(early == [0.5, 0.9])
        // torch.topk(torch.tensor([2., 0, 1, 2, 2, 0, 2, 2, 2, 2, 1, 2, 0, 2]), 8, sorted=False) keeps the 2s at 0, 3, 6, 7, 8, 9, 11, 13.
        let row: [Float] = [2, 0, 1, 2, 2, 0, 2, 2, 2, 2, 1, 2, 0, 2]
        var entries = row.enumerated().map { (value: $1, index: $0) }
        TorchTopK.select(&entries, k: 8)
        #expect(entries.prefix(8).map(\.index).sorted() == [0, 3, 6, 7, 8, 9, 11, 13])
    }

    /// With keep_window_size 2, a 128-token sequence (2 · 64 ≤ 128) is capped
    /// by torch.topk's partial_sort path, whose heap keeps its own one of
    /// two keys of equal bias (a repeated token's, in layer 0): the scores
    /// are transformers 5.25.0's for this sequence alone (DogeForCausalLM,
    /// float32, make_fixtures.py's `importances`).
    @Test func capBeyondTheNthElementPathKeepsTorchsKeys() throws {
        let sequence = [
            3, 29, 51, 31, 11, 43, 35, 12, 28, 32, 12, 46, 49, 8, 26, 41, 24, 7, 25, 26, 13, 0, 17, 55, 51, 37, 19, 56, 1, 13, 11, 25,
            54, 38, 41, 36, 6, 2, 9, 13, 28, 16, 0, 49, 39, 21, 53, 18, 24, 4, 4, 5, 13, 37, 40, 15, 0, 38, 23, 23, 39, 29, 8, 37,
            30, 53, 36, 8, 55, 24, 11, 40, 9, 19, 58, 14, 52, 39, 15, 46, 12, 10, 47, 40, 35, 12, 43, 24, 56, 30, 38, 5, 26, 3, 6, 6,
            2, 32, 16, 15, 47, 45, 25, 16, 26, 52, 57, 38, 31, 18, 33, 11, 59, 46, 4, 8, 14, 30, 35, 41, 54, 39, 39, 4, 17, 13, 58, 58,
        ]
        let model = try EditedFixture("doge-f32") { $0["keep_window_size"] = 2 }.load()
        let scores = try ImportanceScorer(model: model).score([sequence], calibrationPath: "calib")
        let expected: [(computed: [Double], transformers: [Double])] = [
            (scores.attention, [0.16214236, 0.04516486, 0.06354224, 0.02718464]),
            (scores.mlp, [0.75163021, 0.25917919, 0.17907438, 0.16300197]),
            (scores.block, [0.77490627, 0.25991364, 0.21380206, 0.18621316]),
        ]
        for (computed, transformers) in expected {
            #expect(zip(computed, transformers).allSatisfy { abs($0 - $1) < 1e-6 }, "\(computed) vs \(transformers)")
        }
    }

    /// transformers views a sequence's router logits [tokens, 2 · keys] as
    /// [2, tokens, keys]: token t reads runs t and tokens + t. A one-token
    /// sequence reads its own halves; routing each row alone differs.
    @Test func routingReadsTheSequenceAsTransformersViewsIt() throws {
        let model = try EditedFixture("doge-f32").load() as! DogeModel
        guard case .productKeys(let experts)? = try model.block(1).mlp?.feedForward else {
            Issue.record("no CDMoE")
            return
        }
        let rows = 6, d = model.hiddenSize
        let x = Matrix(rows: rows, cols: d, data: (0..<(rows * d)).map { Float(sin(Double($0) * 0.37)) })
        let whole = experts(x, sequences: [0..<rows])
        let alone = experts(x, sequences: (0..<rows).map { $0..<($0 + 1) })
        #expect(whole.data != alone.data)
        // Two sequences route apart: the second's rows as if alone (up to the
        // products' summation order, which on AVX2 follows the batch's row
        // count; another routing would differ by the experts' whole outputs).
        let split = experts(x, sequences: [0..<2, 2..<rows])
        let second = experts(x.rows(2..<rows), sequences: [0..<(rows - 2)])
        let tail = Array(split.data[(2 * d)...])
        #expect(tail.count == second.data.count && zip(tail, second.data).allSatisfy { abs($0 - $1) <= 1e-6 })
        // A one-token sequence: its first and second halves.
        let token = x.rows(0..<1)
        let logits = experts.router(token).data
        let k = experts.keys
        var best: (Float, Int) = (-.infinity, 0)
        for i in 0..<k { for j in 0..<k where logits[i] + logits[k + j] > best.0 { best = (logits[i] + logits[k + j], i * k + j) } }
        #expect(experts.route(token, sequences: [0..<1]).experts.first == best.1)
    }

    /// Bit-equal input rows (a repeated token in layer 0) get bit-equal key
    /// biases, however the product rounded their value rows: the cap then
    /// chooses among them as torch.topk does among ties. Here the second
    /// copy's value row is off (a kernel summing it in another order puts
    /// it a few ulps off, enough to break a tie); a decoder's memory
    /// carries the first bias to a later step.
    @Test func equalInputRowsGetEqualBiases() throws {
        let model = try EditedFixture("doge-f32").load() as! DogeModel
        let attention = try #require(try model.block(0).attention?.attention)
        let mask = try #require(attention.dynamicMask), layout = attention.layout
        let d = model.hiddenSize, heads = layout.numKVHeads
        let row = (0..<d).map { Float(sin(Double($0) * 0.37)) }, other = (0..<d).map { Float(cos(Double($0) * 0.41)) }
        let x = Matrix(rows: 3, cols: d, data: row + other + row)
        var qkv = attention.projectedQKV(x, positions: [0, 1, 2])
        let value = 2 * layout.width + layout.valueOffset(kvHead: 0)
        for i in value..<(value + layout.keyWidth) { qkv.data[i] += 1e-3 }
        let unified = mask.biases(qkv, layout: layout, inputs: x).values
        #expect(Array(unified[0..<heads]) == Array(unified[(2 * heads)...]))
        // Without the equal inputs, the off value row gives its own biases.
        let distinct = Matrix(rows: 3, cols: d, data: row + other + row.map { $0 + 1 })
        let apart = mask.biases(qkv, layout: layout, inputs: distinct).values
        #expect(Array(apart[0..<heads]) != Array(apart[(2 * heads)...]))
        // Across calls: the memory of the first call's rows.
        var earlier = EqualRowOutputs()
        let first = mask.biases(qkv.rows(0..<1), layout: layout, inputs: x.rows(0..<1), earlier: &earlier).values
        let later = mask.biases(qkv.rows(2..<3), layout: layout, inputs: x.rows(2..<3), earlier: &earlier).values
        #expect(first == later)
    }

    /// The memory behind both: outputs of bit-equal input rows made equal
    /// to the first one's, within a call and across calls; a row differing
    /// in one bit (−0 against 0) keeps its own.
    @Test func equalRowOutputsFollowTheFirstEqualRow() {
        let inputs = Matrix(rows: 4, cols: 2, data: [1, 2, 3, 4, 1, 2, 1, 0])
        let outputs = Matrix(rows: 4, cols: 3, data: [0, 1, 2, 3, 4, 5, 0, 1, 2.5, 9, 9, 9])
        var memory = EqualRowOutputs(), unified = outputs
        memory.unify(&unified, inputs: inputs)
        #expect(unified.data == [0, 1, 2, 3, 4, 5, 0, 1, 2, 9, 9, 9])
        var later = Matrix(rows: 2, cols: 3, data: [7, 7, 7, 8, 8, 8])
        memory.unify(&later, inputs: Matrix(rows: 2, cols: 2, data: [3, 4, 1, -0.0]))
        #expect(later.data == [3, 4, 5, 8, 8, 8])
        #expect(EqualRowOutputs.unified(outputs, inputs: inputs).data == unified.data)
    }

    /// A dropped branch takes its scale with it: the stream passes unscaled.
    @Test func droppedBranchLeavesTheStream() throws {
        let model = try EditedFixture("doge-f32").load() as! DogeModel
        let block = try model.block(0, skipping: DropPlan(attention: [0], mlp: [0]))
        #expect(block.attention == nil && block.mlp == nil)
    }
}
