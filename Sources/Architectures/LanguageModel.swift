import CheckpointIO
import DroptraceSupport
import TensorEngine

/// A decoder-only transformer read from a checkpoint one block at a time.
///
/// `block(_:)` expands only that block's weights to Float32, so a scorer
/// that walks the layers in order holds one layer of weights at a time.
public protocol LanguageModel: Sendable {
    var checkpoint: Checkpoint { get }
    var modelType: String { get }
    var layerCount: Int { get }
    var hiddenSize: Int { get }
    /// Columns of the residual stream: `hiddenSize`, times the streams of a
    /// hyper-connected model (Hunyuan V4's `hc_mult`).
    var streamWidth: Int { get }
    /// The columns of the stream the block scores and block gaps compare,
    /// where not all of it: Gemma 3n's active AltUp stream, the one its
    /// layers run (its modules are scored on it too, `BlockActivations.branchInput`).
    var scoredColumns: Range<Int>? { get }
    var vocabularySize: Int { get }
    /// The logits `head()` gives per position: `vocabularySize` but where
    /// the head is pruned to the first ids (Apertus 1.5's
    /// `output_vocab_size`), which alone can then be predicted.
    var outputVocabularySize: Int { get }
    /// Longest sequence the model's positions allow (learned positions or
    /// the configured maximum for rotary models).
    var maxPositions: Int { get }

    /// Modules the checkpoint itself declares dropped (LLM-Drop's
    /// `drop_attn_list` / `drop_mlp_list`); their weights need not exist.
    var configuredDrops: DropPlan { get }
    /// Modules the architecture's layers do not have: each Nemotron-H layer
    /// is one token mixer or one MLP, so its other module is absent (never
    /// scored, chosen or exported). Empty for two-branch blocks.
    var absentModules: DropPlan { get }
    /// Layers the model runs more than once per forward pass (Dory's
    /// recurrent section), nil for a model that runs each layer once.
    var layerLoop: LayerLoop? { get }

    /// The residual stream entering block 0.
    func embed(_ batch: TokenBatch) throws -> Matrix
    /// Where each block also reads an input of its own per token (Gemma 4's
    /// per-layer embeddings), what builds it from the tokens and `embed`'s
    /// rows; nil for the other models.
    var perLayerEmbedding: PerLayerEmbedding? { get }
    /// Each layer's key/value sharing (Gemma 4's `num_kv_shared_layers`)
    /// and key-selection sharing (GLM-5's shared indexer layers) with
    /// `plan`'s modules dropped, as `block(_:skipping:)` builds the layers'
    /// attention; empty for a model whose layers share none.
    /// - Throws: `DroptraceError` when `plan` leaves a sharing layer no
    ///   layer to take them from.
    func attentionSharing(skipping plan: DropPlan) throws -> LayerSharing
    /// Block `index` with the branches `plan` (and `configuredDrops`) drop
    /// left out, so their weights are never read.
    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock
    /// Whether a block computes by its index in the model a drop leaves, so
    /// that removing a block before it changes it (RWKV's rescaling): the
    /// full model's block, its branches dropped, is then not the dropped
    /// model's. False for the others.
    var blocksFollowTheirIndex: Bool { get }
    /// The final norm and the LM head (tied to the embedding where the checkpoint has no head).
    func head() throws -> OutputHead
    /// How the checkpoint names each layer's tensors, for exporting dropped models.
    var layerNaming: LayerNaming { get }
    /// Why an export of the model with `plan`'s modules dropped would not
    /// load in transformers as the model droptrace ran, or nil.
    func exportProblem(_ plan: DropPlan) -> String?
}

extension LanguageModel {
    public var outputVocabularySize: Int { vocabularySize }
    public var streamWidth: Int { hiddenSize }
    public var scoredColumns: Range<Int>? { nil }

    /// The part of stream `stream` the scores compare (`scoredColumns`).
    public func scored(_ stream: Matrix) -> Matrix { scoredColumns.map { stream.columns($0) } ?? stream }
}

