import CheckpointIO
import DroptraceSupport
import TensorEngine

/// Shape-checked access to a checkpoint's weights under a name prefix.
struct Weights {
    let checkpoint: Checkpoint
    let prefix: String
    /// The block of one scale of block-scaled FP8 weights: config.json's
    /// `quantization_config.weight_block_size` [rows, columns], 128 × 128
    /// (DeepSeek-V3's) when absent.
    let fp8Block: FP8BlockSize

    /// Stored names that stand in for missing ones (full name → stored name).
    private let standIns: [String: String]
    /// The base model's prefix once more before every name (`model.` of
    /// `model.model.layers.0…`, `model.lm_head.weight`), as a module holding
    /// the ...ForCausalLM as its `model` saves its state dict (a Lightning
    /// module, say); empty otherwise. transformers 5 strips one base-model
    /// prefix from a key whose rest is a key of the model (`rename_source_key`
    /// in core_model_loading.py), so it loads such files; so does this.
    let wrapper: String

    /// Finds the prefix under which `probe` (the token embedding) exists
    /// (e.g. "model." when saved from a ...ForCausalLM, "" when saved from
    /// the base model).
    ///
    /// `tiedHead` names where the LM head is stored when the config ties it to
    /// the embedding (empty when it does not). Such a checkpoint may hold the
    /// shared matrix under the head's name alone: safetensors' `save_model`
    /// keeps one name per shared tensor, the alphabetically first
    /// (`lm_head.weight` before `model.embed_tokens.weight`). transformers
    /// ties the embedding to it on loading; so does this, taking the prefix
    /// from the other tensors.
    /// - Throws: `DroptraceError` naming the checkpoint when neither is
    ///   stored, or when a tensor is stored under two of the candidates
    ///   (transformers renames one onto the other, and which it keeps would
    ///   depend on the order it reads them).
    init(_ checkpoint: Checkpoint, probe: String, candidates: [String], tiedHead: [String] = []) throws {
        self.checkpoint = checkpoint
        fp8Block = try checkpoint.decodeConfig(FP8BlockSize.self)
        try Self.refuseCopies(checkpoint, under: candidates)
        if let found = candidates.first(where: { checkpoint.hasTensor($0 + probe) }) {
            (prefix, wrapper, standIns) = (found, "", [:])
            return
        }
        let names = checkpoint.storedTensorNames
        if let base = candidates.first, !base.isEmpty, checkpoint.hasTensor(base + base + probe) {
            // transformers maps 'model.model.x' and 'model.x' to one key; which
            // it keeps would depend on the order it reads them.
            if let twice = names.first(where: { $0.hasPrefix(base) && checkpoint.hasTensor(String($0.dropFirst(base.count))) }) {
                throw DroptraceError(
                    "tensor '\(twice.dropFirst(base.count))' is stored twice, also as '\(twice)' (transformers reads both as one)",
                    path: checkpoint.weightsPath)
            }
            (prefix, wrapper, standIns) = (base + base, base, [:])
            return
        }
        guard let head = tiedHead.first(where: checkpoint.hasTensor),
              let found = candidates.first(where: { candidate in names.contains { $0.hasPrefix(candidate) && $0 != head } })
        else {
            let why = checkpoint.whyMissing(candidates[0] + probe)
            throw DroptraceError(
                "missing tensor '\(candidates[0] + probe)'" + (why.isEmpty ? Self.wrapperPrefix(of: probe, candidates, in: names) : why),
                path: checkpoint.weightsPath)
        }
        (prefix, wrapper, standIns) = (found, "", [found + probe: head])
    }

    /// Refuses a tensor stored under two of `candidates` with the same rest
    /// of its name (`model.layers.0.…` beside `model.language_model.layers.0.…`).
    private static func refuseCopies(_ checkpoint: Checkpoint, under candidates: [String]) throws {
        let pairs = candidates.flatMap { a in candidates.filter { $0 != a }.map { (a, $0) } }
        guard !pairs.isEmpty else { return }
        for name in checkpoint.storedTensorNames {
            for (a, b) in pairs where name.hasPrefix(a) {
                let copy = b + name.dropFirst(a.count)
                if copy != name, checkpoint.hasTensor(copy) {
                    throw DroptraceError(
                        "tensor '\(name.forErrorMessage)' is stored twice, also as '\(copy.forErrorMessage)' (transformers reads both as one)",
                        path: checkpoint.weightsPath)
                }
            }
        }
    }

