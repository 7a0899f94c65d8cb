@testable import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// ZAYA (`zaya`): ZayaConfig's refusals and what the weights contradict,
/// the CCA attention, the residual scalings, the router that reads the
/// last router's state and its skip class. The scores themselves, and
/// cached decoding against the full forward, are checked against
/// transformers with every other family (`DropTests` and the reference suites).
@Suite struct ZayaTests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "zaya-f32"

    static let mutants: [Mutant] = [
        // ZayaConfig.validate_architecture.
        Mutant(name, "num_experts_per_tok", "2"),
        Mutant(name, "sliding_window", "null"),
        // ZayaModel builds masks for its two layer types only (KeyError otherwise).
        Mutant(name, "layer_types", "[\"hybrid\", \"full_attention\", \"hybrid\", \"hybrid_sliding\"]"),
        Mutant(name, "layer_types", "[\"hybrid\", \"hybrid_sliding\", \"hybrid\"]"),
        // Conv1d of no taps fails in transformers.
        Mutant(name, "cca_time0", "0"), Mutant(name, "cca_time1", "-1"),
        Mutant(name, "num_experts", "0"), Mutant(name, "router_hidden_size", "0"),
        // Sizes whose sums and products overflow.
        Mutant(name, "router_hidden_size", "4611686018427387904"), Mutant(name, "router_hidden_size", "9223372036854775807"),
        // An odd key/value width leaves the value halves short of the heads.
        Mutant(name, "num_key_value_heads", "1", key: "head_dim"),
        Mutant(name, "head_dim", "null"), Mutant(name, "cca_time0", "2.0"),
        // Sizes the tensors contradict.
        Mutant(name, "num_experts", "5"), Mutant(name, "router_hidden_size", "8"), Mutant(name, "moe_intermediate_size", "12"),
        Mutant(name, "cca_time0", "3"), Mutant(name, "cca_time1", "2"), Mutant(name, "head_dim", "16"),
        // ZayaRotaryEmbedding reads each type's entry (KeyError on flat parameters or a missing theta).
        Mutant(name, "rope_parameters", "{\"rope_type\": \"default\", \"rope_theta\": 10000.0}", key: "rope_parameters.hybrid"),
        Mutant(name, "rope_parameters.hybrid_sliding.rope_theta", "null", key: "rope_parameters.hybrid_sliding.rope_theta"),
        // transformers takes rope_scaling (even null) for the parameters, and fails on them.
        Mutant(name, "rope_scaling", "{\"rope_type\": \"linear\", \"factor\": 2.0}"), Mutant(name, "rope_scaling", "null"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Kernels of one tap each leave the convolution nothing to carry, which
    /// transformers' cached forward fails on.
    @Test func singleTapConvolutionsAreRefused() throws {
        try EditedFixture(Self.name) { $0["cca_time0"] = 1; $0["cca_time1"] = 1 }.expectRefused(naming: "cca_time1")
    }

    /// Full and sliding layers (window 8), half of each head rotated; the
    /// CCA convolutions of 2 and 3 taps; both branches joined by their
    /// residual scalings; every MLP a router over 4 experts and the skip
    /// class, reading the last router's state from layer 1 on.
    @Test func layersAsZayaBuilds() throws {
        let model = try EditedFixture(Self.name).load()
        for index in 0..<4 {
            let block = try model.block(index)
            let branch = try #require(block.attention), mlp = try #require(block.mlp)
            guard case .convolvedAttention(let attention) = branch.mixer else {
                Issue.record("layer \(index): not ZAYA's attention")
                continue
            }
            #expect(attention.slidingWindow == (index % 2 == 1 ? 8 : nil) && attention.rotary.rotaryDim == 4)
            #expect(attention.depthwiseKernel == 2 && attention.groupedKernel == 3 && attention.delayedBias?.count == 8)
            #expect(attention.layout.numHeads == 4 && attention.layout.numKVHeads == 2 && attention.layout.headDim == 8)
            for join in [branch.join, mlp.join] {
                guard case .affine(let scaling)? = join else { Issue.record("layer \(index): no residual scaling"); continue }
                #expect(scaling.streamScale.contains { $0 != 1 } && scaling.outputBias.contains { $0 != 0 })
            }
            guard case .carriedRouter(let router) = mlp.feedForward else {
                Issue.record("layer \(index): not ZAYA's router")
                continue
            }
            #expect((router.stateScale == nil) == (index == 0) && router.experts.count == 4 && router.balancingBiases.last == -1)
        }
    }

    /// The skip class's balancing bias is -1 whatever the weights store (as
    /// transformers sets it on load), and a checkpoint without the buffer
    /// reads as transformers initialises it.
    @Test func skipClassBiasIsMinusOne() throws {
        let stored = try EditedFixture(Self.name)
        let written: [Float] = [0.1, 0.2, 0.3, 0.4, 5]
        try BadInputTests().rewriteWeights(stored.model) { entries in
            for i in entries.indices where entries[i].name.hasSuffix("layers.1.mlp.gate.balancing_biases") {
                entries[i] = SafetensorsWriter.Entry(
                    name: entries[i].name, dtype: .float32, shape: [5], bytes: written.withUnsafeBytes { Data($0) })
            }
        }
        #expect(try mlpRouter(stored.load(), layer: 1)?.balancingBiases == [0.1, 0.2, 0.3, 0.4, -1])
        let absent = try EditedFixture(Self.name)
        try BadInputTests().rewriteWeights(absent.model) { entries in entries.removeAll { $0.name.hasSuffix("balancing_biases") } }
        #expect(try mlpRouter(absent.load(), layer: 1)?.balancingBiases == [0, 0, 0, 0, -1])
    }

    private func mlpRouter(_ model: any LanguageModel, layer: Int) throws -> CarriedRouterMixture? {
        guard case .carriedRouter(let router)? = try model.block(layer).mlp?.feedForward else { return nil }
        return router
    }

    /// The KV-cache bytes per token count each attention's keys and values:
    /// 2 key/value heads of 8, Float32, on 4 layers.
    @Test func cacheBytesCountEveryAttention() throws {
        let model = try EditedFixture(Self.name).load()
        let full = try IncrementalDecoder(model: model, plan: .none, capacity: 4)
        #expect(full.cacheBytesPerToken == 4 * 2 * 16 * 4)
        #expect(try full.dropping(DropPlan(attention: [1]), capacity: 4).cacheBytesPerToken == 3 * 2 * 16 * 4)
    }

    /// A block-drop export spells out the kept layers' types.
    @Test func blockDropExportSpellsOutTheLayerTypes() throws {
        let config = try EditedFixture(Self.name) { $0["layer_types"] = nil }.exportedConfig(droppingBlocks: [1])
        #expect(config["layer_types"] as? [String] == ["hybrid", "hybrid", "hybrid"])
        let kept = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0])
        #expect(kept["layer_types"] as? [String] == ["hybrid_sliding", "hybrid", "hybrid_sliding"])
    }
}
