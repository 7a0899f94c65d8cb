import CheckpointIO
import DroptraceSupport
import Foundation

/// MXFP4 weights in an export: safetensors checkpoints of gpt-oss store the
/// experts' `<name>_blocks` [E, R, G, B] and `<name>_scales` [E, R, G] (U8);
/// the export writes the float tensor `<name>` transformers builds from them
/// (`convert_moe_packed_tensors`: dequantised to [E, R, 2·G·B], then
/// transposed to [E, 2·G·B, R]), and drops the config's
/// `quantization_config`, so transformers loads the export as a float model.
extension DroppedModelExport {
    /// The `<name>` of every MXFP4 pair `<name>_blocks` / `<name>_scales`
    /// stored without a float `<name>` beside it.
    static func mxfp4Pairs(_ checkpoint: Checkpoint) -> [String] {
        checkpoint.storedTensorNames.compactMap { name in
            guard name.hasSuffix("_blocks") else { return nil }
            let base = String(name.dropLast("_blocks".count))
            return checkpoint.hasTensor(base + "_scales") && !checkpoint.hasTensor(base) ? base : nil
        }
    }

    /// Float32 entries for the MXFP4 pairs of kept modules, named as
    /// `rename` names `<name>`; each is dequantised only when written.
    /// - Throws: `DroptraceError` naming the weights for a pair that is not
    ///   U8 or not of rank 4 (the only layout transformers converts).
    static func dequantizedEntries(_ checkpoint: Checkpoint, rename: (String) -> String?) throws -> [SafetensorsWriter.Entry] {
        try mxfp4Pairs(checkpoint).compactMap { base in
            guard let newName = rename(base) else { return nil }
            let blocks = try checkpoint.storedTensor(base + "_blocks")
            let scales = try checkpoint.storedTensor(base + "_scales")
            guard blocks.shape.count == 4 else {
                throw DroptraceError(
                    "MXFP4 blocks '\(base)_blocks' have shape \(blocks.shape); only [experts, rows, groups, bytes] can be exported",
                    path: blocks.path)
            }
            // U8 sizes are byte counts of the file: their products fit.
            let (experts, rows, columns) = (blocks.shape[0], blocks.shape[1], blocks.shape[2] * 2 * blocks.shape[3])
            return SafetensorsWriter.Entry(name: newName, shape: [experts, columns, rows]) {
                let values = try MXFP4.dequantize(blocks: blocks, scales: scales)
                var transposed = [Float](repeating: 0, count: values.count)
                for e in 0..<experts {
                    let base = e * rows * columns
                    for r in 0..<rows {
                        for c in 0..<columns { transposed[base + c * rows + r] = values[base + r * columns + c] }
                    }
                }
                return transposed
            }
        }
    }
}