    /// Why the embedding was not found when it is stored under a prefix a
    /// wrapper adds to every name (torch.compile's `_orig_mod.`, DDP's
    /// `module.`, a PEFT model's `base_model.model.`): the file holds the
    /// wrapper's state dict. transformers does not strip these prefixes
    /// either (it initialises the model randomly and warns), so droptrace
    /// refuses them rather than guess; the message says what the file holds
    /// instead of leaving "missing tensor" alone. Empty when no such name is stored.
    static func wrapperPrefix(of probe: String, _ candidates: [String], in names: [String]) -> String {
        for candidate in candidates where !candidate.isEmpty {
            guard let name = names.first(where: { $0.hasSuffix("." + candidate + probe) }) else { continue }
            let wrapper = String(name.dropLast(candidate.count + probe.count))
            return ": the weights are stored under the prefix '\(wrapper.forErrorMessage)' ('\(name.forErrorMessage)'), "
                + "as a wrapper's state dict names them (torch.compile's '_orig_mod.', DDP's 'module.', a PEFT model's "
                + "'base_model.model.'); save the unwrapped model with save_pretrained (after PEFT's merge_and_unload())"
        }
        return ""
    }

    /// The stored name of tensor `name` under the prefix.
    private func stored(_ name: String) -> String {
        standIns[prefix + name] ?? prefix + name
    }

    func tensor(_ name: String, _ shape: [Int]) throws -> TensorSlice {
        try checkpoint.tensor(stored(name), shape: shape)
    }

    /// The values of tensor `name` of shape `shape`; an FP8 weight with a
    /// `<name>_scale_inv` companion (DeepSeek-V3's block-scaled weights) is
    /// dequantised to Float32 (`FP8.dequantize`).
    func floats(_ name: String, _ shape: [Int]) throws -> [Float] {
        let scales = prefix + name + "_scale_inv"
        guard checkpoint.hasTensor(scales) else { return try tensor(name, shape).floats() }
        let (weight, scaleInv) = (try storedFP8(name, shape), try checkpoint.storedTensor(scales))
        let block = fp8Block.fromScaleGrid ? try FP8.blockFromScaleGrid(weight: weight, scaleInv: scaleInv) : (fp8Block.rows, fp8Block.columns)
        return try FP8.dequantize(weight: weight, scaleInv: scaleInv, blockRows: block.0, blockColumns: block.1)
    }

    /// The stored FP8 weight `name`, checked to have shape `shape`.
    private func storedFP8(_ name: String, _ shape: [Int]) throws -> TensorSlice {
        let weight = try checkpoint.storedTensor(stored(name))
        guard weight.shape == shape else {
            throw DroptraceError(
                "tensor '\(stored(name))' has shape \(weight.shape) but \(checkpoint.configName) implies \(shape)", path: weight.path)
        }
        return weight
    }

    /// Throws unless tensor `name` exists with shape `shape`; reads no values.
    /// A size from config.json is trusted for an allocation only once the
    /// tensors confirm it (an absurd intermediate_size must fail as a shape
    /// mismatch, not as a terabyte allocation).
    func checkShape(_ name: String, _ shape: [Int]) throws {
        if checkpoint.hasTensor(prefix + name + "_scale_inv") { _ = try storedFP8(name, shape) } else { _ = try tensor(name, shape) }
    }

    /// Tensors `names`, each [rows_i] + `trailing`, joined along their first
    /// axis, as transformers' conversion mapping joins the pieces it split
    /// a tensor into on saving (evenly, whatever the pieces are called:
    /// OLMo-Hybrid's q | k | v convolution); their rows must add up to `rows`.
    /// - Throws: `DroptraceError` naming the weights for another trailing shape or total.
    func concatenatedRows(_ names: [String], rows: Int, trailing: [Int]) throws -> [Float] {
        try joinedRows(names, rows: rows, trailing: trailing).flatMap { try floats($0.name, [$0.rows] + trailing) }
    }

