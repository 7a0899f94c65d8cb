import DroptraceSupport
import Foundation

/// A GGUF file seen as a Hugging Face checkpoint: tensors under Hugging Face
/// names and in Hugging Face layouts, a config.json synthesised from the GGUF
/// metadata. The tensors are read from the file when expanded (quantised ones stay
/// quantised until a layer expands them).
public final class GGUFCheckpoint: @unchecked Sendable {
    public let path: String
    public let file: GGUFFile
    public let tensors: [String: TensorSlice]
    /// config.json equivalent of the metadata (JSON object bytes).
    public let configData: Data

    /// All metadata, including the tokenizer's `tokenizer.ggml.*` keys.
    public var metadata: [String: GGUFValue] { file.metadata }

    public init(path: String) throws {
        self.path = path
        let file = try GGUFFile(path: path)
        self.file = file
        let infos = Dictionary(file.tensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })

        // Every tensor must be of a type droptrace expands, checked now rather
        // than when the layer holding it is reached.
        var dtypes: [String: TensorDType] = [:]
        for info in file.tensors {
            guard let dtype = info.type.dtype else {
                throw DroptraceError(
                    "tensor '\(info.name)' has ggml type \(info.type.name), which droptrace cannot read (supported: \(GGMLType.supportedNames))",
                    path: path)
            }
            dtypes[info.name] = dtype
        }

        let ropeFactors = try infos["rope_freqs.weight"].map { info in
            try file.slice(info, dtype: dtypes[info.name]!, name: info.name, shape: [info.elementCount], order: .asShaped).floats()
        }
        let config = try GGUFConfiguration(
            metadata: GGUFMetadata(values: file.metadata, path: path),
            tensorDimensions: infos.mapValues(\.dimensions), ropeFactors: ropeFactors)
        configData = config.jsonData

        let names = GGUFTensorNames(family: config.family, heads: config.heads, kvHeads: config.kvHeads, headDim: config.headDim)
        var tensors: [String: TensorSlice] = [:]
        for info in file.tensors {
            // ggml lists the fastest-varying dimension first; Hugging Face last.
            let storedShape = Array(info.dimensions.reversed())
            if let expertName = names.expertName(info.name) {
                // One [out, in] slice per expert, each a contiguous run of whole
                // rows; the file holds their bytes, so their count is bounded by its size.
                let experts = config.json["num_experts"] as? Int
                guard storedShape.count == 3, storedShape[0] == experts, storedShape[1] > 0, storedShape[2] > 0 else {
                    throw DroptraceError(
                        "tensor '\(info.name)' should have shape [\(experts.map(String.init) ?? "?") experts, out, in] (\(config.family.rawValue).expert_count), but has \(storedShape)",
                        path: path)
                }
                let dtype = dtypes[info.name]!, matrix = [storedShape[1], storedShape[2]]
                let stride = dtype.byteCount(elements: matrix[0] * matrix[1])
                for e in 0..<storedShape[0] {
                    tensors[expertName(e)] = file.slice(
                        info, dtype: dtype, name: expertName(e), shape: matrix, order: .asShaped, byteOffset: e * stride)
                }
                continue
            }
            guard let (name, order) = names.huggingFace(info.name, rows: storedShape[0]) else { continue }
            let transposed = names.isTransposedConv1D(info.name)
            let shape = transposed ? info.dimensions : storedShape
            if case .rowsPermuted(let rows) = order, rows.count != storedShape[0] {
                throw DroptraceError(
                    "tensor '\(info.name)' has \(storedShape[0]) rows, which does not fit the \(config.heads) heads the metadata gives",
                    path: path)
            }
            guard !transposed || storedShape.count == 2 else {
                throw DroptraceError("tensor '\(info.name)' should be 2-D but has shape \(storedShape)", path: path)
            }
            tensors[name] = file.slice(info, dtype: dtypes[info.name]!, name: name, shape: shape, order: transposed ? .transposed : order)
        }
        // Tied GPT-NeoX models (rare) keep no output matrix, and GPTNeoXModel does not tie.
        if config.family == .gptneox, tensors["lm_head.weight"] == nil, let embedding = tensors["gpt_neox.embed_in.weight"] {
            tensors["lm_head.weight"] = embedding
        }
        self.tensors = tensors
    }

    /// The length a complete file must have according to its header (nil when
    /// the header itself is incomplete or not GGUF).
    public static func expectedLength(path: String) -> Int? {
        GGUFFile.expectedLength(path: path)
    }
}
