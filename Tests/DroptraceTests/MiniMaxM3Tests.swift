@testable import Architectures
import CheckpointIO
import DroptraceSupport
@testable import Dropping
import Foundation
import Scoring
import TensorEngine
import Testing

/// MiniMax-M3's text model (`minimax_m3_vl_text`) and the language model of
/// its multimodal wrapper (`minimax_m3_vl`): the lightning indexer's block
/// choice per group of heads, the dense and routed MLPs' clamped SwiGLU,
/// the released spellings MiniMaxM3VLTextConfig reads, its refusals
/// (compared with transformers 5.25's), and exports. The scores themselves
/// are checked against transformers with every other family (`DropTests`
/// and the reference suites), key/value-cache decoding against the forward
/// pass (`DropTests.incrementalDecodingMatchesTheFullForward`).
@Suite struct MiniMaxM3Tests {
    typealias Mutant = ConfigValidationTests.Mutant
    static let name = "minimax_m3_vl_text-f32"
    static let wrapper = "minimax_m3_vl-f32"

    /// Values MiniMaxM3VLTextConfig refuses, on which its model fails or
    /// computes what droptrace does not: each refused naming its key.
    static let mutants: [Mutant] = [
        // Strictly typed fields (the legacy entries set them, held to ints).
        Mutant(name, "sparse_attention_config.sparse_block_size", "4.0"), Mutant(name, "index_block_size", "4.0"),
        // A block of no keys (ZeroDivisionError), a negative one (a negative view).
        Mutant(name, "sparse_attention_config.sparse_block_size", "0"), Mutant(name, "sparse_attention_config.sparse_block_size", "-4"),
        // No block kept: every query then attends evenly to every key, later ones too; below 0 torch.topk fails.
        Mutant(name, "sparse_attention_config.sparse_topk_blocks", "0"), Mutant(name, "sparse_attention_config.sparse_topk_blocks", "-1"),
        // Indexer heads that do not divide the query heads (the block mask's heads mismatch).
        Mutant(name, "sparse_attention_config.sparse_num_index_heads", "3"), Mutant(name, "sparse_attention_config.sparse_num_index_heads", "8"),
        // Index heads narrower than the 8 rotated columns: transformers turns them by a cut table.
        Mutant(name, "sparse_attention_config.sparse_index_dim", "4"),
        // Lists of another length (validate_layer_type), types it refuses or on which it fails.
        Mutant(name, "sparse_attention_config.sparse_attention_freq", "[1, 0, 1]", key: "layer_types"),
        Mutant(name, "moe_layer_freq", "[0, 1, 1]", key: "mlp_layer_types"),
        Mutant(name, "layer_types", "[\"sliding_attention\", \"full_attention\", \"full_attention\", \"full_attention\"]"),
        Mutant(name, "mlp_layer_types", "[\"dense\", \"moe\", \"sparse\", \"sparse\"]"),
        // More experts per token than experts (torch.topk fails); none (the MLP would be the shared expert alone).
        Mutant(name, "num_experts_per_tok", "5"), Mutant(name, "num_experts_per_tok", "0"),
        // Widths transformers builds empty (their zero output added), which droptrace does not compute.
        Mutant(name, "shared_intermediate_size", "0"), Mutant(name, "dense_intermediate_size", "0"),
        // Sizes the tensors contradict.
        Mutant(name, "num_local_experts", "8"), Mutant(name, "intermediate_size", "8"), Mutant(name, "dense_intermediate_size", "24"),
        // Another text model type under the wrapper: droptrace reads minimax_m3_vl_text only (MiniMaxM3VLConfig builds
        // its own text config class whatever the type says; it is refused, not read as another model).
        Mutant(wrapper, "text_config.model_type", "\"minimax_m2\"", key: "text_config.model_type"),
    ]

    @Test(arguments: mutants)
    func mutantIsRefusedNamingTheKey(_ mutant: Mutant) throws {
        try ConfigValidationTests().mutantIsRefusedNamingTheKey(mutant)
    }