/// Tensor names of a layer: `<prefix><index>.<branch part>...`.
public struct LayerNaming: Sendable, Equatable {
    /// e.g. "model.layers." (the index and a dot follow).
    public var prefix: String
    /// Name parts (after "<prefix><index>.") that belong to the attention branch, norm included.
    public var attention: [String]
    public var mlp: [String]
    /// config.json keys holding the layer count.
    public var layerCountKeys: [String]
    /// The key whose list's length is the layer count, where it is not
    /// `layerCountKeys`' value (Nemotron-H's `layers_block_type`), for errors.
    public var layerListKey: String? = nil
    /// Each layer's attention type where the architecture has several
    /// (Gemma-2), for configs that leave `layer_types` to a default rule.
    public var layerTypes: [String]? = nil
    /// The config.json member holding the layer count and the per-layer keys
    /// (`text_config` of a multimodal checkpoint); nil for the top level.
    public var configSection: String? = nil
    /// Each layer's `no_rope_layers` flag (1: rotary, 0: none) where the
    /// config leaves them to `no_rope_layer_interval` (SmolLM3).
    public var noRopeLayers: [Int]? = nil
    /// Each layer's attention type where config.json gives them as runs of
    /// [types, repeats] in `attention_types` (GPT-Neo): an export writes the
    /// kept layers' types back as such runs.
    public var attentionTypeRuns: [String]? = nil
    /// Per-layer lists by key where the config leaves them to the class's
    /// rule (GLM-4.7-Flash's `mlp_layer_types`: layer 0 dense; GLM-5's
    /// `indexer_types` from `index_topk_freq`): an export writes the kept
    /// layers' entries.
    public var perLayerLists: [String: [String]] = [:]
    /// Lists config.json gives as a pattern the config class repeats over
    /// the layers (RecurrentGemma's `block_types`), by key, each layer's
    /// entry: an export writes the kept layers' entries over the pattern.
    public var cycledLists: [String: [String]] = [:]
    /// Likewise lists of numbers (Gemma 3n's `activation_sparsity_pattern`,
    /// its first ten layers sparse by default), written as floats.
    public var perLayerNumberLists: [String: [Double]] = [:]
    /// Layer-index thresholds the family read, defaults included
    /// (DeepSeek's `first_k_dense_replace`, 3 in V3 when config.json omits
    /// it): an export renumbers them even where config.json left them out.
    public var layerThresholds: [String: Int] = [:]
    /// Each layer's MLP, routed or dense, where config.json gives the routed
    /// layers as a range and a beat (ERNIE 4.5's `moe_layer_start_index`,
    /// `moe_layer_end_index`, `moe_layer_interval`): an export writes the
    /// range and beat that give the kept layers the same MLPs.
    public var sparseLayerRange: SparseLayerRange? = nil
    /// Layers given by a period and an offset (Jamba's attention layers,
    /// index % `attn_layer_period` == `attn_layer_offset`, and expert
    /// layers): an export writes the period and offset that give the kept
    /// layers the same kinds.
    public var periodicLayers: [PeriodicLayers] = []
    /// Lists of layer indices the family resolved from a rule (Llama 4's
    /// `moe_layers` from `interleave_moe_layer_step`): an export writes them,
    /// renumbered, where config.json leaves them out.
    public var layerIndexLists: [String: [Int]] = [:]
    /// Where attention divides its scores by the layer's index + 1 (GPT-2's
    /// `scale_attn_by_inverse_layer_idx`), the fused projection whose first
    /// `queryWidth` outputs are the query: an export that moves a layer
    /// rescales them so the layer keeps its scale.
    public var inverseLayerIndexQuery: InverseLayerIndexQuery? = nil

    /// Per-layer lists of layer indices the family read, defaults included
    /// (Kolibri 1.1's `kv_source_layers`): an export writes the kept layers'
    /// entries, renumbered.
    public var layerSourceLists: [String: [Int]] = [:]

    /// Counts of layers at the end of the stack the family read, defaults
    /// included (Gemma 4's `num_kv_shared_layers`): an export writes how
    /// many of them it keeps.
    public var trailingLayerCounts: [String: Int] = [:]
    /// Multipliers the family divides by √(layer count), defaults included
    /// (MiniCPM3's `scale_depth`: each branch joins the stream
    /// × scale_depth / √L): an export without some blocks writes them
    /// × √(kept / L), so the kept branches keep their scale.
    public var depthScaledMultipliers: [String: Double] = [:]
    /// Name parts of layer 0 that belong to the stream before the layers
    /// (RWKV's `pre_ln`, the embeddings' LayerNorm its first block holds):
    /// no drop removes them; an export without layer 0 gives them to the
    /// first kept layer, the one transformers builds them in.
    public var firstLayerParts: [String] = []
    /// Name parts of the attention branch that a layer whose keys and values
    /// later layers reuse keeps when its attention is dropped (Gemma 4's
    /// `AttentionSharing.storeOnly`: the input norm, key and value projections
    /// and key norm).
    public var keyValueParts: [String] = []
    /// Runs of consecutive layers whose lengths config.json gives, by key
    /// (Dory's `n_input_layers`, `n_recurrent_layers`, `n_output_layers`,
    /// defaults included): an export writes how many layers of each it keeps.
    public var layerSections: [LayerSection] = []
    /// How many of the model's layers each stored layer index holds
    /// (LongCat-Flash's decoder layers, each two attention sublayers that
    /// droptrace scores as layers 2i and 2i + 1): layer l's tensors are under
    /// index l / `sublayers`. 1 elsewhere. An export removes a stored layer
    /// when a plan drops the blocks of all its sublayers (`storedPlan`).
    public var sublayers = 1
    /// How many entries config.json spends on each layer in its layer count,
    /// its per-layer lists and `layerSections` (Dory's released form lists
    /// each layer's attention type, then "mlp", and counts both); 1 elsewhere.
    public var configEntriesPerLayer = 1
    /// Where the layers are stored in stacks of `stackSize` layers, each
    /// under its own prefix (HRM-Text's `model.L_module.layers.`,
    /// `model.H_module.layers.`): layer i is layer i % stackSize of stack
    /// i / stackSize, `prefix` the first stack's. Empty: every layer under
    /// `prefix`. An export keeps as many layers of each stack (the family's
    /// exportProblem refuses other plans) and writes `layerCountKeys` per stack.
    public var stackPrefixes: [String] = []
    public var stackSize = 0
    /// Keys whose value config.json gives as one stack's layers times a
    /// factor (HRM-Text's `num_hidden_layers`, a cache slot per invocation:
    /// num_layers_per_stack × H_cycles × (L_cycles + 1)): an export writes
    /// the kept stack's layers times it.
    public var perStackMultiples: [String: Int] = [:]

