import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// EXAONE 4.0's hybrid attention: which layers slide, which rotate, as
/// Exaone4Config derives them. The scores themselves are checked against
/// transformers with every other family (`ScoringReferenceTests`).
@Suite struct Exaone4Tests {
    /// The attention of every block: its window and whether it rotates.
    func attention(_ fixture: EditedFixture) throws -> [(window: Int?, rotates: Bool)] {
        let model = try fixture.load()
        return try (0..<4).map { index in
            let attention = try #require(try model.block(index).attention?.attention)
            return (attention.slidingWindow, attention.rotary != nil)
        }
    }

    /// The fixture's layer_types: sliding layers rotate within the window,
    /// full layers attend without positions.
    @Test func fullLayersTakeNoPositionsWhileAWindowIsSet() throws {
        let layers = try attention(EditedFixture("exaone4-f32"))
        #expect(layers.map(\.window) == [8, nil, 8, nil] && layers.map(\.rotates) == [true, false, true, false])
    }

    /// Without layer_types, every `sliding_window_pattern`-th layer attends
    /// fully (4 by default); without a window every layer is full and
    /// rotates, given layer_types (Exaone4Config cannot derive them then).
    @Test func layerTypesFollowExaone4Config() throws {
        let derived = try attention(EditedFixture("exaone4-f32") { $0["layer_types"] = nil; $0["sliding_window_pattern"] = nil })
        #expect(derived.map(\.window) == [8, 8, 8, nil] && derived.map(\.rotates) == [true, true, true, false])
        let third = try attention(EditedFixture("exaone4-f32") { $0["layer_types"] = nil; $0["sliding_window_pattern"] = 3 })
        #expect(third.map(\.window) == [8, 8, nil, 8])
        let windowless = try attention(EditedFixture("exaone4-f32") {
            $0["sliding_window"] = NSNull()
            $0["layer_types"] = Array(repeating: "full_attention", count: 4)
        })
        #expect(windowless.allSatisfy { $0.window == nil && $0.rotates })
        for (edit, phrase) in [
            ({ (config: inout [String: Any]) in config["layer_types"] = nil; config["sliding_window"] = NSNull() }, "sliding_window is null"),
            ({ (config: inout [String: Any]) in config["layer_types"] = nil; config["sliding_window_pattern"] = "LLLG" }, "sliding_window_pattern"),
        ] {
            let error = #expect(throws: DroptraceError.self) { try EditedFixture("exaone4-f32", edit).load() }
            #expect(error?.message.contains(phrase) == true && error?.message.contains("give layer_types") == true,
                    "\(String(describing: error))")
        }
    }

    /// An `attention_bias` key is not Exaone4Config's: no biases are read.
    @Test func attentionBiasIsNotRead() throws {
        let model = try EditedFixture("exaone4-f32") { $0["attention_bias"] = true }.load()
        guard case .fused(let qkv)? = try model.block(0).attention?.attention.projection else {
            Issue.record("no fused q/k/v projection")
            return
        }
        #expect(qkv.bias == nil)
    }
}
