import Architectures
import Foundation
import TensorEngine

/// Token-by-token decoding with a key/value cache (a recurrent state for a
/// recurrent token mixer: Gated DeltaNet, Mamba-2, a short convolution), to
/// measure what dropping saves at generation time. A dropped attention
/// layer has no cache at all. Kolibri 1.1's indexed layers choose and
/// select their keys at each step as the batched forward does (`pooled`);
/// Qwen4-Exp's QSA indexers keep their pooled key blocks and its n-gram
/// per-layer embeddings their token and convolution history (`QSAIndexer.State`,
/// `PerLayerNGramBranch.State`).
final class IncrementalDecoder {
    private let model: any LanguageModel
    private let blocks: [TransformerBlock?]
    /// Each softmax-attention layer's keys and values, by `slot`.
    private var caches: [KeyValueCache?]
    /// Each recurrent layer's convolution history and recurrent state, by `slot`.
    private var states: [RecurrentState?]
    /// What the recurrent layers' caches grow by per token (`RecurrentTokenMixer.cacheBytesPerToken`).
    private let stateBytesPerToken: Int
    /// Each entry branch's token and convolution history (Qwen4-Exp's n-gram per-layer embedding), by `slot`.
    private var entryStates: [PerLayerNGramBranch.State?]
    /// The last row each token-shifted MLP read (RWKV's channel mixing), by layer.
    private let shiftedRows = TokenShiftRows()
    /// The forward pass's steps (`LanguageModel.layerSteps`).
    private let steps: [LayerLoop.Step]

    convenience init(model: any LanguageModel, plan: DropPlan, capacity: Int) throws {
        self.init(
            model: model, blocks: try (0..<model.layerCount).map { plan.blocks.contains($0) ? nil : try model.block($0, skipping: plan) },
            capacity: capacity)
    }

    private init(model: any LanguageModel, blocks: [TransformerBlock?], capacity: Int) {
        self.model = model
        self.blocks = blocks
        steps = model.layerSteps
        // A looped layer has a cache per pass (Dory's "per_loop", HRM's invocations), or one the last pass writes.
        let loop = model.layerLoop
        let slots = (0..<(loop?.passes ?? 1)).flatMap { pass in
            blocks.enumerated().map { index, block in
                pass == 0 || (pass < model.passes(of: index) && !loop!.sharesCacheAcrossPasses) ? block : nil
            }
        }
        // A layer reusing another's keys and values (Gemma 4) has no cache of its own.
        caches = slots.map { block in
            guard let attention = (block?.attention ?? block?.sharingProducer)?.mixer.softmaxAttention,
                attention.keyValueSharing?.reusedLayer == nil
            else { return nil }
            return KeyValueCache(attention, capacity: capacity)
        }
        // Zamba2's hybrid layers hold a key/value cache for their attention and the state of their mixer after it.
        let mixers = slots.map { ($0?.mixerAfterAttention ?? $0?.attention)?.mixer.recurrent }
        states = mixers.map { $0?.emptyState() }
        stateBytesPerToken = mixers.reduce(0) { $0 + ($1?.cacheBytesPerToken ?? 0) }
        entryStates = slots.map { $0?.entryBranch?.emptyState() }
    }

    /// Where layer `index`'s cache or state for pass `pass` is kept, and
    /// whether that pass only reads it (a pass before the last of a loop
    /// whose passes share the cache: Dory's "last_loop").
    private func slot(_ index: Int, pass: Int) -> (slot: Int, readsOnly: Bool) {
        guard let loop = model.layerLoop, loop.layers.contains(index) else { return (index, false) }
        if loop.sharesCacheAcrossPasses { return (index, pass < loop.passes - 1) }
        return (pass * blocks.count + index, false)
    }

