import CheckpointIO
import DroptraceSupport
import Foundation
import TensorEngine

/// The keys of Qwen4ExpTextConfig beyond Qwen3.5-MoE's, with their defaults.
struct Qwen4ExpConfiguration: Decodable {
    var hcCount: Int
    var hcLowrank: Int
    var pleLayerIds: [Int]
    var pleEmbedDim: Int?
    var pleConvKernelSize: Int
    var ngramSize: Int
    var headsPerNgram: Int
    var ngramVocabSizeBase: Int
    var makeNgramVocabSizeDivisibleBy: Int
    var seed: Int
    var splitNgramParts: Int
    var indexerNHeads: Int?, indexerKvHeads: Int?, indexerHeadDim: Int?, indexerBudget: Int?, indexerCompressRatio: Int?
    var outputGateType: String?
    var hiddenAct: String
    /// `eos_token_id`, its first item where a list.
    var eosTokenId: Int?
    var eosIsEmptyList = false

    enum CodingKeys: String, CodingKey {
        case hcCount = "hc_count", hcLowrank = "hc_lowrank", pleLayerIds = "ple_layer_ids", pleEmbedDim = "ple_embed_dim"
        case pleConvKernelSize = "ple_conv_kernel_size", ngramSize = "ngram_size", headsPerNgram = "heads_per_ngram"
        case ngramVocabSizeBase = "ngram_vocab_size_base", makeNgramVocabSizeDivisibleBy = "make_ngram_vocab_size_divisible_by"
        case seed, splitNgramParts = "split_ngram_parts"
        case indexerNHeads = "indexer_n_heads", indexerKvHeads = "indexer_kv_heads", indexerHeadDim = "indexer_head_dim"
        case indexerBudget = "indexer_budget", indexerCompressRatio = "indexer_compress_ratio"
        case outputGateType = "output_gate_type", hiddenAct = "hidden_act", eosTokenId = "eos_token_id"
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        hcCount = try c.decodeIfPresent(Int.self, forKey: .hcCount) ?? 4
        hcLowrank = try c.decodeIfPresent(Int.self, forKey: .hcLowrank) ?? 320
        // Qwen4ExpTextConfig keeps them sorted and without repeats.
        pleLayerIds = Array(Set(try c.decodeIfPresent([Int].self, forKey: .pleLayerIds) ?? [])).sorted()
        pleEmbedDim = try c.decodeIfPresent(Int.self, forKey: .pleEmbedDim)
        pleConvKernelSize = try c.decodeIfPresent(Int.self, forKey: .pleConvKernelSize) ?? 4
        ngramSize = try c.decodeIfPresent(Int.self, forKey: .ngramSize) ?? 3
        headsPerNgram = try c.decodeIfPresent(Int.self, forKey: .headsPerNgram) ?? 8
        ngramVocabSizeBase = try c.decodeIfPresent(Int.self, forKey: .ngramVocabSizeBase) ?? 20_000_000
        makeNgramVocabSizeDivisibleBy = try c.decodeIfPresent(Int.self, forKey: .makeNgramVocabSizeDivisibleBy) ?? 128
        seed = try c.decodeIfPresent(Int.self, forKey: .seed) ?? 1234
        splitNgramParts = try c.decodeIfPresent(Int.self, forKey: .splitNgramParts) ?? 512
        indexerNHeads = try c.decodeIfPresent(Int.self, forKey: .indexerNHeads)
        indexerKvHeads = try c.decodeIfPresent(Int.self, forKey: .indexerKvHeads)
        indexerHeadDim = try c.decodeIfPresent(Int.self, forKey: .indexerHeadDim)
        indexerBudget = try c.decodeIfPresent(Int.self, forKey: .indexerBudget)
        indexerCompressRatio = try c.decodeIfPresent(Int.self, forKey: .indexerCompressRatio)
        outputGateType = try c.decodeIfPresent(String.self, forKey: .outputGateType)
        hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
        if let one = try? c.decodeIfPresent(Int.self, forKey: .eosTokenId) {
            eosTokenId = one
        } else if let list = try? c.decodeIfPresent([Int].self, forKey: .eosTokenId) {
            eosTokenId = list.first
            eosIsEmptyList = list.isEmpty
        }
    }