    /// The rows of each of tensors `names`, each [rows_i] + `trailing`,
    /// which `concatenatedRows` joins; read from the headers alone. `keys`:
    /// the config keys that size the whole, named in the errors, which then
    /// name `configPath` (the sizes the tensors contradict).
    /// - Throws: `DroptraceError` as `concatenatedRows` does.
    func joinedRows(
        _ names: [String], rows: Int, trailing: [Int], keys: String? = nil, configPath: String? = nil
    ) throws -> [(name: String, rows: Int)] {
        var pieces: [(name: String, rows: Int)] = []
        for name in names {
            let piece = try checkpoint.storedTensor(stored(name))
            guard piece.shape.count == trailing.count + 1, Array(piece.shape.dropFirst()) == trailing else {
                throw DroptraceError(
                    "tensor '\(stored(name))' has shape \(piece.shape) but \(checkpoint.configName) implies [_] + \(trailing)"
                        + (keys.map { " (\($0))" } ?? ""),
                    path: configPath ?? piece.path)
            }
            pieces.append((name, piece.shape[0]))
        }
        let total = pieces.reduce(0) { $0 + $1.rows }
        guard total == rows else {
            throw DroptraceError(
                "tensors \(names.map { "'\(stored($0))'" }.joined(separator: ", ")) hold \(total) rows together but \(checkpoint.configName) implies \(rows)"
                    + (keys.map { " (\($0))" } ?? ""),
                path: configPath ?? checkpoint.weightsPath)
        }
        return pieces
    }

    /// `floats(name, shape)` written to `destination` (as many values as `shape` holds).
    func expand(_ name: String, _ shape: [Int], into destination: UnsafeMutablePointer<Float>) throws {
        guard checkpoint.hasTensor(prefix + name + "_scale_inv") else {
            return try tensor(name, shape).expand(into: destination)
        }
        try floats(name, shape).withUnsafeBufferPointer { destination.update(from: $0.baseAddress!, count: $0.count) }
    }

    /// The shape tensor `name` is stored with.
    func storedShape(_ name: String) throws -> [Int] { try checkpoint.storedTensor(stored(name)).shape }

    func has(_ name: String, absolute: Bool = false) -> Bool { checkpoint.hasTensor(absolute ? self.absolute(name) : stored(name)) }

    /// The name a tensor that transformers reads under two names (a
    /// family's saved name, which its conversion mapping renames, and its
    /// own) is stored under: `renamed` when only it is stored, else `saved`
    /// (whose absence then names it in the error).
    /// - Throws: `DroptraceError` when both are stored: transformers reads
    ///   them as one parameter, so which it kept would depend on their order.
    func storedName(saved: String, renamed: String) throws -> String {
        switch (has(saved), has(renamed)) {
        case (true, true):
            throw DroptraceError(
                "tensors '\(prefix)\(saved)' and '\(prefix)\(renamed)' are both stored, which transformers reads as one parameter; keep one of the two",
                path: checkpoint.weightsPath)
        case (false, true): return renamed
        default: return saved
        }
    }

    /// Which of a module's two names under `prefix` — `saved`, a family's
    /// own, which its conversion mapping renames, and `renamed`,
    /// transformers' — the checkpoint stores it under, by where its tensor
    /// `probe` is (`storedName`): `renamed` when only it is stored, else `saved`.
    /// - Throws: `DroptraceError` when both are stored (`storedName`).
    func storedModule(_ prefix: String, saved: String, renamed: String, probe: String = ".weight") throws -> String {
        try storedName(saved: prefix + saved + probe, renamed: prefix + renamed + probe) == prefix + renamed + probe ? renamed : saved
    }

    /// The stored name of tensor `name` outside the base model (`lm_head.weight`):
    /// under the wrapper when it is stored there.
    func absolute(_ name: String) -> String {
        !wrapper.isEmpty && checkpoint.hasTensor(wrapper + name) ? wrapper + name : name
    }

    /// A torch.nn.Linear: weight [out, in], bias [out] when `bias`.
    func linear(_ name: String, in inFeatures: Int, out outFeatures: Int, bias: Bool) throws -> Linear {
        Linear(
            weight: try floats(name + ".weight", [outFeatures, inFeatures]),
            bias: bias ? try floats(name + ".bias", [outFeatures]) : nil,
            inFeatures: inFeatures, outFeatures: outFeatures)
    }