    /// This decoder's model with `plan`'s modules dropped, sharing its
    /// expanded weights (a dropped branch is nil, as `block(_:skipping:)`
    /// gives it), so timing both models holds one copy of the weights.
    /// `self` must be the full model's decoder.
    /// Layers that reuse keys and values take them from the layer the
    /// dropped model has them from (`LanguageModel.keyValueSharing`); where
    /// that layer's attention is one the model's config already drops, and
    /// so has no producer to share, the model builds it.
    /// - Throws: `DroptraceError` when `plan` leaves such a layer none, or
    ///   the checkpoint lacks the weights to make them.
    func dropping(_ plan: DropPlan, capacity: Int) throws -> IncrementalDecoder {
        let sharing = try model.attentionSharing(skipping: plan)
        return IncrementalDecoder(
            model: model,
            blocks: try blocks.enumerated().map { index, block in
                guard let block, !plan.blocks.contains(index) else { return nil }
                // A block that follows its index is built anew behind a removed one.
                if model.blocksFollowTheirIndex, plan.blocks.contains(where: { $0 < index }) { return try model.block(index, skipping: plan) }
                let dropped = block.dropping(plan, at: index, sharing: sharing)
                guard sharing.storesOnly(layer: index), dropped.sharingProducer == nil else { return dropped }
                return try model.block(index, skipping: plan)
            },
            capacity: capacity)
    }

    /// Empties every cache, to decode a new sequence from position 0.
    func reset() {
        for index in caches.indices {
            caches[index]?.clear()
            states[index]?.reset()
            entryStates[index]?.reset()
        }
        shiftedRows.reset()
    }

    /// The embeddings of `tokens` at positions 0..<count [count, hidden] (and
    /// their per-layer inputs, where the model takes them), to look them up
    /// before timing: the model reads its embedding table from the
    /// checkpoint at every lookup, which a generation engine does once.
    func embedded(_ tokens: [Int]) throws -> EmbeddedTokens {
        try EmbeddedTokens(TokenBatch(sequences: [tokens]), model: model)
    }

    /// Runs embedded rows `embedded` (positions 0..<rows, at most the
    /// capacity, the caches empty) through every block at once, filling the
    /// caches as generation's prefill does; returns the final hidden state
    /// of the last row [1, hidden].
    func prefill(embedded: EmbeddedTokens) -> Matrix {
        let positions = Array(0..<embedded.rows.rows)
        // The key selections layers store for later layers (`AttentionSharing`), by layer.
        var selections: [Int: KeySelection] = [:]
        let carry = BlockCarry(shiftedRows: shiftedRows)
        let x = walk(embedded.rows) { x, block, index, pass in
            let (slot, readsOnly) = slot(index, pass: pass), base = pass * blocks.count
            return block(
                x, index: index, perLayerInput: embedded.perLayerInput(index), tokenIDs: embedded.tokenIDs, carry: carry,
                enter: { $0.decode($1, tokenIDs: embedded.tokenIDs, state: &self.entryStates[slot]!) }
            ) { mixer, input in
                mixer(
                    input,
                    attend: { attention, x in
                        if let indexer = attention.keyPool {
                            return pooled(x, with: attention, indexer: indexer, layer: index, positions: positions, pools: &selections)
                        }
                        switch attention.keyValueSharing {
                        case .reuse(let source)?: return caches[base + source]!.prefillReusing(x, with: attention, positions: positions)
                        case .storeOnly?: return caches[slot]!.append(x, with: attention, positions: positions, step: false)
                        default:
                            let length = caches[slot]!.length
                            defer { if readsOnly { caches[slot]!.truncate(to: length) } }
                            return caches[slot]!.prefill(x, with: attention, positions: positions, selections: &selections)
                        }
                    },
                    recur: { $0($1, state: &states[slot]!) })
            }.output
        }
        return x.rows(x.rows - 1..<x.rows)
    }

    /// Bytes the key/value caches hold per token (Float32, as this engine
    /// stores them), with what the recurrent mixers' caches grow by per
    /// token (DeepSeek-V4's attention; other states do not grow).
    var cacheBytesPerToken: Int {
        caches.compactMap { $0 }.reduce(stateBytesPerToken) { $0 + $1.bytesPerToken }
    }

    /// Runs one token through every block; returns the final hidden state.
    /// (Single-row products stay on one thread: `Linear` splits only by rows.)
    func step(token: Int, position: Int) throws -> Matrix {
        step(embedded: try EmbeddedTokens(TokenBatch(token: token, position: position), model: model), position: position)
    }

