import DroptraceSupport

/// MXFP4 (OCP Microscaling Formats v1.0): groups of 32 four-bit E2M1 values
/// (sign, 2 exponent bits, 1 mantissa bit: ±0, 0.5, 1, 1.5, 2, 3, 4, 6) sharing
/// one E8M0 scale byte `e` that means 2^(e − 127).
///
/// Two layouts store it, decoded here with the same tables:
/// - GGUF's MXFP4 blocks (17 bytes: `e`, then 16 bytes whose low nibbles are
///   values 0–15 and high nibbles values 16–31), expanded by `TensorSlice`
///   exactly as gguf-py's `MXFP4.dequantize_blocks`;
/// - gpt-oss safetensors checkpoints (`<name>_blocks` and `<name>_scales`, U8),
///   expanded by `dequantize(blocks:scales:)` exactly as transformers'
///   `convert_moe_packed_tensors`.
///
/// Both compute the doubled value (an integer) times 2^(e − 128), ggml's
/// `ggml_e8m0_to_fp32_half`: a power of two that is finite for every byte, so
/// each product is the exact value e2m1 · 2^(e − 127), rounded only where it
/// overflows to ±infinity — which is also what `torch.ldexp` yields. The
/// layouts differ only in the order of the nibbles and in the sign of the zero
/// of code 8 (ggml's int8 table has no −0; transformers' table has −0.0).
public enum MXFP4 {
    /// E2M1 code (0–15, bit 3 the sign) → twice its value, as transformers'
    /// `FP4_VALUES` doubled: code 8 is −0.
    static let doubledValues: [Float] = [0, 1, 2, 3, 4, 6, 8, 12, -0.0, -1, -2, -3, -4, -6, -8, -12]

    /// ggml's `kvalues_mxfp4`: the same levels with +0 for code 8.
    static let ggmlValues: [Float] = doubledValues.map { $0 == 0 ? 0 : $0 }

    /// 2^(e − 128) for an E8M0 byte `e` (half its scale): a subnormal for
    /// e < 2, otherwise the exponent field e − 1.
    @inline(__always)
    static func halfScale(_ e: UInt8) -> Float {
        e < 2 ? Float(bitPattern: UInt32(0x0020_0000) << UInt32(e)) : Float(bitPattern: UInt32(e - 1) << 23)
    }

    /// The float32 values of a gpt-oss MXFP4 tensor stored as safetensors
    /// `<name>_blocks` (U8, shape `[..., G, B]`: B bytes per group, B = 16 for
    /// the 32-value groups gpt-oss uses) and `<name>_scales` (U8, `[..., G]`).
    ///
    /// Returns `[..., G · 2B]` row-major — the order transformers'
    /// `convert_moe_packed_tensors` produces before its final
    /// `transpose(1, 2)`: value 2k of a group is the low nibble of its byte k,
    /// value 2k + 1 the high nibble, each times 2^(scale − 127). For gpt-oss's
    /// expert weights `[E, R, G, 16]` that is `[E, R, 32G]`, which transformers
    /// then transposes to `[E, 32G, R]` (e.g. `gate_up_proj` of
    /// `[experts, hidden, 2 · intermediate]`). Bit-identical to transformers in
    /// float32 and in bfloat16 (every finite value fits both).
    ///
    /// Reads the bytes a chunk of groups at a time (in parallel), never the
    /// whole tensor at once. Throws when either tensor is not U8, when the
    /// shapes disagree (scales must be the blocks' shape without its last
    /// size), or when a file was truncated or changed since it was opened.
    public static func dequantize(blocks: TensorSlice, scales: TensorSlice) throws -> [Float] {
        for (slice, role) in [(blocks, "blocks"), (scales, "scales")] where slice.dtype != .uint8 {
            throw DroptraceError(
                "MXFP4 \(role) '\(slice.name.forErrorMessage)' have dtype \(slice.dtype.rawValue); they are stored as U8",
                path: slice.path)
        }
        guard blocks.shape.count >= 2, scales.shape == Array(blocks.shape.dropLast()) else {
            throw DroptraceError(
                "MXFP4 scales '\(scales.name.forErrorMessage)' have shape \(scales.shape), but blocks '\(blocks.name.forErrorMessage)' of shape \(blocks.shape) need one scale per group, shape \(Array(blocks.shape.dropLast()))",
                path: scales.path)
        }
        let width = blocks.shape[blocks.shape.count - 1]
        let groups = scales.elementCount
        // U8 elements are bytes of the file, so twice their count cannot overflow.
        let count = blocks.elementCount * 2
        guard count > 0 else { return [] }
        let values = try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            let destination = buffer.baseAddress!
            try doubledValues.withUnsafeBufferPointer { table in
                try TensorSlice.forEachChunk(of: groups, size: max(1, (1 << 18) / width)) { range in
                    let stored = UnsafeMutableRawPointer.allocate(byteCount: range.count * (width + 1), alignment: 16)
                    defer { stored.deallocate() }
                    let exponents = stored + range.count * width
                    try blocks.readStoredBytes(range.lowerBound * width, count: range.count * width, into: stored)
                    try scales.readStoredBytes(range.lowerBound, count: range.count, into: exponents)
                    for g in 0..<range.count {
                        let d = halfScale(exponents.load(fromByteOffset: g, as: UInt8.self))
                        let group = stored + g * width
                        let out = destination + (range.lowerBound + g) * 2 * width
                        for k in 0..<width {
                            let q = Int(group.load(fromByteOffset: k, as: UInt8.self))
                            out[2 * k] = table[q & 0x0F] * d
                            out[2 * k + 1] = table[q >> 4] * d
                        }
                    }
                }
            }
            initialized = count
        }
        try blocks.checkUnchanged()
        try scales.checkUnchanged()
        return values
    }
}
