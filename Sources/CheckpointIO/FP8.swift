import DroptraceSupport

/// 8-bit floats as safetensors stores them (`F8_E4M3` = torch's
/// float8_e4m3fn, `F8_E5M2` = float8_e5m2) and the block-scaled FP8 weights of
/// DeepSeek-V3-style checkpoints.
///
/// Every FP8 value is exact in float32; the tables hold exactly what torch's
/// `.to(torch.float32)` gives, NaN bit patterns included: e4m3fn has no
/// infinities and one NaN per sign (0x7F/0xFF → 0x7FF00000/0xFFF00000);
/// e5m2 is the top byte of an IEEE half (infinities at 0x7C/0xFC, NaNs
/// quieted as a half → float conversion quiets them).
public enum FP8 {
    static let e4m3Values: [Float] = (0..<256).map { e4m3(UInt8($0)) }
    static let e5m2Values: [Float] = (0..<256).map { e5m2(UInt8($0)) }
    /// float8_e8m0fnu: 2^(byte − 127), 0xFF NaN (0x00 is 2^−127, a float32 subnormal).
    static let e8m0Values: [Float] = (0..<256).map { $0 == 255 ? .nan : Float(sign: .plus, exponent: $0 - 127, significand: 1) }

    /// 1 sign, 4 exponent (bias 7), 3 mantissa bits.
    static func e4m3(_ code: UInt8) -> Float {
        let sign = UInt32(code & 0x80) << 24
        let exponent = Int(code >> 3) & 0x0F, mantissa = Int(code & 7)
        if exponent == 15, mantissa == 7 { return Float(bitPattern: sign | 0x7FF0_0000) }
        let magnitude = exponent == 0
            ? Float(mantissa) * 0x1p-9
            : Float(8 + mantissa) * Float(sign: .plus, exponent: exponent - 10, significand: 1)
        return Float(bitPattern: magnitude.bitPattern | sign)
    }

    /// 1 sign, 5 exponent (bias 15), 2 mantissa bits.
    static func e5m2(_ code: UInt8) -> Float {
        let sign = UInt32(code & 0x80) << 24
        let exponent = Int(code >> 2) & 0x1F, mantissa = UInt32(code & 3)
        if exponent == 31 {
            return Float(bitPattern: sign | (mantissa == 0 ? 0x7F80_0000 : 0x7FC0_0000 | mantissa << 21))
        }
        let magnitude = exponent == 0
            ? Float(mantissa) * 0x1p-16
            : Float(4 + mantissa) * Float(sign: .plus, exponent: exponent - 17, significand: 1)
        return Float(bitPattern: magnitude.bitPattern | sign)
    }

    /// Expands `count` FP8 values of `dtype` (`.float8_e4m3`, `.float8_e5m2` or `.float8_e8m0`).
    static func expand(_ source: UnsafeRawPointer, dtype: TensorDType, count: Int, into destination: UnsafeMutablePointer<Float>) {
        (dtype == .float8_e4m3 ? e4m3Values : dtype == .float8_e5m2 ? e5m2Values : e8m0Values).withUnsafeBufferPointer { table in
            for i in 0..<count { destination[i] = table[Int(source.load(fromByteOffset: i, as: UInt8.self))] }
        }
    }

