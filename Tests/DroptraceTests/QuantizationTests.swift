@testable import CheckpointIO
import DroptraceSupport
import Foundation
import Testing

/// Fixtures/quants (scripts/fixtures/make_quant_fixtures.py): raw quantised
/// tensors and the float32 values gguf-py, transformers and torch expand them
/// to, compared bit for bit (NaN and infinity patterns included).
enum QuantFixtures {
    static let directory = FixtureFiles.root.appendingPathComponent("quants")

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    static let reference: [String: Any] = {
        let data = try! Data(contentsOf: directory.appendingPathComponent("reference.json"))
        return try! JSONSerialization.jsonObject(with: data) as! [String: Any]
    }()

    static func cases(_ group: String) -> [String: [String: Any]] { reference[group] as! [String: [String: Any]] }

    /// expected.f32 as bit patterns.
    static let expected: [UInt32] = {
        let data = try! Data(contentsOf: directory.appendingPathComponent("expected.f32"))
        return data.withUnsafeBytes { raw in (0..<(data.count / 4)).map { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self)) } }
    }()

    static func expectedBits(_ entry: [String: Any]) -> (shape: [Int], bits: [UInt32]) {
        let offset = (entry["offset"] as! NSNumber).intValue, count = (entry["count"] as! NSNumber).intValue
        return ((entry["shape"] as! [NSNumber]).map(\.intValue), Array(expected[offset..<(offset + count)]))
    }

    static var ggufTypes: [String] { cases("gguf").values.map { $0["type"] as! String }.sorted() }
}

/// The first element whose bits differ, for a readable failure.
private func firstDifference(_ values: [Float], _ bits: [UInt32]) -> String? {
    guard values.count == bits.count else { return "\(values.count) values, expected \(bits.count)" }
    guard let i = values.indices.first(where: { values[$0].bitPattern != bits[$0] }) else { return nil }
    return "element \(i): \(values[i]) (0x\(String(values[i].bitPattern, radix: 16))), expected \(Float(bitPattern: bits[i])) (0x\(String(bits[i], radix: 16)))"
}

private func expectFailure(mentioning words: [String], _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected an error mentioning \(words)")
    } catch let error as DroptraceError {
        let line = error.description
        #expect(!line.contains("\n"), "\(line)")
        for word in words { #expect(line.contains(word), "\(line) does not mention \(word)") }
    } catch {
        Issue.record("not a DroptraceError: \(error)")
    }
}

@Suite struct GGMLQuantizationTests {
    @Test(arguments: QuantFixtures.ggufTypes)
    func dequantisesBitIdenticallyToGGUFPy(type: String) throws {
        let file = try GGUFFile(path: QuantFixtures.path("quants.gguf"))
        let name = type.lowercased()
        let info = try #require(file.tensors.first { $0.name == name })
        let dtype = try #require(info.type.dtype, "\(type) is not read")
        #expect(dtype.rawValue == type)
        let (shape, bits) = QuantFixtures.expectedBits(QuantFixtures.cases("gguf")[name]!)
        #expect(info.dimensions.reversed() == shape)
        let slice = file.slice(info, dtype: dtype, name: name, shape: shape, order: .asShaped)
        let values = try slice.floats()
        #expect(firstDifference(values, bits) == nil, "\(type): \(firstDifference(values, bits) ?? "")")
        // Rows gathered as embedding lookups gather them (last first, one
        // repeated, in one-row spans and in one span) give the same bits.
        let ids = Array((0..<shape[0]).reversed()) + [0]
        let expectedRows = ids.flatMap { r in bits[(r * shape[1])..<((r + 1) * shape[1])] }
        for limit in [1, 1 << 20] {
            var rows = [Float](repeating: 0, count: ids.count * shape[1])
            try rows.withUnsafeMutableBufferPointer {
                try slice.expandRows(ids, into: $0.baseAddress!, spanGap: limit, spanBytes: limit)
            }
            #expect(firstDifference(rows, expectedRows) == nil, "\(type), spans of \(limit) bytes")
        }
    }

    @Test func fixtureCoversTheNewTypes() {
        #expect(Set(QuantFixtures.ggufTypes).isSuperset(of: ["Q2_K", "Q3_K", "Q5_K", "IQ4_NL", "IQ4_XS", "MXFP4"]))
    }

    /// GGUFFile sizes tensors from ggml's type table, TensorSlice from
    /// TensorDType: they must agree for every type droptrace reads.
    @Test func blockGeometryAgreesWithGGML() {
        var readable: [String] = []
        for id in UInt32(0)..<64 {
            guard let type = GGMLType.named(id), let dtype = type.dtype else { continue }
            readable.append(type.name)
            #expect(dtype.blockSize == type.blockSize && dtype.byteSize == type.blockBytes, "\(type.name)")
        }
        #expect(readable.joined(separator: ", ").count == GGMLType.supportedNames.count)
        #expect(Set(readable) == Set(GGMLType.supportedNames.components(separatedBy: ", ")))
    }
}

