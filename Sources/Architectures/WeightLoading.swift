import CheckpointIO
import DroptraceSupport
import TensorEngine

/// Shape-checked access to a checkpoint's weights under a name prefix.
struct Weights {
    let checkpoint: Checkpoint
    let prefix: String

    /// Finds the prefix under which `probe` exists (e.g. "model." when saved
    /// from a ...ForCausalLM, "" when saved from the base model).
    init(_ checkpoint: Checkpoint, probe: String, candidates: [String]) throws {
        self.checkpoint = checkpoint
        guard let found = candidates.first(where: { checkpoint.hasTensor($0 + probe) }) else {
            throw DroptraceError("missing tensor '\(candidates[0] + probe)'", path: checkpoint.directory.path)
        }
        prefix = found
    }

    func tensor(_ name: String, _ shape: [Int]) throws -> TensorSlice {
        try checkpoint.tensor(prefix + name, shape: shape)
    }

    func floats(_ name: String, _ shape: [Int]) throws -> [Float] {
        try tensor(name, shape).floats()
    }

    func has(_ name: String, absolute: Bool = false) -> Bool { checkpoint.hasTensor(absolute ? name : prefix + name) }

    /// A bias-free [out, in] projection named without the model prefix (LM heads sit outside it).
    func absoluteLinear(_ name: String, in inFeatures: Int, out outFeatures: Int) throws -> Linear {
        Linear(
            weight: try checkpoint.tensor(name + ".weight", shape: [outFeatures, inFeatures]).floats(),
            bias: nil, inFeatures: inFeatures, outFeatures: outFeatures)
    }

    /// A torch.nn.Linear: weight [out, in], bias [out] when `bias`.
    func linear(_ name: String, in inFeatures: Int, out outFeatures: Int, bias: Bool) throws -> Linear {
        Linear(
            weight: try floats(name + ".weight", [outFeatures, inFeatures]),
            bias: bias ? try floats(name + ".bias", [outFeatures]) : nil,
            inFeatures: inFeatures, outFeatures: outFeatures)
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

    func layerNorm(_ name: String, size: Int, eps: Double) throws -> Normalization {
        .layer(weight: try floats(name + ".weight", [size]), bias: try floats(name + ".bias", [size]), eps: Float(eps))
    }
}

/// Token embedding lookup: expands only the rows the batch uses.
func gatherRows(_ table: TensorSlice, ids: [Int], width: Int) -> Matrix {
    Matrix(uninitialized: ids.count, width) { out in
        for (r, id) in ids.enumerated() { table.expandRow(id, into: out + r * width) }
    }
}