    /// Layers 0, 2 and 3 attend through their indexer (2 heads of 16,
    /// blocks of 4, 3 kept, the query's own among them), layer 1 fully;
    /// layer 0's MLP is dense, the others routed with a shared expert, every
    /// one the clamped SwiGLU (limit 0.5); the wrapper reads the same layers.
    @Test(arguments: [name, wrapper])
    func layersAsMiniMaxM3Builds(_ fixture: String) throws {
        let model = try EditedFixture(fixture).load()
        for layer in 0..<model.layerCount {
            let block = try model.block(layer)
            let attention = try #require(block.attention?.mixer.softmaxAttention)
            if layer == 1 {
                #expect(attention.blockSparseIndexer == nil)
            } else {
                let indexer = try #require(attention.blockSparseIndexer)
                #expect(indexer.heads == 2 && indexer.dim == 16 && indexer.blockSize == 4 && indexer.topKBlocks == 3 && indexer.localBlocks == 1)
                #expect(indexer.rotary.rotaryDim == 8)
            }
            switch block.mlp?.feedForward {
            case .clampedGated(_, _, let activation)? where layer == 0:
                #expect(activation == ClampedSwiGLU(alpha: 1.702, limit: 0.5))
            case .mixture(let mixture)? where layer > 0:
                #expect(mixture.experts.count == 4 && mixture.sharedExperts.count == 1 && mixture.expertsPerToken == 2)
                guard case .clampedGated? = mixture.experts.first, case .clampedGated? = mixture.sharedExperts.first else {
                    Issue.record("layer \(layer): experts without the clamped SwiGLU")
                    continue
                }
            default:
                Issue.record("layer \(layer): not the MLP mlp_layer_types gives")
            }
        }
    }

