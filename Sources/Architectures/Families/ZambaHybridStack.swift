import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The layer list a Zamba or Zamba2 config writes: `layer_types` (the
/// attribute map's name, read over `layers_block_type` where both are
/// written), each "hybrid" or "linear_attention" (legacy "mamba", which the
/// config classes rename); `hybrid` nil where neither key is written.
struct ZambaLayerList: Decodable {
    /// Per layer: a hybrid layer (a shared transformer block before its Mamba mixer).
    var hybrid: [Bool]?
    /// The key the kinds were read from, for errors.
    var key = "layers_block_type"

    enum CodingKeys: String, CodingKey {
        case layersBlockType = "layers_block_type"
        case layerTypes = "layer_types"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        var names: [String]?
        for candidate in [CodingKeys.layerTypes, .layersBlockType] where names == nil {
            if let list = try c.decodeIfPresent([String].self, forKey: candidate) { (names, key) = (list, candidate.stringValue) }
        }
        guard let names else { return }
        let key = key
        var hybrid: [Bool] = []
        try ConfigRules.decodingChecks {
            if names.isEmpty { throw InvalidConfigValue(key: key, problem: "lists no layers") }
            for name in names {
                switch name {
                case "hybrid": hybrid.append(true)
                case "linear_attention", "mamba": hybrid.append(false)
                default:
                    var problem = "names \"\(name.forErrorMessage)\": the layers are hybrid or linear_attention (legacy mamba)"
                    if ["full_attention", "sliding_attention", "chunked_attention", "conv", "moe"].contains(name) {
                        problem += " (transformers would build a Mamba layer there)"
                    }
                    throw InvalidConfigValue(key: key, problem: problem)
                }
            }
        }
        self.hybrid = hybrid
    }
}

/// The layers of Zyphra's hybrid stacks (Zamba, Zamba2): Mamba layers and
/// hybrid layers, each hybrid layer running a shared transformer block
/// (`block`, one of `memoryBlocks` used in turn, stored under the first
/// hybrid layer that uses it) and its own `linear` before its Mamba
/// decoder layer (`mamba_decoder`). Which layer is which, the names of
/// their modules, where a hybrid layer reads its block, and which drops an
/// export can carry.
struct ZambaHybridStack {
    /// Per layer: hybrid (else a Mamba layer).
    let hybrid: [Bool]
    /// The key the kinds were read from, for errors.
    let key: String
    /// Whether config.json writes the list (an export then renumbers it as written).
    let written: Bool
    /// The shared block's module name (`shared_transf`, `shared_transformer`).
    let block: String
    /// The family's name in messages.
    let family: String
    /// The hybrid layers, in order.
    let hybridLayers: [Int]
    /// The shared blocks the hybrid layers use in turn (Zamba2's
    /// `num_mem_blocks`, read after the stack is built; Zamba's one).
    var memoryBlocks = 1

    init(hybrid: [Bool], key: String, written: Bool, block: String, family: String) {
        self.hybrid = hybrid
        self.key = key
        self.written = written
        self.block = block
        self.family = family
        hybridLayers = hybrid.indices.filter { hybrid[$0] }
    }

    /// A Mamba layer's `mamba` and `input_layernorm` are its one module; a
    /// hybrid layer's shared block and `linear` its attention module, its
    /// `mamba_decoder` its MLP module.
    func naming(_ prefix: String) -> LayerNaming {
        var naming = LayerNaming(
            prefix: prefix + "layers.", attention: ["mamba.", "input_layernorm."], mlp: [], layerCountKeys: ["num_hidden_layers"],
            layerListKey: written ? key : nil)
        for index in hybridLayers {
            naming.partsByLayer[index] = .init(attention: [block + ".", "linear."], mlp: ["mamba_decoder."])
        }
        return naming
    }

    /// `naming` with the layer list written out where config.json leaves it
    /// to the config class, so an export keeps each kept layer's kind.
    func exportNaming(_ naming: LayerNaming) -> LayerNaming {
        var naming = naming
        if !written { naming.layerTypes = hybrid.map { $0 ? "hybrid" : "linear_attention" } }
        return naming
    }

    /// Mamba layers have no MLP module.
    var absentModules: DropPlan { DropPlan(mlp: Set(hybrid.indices.filter { !hybrid[$0] })) }

    /// Refuses each kept layer whose weights are of the other kind, naming the list's key.
    func confirmKinds(_ parts: DecoderParts) throws {
        let drops = parts.configuredDrops
        try parts.checks {
            for (index, hybrid) in hybrid.enumerated() where !drops.dropsAttention(index) || !drops.dropsMLP(index) {
                let p = "layers.\(index).", own = hybrid ? "mamba_decoder.mamba.in_proj.weight" : "mamba.in_proj.weight"
                let other = hybrid ? "mamba.in_proj.weight" : "mamba_decoder.mamba.in_proj.weight"
                if !parts.weights.has(p + own), parts.weights.has(p + other) {
                    throw InvalidConfigValue(
                        key: key,
                        problem: "makes layer \(index) \(hybrid ? "hybrid" : "linear_attention"), but the weights hold a "
                            + "\(hybrid ? "Mamba" : "hybrid") layer there ('\(other)')")
                }
            }
        }
    }

    /// The first kept mixer's prefix (`layers.<i>.mamba.` or `layers.<i>.mamba_decoder.mamba.`), nil where all are dropped.
    func firstKeptMixer(_ drops: DropPlan) -> String? {
        guard let first = hybrid.indices.first(where: { !hybrid[$0] && !drops.dropsAttention($0) })
            ?? hybridLayers.first(where: { !drops.dropsMLP($0) }) else { return nil }
        return "layers.\(first)." + (hybrid[first] ? "mamba_decoder.mamba." : "mamba.")
    }

    /// Where hybrid layer `index`, the `position`-th, reads its shared
    /// block's module `module` (`self_attn.q_proj`, …): transformers ties
    /// each hybrid layer's block to the first one of its block, but not a
    /// tensor the checkpoint stores under the later layer with other
    /// values, nor any with untied embeddings (`tie_word_embeddings` false:
    /// every layer then reads its own copy); so its own copy where stored,
    /// else the first stored among the layers of its block.
    func sharedModule(_ module: String, layer index: Int, position: Int, parts: DecoderParts) -> String {
        let own = "layers.\(index).\(block).\(module)"
        guard parts.tiedEmbeddings, !parts.weights.has(own + ".weight") else { return own }
        let names = stride(from: position % memoryBlocks, to: hybridLayers.count, by: memoryBlocks)
            .map { "layers.\(hybridLayers[$0]).\(block).\(module)" }
        return names.first { parts.weights.has($0 + ".weight") } ?? names[0]
    }

    /// Why `plan`'s module drops cannot be exported: transformers' classes
    /// read no drop_attn_list / drop_mlp_list and build whole hybrid layers.
    func moduleDropProblem(_ plan: DropPlan) -> String? {
        let plan = plan.onLayers(lacking: absentModules)
        let modules = plan.attention.union(plan.mlp).subtracting(plan.blocks).sorted()
        guard !modules.isEmpty else { return nil }
        return "\(family)'s attention and MLP drops (of hybrid layer\(modules.count == 1 ? "" : "s") "
            + "\(modules.map(String.init).joined(separator: ", "))) cannot be exported: transformers' \(family) classes read no "
            + "drop_attn_list / drop_mlp_list and build whole hybrid layers; export block drops"
    }
}

/// A Zyphra hybrid family (Zamba, Zamba2): its layers by `stack`, a Mamba
/// layer x + mixer(norm(x)) whose mixer is its one module, a hybrid layer
/// its shared block's path T (its attention module) before its Mamba
/// decoder layer y = x + mixer(norm(x + T)) (its MLP module); the final
/// RMSNorm `final_layernorm`.
protocol ZambaHybridFamily: DecoderFamily {
    var stack: ZambaHybridStack { get }
    var rmsNormEps: Double { get }
    /// The mixer stored under `prefix` (`layers.<i>.mamba.`, `layers.<i>.mamba_decoder.mamba.`).
    func mambaMixer(_ prefix: String) throws -> TokenMixer
    /// Hybrid layer `index`'s shared block path, the `position`-th hybrid layer's.
    func sharedBlock(_ index: Int, position: Int) throws -> AttentionBranch
}

extension ZambaHybridFamily {
    var layerNaming: LayerNaming { stack.exportNaming(parts.naming) }

    var absentModules: DropPlan { stack.absentModules }

    /// The shared blocks read the token embeddings beside the stream.
    var perLayerEmbedding: PerLayerEmbedding? { stack.hybridLayers.isEmpty ? nil : .embeddings(hidden: hiddenSize) }

    func head() throws -> OutputHead {
        try parts.head(norm: parts.weights.rmsNorm("final_layernorm", size: hiddenSize, eps: rmsNormEps))
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), p = "layers.\(index)."
        func mixer(_ prefix: String) throws -> AttentionBranch {
            AttentionBranch(
                inputNorm: try parts.weights.rmsNorm(prefix + "input_layernorm", size: hiddenSize, eps: rmsNormEps),
                mixer: try mambaMixer(prefix + "mamba."))
        }
        guard let position = stack.hybridLayers.firstIndex(of: index) else {
            return TransformerBlock(attention: drops.dropsAttention(index) ? nil : try mixer(p), mlp: nil, residual: .sequential)
        }
        return TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : try sharedBlock(index, position: position),
            mlp: nil, residual: .sequential,
            mixerAfterAttention: drops.dropsMLP(index) ? nil : try mixer(p + "mamba_decoder."), attentionFeedsMixer: true)
    }
}