    /// The Gated DeltaNet's output gate activation: `output_gate_type`, else `hidden_act`.
    var outputGate: String { outputGateType ?? hiddenAct }

    /// (ngram_size − 1) · heads_per_ngram.
    var ngramHeads: Int { (ngramSize - 1) * headsPerNgram }

    /// Whether the QSA keys are set (all five, as validate_architecture requires).
    var hasIndexer: Bool { indexerNHeads != nil }

    /// Qwen4ExpTextConfig.validate_architecture's refusals, and what its
    /// model cannot be built from.
    func check(layerTypes: [String], layers: Int, hidden: Int, rotaryDim: Int, pleEmbedDim: Int) throws {
        guard ["sigmoid", "silu"].contains(outputGate) else {
            throw InvalidConfigValue(
                key: outputGateType == nil ? "hidden_act" : "output_gate_type",
                problem: "is \"\(outputGate.forErrorMessage)\": Qwen4-Exp's output gate is sigmoid or silu")
        }
        guard hcCount > 1 else { throw InvalidConfigValue(key: "hc_count", problem: "is \(hcCount): Qwen4-Exp requires hc_count > 1") }
        guard hcCount.multipliedReportingOverflow(by: hidden).overflow == false else {
            throw InvalidConfigValue(key: "hc_count", problem: "is \(hcCount): streams of \(hidden) times as many values overflow")
        }
        guard hcLowrank >= 1 else { throw InvalidConfigValue(key: "hc_lowrank", problem: "is \(hcLowrank): droptrace reads a rank of at least 1") }
        let qsa: [(String, Int?)] = [
            ("indexer_n_heads", indexerNHeads), ("indexer_kv_heads", indexerKvHeads), ("indexer_head_dim", indexerHeadDim),
            ("indexer_budget", indexerBudget), ("indexer_compress_ratio", indexerCompressRatio),
        ]
        if qsa.contains(where: { $0.1 != nil }) {
            if let missing = qsa.first(where: { $0.1 == nil }) {
                throw InvalidConfigValue(key: missing.0, problem: "is missing: the QSA keys are set together")
            }
            if let bad = qsa.first(where: { $0.1! <= 0 }) {
                throw InvalidConfigValue(key: bad.0, problem: "is \(bad.1!): the QSA values must be positive")
            }
            // The indexer's projection has (indexer_n_heads + 1) · indexer_head_dim rows.
            if let big = qsa.first(where: { $0.1! >= 1 << 31 }) {
                throw InvalidConfigValue(key: big.0, problem: "is \(big.1!), beyond what droptrace sizes the indexer's projection by")
            }
            guard indexerKvHeads == 1 else {
                throw InvalidConfigValue(key: "indexer_kv_heads", problem: "is \(indexerKvHeads!): Qwen4-Exp's QSA requires one key head")
            }
            guard indexerBudget! % indexerCompressRatio! == 0 else {
                throw InvalidConfigValue(
                    key: "indexer_budget", problem: "is \(indexerBudget!), not a multiple of indexer_compress_ratio (\(indexerCompressRatio!))")
            }
            guard rotaryDim <= indexerHeadDim! else {
                throw InvalidConfigValue(
                    key: "indexer_head_dim",
                    problem: "is \(indexerHeadDim!), narrower than the \(rotaryDim) rotated dimensions of head_dim × partial_rotary_factor")
            }
        } else if layerTypes.contains(AttentionLayerType.full) {
            throw InvalidConfigValue(
                key: "indexer_n_heads", problem: "is missing: Qwen4-Exp's indexed attention layers cannot be built without the QSA keys")
        }
        guard !pleLayerIds.isEmpty else { return }
        guard ngramSize >= 2, headsPerNgram >= 1 else {
            throw InvalidConfigValue(
                key: ngramSize < 2 ? "ngram_size" : "heads_per_ngram",
                problem: "is \(ngramSize < 2 ? ngramSize : headsPerNgram): the PLE hashes 2-grams and longer into a head or more each")
        }
        guard pleEmbedDim > 0, ngramSize - 1 <= pleEmbedDim / headsPerNgram, pleEmbedDim % ngramHeads == 0 else {
            throw InvalidConfigValue(
                key: "ple_embed_dim",
                problem: "is \(pleEmbedDim): it must be a positive multiple of the (ngram_size − 1) × heads_per_ngram = \(ngramSize - 1) × \(headsPerNgram) n-gram heads")
        }
        if let bad = pleLayerIds.first(where: { $0 < 1 || $0 > layers }) {
            throw InvalidConfigValue(key: "ple_layer_ids", problem: "names layer \(bad): the ids are one-indexed, in [1, \(layers)]")
        }
        if let bad = pleLayerIds.first(where: { layerTypes[$0 - 1] != HybridQwenConfiguration.linear }) {
            throw InvalidConfigValue(key: "ple_layer_ids", problem: "names layer \(bad): Qwen4-Exp's PLE is only on linear_attention layers")
        }
        guard eosTokenId != nil, !eosIsEmptyList else {
            throw InvalidConfigValue(key: "eos_token_id", problem: "is not set: Qwen4-Exp's PLE layers need it")
        }
        guard pleConvKernelSize >= 1 else {
            throw InvalidConfigValue(key: "ple_conv_kernel_size", problem: "is \(pleConvKernelSize): the PLE convolution needs a tap")
        }
        guard makeNgramVocabSizeDivisibleBy >= 1 else {
            throw InvalidConfigValue(
                key: "make_ngram_vocab_size_divisible_by", problem: "is \(makeNgramVocabSizeDivisibleBy): the table size is a multiple of it")
        }
        guard splitNgramParts >= 1 else {
            throw InvalidConfigValue(key: "split_ngram_parts", problem: "is \(splitNgramParts): the table is stored in at least one part")
        }
        // The table sizes are primes from ngram_vocab_size_base on, rounded up to a multiple of
        // make_ngram_vocab_size_divisible_by; the seed enters 64-bit hashes.
        for (key, value) in [("seed", seed), ("ngram_vocab_size_base", ngramVocabSizeBase), ("make_ngram_vocab_size_divisible_by", makeNgramVocabSizeDivisibleBy)]
        where !(-(1 << 40) < value && value < 1 << 40) {
            throw InvalidConfigValue(key: key, problem: "is \(value), beyond what droptrace reads (within ±2^40)")
        }
    }