    /// Spellings MiniMaxM3VLTextConfig reads alike: the flat keys and lists
    /// for the released `sparse_attention_config` and `moe_layer_freq`
    /// (which the lists win over), rotary_dim and hidden_act (not read);
    /// values it honours: the local blocks, the top-k, the scaling, the clamp.
    @Test func spellingsAsTransformersReadsThem() throws {
        let base = try scores(EditedFixture(Self.name))
        let flat = try scores(EditedFixture(Self.name) { config in
            let sparse = config.removeValue(forKey: "sparse_attention_config") as! [String: Any]
            config["layer_types"] = (sparse["sparse_attention_freq"] as! [Int]).map { $0 == 1 ? "minimax_m3_sparse" : "full_attention" }
            config["mlp_layer_types"] = ["dense", "sparse", "sparse", "sparse"]
            config["moe_layer_freq"] = [1, 1, 1, 1]
            (config["index_n_heads"], config["index_head_dim"], config["index_block_size"]) = (2, 16, 4)
            (config["index_topk_blocks"], config["index_local_blocks"]) = (3, 1)
        })
        #expect(flat == base)
        // The legacy entries win over the flat keys.
        #expect(try scores(EditedFixture(Self.name) { $0["index_topk_blocks"] = 1; $0["index_block_size"] = 16 }) == base)
        #expect(try scores(EditedFixture(Self.name) { $0["rotary_dim"] = 4; $0["hidden_act"] = "gelu" }) == base)
        // The per-layer flags by their truth value, as the config class takes them (1.0 and true sparse; 0.0 and null not).
        #expect(try scores(EditedFixture(Self.name) { config in
            var sparse = config["sparse_attention_config"] as! [String: Any]
            sparse["sparse_attention_freq"] = [1.0, NSNull(), true, "1"]
            config["sparse_attention_config"] = sparse
            config["moe_layer_freq"] = [0.0, 1.0, true, 2]
        }) == base)
        func sparse(_ key: String, _ value: Any) -> (inout [String: Any]) -> Void {
            { config in
                var sparse = config["sparse_attention_config"] as! [String: Any]
                sparse[key] = value
                config["sparse_attention_config"] = sparse
            }
        }
        // At most 0 local blocks alike (none); more than the top-k: the boosted blocks tie, chosen as torch.topk chooses.
        let noLocal = try scores(EditedFixture(Self.name, sparse("sparse_local_block", 0)))
        #expect(noLocal != base)
        #expect(try scores(EditedFixture(Self.name, sparse("sparse_local_block", -1))) == noLocal)
        #expect(try scores(EditedFixture(Self.name, sparse("sparse_local_block", 5))) != base)
        #expect(try scores(EditedFixture(Self.name, sparse("sparse_topk_blocks", 100))) != base)
        for change in [{ (c: inout [String: Any]) in c["routed_scaling_factor"] = 0.0 }, { $0["swiglu_limit"] = -1.0 }, { $0["swiglu_alpha"] = 0.0 }] {
            #expect(try scores(EditedFixture(Self.name, change)) != base)
        }
    }

    /// Block counts and sizes past any context bound the keys `drop`'s
    /// analytic FLOPs count by the context (their product overflowed).
    @Test func hugeSparseBlocksReadTheContext() throws {
        func flops(_ key: String, _ value: Int) throws -> Double {
            let model = try EditedFixture(Self.name) { config in
                var sparse = config["sparse_attention_config"] as! [String: Any]
                sparse[key] = value
                config["sparse_attention_config"] = sparse
            }.load()
            return try SpeedMeasurement.decodeFLOPs(model: model, plan: .none, context: 600)
        }
        for key in ["sparse_topk_blocks", "sparse_block_size"] {
            #expect(try flops(key, Int.max) == flops(key, 100_000))
        }
    }

    /// The wrapper's head is tied by its text config's flag under its own
    /// false, as MiniMaxM3VLConfig forwards it; untied by both, the head
    /// the checkpoint lacks is refused.
    @Test func wrapperTiesByTheTextConfig() throws {
        func tied(top: Bool, text: Bool) -> (inout [String: Any]) -> Void {
            { config in
                var textConfig = config["text_config"] as! [String: Any]
                textConfig["tie_word_embeddings"] = text
                config["text_config"] = textConfig
                config["tie_word_embeddings"] = top
            }
        }
        _ = try EditedFixture(Self.wrapper, tied(top: false, text: true)).load().head()
        _ = try EditedFixture(Self.wrapper, tied(top: true, text: false)).load().head()
        #expect(throws: DroptraceError.self) { _ = try EditedFixture(Self.wrapper, tied(top: false, text: false)).load().head() }
    }

    /// The wrapper's conversion merges a split gate_proj / up_proj into
    /// gate_up_proj: a checkpoint storing a fused one beside them is
    /// refused (transformers reads the split pair, droptrace read the fused one).
    @Test func splitAndFusedGateBothStoredAreRefused() throws {
        let fixture = try EditedFixture(Self.wrapper)
        try BadInputTests().rewriteWeights(fixture.model) { entries in
            let prefix = "language_model.model.layers.1.block_sparse_moe.shared_experts."
            let gate = entries.first { $0.name == prefix + "gate_proj.weight" }!
            entries.append(SafetensorsWriter.Entry(
                name: prefix + "gate_up_proj.weight", dtype: .float32, shape: [2 * gate.shape[0], gate.shape[1]],
                bytes: Data(count: 8 * gate.shape[0] * gate.shape[1])))
        }
        do {
            _ = try fixture.load().block(1)
            Issue.record("a fused gate beside the split one was read")
        } catch let error as DroptraceError {
            #expect(error.message.contains("gate_up_proj") && error.message.contains("keep one"), "\(error.message)")
        }
    }

    /// More local blocks than a sequence has keep every block, without a
    /// set of that many (a huge sparse_local_block allocated one per query).
    @Test func localBlocksPastTheSequenceKeepEveryBlock() throws {
        func local(_ count: Int) -> (inout [String: Any]) -> Void {
            { config in
                var sparse = config["sparse_attention_config"] as! [String: Any]
                sparse["sparse_local_block"] = count
                config["sparse_attention_config"] = sparse
            }
        }
        #expect(try scores(EditedFixture(Self.name, local(1_000_000_000_000))) == scores(EditedFixture(Self.name, local(1_000))))
        #expect(try scores(EditedFixture(Self.name, local(1_000))) != scores(EditedFixture(Self.name)))
    }

    /// A block-drop export spells out the kept layers' attention and MLP
    /// types (transformers reads them over the legacy lists).
    @Test func exportSpellsOutTheLayerTypes() throws {
        let config = try EditedFixture(Self.name).exportedConfig(droppingBlocks: [0])
        #expect(config["layer_types"] as? [String] == ["full_attention", "minimax_m3_sparse", "minimax_m3_sparse"])
        #expect(config["mlp_layer_types"] as? [String] == ["sparse", "sparse", "sparse"])
        #expect(config["num_hidden_layers"] as? Int == 3)
    }
}