@Suite struct MXFP4Tests {
    static var entry: [String: Any] { QuantFixtures.reference["mxfp4"] as! [String: Any] }

    func tensors() throws -> (blocks: TensorSlice, scales: TensorSlice, file: SafetensorsFile) {
        let file = try SafetensorsFile(path: QuantFixtures.path("mxfp4.safetensors"))
        let blocks = try #require(file.scaledTensors[Self.entry["blocks"] as! String])
        let scales = try #require(file.scaledTensors[Self.entry["scales"] as! String])
        return (blocks, scales, file)
    }

    @Test func dequantisesLikeTransformersBeforeItsTranspose() throws {
        let (blocks, scales, file) = try tensors()
        #expect(file.tensors.isEmpty, "U8 tensors must not count as weights")
        #expect(blocks.shape == [2, 3, 4, 16] && scales.shape == [2, 3, 4])
        let (shape, bits) = QuantFixtures.expectedBits(Self.entry)
        #expect(shape == [2, 3, 128])
        let values = try MXFP4.dequantize(blocks: blocks, scales: scales)
        #expect(firstDifference(values, bits) == nil, "\(firstDifference(values, bits) ?? "")")
        #expect(values.contains(.infinity) && values.contains { $0 == 0 && $0.sign == .minus }, "fixture lacks edge cases")
    }

    @Test func refusesMismatchedTensors() throws {
        let (blocks, scales, _) = try tensors()
        expectFailure(mentioning: ["MXFP4 scales", "[2, 3, 4, 16]", "[2, 3, 4]"]) {
            _ = try MXFP4.dequantize(blocks: scales, scales: blocks)
        }
        let fp8 = try SafetensorsFile(path: QuantFixtures.path("fp8.safetensors"))
        let codes = try #require(fp8.scaledTensors["codes.e4m3"])
        expectFailure(mentioning: ["codes.e4m3", "F8_E4M3", "U8"]) { _ = try MXFP4.dequantize(blocks: codes, scales: scales) }
    }

    @Test func aFileTruncatedAfterOpeningIsAnError() throws {
        let scratch = try ScratchDirectory()
        let copy = scratch.path("mxfp4.safetensors")
        try FileManager.default.copyItem(atPath: QuantFixtures.path("mxfp4.safetensors"), toPath: copy.path)
        let file = try SafetensorsFile(path: copy.path)
        let handle = try FileHandle(forWritingTo: copy)
        try handle.truncate(atOffset: 200)
        try handle.close()
        let blocks = try #require(file.scaledTensors[Self.entry["blocks"] as! String])
        let scales = try #require(file.scaledTensors[Self.entry["scales"] as! String])
        expectFailure(mentioning: [copy.lastPathComponent]) { _ = try MXFP4.dequantize(blocks: blocks, scales: scales) }
    }
}

@Suite struct FP8Tests {
    static func file() throws -> SafetensorsFile { try SafetensorsFile(path: QuantFixtures.path("fp8.safetensors")) }

    @Test(arguments: ["codes.e4m3", "codes.e5m2"])
    func everyCodeExpandsAsTorch(name: String) throws {
        let slice = try #require(try Self.file().scaledTensors[name])
        let (_, bits) = QuantFixtures.expectedBits(QuantFixtures.cases("fp8")[name]!)
        let values = try slice.floats()
        #expect(firstDifference(values, bits) == nil, "\(name): \(firstDifference(values, bits) ?? "")")
    }

    @Test(arguments: ["model.layers.0.self_attn.kv_a_proj_with_mqa.weight", "model.layers.0.mlp.experts.down_proj.weight"])
    func blockScaledWeightsDequantiseAsTransformers(name: String) throws {
        let file = try Self.file()
        let entry = QuantFixtures.cases("fp8")[name]!
        let weight = try #require(file.scaledTensors[name])
        let scaleInv = try #require(file.tensors[entry["scale_inv"] as! String])
        let block = (entry["block"] as! [NSNumber]).map(\.intValue)
        let (shape, bits) = QuantFixtures.expectedBits(entry)
        #expect(weight.shape == shape)
        let values = try FP8.dequantize(weight: weight, scaleInv: scaleInv, blockRows: block[0], blockColumns: block[1])
        #expect(firstDifference(values, bits) == nil, "\(name): \(firstDifference(values, bits) ?? "")")
    }