    /// `step(token:position:)` from the token's embedding (one row).
    func step(embedded: EmbeddedTokens, position: Int) -> Matrix {
        // The keys layers' indexers keep for this token, stored for later layers, by layer.
        var selections: [Int: KeySelection] = [:]
        // Kolibri 1.1's pools of this token's keys, by indexer layer.
        var pools: [Int: KeySelection] = [:]
        let carry = BlockCarry(shiftedRows: shiftedRows)
        return walk(embedded.rows) { x, block, index, pass in
            let (slot, readsOnly) = slot(index, pass: pass), base = pass * blocks.count
            return block(
                x, index: index, perLayerInput: embedded.perLayerInput(index), tokenIDs: embedded.tokenIDs, carry: carry,
                enter: { $0.decode($1, tokenIDs: embedded.tokenIDs, state: &self.entryStates[slot]!) }
            ) { mixer, input in
                mixer(
                    input,
                    attend: { attention, x in
                        if let indexer = attention.keyPool {
                            return pooled(x, with: attention, indexer: indexer, layer: index, positions: [position], pools: &pools, step: true)
                        }
                        switch attention.keyValueSharing {
                        case .reuse(let source)?: return caches[base + source]!.attendReusing(x, with: attention, position: position)
                        case .storeOnly?: return caches[slot]!.append(x, with: attention, positions: [position], step: true)
                        default:
                            let length = caches[slot]!.length
                            defer { if readsOnly { caches[slot]!.truncate(to: length) } }
                            return caches[slot]!.attend(x, with: attention, position: position, selections: &selections)
                        }
                    },
                    recur: { $0($1, state: &states[slot]!) })
            }.output
        }
    }

    /// `x` through the forward pass's steps: a loop's entries (`LayerLoop`)
    /// and every kept block, `run` giving block `index`'s output on pass
    /// `pass` from the stream entering it.
    private func walk(_ x: Matrix, _ run: (Matrix, TransformerBlock, _ index: Int, _ pass: Int) -> Matrix) -> Matrix {
        var x = x
        var entries = model.layerLoop.map(LayerLoop.Entries.init)
        for step in steps {
            switch step {
            case .entry(let pass): x = entries!.enter(x, pass: pass)
            case .layer(let index, let pass): if let block = blocks[index] { x = run(x, block, index, pass) }
            }
        }
        return x
    }

    /// Kolibri 1.1's indexed attention (`SelfAttention.keyPool`) of rows `x`
    /// at `positions`, the first rows of the sequence (a prefill) or its
    /// newest one (`step`): keys and values appended to the layer's cache
    /// or read from its source's (`kv_source_layers`), the pool chosen and
    /// stored in `pools` (an indexer) or read from it, the selected keys of
    /// the pool attended to, rounded with the values to NVFP4. The step
    /// scores its one query against every cached key, as transformers' decoding does.
    private func pooled(
        _ x: Matrix, with attention: SelfAttention, indexer: KeyPoolIndexer, layer: Int, positions: [Int],
        pools: inout [Int: KeySelection], step: Bool = false
    ) -> Matrix {
        let source = attention.keyValueSharing?.reusedLayer ?? layer
        var qkv: Matrix
        if source != layer {
            qkv = caches[source]!.projectedReusing(x, with: attention, positions: positions)
        } else {
            qkv = attention.projectedQKV(x, positions: positions)
            caches[layer]!.appendKeysValues(qkv)
        }
        guard step else {
            return attention.attendingPool(
                qkv, input: x, sequences: [0..<x.rows], indexer: indexer, reusedPool: { pools[$0]! }, storePool: { pools[$1] = $0 })
        }
        let cache = caches[source]!
        let rows = cache.scoringRows(query: qkv), newest = rows.rows - 1, sequences = [0..<rows.rows]
        let pool = indexer.selectsPool
            ? indexer.pool(rows, layout: attention.layout, sequences: sequences, fromRow: newest)
            : pools[attention.keySelectionSharing!.reusedLayer!]!
        if let stored = attention.keySelectionSharing?.storedLayer { pools[stored] = pool }
        if attention.storesOnly { return Matrix(zeros: x.rows, 0) }
        let selection = indexer.selection(rows, layout: attention.layout, sequences: sequences, pool: pool, fromRow: newest)
        if cache.roundsToBF16 { qkv.data = BFloat16.rounded(qkv.data) }
        return cache.attendCached(qkv, input: x, with: attention, keySelection: selection, row: newest)
    }
}

