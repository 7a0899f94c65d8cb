import DroptraceSupport

/// llama.cpp's tensor names mapped back to the Hugging Face names and layouts
/// droptrace's architectures read, by the architecture's table.
///
/// Besides names, the converter rearranges some tensors; the row orders are
/// undone here without copying the weights (see `TensorSlice.StoredOrder`):
/// - `.rotaryInterleaved`: rows of Q and K are permuted per head from Hugging
///   Face's rotate-half layout to interleaved pairs (row h·d + s·d/2 + i is
///   stored at h·d + 2i + s);
/// - `.groupedQKV`: the fused QKV rows, per head [q_h, k_h, v_h] in Hugging
///   Face, are stored as all q, then all k, then all v;
/// - `.kvGroupedQKV`: Falcon's fused QKV rows, per key/value group [q of the
///   group, k, v] in Hugging Face, are stored as all q, then all k, then all v;
/// - `.transposedConv1D`: Conv1D weights ([in, out]) are stored transposed.
/// Norms stored as 1 + w, per-expert slices of expert stacks and the tensors
/// made of several GGUF tensors are built by `GGUFCheckpoint`.
struct GGUFTensorNames {
    let architecture: GGUFArchitecture
    /// Query heads, key/value heads and head width, for the row permutations.
    let heads: Int
    let kvHeads: Int
    let headDim: Int

    /// Where a GGUF tensor goes in Hugging Face's state dict.
    enum Target {
        /// One tensor: its name, the layout it is stored in.
        case tensor(String, GGUFArchitecture.Layout?)
        /// A stack of `rank` dimensions ([experts, out, in], [experts, out]
        /// or [heads, width]) cut along its first into tensors named by the index.
        case stack(rank: Int, (Int) -> String)
        /// A fused projection cut by rows into these tensors, in equal parts.
        case rowParts([String])
    }

    /// The Hugging Face place of a GGUF tensor, or nil for tensors with no
    /// Hugging Face counterpart of their own (e.g. `rope_freqs.weight`, or
    /// the parts of a `GGUFArchitecture.Composite`).
    func huggingFace(_ name: String) -> Target? {
        let parts = name.split(separator: ".", maxSplits: 2).map(String.init)
        if parts.count == 3, let layer = Self.blockNumber(name) {
            let layerPrefix = "\(architecture.prefix)\(architecture.layerList).\(layer)."
            let rest = parts[2]
            if let module = architecture.blockTensors[rest] { return .tensor(layerPrefix + module, nil) }
            guard let dot = rest.lastIndex(of: ".") else { return nil }
            let (base, kind) = (String(rest[..<dot]), String(rest[rest.index(after: dot)...]))
            switch architecture.blocks[base] {
            case .module(let module, let layout)?:
                // Conv1D biases are vectors either way.
                return .tensor("\(layerPrefix)\(module).\(kind)", layout == .transposedConv1D && kind != "weight" ? nil : layout)
            case .perExpert(let pattern)?, .perHead(let pattern)?:
                let rank = if case .perHead = architecture.blocks[base] { 2 } else { kind == "bias" ? 2 : 3 }
                return .stack(rank: rank) { layerPrefix + pattern.replacingOccurrences(of: "{e}", with: String($0)) + "." + kind }
            case .rowParts(let modules)?:
                return .rowParts(modules.map { "\(layerPrefix)\($0).\(kind)" })
            case nil:
                return nil
            }
        }
        guard let mapped = architecture.topLevel[name] else { return nil }
        let layout = name.hasPrefix("output_norm.") ? architecture.topLevelLayout : nil
        return .tensor(mapped.hasPrefix("lm_head.") ? mapped : architecture.prefix + mapped, layout)
    }

    /// The GGUF name llama.cpp's converter gives Hugging Face tensor
    /// `name` (`model.layers.0.self_attn.k_proj.bias` → `blk.0.attn_k.bias`),
    /// for naming a tensor the file lacks (an expert's slice: the stack it
    /// comes from, `blk.0.ffn_up_exps.weight`); nil for names the table does
    /// not map (composites).
    static func gguf(forHuggingFace name: String, in architecture: GGUFArchitecture) -> String? {
        if let top = architecture.topLevel.first(where: { ($0.value.hasPrefix("lm_head.") ? "" : architecture.prefix) + $0.value == name }) {
            return top.key
        }
        let layers = architecture.prefix + architecture.layerList + "."
        guard name.hasPrefix(layers) else { return nil }
        let rest = name.dropFirst(layers.count)
        guard let dot = rest.firstIndex(of: "."), let layer = Int(rest[..<dot]) else { return nil }
        let within = String(rest[rest.index(after: dot)...])
        if let whole = architecture.blockTensors.first(where: { $0.value == within }) { return "blk.\(layer).\(whole.key)" }
        for (base, place) in architecture.blocks {
            switch place {
            case .module(let module, _):
                guard within.hasPrefix(module + "."), case let kind = within.dropFirst(module.count + 1),
                      !kind.contains(".") else { continue }
                return "blk.\(layer).\(base).\(kind)"
            case .rowParts(let modules):
                guard let module = modules.first(where: { within.hasPrefix($0 + ".") }),
                      case let kind = within.dropFirst(module.count + 1), !kind.contains(".") else { continue }
                return "blk.\(layer).\(base).\(kind)"
            case .perExpert(let pattern), .perHead(let pattern):
                let halves = pattern.components(separatedBy: "{e}")
                guard halves.count == 2, within.hasPrefix(halves[0]) else { continue }
                let afterPrefix = within.dropFirst(halves[0].count)
                let digits = afterPrefix.prefix { $0.isASCII && $0.isNumber }
                let tail = afterPrefix.dropFirst(digits.count)
                guard !digits.isEmpty, tail.hasPrefix(halves[1] + "."),
                      case let kind = tail.dropFirst(halves[1].count + 1), !kind.contains(".") else { continue }
                return "blk.\(layer).\(base).\(kind)"
            }
        }
        return nil
    }