    /// Each head's table size and offset (`Qwen4ExpTextNGramEmbedding`): the
    /// primes from ngram_vocab_size_base on, one per head counted over the PLE layers before.
    func headSizes(pleIndex: Int) -> (sizes: [Int64], offsets: [Int64], rows: Int) {
        var sizes: [Int64] = [], offsets: [Int64] = [], total: Int64 = 0
        // Below 2 the first prime after the start is 2 whatever the start.
        var prime = Int64(max(ngramVocabSizeBase, 2)) - 1, counted = 0
        func isPrime(_ v: Int64) -> Bool {
            if v < 2 { return false }
            if v % 2 == 0 { return v == 2 }
            var d: Int64 = 3
            while d * d <= v {
                if v % d == 0 { return false }
                d += 2
            }
            return true
        }
        for head in 0..<ngramHeads {
            let global = pleIndex * ngramHeads + head
            while counted <= global {
                prime += 1
                while !isPrime(prime) { prime += 1 }
                counted += 1
            }
            sizes.append(prime)
            offsets.append(total)
            total += prime
        }
        let divisor = Int64(makeNgramVocabSizeDivisibleBy)
        return (sizes, offsets, Int((total + divisor - 1) / divisor * divisor))
    }

    /// The hash multipliers of the PLE layer `pleIndex` (`_build_layer_multipliers`).
    func multipliers(pleIndex: Int, vocabulary: Int) -> [Int64] {
        let gamma: UInt64 = 0x9E37_79B9_7F4A_7C15
        func splitmix(_ v: UInt64) -> UInt64 {
            var value = v &+ gamma
            value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
            value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
            return value ^ (value >> 31)
        }
        let multiplierMax = UInt64(Int64.max) / UInt64(max(vocabulary, 1))
        let halfBound = max(1, multiplierMax / 2)
        let baseSeed = UInt64(bitPattern: Int64(seed + 10007 * pleIndex))
        return (0..<ngramSize).map { index in
            let value = baseSeed &+ gamma &* UInt64(index + 1)
            return Int64(2 * (splitmix(value) % halfBound) + 1)
        }
    }
}