    @Test func refusesWrongScalesAndDtypes() throws {
        let file = try Self.file()
        let name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"
        let weight = try #require(file.scaledTensors[name])
        let scaleInv = try #require(file.tensors[name + "_scale_inv"])
        expectFailure(mentioning: ["_scale_inv", "[2, 2]", "[3, 3]"]) {
            _ = try FP8.dequantize(weight: weight, scaleInv: scaleInv, blockRows: 64, blockColumns: 64)
        }
        expectFailure(mentioning: ["not positive"]) { _ = try FP8.dequantize(weight: weight, scaleInv: scaleInv, blockRows: 0) }
        expectFailure(mentioning: ["_scale_inv", "F32", "F8_E4M3 or F8_E5M2"]) { _ = try FP8.dequantize(weight: scaleInv, scaleInv: scaleInv) }
        expectFailure(mentioning: ["F8_E4M3", "not F32"]) { _ = try FP8.dequantize(weight: weight, scaleInv: weight) }
        let codes = try #require(file.scaledTensors["codes.e4m3"])
        expectFailure(mentioning: ["codes.e4m3", "[256]", "not a matrix"]) { _ = try FP8.dequantize(weight: codes, scaleInv: scaleInv) }
    }

    /// With `weight_block_size: null` the scale grid sets the block, as
    /// transformers derives it: it must divide the weight; one scale covers it all.
    @Test func blockFromTheScaleGrid() throws {
        let file = try Self.file()
        let weight = try #require(file.scaledTensors["model.layers.0.self_attn.kv_a_proj_with_mqa.weight"])
        let (rows, columns) = (weight.shape[0], weight.shape[1])
        func scales(_ shape: [Int]) -> TensorSlice {
            .computed(name: "s", shape: shape, path: "f") { [Float](repeating: 0.5, count: shape.reduce(1, *)) }
        }
        #expect(try FP8.blockFromScaleGrid(weight: weight, scaleInv: scales([])) == (rows, columns))
        #expect(try FP8.blockFromScaleGrid(weight: weight, scaleInv: scales([1, 1])) == (rows, columns))
        #expect(try FP8.blockFromScaleGrid(weight: weight, scaleInv: scales([3, 2])) == (rows / 3, columns / 2))  // [129, 130]
        let whole = try FP8.dequantize(weight: weight, scaleInv: scales([]), blockRows: rows, blockColumns: columns)
        #expect(whole == (try weight.floats()).map { $0 * 0.5 })
        expectFailure(mentioning: ["'s'", "[\(rows + 1), 1]", "equal blocks"]) {
            _ = try FP8.blockFromScaleGrid(weight: weight, scaleInv: scales([rows + 1, 1]))
        }
        expectFailure(mentioning: ["[2]", "equal blocks"]) { _ = try FP8.blockFromScaleGrid(weight: weight, scaleInv: scales([2])) }
    }

    /// F8_E8M0 (torch's float8_e8m0fnu) is 2^(byte − 127), 0xFF NaN.
    @Test func e8m0IsAPowerOfTwo() {
        #expect(FP8.e8m0Values[127] == 1 && FP8.e8m0Values[130] == 8 && FP8.e8m0Values[0] == 0x1p-127 && FP8.e8m0Values[254] == 0x1p127)
        #expect(FP8.e8m0Values[255].isNaN)
    }
}

@Suite struct ScaledTensorCheckpointTests {
    /// A checkpoint whose weights are the FP8 fixture: its U8/FP8 tensors are
    /// stored and readable through `storedTensor`, but never plain weights.
    @Test func scaledTensorsAreStoredButNotWeights() throws {
        let scratch = try ScratchDirectory()
        try FileManager.default.copyItem(
            atPath: QuantFixtures.path("fp8.safetensors"), toPath: scratch.path("model.safetensors").path)
        _ = try scratch.write(#"{"model_type": "deepseek_v3"}"#, to: "config.json")
        let checkpoint = try Checkpoint(location: scratch.url)
        let name = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight"
        #expect(checkpoint.storedTensorNames.contains(name) && !checkpoint.tensorNames.contains(name))
        #expect(checkpoint.tensorNames == [name + "_scale_inv", "model.layers.0.mlp.experts.down_proj.weight_scale_inv"].sorted())
        expectFailure(mentioning: [name, "F8_E4M3", "for weights"]) { _ = try checkpoint.tensor(name) }
        #expect(try checkpoint.storedTensor(name).dtype == .float8_e4m3)
        #expect(try checkpoint.storedTensor(name + "_scale_inv").dtype == .float32)
        expectFailure(mentioning: ["missing tensor", "nothing"]) { _ = try checkpoint.storedTensor("nothing") }
    }

    @Test func unreadableDtypesStayUnreadable() throws {
        let checkpoint = try Checkpoint(location: FixtureFiles.root.appendingPathComponent("formats/neox-buffers"))
        let bool = try #require(checkpoint.storedTensorNames.first { $0.hasSuffix("attention.bias") })
        expectFailure(mentioning: [bool, "BOOL", "cannot read"]) { _ = try checkpoint.storedTensor(bool) }
    }
}