    /// torch.nn.Linear projections `names` (each weight [outs[i], in], bias
    /// [outs[i]] when `bias`) that read the same input, stacked into one
    /// projection whose outputs are theirs in order. The weights are expanded
    /// straight into the stacked matrix: stacking expanded parts would hold
    /// each part twice while it is copied (for TinyLlama's gate | up, 92 MB
    /// more at the peak of a block's expansion).
    func stackedLinear(_ names: [String], in inFeatures: Int, outs: [Int], bias: Bool, storedFused fused: String? = nil) throws -> Linear {
        if let fused, has(fused + ".weight") || bias && has(fused + ".bias") {
            return try fusedLinear(fused, parts: names, in: inFeatures, outs: outs, bias: bias)
        }
        for (name, out) in zip(names, outs) { try checkShape(name + ".weight", [out, inFeatures]) }
        let total = outs.reduce(0, +)
        let weight = try [Float](unsafeUninitializedCapacity: total * inFeatures) { buffer, initialized in
            var start = buffer.baseAddress!
            for (name, out) in zip(names, outs) {
                try expand(name + ".weight", [out, inFeatures], into: start)
                start += out * inFeatures
            }
            initialized = total * inFeatures
        }
        let biases = bias ? try zip(names, outs).flatMap { try floats($0 + ".bias", [$1]) } : nil
        return Linear(weight: consume weight, bias: biases, inFeatures: inFeatures, outFeatures: total)
    }

    /// `names` stacked as `stackedLinear` stacks them, where the weight, the
    /// bias or both are stored as one tensor `fused` with the parts' rows in
    /// order (transformers' `Split(dim=0)` converter splits each where stored).
    /// - Throws: `DroptraceError` when a part is stored beside the fused form
    ///   (transformers would read one over the other), or for a missing tensor.
    private func fusedLinear(_ fused: String, parts names: [String], in inFeatures: Int, outs: [Int], bias: Bool) throws -> Linear {
        let total = outs.reduce(0, +)
        for suffix in [".weight"] + (bias ? [".bias"] : []) where has(fused + suffix) {
            if let both = names.first(where: { has($0 + suffix) }) {
                throw DroptraceError(
                    "tensors '\(prefix)\(fused)\(suffix)' and '\(prefix)\(both)\(suffix)' are both stored; transformers splits the first into \(names.map { $0.split(separator: ".").last ?? "" }.joined(separator: ", ")), so keep one form",
                    path: checkpoint.weightsPath)
            }
        }
        let weight = has(fused + ".weight")
            ? try floats(fused + ".weight", [total, inFeatures]) : try stackedLinear(names, in: inFeatures, outs: outs, bias: false).weight
        let biases = !bias ? nil
            : has(fused + ".bias") ? try floats(fused + ".bias", [total]) : try zip(names, outs).flatMap { try floats($0 + ".bias", [$1]) }
        return Linear(weight: weight, bias: biases, inFeatures: inFeatures, outFeatures: total)
    }

    /// q_proj, k_proj and v_proj under `attention` (e.g. "layers.3.self_attn."),
    /// stacked into one projection in the grouped q | k | v layout of
    /// `layout`. Heads narrower than its `headDim` — query and key heads
    /// `queryKeyHeadDim` wide, value heads `valueHeadDim` (MiMo-V2-Flash's
    /// `v_head_dim`) — have each head's rows followed by zero rows up to
    /// `layout.headDim`: zero columns add nothing to a query-key product and
    /// give the attention output zero columns, which o_proj widened by
    /// `LatentQKVProjection.paddedOutput` ignores. `fused`: a projection
    /// stored with the q | k | v rows, read instead where stored (SarvamMoE's
    /// and Param2-MoE's `query_key_value`, which transformers splits on load).
    func stackedQKV(
        _ attention: String, hidden: Int, layout: QKVLayout, bias: Bool, queryKeyHeadDim: Int? = nil, valueHeadDim: Int? = nil,
        fused: String? = nil
    ) throws -> Linear {
        let queryKeyHeadDim = queryKeyHeadDim ?? layout.headDim, valueHeadDim = valueHeadDim ?? layout.headDim
        precondition(layout.arrangement == .grouped && max(queryKeyHeadDim, valueHeadDim) <= layout.headDim)
        let pieces = [(layout.numHeads, queryKeyHeadDim), (layout.numKVHeads, queryKeyHeadDim), (layout.numKVHeads, valueHeadDim)]
        let separate = ["q_proj", "k_proj", "v_proj"].map { attention + $0 }, outs = pieces.map { $0.0 * $0.1 }
        let stacked = try stackedLinear(separate, in: hidden, outs: outs, bias: bias, storedFused: fused.map { attention + $0 })
        guard stacked.outFeatures != layout.width else { return stacked }
        func padded(_ values: [Float], rowWidth: Int) -> [Float] {
            var result = [Float](repeating: 0, count: layout.width * rowWidth)
            var (source, target) = (0, 0)
            for (heads, width) in pieces {
                for _ in 0..<heads {
                    result[target..<(target + width * rowWidth)] = values[source..<(source + width * rowWidth)]
                    (source, target) = (source + width * rowWidth, target + layout.headDim * rowWidth)
                }
            }
            return result
        }
        return Linear(
            weight: padded(stacked.weight, rowWidth: hidden), bias: stacked.bias.map { padded($0, rowWidth: 1) },
            inFeatures: hidden, outFeatures: layout.width)
    }