    /// The block of a `blk.<n>.…` tensor: n as llama.cpp writes it, in plain
    /// decimal. Nil for other names, and for spellings `Int` would also read
    /// ("02", "+2", "-0"), which would name a second tensor for the same place.
    static func blockNumber(_ name: String) -> Int? {
        let parts = name.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count >= 2, parts[0] == "blk", let block = Int(parts[1]), block >= 0, String(block) == parts[1] else { return nil }
        return block
    }

    /// Whether `name` is a block tensor whose block number `Int` reads but
    /// llama.cpp would not have written (see `blockNumber`).
    static func hasMisspelledBlockNumber(_ name: String) -> Bool {
        let parts = name.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        return parts.count >= 2 && parts[0] == "blk" && Int(parts[1]) != nil && blockNumber(name) == nil
    }

    /// The stored order of a tensor of `rows` rows in `layout`, or nil when
    /// the rows are not the whole heads the layout permutes (a bias or a
    /// projection the metadata does not describe, which the weights' own
    /// shape check would refuse once a permutation had been built for it).
    func order(_ layout: GGUFArchitecture.Layout?, rows: Int) -> TensorSlice.StoredOrder? {
        switch layout {
        case .rotaryInterleaved(.query)?: Self.unpermuteRotaryRows(rows: rows, heads: heads).map { .rowsPermuted($0) }
        case .rotaryInterleaved(.keyValue)?: Self.unpermuteRotaryRows(rows: rows, heads: kvHeads).map { .rowsPermuted($0) }
        case .groupedQKV?: rows == 3 * heads * headDim ? .rowsPermuted(Self.regroupQKVRows(heads: heads, groups: heads, headDim: headDim)) : nil
        case .kvGroupedQKV?:
            rows == (heads + 2 * kvHeads) * headDim ? .rowsPermuted(Self.regroupQKVRows(heads: heads, groups: kvHeads, headDim: headDim)) : nil
        case .transposedConv1D?: .transposed
        case .normPlusOne?, .matrix?, nil: .asShaped
        }
    }

    /// Where Hugging Face's row r of a Q or K projection sits in llama.cpp's
    /// layout: within each head, rows s·half + i (s = 0, 1) were moved to 2i + s.
    /// Nil unless `rows` are `heads` heads of an even width.
    static func unpermuteRotaryRows(rows: Int, heads: Int) -> [Int]? {
        guard heads > 0, rows > 0, rows % heads == 0, (rows / heads) % 2 == 0 else { return nil }
        let width = rows / heads, half = width / 2
        return (0..<rows).map { r in
            let (head, within) = r.quotientAndRemainder(dividingBy: width)
            let (s, i) = within.quotientAndRemainder(dividingBy: half)
            return head * width + 2 * i + s
        }
    }

    /// Where Hugging Face's row r of a fused QKV sits in llama.cpp's layout
    /// (all q rows, all k rows, all v rows). Hugging Face keeps `groups`
    /// key/value groups, each its share of the query heads, then its key and
    /// its value head: per head [q, k, v] for GPT-NeoX and BLOOM (as many
    /// groups as heads), per key/value head for Falcon.
    static func regroupQKVRows(heads: Int, groups: Int, headDim: Int) -> [Int] {
        let queriesPerGroup = heads / groups, groupRows = (queriesPerGroup + 2) * headDim
        return (0..<(groups * groupRows)).map { r in
            let (group, within) = r.quotientAndRemainder(dividingBy: groupRows)
            let (slot, i) = within.quotientAndRemainder(dividingBy: headDim)
            return switch slot - queriesPerGroup {
            case ..<0: (group * queriesPerGroup + slot) * headDim + i
            case 0: (heads + group) * headDim + i
            default: (heads + groups + group) * headDim + i
            }
        }
    }
}
