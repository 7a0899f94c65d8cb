import CheckpointIO
import Foundation

/// Rewrites the single-file checkpoint in `directory` with each layer's
/// per-expert tensors fused into transformers' in-memory 3-D form:
/// `<from><e>.<gate|up|down>.weight` of `model.layers.<l>.` become
/// `mlp.experts.gate_up_proj` [experts, 2·inner, hidden] (gate rows, then up
/// rows, per expert) and `mlp.experts.down_proj` [experts, hidden, inner],
/// and the router `<router>.weight` becomes `<fusedRouter>.weight` (`mlp.gate.weight`
/// unless given: AFMoE keeps `mlp.router.gate`), the fused tensors under
/// `fused` (`mlp.experts.` unless given: Jamba's `feed_forward.experts.`). Every other
/// tensor is copied as it is.
///
/// - Parameters:
///   - from: the experts' prefix inside a layer (`block_sparse_moe.experts.`, `mlp.experts.`).
///   - names: the gate, up and down projections' names (`w1`, `w3`, `w2` for Mixtral).
func fuseExperts(
    in directory: URL, from: String, router: String, names: (gate: String, up: String, down: String),
    fusedRouter: String = "mlp.gate", fused: String = "mlp.experts."
) throws {
    let original = try Checkpoint(directory: directory)
    // "model.layers.<l>.<rest>" → (l, rest)
    func split(_ name: String) -> (Int, String)? {
        guard name.hasPrefix("model.layers.") else { return nil }
        let tail = name.dropFirst("model.layers.".count)
        guard let dot = tail.firstIndex(of: "."), let layer = Int(tail[..<dot]) else { return nil }
        return (layer, String(tail[tail.index(after: dot)...]))
    }
    var entries: [SafetensorsWriter.Entry] = []
    var layers = Set<Int>()
    for name in original.tensorNames {
        if let (layer, rest) = split(name), rest.hasPrefix(from) || rest == router + ".weight" {
            layers.insert(layer)
        } else {
            entries.append(SafetensorsWriter.Entry(try original.tensor(name)))
        }
    }
    for layer in layers.sorted() {
        let p = "model.layers.\(layer)."
        let experts = original.tensorNames.filter { $0.hasPrefix(p + from) && $0.hasSuffix("." + names.gate + ".weight") }.count
        func tensor(_ e: Int, _ part: String) throws -> TensorSlice { try original.tensor(p + from + "\(e).\(part).weight") }
        let gate = try tensor(0, names.gate).shape, down = try tensor(0, names.down).shape
        var gateUp = Data(), downs = Data()
        for e in 0..<experts {
            gateUp += try SafetensorsWriter.Entry(tensor(e, names.gate)).bytes() + SafetensorsWriter.Entry(tensor(e, names.up)).bytes()
            downs += try SafetensorsWriter.Entry(tensor(e, names.down)).bytes()
        }
        let dtype = try tensor(0, names.gate).dtype
        entries.append(SafetensorsWriter.Entry(
            name: p + fused + "gate_up_proj", dtype: dtype, shape: [experts, 2 * gate[0], gate[1]], bytes: gateUp))
        entries.append(SafetensorsWriter.Entry(
            name: p + fused + "down_proj", dtype: dtype, shape: [experts, down[0], down[1]], bytes: downs))
        entries.append(SafetensorsWriter.Entry(try original.tensor(p + router + ".weight"), renamedTo: p + fusedRouter + ".weight"))
    }
    let file = directory.appendingPathComponent(Checkpoint.singleFileName)
    try FileManager.default.removeItem(at: file)
    try SafetensorsWriter.write(entries, to: file)
}