    /// A gated MLP whose gate and up projections are stored as one
    /// `gate_up_proj` [2·inner, hidden], gate rows first, beside `down_proj`,
    /// without biases (Phi-3, GLM) unless `bias`; `names` where they are called otherwise
    /// (GraniteMoE-Shared's `input_linear` / `output_linear`, ModernBERT decoder's `Wi` / `Wo`).
    func fusedGatedMLP(
        _ mlp: String, hidden: Int, inner: Int, activation: Activation, bias: Bool = false,
        names: (gateUp: String, down: String) = ("gate_up_proj", "down_proj")
    ) throws -> FeedForward {
        .gated(
            gateUp: try linear(mlp + names.gateUp, in: hidden, out: 2 * inner, bias: bias),
            down: try linear(mlp + names.down, in: inner, out: hidden, bias: bias),
            activation: activation)
    }

    /// A gated MLP stored as gate / up / down projections (`gate_proj`,
    /// `up_proj`, `down_proj` unless named otherwise).
    func gatedMLP(
        _ mlp: String, hidden: Int, inner: Int, activation: Activation, bias: Bool = false,
        names: (gate: String, up: String, down: String) = ("gate_proj", "up_proj", "down_proj")
    ) throws -> FeedForward {
        .gated(
            gateUp: try stackedLinear([mlp + names.gate, mlp + names.up], in: hidden, outs: [inner, inner], bias: bias),
            down: try linear(mlp + names.down, in: inner, out: hidden, bias: bias),
            activation: activation)
    }

    /// A MoE layer's always-on shared expert(s), `gatedMLP` of width
    /// `inner`; none at width 0, which transformers builds with empty weights
    /// and whose zero output it adds (its tensors, where stored, must be
    /// empty; with biases the output would be the down projection's bias,
    /// which is refused). `widthKeys` name the keys that set the width.
    func sharedExperts(
        _ mlp: String, hidden: Int, inner: Int, activation: Activation, bias: Bool = false, widthKeys: String
    ) throws -> [FeedForward] {
        guard inner == 0 else { return [try gatedMLP(mlp, hidden: hidden, inner: inner, activation: activation, bias: bias)] }
        guard !bias else {
            throw DroptraceError(
                "\(widthKeys) give shared experts of width 0 with biases, which droptrace does not compute", path: checkpoint.weightsPath)
        }
        for (name, shape) in [("gate_proj", [0, hidden]), ("up_proj", [0, hidden]), ("down_proj", [hidden, 0])]
        where has(mlp + name + ".weight") {
            try checkShape(mlp + name + ".weight", shape)
        }
        return []
    }