/// Qwen4-Exp's text model (`qwen4_exp_text`: Qwen4ExpForCausalLM;
/// transformers' `models/qwen4_exp/`), and the language model of its
/// multimodal wrapper `qwen4_exp` (Qwen4ExpForConditionalGeneration: the
/// keys under `text_config`, which Qwen4ExpConfig always reads as
/// Qwen4ExpTextConfig, weights under `model.language_model.`, the head
/// `lm_head` tied by the top-level `tie_word_embeddings` alone, default
/// false; the vision tower and `vision_config` are not read): qwen3_5_moe_text's
/// hybrid layers (the Gated DeltaNet's output gate by `output_gate_type`,
/// sigmoid or silu; "indexed_attention" the gated full attention, whose
/// keys the QSA indexer chooses, `QSAIndexer`; every MLP qwen3_next's
/// experts with `norm_topk_prob`) on a residual stream of `hc_count`
/// streams joined by gated residuals (`GatedResidual`: `attn_hyper_connection`,
/// `mlp_hyper_connection`, the final `hyper_connection_mixer` before the
/// head, no final norm), and on the linear layers of `ple_layer_ids` a
/// hashed n-gram per-layer embedding added to the stream as the layer
/// begins (`PerLayerNGramBranch`). Modules: the attention maps the stream
/// after the PLE to the stream after its join, the MLP that to the layer's
/// output; the PLE belongs to the block.
struct Qwen4ExpModel: DecoderFamily {
    static func readsLayerTypes(_ modelType: String) -> Bool { true }
    let parts: DecoderParts
    let layers: HybridQwenLayers
    let experts: QwenExperts
    let config: Qwen4ExpConfiguration
    let pleEmbedDim: Int

    init(_ checkpoint: Checkpoint) throws {
        var defaults = ConfigValueKinds.omittedDefaultValues(of: "qwen4_exp_text")
        defaults["head_dim"] = .integer(256)
        // The multimodal wrapper (Qwen4ExpForConditionalGeneration) holds the text model as Qwen3.5's does.
        let wrapped = checkpoint.modelType == "qwen4_exp"
        if wrapped, let written = checkpoint.configDocument.member("text_config")?.member("model_type"), !Self.isTextType(written) {
            // Qwen4ExpConfig builds any text config as Qwen4ExpTextConfig, but transformers picks the weight
            // conversions by its model_type: under another the n-gram table's shards and the experts are not loaded.
            throw DroptraceError(
                "\"text_config.model_type\" is \(ConfigValueKinds.spelled(written)): Qwen4ExpConfig reads it as qwen4_exp_text's, "
                    + "whose stored weights transformers then does not convert (it runs another model); write \"qwen4_exp_text\" or omit it",
                path: checkpoint.configURL.path)
        }
        var placement: TextModelPlacement = wrapped
            ? .wrapped(
                textDefaults: defaults, prefixes: ["model.language_model."],
                tiedEmbeddings: try checkpoint.decodeConfig(MultimodalWrapperKeys.self).tieWordEmbeddings ?? false)
            : try .topLevelOrWrapped(checkpoint, defaults: defaults)
        if placement.section.name == nil { placement.prefixes.append("model.language_model.") }
        let experts = try QwenExperts(checkpoint, section: placement.section, configClass: .qwen4Exp)
        placement.section.defaults["intermediate_size"] = .integer(experts.moeIntermediateSize)
        self.experts = experts
        let parts = try DecoderParts(checkpoint, placement: placement, naming: { Self.naming($0) }, experts: experts.naming)
        self.parts = parts
        let config = try parts.config(Qwen4ExpConfiguration.self)
        self.config = config
        pleEmbedDim = config.pleEmbedDim ?? parts.dimensions.hiddenSize
        let layers = try HybridQwenLayers(parts, indexedSpelling: "indexed_attention", partialRotary: 1)
        self.layers = layers
        try experts.confirm(parts)
        let pleEmbedDim = pleEmbedDim
        try parts.checks {
            try config.check(
                layerTypes: layers.layerTypes, layers: parts.dimensions.numHiddenLayers, hidden: parts.dimensions.hiddenSize,
                rotaryDim: layers.rotary.rotaryDim, pleEmbedDim: pleEmbedDim)
        }
        let rope = parts.sectionDocument?.member("rope_parameters")
        if case .object? = rope {
            try parts.checks {
                try MropeSection.interleaved(className: "Qwen4ExpTextRotaryEmbedding").check(
                    rope?.member("mrope_section"), defaultSection: [11, 11, 10], key: "rope_parameters.mrope_section")
            }
        }
    }