/// Keys and values of one attention layer for every position so far.
///
/// In bfloat16 arithmetic the products' inputs are rounded as in
/// `causalAttention`: keys and values when they enter the cache, the query
/// and the probabilities before each product.
struct KeyValueCache {
    let layout: QKVLayout
    private var keys: [Float]
    private var values: [Float]
    /// The sparse-attention indexer's keys [capacity, dim] (empty without one).
    private var indexerKeys: [Float]
    /// MiniMax-M3's block-sparse indexer's keys [capacity, dim] (empty without one).
    private var blockIndexerKeys: [Float]
    /// Each position's key biases per key/value head where the attention
    /// has a dynamic mask (Doge's), [capacity, kv_heads]; empty otherwise.
    private var keyBiases: [Float]
    /// The dynamic mask's biases by input row (`EqualRowOutputs`): a token
    /// repeated later gets its earlier biases, as in one pass over both.
    /// At most one entry per position, droptrace's own bookkeeping: not
    /// counted in `bytesPerToken`, the model's cache.
    private var equalRows = EqualRowOutputs()
    /// Qwen4-Exp's QSA indexer's pooled key blocks (nil without one).
    private var blockIndexerState: QSAIndexer.State?
    private(set) var length = 0
    let roundsToBF16 = MatrixArithmetic.current.roundsToBF16
    /// What the cache grows by per token, in bytes (all of it Float32):
    /// the keys and values, a sparse-attention indexer's own keys (QSA's
    /// pooled ones: one per `compression` tokens, rounded), a dynamic
    /// mask's key biases.
    let bytesPerToken: Int

    init(_ attention: SelfAttention, capacity: Int) {
        layout = attention.layout
        keys = [Float](repeating: 0, count: capacity * layout.numKVHeads * layout.headDim)
        values = keys
        indexerKeys = [Float](repeating: 0, count: capacity * (attention.indexer?.keyWidth ?? 0))
        blockIndexerKeys = [Float](repeating: 0, count: capacity * (attention.blockSparseIndexer?.dim ?? 0))
        keyBiases = [Float](repeating: 0, count: attention.dynamicMask == nil ? 0 : capacity * layout.numKVHeads)
        blockIndexerState = attention.blockIndexer.map { _ in QSAIndexer.State() }
        // Every per-position buffer above, read back from what was allocated.
        let floats = capacity == 0 ? 0 : (keys.count + values.count + indexerKeys.count + blockIndexerKeys.count + keyBiases.count) / capacity
        let pooled = attention.blockIndexer.map { (2 * $0.dim * MemoryLayout<Float>.size + $0.compression) / (2 * $0.compression) } ?? 0
        bytesPerToken = floats * MemoryLayout<Float>.size + pooled
    }

    var width: Int { layout.numKVHeads * layout.headDim }

    mutating func clear() {
        length = 0
        equalRows = EqualRowOutputs()
        if blockIndexerState != nil { blockIndexerState = QSAIndexer.State() }
    }

    /// Forgets every position from `length` on (a pass that reads the cache
    /// without writing it: Dory's "last_loop" loops before the last).
    mutating func truncate(to length: Int) {
        precondition(length <= self.length)
        self.length = length
    }

    /// Causal attention of the rows of `x` (the first tokens of a sequence,
    /// at `positions`) over each other, appending their keys and values;
    /// returns the output projection. A layer storing or reusing its key
    /// selection (`SelfAttention.keySelectionSharing`) does so in `selections`;
    /// one that only stores it attends to nothing and returns no columns.
    mutating func prefill(
        _ x: Matrix, with attention: SelfAttention, positions: [Int], selections: inout [Int: KeySelection]
    ) -> Matrix {
        let latent = attention.indexer == nil ? nil : attention.projection.queryLatent(x)
        let indexed = attention.indexer.map { $0.project(x, queryLatent: latent, positions: positions) }
        if let indexed { indexerKeys.replaceSubrange(length * indexed.keys.cols..<(length + x.rows) * indexed.keys.cols, with: indexed.keys.data) }
        let blockIndexed = attention.blockSparseIndexer.map { $0.project(x, positions: positions) }
        if let blockIndexed {
            let dim = blockIndexed.keys.cols
            blockIndexerKeys.replaceSubrange(length * dim..<(length + x.rows) * dim, with: blockIndexed.keys.data)
        }
        let sharing = attention.keySelectionSharing
        var blockSelection: KeySelection?
        if let indexer = attention.blockIndexer {
            var chosen = KeySelection(rows: x.rows)
            for (row, keys) in indexer.decode(x, positions: positions, state: &blockIndexerState!).enumerated() {
                if let keys { chosen.keep(row: row, keys: keys, length: length + row + 1) }
            }
            blockSelection = chosen
        }
        let selection = sharing?.reusedLayer.map { selections[$0]! }
            ?? indexed.map { attention.indexer!.selection($0, sequences: [0..<x.rows]) } ?? blockSelection
            ?? blockIndexed.map { attention.blockSparseIndexer!.selection($0, sequences: [0..<x.rows]) }
        if let layer = sharing?.storedLayer { selections[layer] = selection }
        if sharing?.storesOnly == true {
            length += x.rows
            return Matrix(zeros: x.rows, 0)
        }
        let qkv = attention.projectedQKV(x, positions: positions, queryLatent: latent)
        let biases = attention.dynamicMask?.biases(qkv, layout: layout, inputs: x, earlier: &equalRows)
        appendKeysValues(qkv, biases: biases)
        return Self.attendEachOther(qkv, input: x, with: attention, keySelection: selection, keyBiases: biases)
    }