    /// The LM head: the first of `names` (the tensors transformers reads
    /// as the head, without `.weight`: `lm_head`, GPT-NeoX's 4.x `embed_out`
    /// it renames onto it, ModernBERT decoder's `decoder`) the checkpoint
    /// stores, also where the config ties them (transformers 5 leaves a
    /// stored head unlike the embedding untied, with a warning), else, when
    /// the config ties them (`tied`), the token embedding. An untied model
    /// without its head is an error naming the tensor: its embedding would
    /// give another model's logits. A tensor of another name (a stray
    /// `lm_head.weight` beside ModernBERT decoder's `decoder`) is not read,
    /// as transformers does not. A bias-free [vocabulary, hidden]
    /// projection; the head sits outside the model prefix.
    /// `bias`: the head has one (Phi's `lm_head.bias`, stored tied or not).
    /// `storedRows`: the rows of a stored head where its config class sizes
    /// it apart from the embedding (Apertus 1.5's `output_vocab_size`:
    /// [storedRows, hidden]); a tied head is the embedding, [vocabulary,
    /// hidden], whatever it says, as transformers ties the whole parameter.
    /// - Throws: `DroptraceError` naming the weights for a missing untied
    ///   head or for two of `names` stored (`storedHead`).
    func head(
        tiedTo embedding: String, tied: Bool, hidden: Int, vocabulary: Int, storedRows: Int? = nil, names: [String] = ["lm_head"],
        bias: Bool = false
    ) throws -> Linear {
        let weight: String
        if let stored = try storedHead(names) {
            weight = absolute(stored + ".weight")
        } else if tied {
            weight = prefix + embedding + ".weight"
        } else {
            let listed = names.map { "'\($0).weight'" }
            let spelled = listed.count == 1 ? listed[0] : listed[0] + " (or " + listed.dropFirst().joined(separator: ", ") + ")"
            throw DroptraceError(
                "missing tensor \(spelled): the head is untied (tie_word_embeddings false, or a model type whose head is never tied), so it is not the embedding",
                path: checkpoint.weightsPath)
        }
        // A tied head keeps its own bias (PhiForCausalLM's lm_head.bias, ModernBERT decoder's decoder.bias).
        let isEmbedding = weight == prefix + embedding + ".weight"
        let biasName = isEmbedding ? absolute(names[0] + ".bias") : String(weight.dropLast(".weight".count)) + ".bias"
        let rows = isEmbedding ? vocabulary : storedRows ?? vocabulary
        return Linear(
            weight: try checkpoint.tensor(weight, shape: [rows, hidden]).floats(),
            bias: bias ? try checkpoint.tensor(biasName, shape: [rows]).floats() : nil,
            inFeatures: hidden, outFeatures: rows)
    }

    /// The one of `names` (without `.weight`, outside the prefix) whose
    /// weight the checkpoint stores; nil: none.
    /// - Throws: `DroptraceError` naming the weights when two are stored:
    ///   transformers renames one onto the other (`language_model.lm_head`,
    ///   `embed_out` onto `lm_head`), and which it keeps would depend on the
    ///   order it reads them.
    func storedHead(_ names: [String]) throws -> String? {
        let stored = names.filter { has($0 + ".weight", absolute: true) }
        guard stored.count < 2 else {
            throw DroptraceError(
                "tensors '\(stored[0]).weight' and '\(stored[1]).weight' are both stored, which transformers reads as one parameter; keep one of the two",
                path: checkpoint.weightsPath)
        }
        return stored.first
    }

    /// Confirms the shapes of a stored head (`head`'s first choice) and of
    /// the final norm `finalNorm` (its weight and bias, when stored) without
    /// reading them, for runs that never use them (`score`, `trace`): either
    /// of another shape makes the checkpoint another model's, and
    /// transformers refuses to load it. `normWidth`: the final norm's width
    /// where a projection between it and the head changes the width (OPT-350m's
    /// `project_out`); `hidden` otherwise. `storedRows`: a stored head's
    /// rows where they are not `vocabulary`, and `names` the head's (`head`'s).
    func confirmStoredOutputShapes(
        hidden: Int, vocabulary: Int, storedRows: Int? = nil, names: [String] = ["lm_head"], finalNorm: String, normWidth: Int? = nil
    ) throws {
        if let stored = try storedHead(names) {
            _ = try checkpoint.tensor(absolute(stored + ".weight"), shape: [storedRows ?? vocabulary, hidden])
        }
        for name in [finalNorm + ".weight", finalNorm + ".bias"] where has(name) {
            _ = try checkpoint.tensor(stored(name), shape: [normWidth ?? hidden])
        }
    }

    /// Confirms config sizes by the shape of tensor `name` (under the
    /// prefix), before anything is sized from them; `keys` names the config
    /// keys that `expected` is computed from.
    func confirmShape(_ name: String, _ expected: [Int], keys: String, configPath: String) throws {
        // A block-scaled FP8 weight is confirmed as stored, before it is dequantised.
        let full = stored(name)
        let shape = try (checkpoint.hasTensor(full + "_scale_inv") ? checkpoint.storedTensor(full) : checkpoint.tensor(full)).shape
        guard checkpoint.shape(shape, matches: expected) else {
            throw DroptraceError(
                "\(keys) imply tensor '\(full)' of shape \(expected), but it has shape \(shape)", path: configPath)
        }
    }