    /// Whether `value` is the text model's type, "qwen4_exp_text".
    static func isTextType(_ value: JSONValue) -> Bool {
        guard case .string("qwen4_exp_text") = value else { return false }
        return true
    }

    static func naming(_ prefix: String) -> LayerNaming {
        LayerNaming(
            prefix: prefix + "layers.", attention: ["self_attn.", "linear_attn.", "attn_hyper_connection."],
            mlp: ["mlp.", "mlp_hyper_connection."], layerCountKeys: ["num_hidden_layers"])
    }

    var streamWidth: Int { hiddenSize * config.hcCount }

    var layerNaming: LayerNaming {
        var naming = parts.naming
        naming.layerTypes = layers.layerTypes
        return naming
    }

    /// transformers numbers each PLE layer's hashing (its tables' primes,
    /// their sizes) by its place in ple_layer_ids: a kept PLE layer after a
    /// dropped one would move to another place, whose table has another
    /// size, and the export would not load. (The export's ple_layer_ids are
    /// the kept ones renumbered.)
    func exportProblem(_ plan: DropPlan) -> String? {
        let ple = config.pleLayerIds.map { $0 - 1 }
        guard let dropped = ple.first(where: plan.blocks.contains),
            let kept = ple.first(where: { $0 > dropped && !plan.blocks.contains($0) })
        else { return nil }
        return "dropping block \(dropped), a per-layer embedding layer (ple_layer_ids), moves layer \(kept)'s to another "
            + "place in ple_layer_ids, whose n-gram table transformers sizes otherwise; drop blocks after the last kept "
            + "per-layer embedding layer, or other blocks, instead"
    }

    /// The embedding, entering every stream.
    func embed(_ batch: TokenBatch) throws -> Matrix { try parts.embed(batch).repeated(config.hcCount) }

    func head() throws -> OutputHead {
        var head = OutputHead(
            norm: nil,
            projection: try parts.weights.head(
                tiedTo: parts.embeddingName, tied: parts.tiedEmbeddings, hidden: hiddenSize, vocabulary: vocabularySize,
                storedRows: parts.headRows, names: parts.headNames, bias: false))
        head.streamCollapse = try gatedResidual("hyper_connection_mixer", injects: false)
        return head
    }

    /// The gated residual stored under `name`.
    func gatedResidual(_ name: String, injects: Bool = true) throws -> GatedResidual {
        let w = parts.weights, n = config.hcCount, width = streamWidth, rank = config.hcLowrank
        return GatedResidual(
            streams: n, norm: try w.offsetRMSNorm(name + ".hc_norm", size: width, eps: layers.config.rmsNormEps),
            down: try w.linear(name + ".input_mix_weight_down", in: width, out: rank, bias: false),
            up: try w.linear(name + ".input_mix_weight_up", in: rank, out: width, bias: false),
            inject: injects ? try w.linear(name + ".block_inject_weight", in: width, out: n, bias: false) : nil)
    }