    /// A run of layers whose length config.json gives under `key`.
    public struct LayerSection: Sendable, Equatable {
        public var key: String
        public var layers: Range<Int>

        public init(key: String, layers: Range<Int>) {
            self.key = key
            self.layers = layers
        }
    }

    /// Tensors outside the layers that pack one piece per layer (Gemma 4's
    /// per-layer embeddings): an export without some blocks keeps the kept
    /// layers' pieces, in order.
    public var packedPerLayerTensors: [PackedPerLayerTensor] = []

    /// A tensor whose `axis` (0: rows, 1: columns) holds `layers` pieces of
    /// `width`, layer i's at i · width.
    public struct PackedPerLayerTensor: Sendable, Equatable {
        /// The stored name.
        public var name: String
        public var axis: Int
        public var width: Int
    }

    /// A Conv1D-stored fused q/k/v projection (weight [in, out], bias [out]).
    public struct InverseLayerIndexQuery: Sendable, Equatable {
        /// Name parts after "<prefix><index>.".
        public var weight: String
        public var bias: String
        public var queryWidth: Int
    }

    /// Layers whose branches own other name parts than `attention` / `mlp`
    /// (OLMo-Hybrid: an attention layer's `post_attention_layernorm` ends its
    /// attention, a linear-attention layer's begins its MLP), by index.
    public var partsByLayer: [Int: BranchParts] = [:]

    /// The name parts of one layer's two branches.
    public struct BranchParts: Sendable, Equatable {
        public var attention: [String]
        public var mlp: [String]
    }

    /// The name parts of layer `layer`'s attention (its token mixer) branch.
    public func attentionParts(_ layer: Int) -> [String] { partsByLayer[layer]?.attention ?? attention }

    /// The name parts of layer `layer`'s MLP branch.
    public func mlpParts(_ layer: Int) -> [String] { partsByLayer[layer]?.mlp ?? mlp }

    /// `plan` over the stored layers (`sublayers`): a stored layer's block is
    /// dropped where the blocks of all its sublayers are. Drops of single
    /// sublayers or modules have no stored form; a family with sublayers
    /// refuses them in `exportProblem` before any export asks for this.
    public func storedPlan(_ plan: DropPlan) -> DropPlan {
        guard sublayers > 1 else { return plan }
        let whole = Set(plan.blocks.map { $0 / sublayers }.filter { stored in
            (0..<sublayers).allSatisfy { plan.blocks.contains(stored * sublayers + $0) }
        })
        precondition(
            plan.blocks == Set(whole.flatMap { stored in (0..<sublayers).map { stored * sublayers + $0 } })
                && !plan.dropsModulesOfKeptBlocks, "a plan of sublayers the family's exportProblem refuses")
        return DropPlan(blocks: whole)
    }

    /// The layer index and the rest of the name, when `name` belongs to a layer.
    public func split(_ name: String) -> (layer: Int, rest: String)? {
        for (stack, prefix) in (stackPrefixes.isEmpty ? [prefix] : stackPrefixes).enumerated() where name.hasPrefix(prefix) {
            let tail = name.dropFirst(prefix.count)
            guard let dot = tail.firstIndex(of: "."), let layer = Int(tail[..<dot]) else { return nil }
            return (stack * stackSize + layer, String(tail[tail.index(after: dot)...]))
        }
        return nil
    }

    /// The stored name of part `rest` of layer `layer` in a model of
    /// `layers` layers (split evenly among the stacks, where stored in stacks).
    public func storedName(layer: Int, _ rest: String, layers: Int) -> String {
        guard !stackPrefixes.isEmpty else { return "\(prefix)\(layer).\(rest)" }
        let size = layers / stackPrefixes.count
        return "\(stackPrefixes[layer / size])\(layer % size).\(rest)"
    }
}