    /// `confirmShape` for each (name after `prefix`, shape, keys) in turn.
    func confirmShapes(_ shapes: [(name: String, shape: [Int], keys: String)], prefix: String = "", configPath: String) throws {
        for (name, shape, keys) in shapes { try confirmShape(prefix + name, shape, keys: keys, configPath: configPath) }
    }

    /// Refuses weights whose layers disagree with the configured layer count
    /// (`naming.layerCountKeys[0]` = `count`): a tensor of a layer at or
    /// beyond it, or a layer without any tensor although the config keeps
    /// one of its modules (`drops` are the config's own drop lists). Runs
    /// before anything is allocated per layer, so an absurd count fails here.
    /// `extraLayers` layers after the last may be stored and are ignored.
    /// `experts` (a mixture-of-experts family's) extends the check to the
    /// experts of each sparse layer: an expert at or beyond the configured
    /// count, or experts stored partly fused and partly per expert, are refused too
    /// (`StoredExperts.note`); drops do not exempt them, as they do not
    /// exempt a layer, since transformers loads the whole file.
    func confirmLayers(
        _ naming: LayerNaming, count: Int, drops: DropPlan, configPath: String, extraLayers: Int = 0, experts: StoredExperts? = nil
    ) throws {
        // Keys as config.json writes them: under the language model's section in a multimodal checkpoint.
        let section = naming.configSection.map { $0 + "." } ?? ""
        // Stored layers hold `sublayers` of the model's layers each (LongCat-Flash's), which config.json counts.
        let sublayers = naming.sublayers, count = count / sublayers
        // The count as config.json gives it: a key's value, or the length of the family's layer list.
        let said = naming.layerListKey.map { "\"\(section)\($0)\" lists \(count) layers" }
            ?? "\"\(section + naming.layerCountKeys[0])\" is \(count * naming.configEntriesPerLayer)"
        var present: [Int: String] = [:]
        var stored = experts
        // Buffers of any dtype count: a layer is there even if only a buffer
        // says so, and reading its weights then names the dtype.
        for name in checkpoint.storedTensorNames {
            guard let (layer, rest) = naming.split(name) else { continue }
            if layer >= count, layer - count < extraLayers { continue }
            if layer >= count {
                throw DroptraceError(
                    "\(said), but the weights hold tensor '\(name)' of layer \(layer)", path: configPath)
            }
            try stored?.note(name, layer: layer, rest: rest, keyPrefix: section, configPath: configPath, weightsPath: checkpoint.weightsPath)
            if present[layer] == nil { present[layer] = name }
        }
        // Layers the config drops entirely may have no tensors.
        let absent = (0..<count).lazy.first { stored in
            present[stored] == nil
                && !(0..<sublayers).allSatisfy { drops.dropsAttention(stored * sublayers + $0) && drops.dropsMLP(stored * sublayers + $0) }
        }
        guard let missing = absent else { return }
        let example = present.min { $0.key < $1.key }.flatMap { naming.split($0.value) }.map { "\(naming.prefix)\(missing).\($0.rest)" }
        throw DroptraceError(
            "\(said), but the weights have no tensors of layer \(missing)"
                + (example.map { " (missing tensor '\($0)')" } ?? ""),
            path: configPath)
    }

    /// GPT-2's Conv1D: weight [in, out], bias [out].
    func conv1D(_ name: String, in inFeatures: Int, out outFeatures: Int) throws -> Linear {
        Linear(
            weight: try floats(name + ".weight", [inFeatures, outFeatures]),
            bias: try floats(name + ".bias", [outFeatures]),
            inFeatures: inFeatures, outFeatures: outFeatures, layout: .inByOut)
    }

    func rmsNorm(_ name: String, size: Int, eps: Double) throws -> Normalization {
        .rms(weight: try floats(name + ".weight", [size]), eps: Float(eps))
    }

    /// Gemma's RMSNorm scales by (1 + weight): the checkpoint stores the
    /// offset from one. The sum is formed in Float32, as transformers does.
    func offsetRMSNorm(_ name: String, size: Int, eps: Double) throws -> Normalization {
        .rms(weight: try floats(name + ".weight", [size]).map { 1 + $0 }, eps: Float(eps))
    }