    func block(_ index: Int, skipping plan: DropPlan) throws -> TransformerBlock {
        let drops = plan.union(configuredDrops), p = "layers.\(index).", d = hiddenSize, weights = parts.weights
        let eps = layers.config.rmsNormEps
        func mixer() throws -> TokenMixer {
            if layers.isLinear(index) {
                let prefix = p + "linear_attn."
                return .gatedDeltaNet(try parts.gatedDeltaNet(
                    prefix, heads: layers.heads, projection: try weights.gatedDeltaNetProjection(prefix, heads: layers.heads, hidden: d),
                    eps: eps, activation: config.hiddenAct, outputGate: try parts.activation(config.outputGate, key: "output_gate_type")))
            }
            var attention = try layers.gatedAttention(p + "self_attn.")
            let dim = config.indexerHeadDim!, heads = config.indexerNHeads!, prefix = p + "self_attn.indexer."
            let rotary = layers.rotary
            attention.blockIndexer = QSAIndexer(
                projection: try weights.linear(prefix + "index_qk_proj", in: d, out: (heads + 1) * dim, bias: false),
                queryNorm: try weights.offsetRMSNorm(prefix + "q_layernorm", size: dim, eps: eps),
                keyNorm: try weights.offsetRMSNorm(prefix + "k_layernorm", size: dim, eps: eps), heads: heads, dim: dim,
                budget: config.indexerBudget!, compression: config.indexerCompressRatio!,
                rotary: RotaryEmbedding(
                    inverseFrequencies: rotary.inverseFrequencies, headDim: dim, attentionScaling: rotary.attentionScaling,
                    longContext: rotary.longContext))
            return .attention(attention)
        }
        var block = TransformerBlock(
            attention: drops.dropsAttention(index) ? nil : AttentionBranch(
                inputNorm: nil, mixer: try mixer(), join: .gatedResidual(try gatedResidual(p + "attn_hyper_connection"))),
            mlp: drops.dropsMLP(index) ? nil : MLPBranch(
                inputNorm: nil, feedForward: try experts.feedForward(parts, layer: index, activation: try parts.activation(config.hiddenAct)),
                join: .gatedResidual(try gatedResidual(p + "mlp_hyper_connection"))),
            residual: .sequential)
        if let pleIndex = config.pleLayerIds.firstIndex(of: index + 1) { block.entryBranch = try ple(index, pleIndex: pleIndex) }
        return block
    }