    /// Appends the keys and values of projected rows `qkv` at the next
    /// positions, and their `biases` where the attention has a dynamic mask.
    mutating func appendKeysValues(_ qkv: Matrix, biases: KeyBiases? = nil) {
        if let biases {
            let heads = layout.numKVHeads
            keyBiases.replaceSubrange(length * heads..<(length + qkv.rows) * heads, with: biases.values)
        }
        let headDim = layout.headDim, width = self.width
        for row in 0..<qkv.rows {
            for g in 0..<layout.numKVHeads {
                for j in 0..<headDim {
                    keys[(length + row) * width + g * headDim + j] = qkv.data[row * layout.width + layout.keyOffset(kvHead: g) + j]
                    values[(length + row) * width + g * headDim + j] = qkv.data[row * layout.width + layout.valueOffset(kvHead: g) + j]
                }
            }
        }
        length += qkv.rows
    }

    /// A store-only layer's step or prefill (`AttentionSharing.storeOnly`):
    /// appends the keys and values of rows `x` at `positions` for the layers
    /// that reuse them, attending to nothing; returns no columns. A decoding
    /// step's row is rounded as `attend` rounds it, a prefill's rows as
    /// `prefill` keeps them.
    mutating func append(_ x: Matrix, with attention: SelfAttention, positions: [Int], step: Bool) -> Matrix {
        var qkv = attention.projectedQKV(x, positions: positions)
        if roundsToBF16 && step { qkv.data = BFloat16.rounded(qkv.data) }
        appendKeysValues(qkv)
        return Matrix(zeros: x.rows, 0)
    }

    /// `prefill` of a layer that reuses this cache's keys and values: its
    /// own layer appended those of rows `x` last.
    func prefillReusing(_ x: Matrix, with attention: SelfAttention, positions: [Int]) -> Matrix {
        let qkv = attention.projectedQKV(x, positions: positions, sharedKeysValues: keysValues(length - x.rows..<length))
        return Self.attendEachOther(qkv, input: x, with: attention, keySelection: nil, keyBiases: nil)
    }

    /// Causal attention of rows `qkv` over each other, through the output projection.
    private static func attendEachOther(
        _ qkv: Matrix, input x: Matrix, with attention: SelfAttention, keySelection: KeySelection?, keyBiases: KeyBiases?
    ) -> Matrix {
        attention.finish(attention.attended(qkv) {
            causalAttention(
                qkv: $0, layout: attention.layout, sequences: [0..<qkv.rows], scale: attention.scale,
                slidingWindow: attention.slidingWindow, logitSoftcap: attention.logitSoftcap, sinkLogits: attention.sinkLogits,
                alibi: attention.alibi, chunkSize: attention.chunkSize, keySelection: keySelection, keyBiases: keyBiases)
        }, input: x)
    }

    /// The cached keys and values of positions `range`, [rows, keys | values].
    private func keysValues(_ range: Range<Int>) -> Matrix {
        let width = self.width
        var data: [Float] = []
        data.reserveCapacity(range.count * 2 * width)
        for position in range {
            data += keys[(position * width)..<((position + 1) * width)]
            data += values[(position * width)..<((position + 1) * width)]
        }
        return Matrix(rows: range.count, cols: 2 * width, data: data)
    }

