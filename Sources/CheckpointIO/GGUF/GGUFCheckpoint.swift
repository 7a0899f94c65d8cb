import DroptraceSupport
import Foundation

/// A GGUF file seen as a Hugging Face checkpoint: tensors under Hugging Face
/// names and in Hugging Face layouts, a config.json synthesised from the GGUF
/// metadata. The tensors are read from the file when expanded (quantised ones stay
/// quantised until a layer expands them).
public final class GGUFCheckpoint: @unchecked Sendable {
    /// What follows the naming of a tensor the model as transformers builds
    /// it has no place for (here and in `Checkpoint.requireLayerRead(_:)`).
    static let unusedTensorConsequence =
        "refused rather than ignored (llama.cpp refuses it or, where its architecture has it as optional, reads it)"

    public let path: String
    public let file: GGUFFile
    public let tensors: [String: TensorSlice]
    /// The GGUF tensor each of `tensors` comes from (a stack for an expert's
    /// slice, the first part for a tensor made of several), for messages.
    public let storedNames: [String: String]
    let architecture: GGUFArchitecture
    /// config.json equivalent of the metadata (JSON object bytes).
    public let configData: Data

    /// All metadata, including the tokenizer's `tokenizer.ggml.*` keys.
    public var metadata: [String: GGUFValue] { file.metadata }

    public init(path: String) throws {
        self.path = path
        let file = try GGUFFile(path: path)
        self.file = file
        // gguf-split's parts each hold some of the tensors; llama.cpp loads them as one model from the first.
        if let parts = file.metadata["split.count"]?.int, parts > 1 {
            let part = file.metadata["split.no"]?.int.map { " \($0 + 1) of \(parts)" } ?? " of \(parts)"
            throw DroptraceError(
                "is part\(part) of a split GGUF model (split.count \(parts)), which droptrace reads only whole; merge the parts "
                    + "with llama.cpp's `llama-gguf-split --merge FIRST_PART OUT.gguf` and score OUT.gguf", path: path)
        }
        let infos = Dictionary(file.tensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })

        // Every tensor must be of a type droptrace expands, checked now rather
        // than when the layer holding it is reached.
        var dtypes: [String: TensorDType] = [:]
        for info in file.tensors {
            // "blk.02.attn_q.weight" would stand for block 2's tensor too, and
            // which of the two is read would depend on their order in the file.
            guard !GGUFTensorNames.hasMisspelledBlockNumber(info.name) else {
                throw DroptraceError(
                    "tensor '\(info.name.forErrorMessage)' has a block number llama.cpp does not write (blocks are numbered blk.0, blk.1, …)",
                    path: path)
            }
            guard let dtype = info.type.dtype else {
                throw DroptraceError(
                    "tensor '\(info.name)' has ggml type \(info.type.name), which droptrace cannot read (supported: \(GGMLType.supportedNames))",
                    path: path)
            }
            dtypes[info.name] = dtype
        }

        // Small float tensors llama.cpp keeps rope factors in, read for the config:
        // vectors of half the rotary width ({n_rot/2}, as llama.cpp creates them).
        var ropeTensors: [String: [Float]] = [:]
        for name in GGUFArchitecture.ropeFactorTensors {
            guard let info = infos[name] else { continue }
            guard info.dimensions.count == 1 else {
                throw DroptraceError("tensor '\(name)' should be a vector of rope factors but has dimensions \(info.dimensions)", path: path)
            }
            ropeTensors[name] = try file.slice(info, dtype: dtypes[name]!, name: name, shape: info.dimensions, order: .asShaped).floats()
        }
        let metadata = GGUFMetadata(values: file.metadata, path: path)
        let config = try GGUFConfiguration(
            metadata: metadata,
            tensorDimensions: infos.mapValues(\.dimensions), ropeTensors: ropeTensors)
        configData = config.jsonData
        let architecture = config.architecture
        self.architecture = architecture
        // A tensor the Hugging Face model has no place for: llama.cpp refuses
        // the file when its architecture does not create the tensor ("wrong
        // number of tensors") and reads it when it creates it as optional
        // (qwen2's `output.bias`); ignoring it would compute another model
        // than the file's (a renamed `rope_freqs.weight` loses Llama 3's rope
        // scaling). Block tensors of a known place are checked as each block
        // is built (`Checkpoint.requireLayerRead(_:)`).
        func unused(_ name: String) -> DroptraceError {
            DroptraceError(
                "tensor '\(name.forErrorMessage)' has no place in a \(architecture.name) model as transformers builds it; "
                    + Self.unusedTensorConsequence,
                path: path)
        }
        if let stray = ropeTensors.keys.sorted().first(where: { !architecture.ropeFactors.contains($0) }) { throw unused(stray) }