    /// Layer `index`'s PLE, the `pleIndex`-th of `ple_layer_ids`.
    func ple(_ index: Int, pleIndex: Int) throws -> PerLayerNGramBranch {
        let w = parts.weights, p = "layers.\(index).ple.", n = config.hcCount, width = streamWidth, e = pleEmbedDim
        let heads = config.ngramHeads, headWidth = e / heads
        // Each head's table holds at least ngram_vocab_size_base rows: a base the
        // stored table cannot hold is refused before any prime is sought past it.
        let stored = storedTableRows(p + "ple_embedding.ngram_embedding")
        let base = config.ngramVocabSizeBase
        let (least, overflow) = heads.multipliedReportingOverflow(by: max(base, 2))
        guard !overflow, least <= stored else {
            throw DroptraceError(
                "ngram_vocab_size_base (\(base)) gives layer \(index)'s \(heads) n-gram heads tables of at least \(base) rows each; "
                    + "'\(w.prefix + p)ple_embedding.ngram_embedding' stores \(stored) rows in all", path: parts.configPath)
        }
        let (computedSizes, computedOffsets, rows) = config.headSizes(pleIndex: pleIndex)
        // transformers hashes with the buffers as stored; only absent ones are
        // built from seed, ngram_vocab_size_base and ple_layer_ids (_init_weights).
        func buffer(_ name: String, _ computed: [Int64]) throws -> [Int64] {
            let key = w.prefix + p + "ple_embedding." + name
            guard w.has(p + "ple_embedding." + name) else { return computed }
            let stored = try w.checkpoint.storedTensor(key)
            guard stored.dtype == .int64, stored.shape == [computed.count] else {
                throw DroptraceError(
                    "tensor '\(key)' is \(stored.dtype.rawValue) of shape \(stored.shape); the config gives an I64 buffer of shape [\(computed.count)]",
                    path: parts.configPath)
            }
            // Exactly as stored (little-endian int64): the multipliers are far past Float's exact integers.
            return try stored.storedBytes().withUnsafeBytes { raw in
                (0..<computed.count).map { Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self)) }
            }
        }
        let multipliers = try buffer("layer_multipliers", config.multipliers(pleIndex: pleIndex, vocabulary: vocabularySize))
        let sizes = try buffer("ngram_heads_vocab_sizes", computedSizes), offsets = try buffer("ngram_heads_offsets", computedOffsets)
        let table = try ngramTable(p + "ple_embedding.ngram_embedding", rows: rows, width: headWidth)
        // A head of no rows fails the modulo, one past the table the lookup.
        for (size, offset) in zip(sizes, offsets) where size < 1 || offset < 0 || offset > Int64(rows) - size {
            throw DroptraceError(
                "the n-gram head of \(size) rows at offset \(offset) in '\(w.prefix + p)ple_embedding.ngram_heads_vocab_sizes' / "
                    + "'ngram_heads_offsets' does not lie within the \(rows) rows of its table",
                path: parts.configPath)
        }
        let norm = { (name: String) in try w.offsetRMSNorm(p + name, size: width, eps: layers.config.rmsNormEps) }
        return PerLayerNGramBranch(
            embedding: NGramEmbedding(
                ngramSize: config.ngramSize, headsPerNgram: config.headsPerNgram, multipliers: multipliers, vocabSizes: sizes,
                offsets: offsets, table: table, eos: config.eosTokenId!),
            key: try w.linear(p + "key_proj", in: e, out: width, bias: false),
            value: try w.linear(p + "value_proj", in: e, out: hiddenSize, bias: false),
            keyNorm: try norm("norm_key"), queryNorm: try norm("norm_query"), convolutionNorm: try norm("norm_conv"),
            taps: try w.floats(p + "conv1d.weight", [width, 1, config.pleConvKernelSize]), kernel: config.pleConvKernelSize,
            dilation: config.ngramSize, streams: n)
    }

    /// The rows the n-gram table `name` stores, whole or in shards.
    func storedTableRows(_ name: String) -> Int {
        let w = parts.weights
        let names = w.has(name + ".weight") ? [name + ".weight"] : (0...).lazy.map { "\(name).shard_\($0).weight" }.prefix { w.has($0) }.map { $0 }
        return names.reduce(0) { $0 + ((try? w.storedShape($1))?.first ?? 0) }
    }

    /// The n-gram table [rows, width]: `<name>.weight`, or its
    /// `split_ngram_parts` shards `<name>.shard_<i>.weight` concatenated (as transformers' conversion does).
    func ngramTable(_ name: String, rows: Int, width: Int) throws -> Matrix {
        let w = parts.weights
        if w.has(name + ".weight") { return Matrix(rows: rows, cols: width, data: try w.floats(name + ".weight", [rows, width])) }
        let parts = config.splitNgramParts
        guard rows % parts == 0 else {
            throw DroptraceError(
                "split_ngram_parts (\(parts)) does not divide the \(rows) rows of '\(w.prefix + name)'", path: self.parts.configPath)
        }
        var data: [Float] = []
        for i in 0..<parts { data += try w.floats(name + ".shard_\(i).weight", [rows / parts, width]) }
        if w.has(name + ".shard_\(parts).weight") {
            throw DroptraceError("'\(w.prefix + name)' is stored in more shards than split_ngram_parts (\(parts))", path: self.parts.configPath)
        }
        return Matrix(rows: rows, cols: width, data: data)
    }
}