    /// Nemotron's LayerNorm1P: a LayerNorm scaling by (1 + weight), the
    /// sum formed in Float32 as transformers forms it.
    func offsetLayerNorm(_ name: String, size: Int, eps: Double) throws -> Normalization {
        .layer(weight: try floats(name + ".weight", [size]).map { 1 + $0 }, bias: try floats(name + ".bias", [size]), eps: Float(eps))
    }

    /// The norm `name` of `kind`.
    func norm(_ kind: NormKind, _ name: String, size: Int, eps: Double) throws -> Normalization {
        switch kind {
        case .rms: try rmsNorm(name, size: size, eps: eps)
        case .offsetRMS: try offsetRMSNorm(name, size: size, eps: eps)
        case .layer: try layerNorm(name, size: size, eps: eps)
        case .offsetLayer: try offsetLayerNorm(name, size: size, eps: eps)
        }
    }

    /// A LayerNorm; without `bias` (MPT's, whose bias is None) it adds zeros.
    func layerNorm(_ name: String, size: Int, eps: Double, bias: Bool = true) throws -> Normalization {
        .layer(
            weight: try floats(name + ".weight", [size]),
            bias: bias ? try floats(name + ".bias", [size]) : [Float](repeating: 0, count: size), eps: Float(eps))
    }
}

/// The norms of a family's blocks: RMSNorms (Llama), LayerNorms with
/// biases (Jais 2, PhiMoE), or LayerNorms scaling by 1 + weight (Nemotron's
/// LayerNorm1P).
enum NormKind { case rms, offsetRMS, layer, offsetLayer }

/// `quantization_config.weight_block_size` of config.json: [rows, columns]
/// of the weight block each FP8 scale covers, both at least 1; 128 × 128
/// when absent; null: each weight's scale grid sets its block
/// (`FP8.blockFromScaleGrid`; a single scale is per-tensor FP8).
struct FP8BlockSize: Decodable {
    var rows = 128
    var columns = 128
    var fromScaleGrid = false

    enum Keys: String, CodingKey { case quantizationConfig = "quantization_config", weightBlockSize = "weight_block_size" }

    init(from decoder: Decoder) throws {
        let top = try decoder.container(keyedBy: Keys.self)
        guard top.contains(.quantizationConfig), try !top.decodeNil(forKey: .quantizationConfig) else { return }
        let quantization = try top.nestedContainer(keyedBy: Keys.self, forKey: .quantizationConfig)
        if quantization.contains(.weightBlockSize), try quantization.decodeNil(forKey: .weightBlockSize) {
            fromScaleGrid = true
            return
        }
        guard let size = try quantization.decodeIfPresent([Int].self, forKey: .weightBlockSize) else { return }
        try ConfigRules.decodingChecks {
            guard size.count == 2 else {
                throw InvalidConfigValue(key: "weight_block_size", problem: "must be [rows, columns], got \(size)")
            }
            rows = try ConfigRules.count(size[0], "weight_block_size")
            columns = try ConfigRules.count(size[1], "weight_block_size")
        }
    }
}

/// Token embedding lookup in a table stored as `tables` joined along their
/// rows (`DecoderParts.embeddingPieces`): row r of the whole is row r of the
/// first, then of the next past its rows, and so on.
func gatherRows(_ tables: [TensorSlice], ids: [Int], width: Int) throws -> Matrix {
    let counts = tables.map { $0.shape[0] }
    var failure: Error?
    let rows = Matrix(uninitialized: ids.count, width) { out in
        for (position, id) in ids.enumerated() {
            var (piece, row) = (0, id)
            while piece < counts.count - 1, row >= counts[piece] { (piece, row) = (piece + 1, row - counts[piece]) }
            do { try tables[piece].expandRows([row], into: out + position * width) } catch { failure = error; return }
        }
    }
    if let failure { throw failure }
    return rows
}

/// Token embedding lookup: expands only the rows the batch uses.
func gatherRows(_ table: TensorSlice, ids: [Int], width: Int) throws -> Matrix {
    var failure: Error?
    let rows = Matrix(uninitialized: ids.count, width) { out in
        do { try table.expandRows(ids, into: out) } catch { failure = error }
    }
    if let failure { throw failure }
    return rows
}