        let names = GGUFTensorNames(architecture: architecture, heads: config.heads, kvHeads: config.kvHeads, headDim: config.headDim)
        var tensors: [String: TensorSlice] = [:]
        var storedNames: [String: String] = [:]
        // Two GGUF tensors for one place (phi-2's attn_q beside a fused attn_qkv) would
        // leave which is read to the order of the file; llama.cpp refuses the extra one.
        func place(_ name: String, _ slice: TensorSlice, from stored: String) throws {
            if let other = storedNames[name] {
                throw DroptraceError(
                    "tensors '\(other.forErrorMessage)' and '\(stored.forErrorMessage)' are both read as '\(name)'; llama.cpp refuses a file holding tensors its architecture does not create",
                    path: path)
            }
            tensors[name] = slice
            storedNames[name] = stored
        }
        // Block tensors with no place of their own, as stored: the parts of composites.
        var parts: [String: TensorSlice] = [:]
        for info in file.tensors {
            // ggml lists the fastest-varying dimension first; Hugging Face last.
            let storedShape = Array(info.dimensions.reversed())
            let dtype = dtypes[info.name]!
            switch names.huggingFace(info.name) {
            case .tensor(let name, let layout)?:
                guard let order = names.order(layout, rows: storedShape[0]) else {
                    throw DroptraceError(
                        "tensor '\(info.name.forErrorMessage)' has \(storedShape[0]) rows, which are not whole heads of the \(config.heads) heads (\(config.kvHeads) key/value heads) of \(config.headDim) the metadata gives",
                        path: path)
                }
                let transposed = layout == .transposedConv1D, twoDimensional = transposed || layout == .matrix
                let matrix = twoDimensional ? GGUFFile.dimensions(info.dimensions, rank: 2) : nil
                guard !twoDimensional || matrix != nil else {
                    throw DroptraceError("tensor '\(info.name)' should be 2-D but has shape \(storedShape)", path: path)
                }
                // Conv1D's transposed order takes ggml's [in, out]; the others Hugging Face's shape.
                let shape = matrix.map { transposed ? $0 : $0.reversed() } ?? storedShape
                let stored = file.slice(info, dtype: dtype, name: name, shape: shape, order: order)
                // Gemma's norms: the converter stored 1 + w; the family adds the 1 itself.
                if layout == .normPlusOne {
                    try place(name, TensorSlice.computed(name: name, shape: storedShape, path: path) { try stored.floats().map { $0 - 1 } }, from: info.name)
                } else {
                    try place(name, stored, from: info.name)
                }
            case .stack(let rank, let nameOf)?:
                // Expert stacks confirmed as [experts, out, in] by GGUFConfiguration (a
                // single expert's last dimension may be unwritten); an expert's
                // rows are whole blocks, so its bytes start at a block. Per-head
                // stacks are confirmed piece by piece by the family's shapes.
                let stack = Array((GGUFFile.dimensions(info.dimensions, rank: rank) ?? info.dimensions).reversed())
                let piece = Array(stack.dropFirst())
                let bytes = dtype.byteCount(elements: piece.reduce(1, *))
                for index in 0..<stack[0] {
                    let name = nameOf(index)
                    try place(name, file.slice(info, dtype: dtype, name: name, shape: piece, order: .asShaped, byteOffset: index * bytes), from: info.name)
                }
            case .rowParts(let names)?:
                // Equal parts of whole rows; a part of a vector must be whole blocks.
                let rows = storedShape[0], inner = storedShape.dropFirst().reduce(1, *)
                let (partRows, remainder) = rows.quotientAndRemainder(dividingBy: names.count)
                guard remainder == 0, (partRows * inner) % dtype.blockSize == 0 else {
                    throw DroptraceError(
                        "tensor '\(info.name.forErrorMessage)' has \(rows) rows, which do not split into \(names.count) equal parts (\(names.map { $0.split(separator: ".").dropLast().last ?? "" }.joined(separator: ", ")))",
                        path: path)
                }
                let shape = [partRows] + storedShape.dropFirst()
                let bytes = dtype.byteCount(elements: partRows * inner)
                for (index, name) in names.enumerated() {
                    try place(name, file.slice(info, dtype: dtype, name: name, shape: shape, order: .asShaped, byteOffset: index * bytes), from: info.name)
                }
            case nil where ropeTensors[info.name] != nil:
                break
            case nil:
                let part = info.name.split(separator: ".", maxSplits: 2).dropFirst(2).first.map(String.init)
                guard GGUFTensorNames.blockNumber(info.name) != nil, let part,
                      architecture.composites.contains(where: { $0.sources.contains(part) }) else { throw unused(info.name) }
                parts[info.name] = file.slice(info, dtype: dtype, name: info.name, shape: storedShape, order: .asShaped)
            }
        }
        let layers = Set(parts.keys.compactMap(GGUFTensorNames.blockNumber))
        for layer in layers.sorted() {
            for composite in architecture.composites {
                let name = "\(architecture.prefix)\(architecture.layerList).\(layer).\(composite.name)"
                let sources = composite.sources.compactMap { parts["blk.\(layer).\($0)"] }
                // Older converters also keep the whole tensor (DeepSeek's attn_kv_b).
                guard sources.count == composite.sources.count, tensors[name] == nil else { continue }
                tensors[name] = try composite.build(name, sources, config)
                storedNames[name] = "blk.\(layer).\(composite.sources[0])"
            }
        }
        for value in architecture.layerValues {
            for (layer, number) in try metadata.perLayerFloat32(value.key, layers: config.layers).enumerated() {
                let name = "\(architecture.prefix)\(architecture.layerList).\(layer).\(value.module)"
                try place(name, TensorSlice.computed(name: name, shape: value.shape, path: path) { [Float(number)] }, from: value.key)
            }
        }
        // Tied GPT-NeoX models (rare) keep no output matrix, and GPTNeoXModel does not tie.
        if architecture.name == "gptneox", tensors["lm_head.weight"] == nil, let embedding = tensors["gpt_neox.embed_in.weight"] {
            tensors["lm_head.weight"] = embedding
            storedNames["lm_head.weight"] = "token_embd.weight"
        }
        self.tensors = tensors
        self.storedNames = storedNames
    }

    /// The GGUF name of Hugging Face tensor `name`, for errors: the tensor it
    /// comes from, or for one the file lacks the name the converter writes
    /// for it; nil when it has none of its own.
    public func ggufName(of name: String) -> String? {
        let stored = storedNames[name] ?? GGUFTensorNames.gguf(forHuggingFace: name, in: architecture)
        return stored == name ? nil : stored
    }

    /// The length a complete file must have according to its header (nil when
    /// the header itself is incomplete or not GGUF).
    public static func expectedLength(path: String) throws -> Int? {
        try GGUFFile.expectedLength(path: path)
    }
}