    /// The float32 values of a block-scaled FP8 weight: `weight` (F8_E4M3 or
    /// F8_E5M2, shape `[..., M, N]`) times `scaleInv` (its `<name>_scale_inv`,
    /// a float tensor of shape `[..., ⌈M / blockRows⌉, ⌈N / blockColumns⌉]`):
    /// `weight[..., i, j] · scaleInv[..., i / blockRows, j / blockColumns]`,
    /// one float32 product per element, as DeepSeek's `weight_dequant` and
    /// transformers' FP8 dequantisation compute it before casting to the
    /// model's dtype. Blocks at the lower and right edges may be partial.
    /// The block size is the config's `quantization_config.weight_block_size`
    /// (128 × 128 in DeepSeek-V3).
    ///
    /// Returns `[..., M, N]` row-major. Throws when `weight` is not FP8,
    /// `scaleInv` not a float (or F8_E8M0) tensor, the block size not
    /// positive, the scale grid not the one the shapes imply, or a file
    /// changed since it was opened.
    public static func dequantize(
        weight: TensorSlice, scaleInv: TensorSlice, blockRows: Int = 128, blockColumns: Int = 128
    ) throws -> [Float] {
        guard weight.dtype == .float8_e4m3 || weight.dtype == .float8_e5m2 else {
            throw DroptraceError(
                "block-scaled weight '\(weight.name.forErrorMessage)' has dtype \(weight.dtype.rawValue), not F8_E4M3 or F8_E5M2",
                path: weight.path)
        }
        guard (scaleInv.dtype.readsAsWeights && !scaleInv.dtype.isBlockQuantized) || scaleInv.dtype == .float8_e8m0 else {
            throw DroptraceError(
                "scales '\(scaleInv.name.forErrorMessage)' have dtype \(scaleInv.dtype.rawValue), not F32, F16, BF16 or F8_E8M0",
                path: scaleInv.path)
        }
        guard blockRows > 0, blockColumns > 0 else {
            throw DroptraceError(
                "FP8 block size \(blockRows) × \(blockColumns) of '\(weight.name.forErrorMessage)' is not positive", path: weight.path)
        }
        guard weight.shape.count >= 2 else {
            throw DroptraceError(
                "block-scaled weight '\(weight.name.forErrorMessage)' has shape \(weight.shape), not a matrix", path: weight.path)
        }
        let (rows, columns) = (weight.shape[weight.shape.count - 2], weight.shape[weight.shape.count - 1])
        func blocks(_ size: Int, _ block: Int) -> Int { size / block + (size % block == 0 ? 0 : 1) }
        let (scaleRows, scaleColumns) = (blocks(rows, blockRows), blocks(columns, blockColumns))
        let grid = Array(weight.shape.dropLast(2)) + [scaleRows, scaleColumns]
        // One scale for the whole matrix may be stored as a scalar ([] or [1]).
        let wholeMatrix = grid.allSatisfy { $0 == 1 } && scaleInv.shape.count < grid.count && scaleInv.shape.allSatisfy { $0 == 1 }
        guard scaleInv.shape == grid || wholeMatrix else {
            throw DroptraceError(
                "scales '\(scaleInv.name.forErrorMessage)' have shape \(scaleInv.shape), but weight '\(weight.name.forErrorMessage)' of shape \(weight.shape) in \(blockRows) × \(blockColumns) blocks needs \(grid)",
                path: scaleInv.path)
        }
        var values = try weight.floats()
        let scales = try scaleInv.floats()
        guard columns > 0 else { return values }
        let matrixRows = values.count / columns
        try values.withUnsafeMutableBufferPointer { buffer in
            try scales.withUnsafeBufferPointer { scales in
                let values = buffer.baseAddress!
                try TensorSlice.forEachChunk(of: matrixRows, size: max(1, (1 << 18) / columns)) { range in
                    for r in range {
                        let (matrix, i) = r.quotientAndRemainder(dividingBy: rows)
                        let scaleRow = scales.baseAddress! + (matrix * scaleRows + i / blockRows) * scaleColumns
                        let row = values + r * columns
                        for b in 0..<scaleColumns {
                            let s = scaleRow[b]
                            for j in (b * blockColumns)..<min(columns, (b + 1) * blockColumns) { row[j] *= s }
                        }
                    }
                }
            }
        }
        return values
    }

    /// The block each scale of `scaleInv` covers when the config gives no
    /// block size (`weight_block_size: null`): the weight's last two
    /// dimensions divided by the scale grid's, which must divide them, as
    /// transformers' FP8 dequantisation derives it; a single scale (shape
    /// [], [1] or [1, 1]) covers the whole matrix (per-tensor FP8).
    /// - Throws: `DroptraceError` naming the scales when the grid does not
    ///   divide the weight's shape or has another rank.
    public static func blockFromScaleGrid(weight: TensorSlice, scaleInv: TensorSlice) throws -> (rows: Int, columns: Int) {
        guard weight.shape.count >= 2 else { return (1, 1) }
        let (rows, columns) = (weight.shape[weight.shape.count - 2], weight.shape[weight.shape.count - 1])
        if weight.shape.count == 2, scaleInv.shape.count <= 2, scaleInv.shape.allSatisfy({ $0 == 1 }) {
            return (max(rows, 1), max(columns, 1))
        }
        let grid = scaleInv.shape.suffix(2)
        guard scaleInv.shape.count == weight.shape.count, let scaleRows = grid.first, let scaleColumns = grid.last,
              scaleRows > 0, scaleColumns > 0, rows % scaleRows == 0, columns % scaleColumns == 0, rows > 0, columns > 0 else {
            throw DroptraceError(
                "scales '\(scaleInv.name.forErrorMessage)' have shape \(scaleInv.shape), which does not divide weight '\(weight.name.forErrorMessage)' of shape \(weight.shape) into equal blocks (quantization_config.weight_block_size is null, so the scale grid sets the block)",
                path: scaleInv.path)
        }
        return (rows / scaleRows, columns / scaleColumns)
    }
}
