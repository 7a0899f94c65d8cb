/// ggml's tensor type ids as a GGUF file records them, with their block
/// geometry, so that even types droptrace cannot expand are named in errors
/// and sized when checking a file for completeness.
public struct GGMLType: Sendable {
    let id: UInt32
    let name: String
    /// Elements per block and bytes per block.
    let blockSize: Int
    let blockBytes: Int

    /// The element type droptrace expands, or nil when it does not read this one.
    var dtype: TensorDType? { TensorDType(rawValue: name).flatMap { $0.readsAsWeights ? $0 : nil } }

    static func named(_ id: UInt32) -> GGMLType? {
        table[id].map { GGMLType(id: id, name: $0.name, blockSize: $0.block, blockBytes: $0.bytes) }
    }

    /// From ggml.h's `enum ggml_type` and `ggml_type_traits` (ids 4, 5, 31–33, 36–38 were removed).
    private static let table: [UInt32: (name: String, block: Int, bytes: Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40),
        10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176),
        14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292), 16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74),
        18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
        22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
        26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
        30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    ]

    /// The ggml tensor types droptrace dequantises, as ggml names them.
    public static let supportedNames = "F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, MXFP4"
}