/// Routed layers given by a range and a beat: layer i is routed when
/// (i + 1) % interval == 0 and start ≤ i ≤ end (Ernie4_5_MoeDecoderLayer's rule).
public struct SparseLayerRange: Sendable, Equatable {
    public var startKey: String
    public var endKey: String
    public var intervalKey: String
    /// Each layer's MLP: true for routed experts.
    public var sparse: [Bool]

    public init(startKey: String, endKey: String, intervalKey: String, sparse: [Bool]) {
        self.startKey = startKey
        self.endKey = endKey
        self.intervalKey = intervalKey
        self.sparse = sparse
    }

    /// The kept layers' flags when `removed` blocks go.
    public func kept(removing removed: Set<Int>) -> [Bool] {
        sparse.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
    }

    /// The start, end and smallest interval whose rule routes exactly the
    /// layers `flags` marks, or nil when no range and beat do (routed layers
    /// 0 and 2 with 1 dense between them and 3 dense after, say, are fine;
    /// 1, 2 and 4 are not). No routed layer at all: a start past the last layer.
    public static func fitting(_ flags: [Bool]) -> (start: Int, end: Int, interval: Int)? {
        guard let first = flags.firstIndex(of: true), let last = flags.lastIndex(of: true) else {
            return (flags.count, max(flags.count - 1, 0), 1)
        }
        for interval in 1...(last + 1) {
            let rule = flags.indices.map { ($0 + 1) % interval == 0 && $0 >= first && $0 <= last }
            if rule == flags { return (first, last, interval) }
        }
        return nil
    }
}

/// Layers picked by a period and an offset: layer i is picked when
/// i % period == offset (JambaConfig's attention and expert layers).
public struct PeriodicLayers: Sendable, Equatable {
    public var periodKey: String
    public var offsetKey: String
    public var period: Int
    public var offset: Int
    /// Each layer: picked by the rule.
    public var flags: [Bool]

    public init(periodKey: String, offsetKey: String, period: Int, offset: Int, layers: Int) {
        precondition(period >= 1 && (0..<period).contains(offset))
        self.periodKey = periodKey
        self.offsetKey = offsetKey
        self.period = period
        self.offset = offset
        flags = (0..<layers).map { $0 % period == offset }
    }

    /// The period and offset (offset below period) that pick exactly the
    /// kept layers this rule picks when `removed` blocks go, renumbered: the
    /// rule's own when it still does, else the smallest period, then offset;
    /// nil when none does (picked layers 1, 3 and 6 of 7, say). None picked:
    /// an offset past the last layer.
    public func fitting(removing removed: Set<Int>) -> (period: Int, offset: Int)? {
        let kept = flags.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
        func picks(_ period: Int, _ offset: Int) -> Bool { kept.indices.allSatisfy { ($0 % period == offset) == kept[$0] } }
        if picks(period, offset) { return (period, offset) }
        for period in 1...(kept.count + 1) {
            for offset in 0..<period where picks(period, offset) { return (period, offset) }
        }
        return nil
    }
}

extension LanguageModel {
    public func exportProblem(_ plan: DropPlan) -> String? { nil }
    public var blocksFollowTheirIndex: Bool { false }

    public var absentModules: DropPlan { .none }

    /// Whether layer `index` has neither module (`absentModules`): the
    /// identity, never scored, chosen or removed by an export.
    public func lacksBothModules(_ index: Int) -> Bool {
        let absent = absentModules
        return absent.attention.contains(index) && absent.mlp.contains(index)
    }

    public var layerLoop: LayerLoop? { nil }

    public var perLayerEmbedding: PerLayerEmbedding? { nil }

    /// Why the model cannot run with `plan`'s modules dropped (Gemma 4's
    /// sharing layers left with no earlier layer of their type), nil when it can.
    public func planProblem(_ plan: DropPlan) -> String? {
        do {
            _ = try attentionSharing(skipping: plan)
            return nil
        } catch {
            return (error as? DroptraceError)?.message ?? "\(error)"
        }
    }

    public func attentionSharing(skipping plan: DropPlan) throws -> LayerSharing { LayerSharing() }

    /// The modules no drop can choose: those config.json drops and those the layers lack.
    public var unavailableModules: DropPlan { configuredDrops.union(absentModules) }

    /// What an export of `requested` removes: the requested and configured
    /// drops, as whole blocks where they leave a layer of absent modules
    /// nothing (`DropPlan.onLayers(lacking:)`).
    public func exportedPlan(_ requested: DropPlan) -> DropPlan {
        requested.union(configuredDrops).onLayers(lacking: absentModules)
    }

    public func block(_ index: Int) throws -> TransformerBlock {
        try block(index, skipping: .none)
    }
}