    /// Projected rows `x` at `positions` of a layer that reuses this
    /// cache's keys and values, the last `x.rows` its own layer appended.
    func projectedReusing(_ x: Matrix, with attention: SelfAttention, positions: [Int]) -> Matrix {
        attention.projectedQKV(x, positions: positions, sharedKeysValues: keysValues(length - x.rows..<length))
    }

    /// The cached keys as projected rows [length, layout.width], the newest
    /// row `qkv` (its query included, the other rows' queries and every
    /// value zero): what Kolibri 1.1's indexer scores a decoding step by.
    func scoringRows(query qkv: Matrix) -> Matrix {
        var rows = Matrix(zeros: length, layout.width)
        let headDim = layout.headDim, width = self.width
        for row in 0..<(length - 1) {
            for g in 0..<layout.numKVHeads {
                let key = layout.keyOffset(kvHead: g)
                rows.data.replaceSubrange(
                    row * layout.width + key..<row * layout.width + key + headDim,
                    with: keys[(row * width + g * headDim)..<(row * width + (g + 1) * headDim)])
            }
        }
        rows.data.replaceSubrange((length - 1) * layout.width..<length * layout.width, with: qkv.data)
        return rows
    }

    /// `attend` of a layer that reuses this cache's keys and values: its
    /// own layer appended the new token's last.
    func attendReusing(_ x: Matrix, with attention: SelfAttention, position: Int) -> Matrix {
        var qkv = attention.projectedQKV(x, positions: [position], sharedKeysValues: keysValues(length - 1..<length))
        if roundsToBF16 { qkv.data = BFloat16.rounded(qkv.data) }
        return attendCached(qkv, input: x, with: attention)
    }

    /// Attention of the new token over the cache (itself included), after
    /// appending its key and value; returns the output projection. A layer
    /// storing or reusing its key selection does so in `selections`, as `prefill`.
    mutating func attend(_ x: Matrix, with attention: SelfAttention, position: Int, selections: inout [Int: KeySelection]) -> Matrix {
        let latent = attention.indexer == nil ? nil : attention.projection.queryLatent(x)
        // The keys the new token may read, for all its heads or each group
        // of them (MiniMax-M3's indexer); all where no indexer chooses.
        var selection = KeySelection(rows: 1)
        if let indexer = attention.indexer {
            let indexed = indexer.project(x, queryLatent: latent, positions: [position])
            indexerKeys.replaceSubrange(length * indexer.keyWidth..<(length + 1) * indexer.keyWidth, with: indexed.keys.data)
            if indexer.selects(among: length + 1) {
                selection.keep(row: 0, keys: indexer.chosenKeys(indexed, row: 0, keys: indexerKeys, keyRows: 0..<(length + 1)), length: length + 1)
            }
        }
        if let indexer = attention.blockIndexer, let keys = indexer.decode(x, positions: [position], state: &blockIndexerState!)[0] {
            selection.keep(row: 0, keys: keys, length: length + 1)
        }
        if let indexer = attention.blockSparseIndexer {
            let indexed = indexer.project(x, positions: [position])
            blockIndexerKeys.replaceSubrange(length * indexer.dim..<(length + 1) * indexer.dim, with: indexed.keys.data)
            if !indexer.seesAll(length) {
                let chosen = indexer.chosenKeys(indexed.queries, row: 0, keys: blockIndexerKeys, keyRows: 0..<(length + 1), offset: length)
                selection = KeySelection(rows: 1, groups: chosen.count)
                for (group, keys) in chosen.enumerated() { selection.keep(row: 0, group: group, keys: keys, length: length + 1) }
            }
        }
        let sharing = attention.keySelectionSharing
        if let source = sharing?.reusedLayer { selection = selections[source]! }
        if let layer = sharing?.storedLayer { selections[layer] = selection }
        if sharing?.storesOnly == true {
            length += 1
            return Matrix(zeros: x.rows, 0)
        }
        var qkv = attention.projectedQKV(x, positions: [position], queryLatent: latent)
        // One row: rounding it whole rounds the query, key and value alike.
        if roundsToBF16 { qkv.data = BFloat16.rounded(qkv.data) }
        appendKeysValues(qkv, biases: attention.dynamicMask?.biases(qkv, layout: layout, inputs: x, earlier: &equalRows))
        return attendCached(qkv, input: x, with: attention, keySelection: selection)
    }

