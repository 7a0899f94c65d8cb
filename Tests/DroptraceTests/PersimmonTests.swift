@testable import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// Persimmon (`persimmon`): what the reference scores (`persimmon-f32`,
/// within 2.3e-9 of transformers) do not single out — the per-head rows of
/// `query_key_value` regrouped for the q/k norms, the norms switched off,
/// and the configs PersimmonAttention cannot run.
@Suite struct PersimmonTests {
    static let fixture = "persimmon-f32"

    /// Rows [q_0, k_0, v_0, q_1, k_1, v_1] (head_dim 2) become
    /// [q_0, q_1, k_0, k_1, v_0, v_1], biases alike.
    @Test func rowsPerHeadAreGroupedByProjection() {
        let width = 3, headDim = 2, heads = 2
        let rows = 3 * heads * headDim
        // Row r's values are r * 10 + column.
        let weight = (0..<rows).flatMap { r in (0..<width).map { Float(r * 10 + $0) } }
        let linear = Linear(weight: weight, bias: (0..<rows).map(Float.init), inFeatures: width, outFeatures: rows)
        let grouped = linear.groupingHeadsByProjection(heads: heads, headDim: headDim)
        // Stored rows: head 0 q 0-1, k 2-3, v 4-5; head 1 q 6-7, k 8-9, v 10-11.
        let order = [0, 1, 6, 7, 2, 3, 8, 9, 4, 5, 10, 11]
        #expect(grouped.bias == order.map(Float.init))
        #expect(grouped.weight == order.flatMap { r in (0..<width).map { Float(r * 10 + $0) } })
    }

    /// `qk_layernorm` false: no q/k norm is read, and the scores are those
    /// of the same weights without them (the fixture's norms move the
    /// attention scores by up to 4e-2 in transformers).
    @Test func queryKeyNormsActOnlyWhereConfigured() throws {
        let with = try EditedFixture(Self.fixture).attentionScores()
        let without = try EditedFixture(Self.fixture) { $0["qk_layernorm"] = false }
        let scores = try without.attentionScores()
        #expect(zip(with, scores).map { abs($0 - $1) }.max()! > 1e-3)
        let read = try without.load().checkpoint.tensorsRead
        #expect(!read.contains { $0.contains("q_layernorm") || $0.contains("k_layernorm") }, "\(read)")
    }

    /// PersimmonAttention's heads are hidden_size / num_attention_heads wide
    /// while its rotary table reads `head_dim`, and it slices
    /// int(head_dim · partial_rotary_factor) dimensions against a table
    /// 2·ceil(w/2) wide: both fail in transformers, both are refused.
    @Test func configsPersimmonAttentionCannotRunAreRefused() throws {
        try EditedFixture(Self.fixture) { $0["head_dim"] = 8 }.expectRefused(naming: "head_dim")
        // 12 · 0.25 = 3 rotary dimensions.
        try EditedFixture(Self.fixture, rope: "partial_rotary_factor", 0.25).expectRefused(naming: "partial_rotary_factor")
        try EditedFixture(Self.fixture) { $0["hidden_size"] = 50 }.expectRefused(naming: "hidden_size")
    }
}