    /// The query of projected row `qkv` attending to the cache's positions
    /// 0..<length, the new token's last; returns the output projection.
    /// Each head reads only the keys row `row` of `keySelection` keeps for
    /// its group (keys at offsets = positions).
    func attendCached(
        _ qkv: Matrix, input x: Matrix, with attention: SelfAttention, keySelection: KeySelection = KeySelection(rows: 1), row: Int = 0
    ) -> Matrix {
        // The cache holds positions 0..<length; the new token is at length - 1.
        let layout = self.layout, headDim = layout.headDim, width = self.width
        // Kolibri 1.1's indexed attention attends to keys and values rounded to NVFP4.
        let (keys, values) = attention.keyPool == nil
            ? (self.keys, self.values)
            : (NVFP4.fakeQuantized(Array(self.keys.prefix(length * width))), NVFP4.fakeQuantized(Array(self.values.prefix(length * width))))
        let first = firstVisibleKey(query: length - 1, slidingWindow: attention.slidingWindow, chunkSize: attention.chunkSize)
        let visible = length - first
        // A differential attention's two passes weigh other value heads alike (`DifferentialAttention`).
        let passes = attention.differential == nil ? 1 : 2
        var output = [Float](repeating: 0, count: passes * layout.numHeads * headDim)
        var scores = [Float](repeating: 0, count: visible)
        let groupSize = layout.numHeads / layout.numKVHeads
        // Doge's dynamic mask: the cached keys' biases, and its cap on the keys.
        let biases = attention.dynamicMask.map { KeyBiases(values: Array(keyBiases.prefix(length * layout.numKVHeads)), kvHeads: layout.numKVHeads, keep: $0.keep) }
        keys.withUnsafeBufferPointer { k in
            values.withUnsafeBufferPointer { v in
                qkv.data.withUnsafeBufferPointer { q in
                    for head in 0..<layout.numHeads {
                        let g = head / groupSize
                        let keyBase = k.baseAddress! + first * width + g * headDim
                        BLAS.gemv(m: visible, n: headDim, keyBase, lda: width, q.baseAddress! + layout.queryOffset(head: head),
                                  &scores, alpha: attention.scale)
                        if let alibi = attention.alibi {
                            scores.withUnsafeMutableBufferPointer {
                                alibi.add(
                                    to: $0.baseAddress!, visible: 0..<visible, head: head, firstPosition: first,
                                    lastPosition: length - 1)
                            }
                        }
                        if let cap = attention.logitSoftcap {
                            for j in 0..<visible { scores[j] = tanh(scores[j] / cap) * cap }
                        }
                        scores.withUnsafeMutableBufferPointer {
                            keySelection.mask(row: row, head: head, heads: layout.numHeads, scores: $0.baseAddress!, keys: first..<length)
                        }
                        if let biases {
                            scores.withUnsafeMutableBufferPointer {
                                biases.apply($0.baseAddress!, kvHead: g, start: 0, length: length, keys: first..<length)
                            }
                        }
                        let maximum = scores.max() ?? 0
                        if let sink = attention.sinkLogits?[head] {
                            scores.withUnsafeMutableBufferPointer {
                                softmaxWithSink($0.baseAddress!, count: visible, maximum: maximum, sinkLogit: sink)
                            }
                        } else {
                            var sum: Float = 0
                            for j in 0..<visible { scores[j] = exp(scores[j] - maximum); sum += scores[j] }
                            for j in 0..<visible { scores[j] /= sum }
                        }
                        if roundsToBF16 { scores = BFloat16.rounded(scores) }
                        output.withUnsafeMutableBufferPointer { out in
                            for pass in 0..<passes {
                                let source = passes == 1 ? g : DifferentialAttention.valueHead(g, pass: pass, layout: layout)
                                BLAS.gemv(m: visible, n: headDim, v.baseAddress! + first * width + source * headDim, lda: width,
                                          transpose: true, scores, out.baseAddress! + (pass * layout.numHeads + head) * headDim)
                            }
                        }
                    }
                }
            }
        }
        let queryWidth = layout.queryWidth
        let attended = attention.differential.map {
            $0.combine(
                Matrix(rows: 1, cols: queryWidth, data: Array(output[0..<queryWidth])),
                Matrix(rows: 1, cols: queryWidth, data: Array(output[queryWidth...])), layout: layout)
        } ?? Matrix(rows: 1, cols: output.count, data: output)
        return attention.finish(attended, input: x)
    }
}
