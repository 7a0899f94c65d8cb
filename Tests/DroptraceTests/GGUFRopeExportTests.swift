import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import TensorEngine
import Testing

/// A GGUF file keeps Llama 3's rope scaling as per-frequency divisors
/// (`rope_freqs.weight`), which transformers does not read: `--export` writes
/// the `rope_parameters` (rope_type llama3) that give the same frequencies in
/// transformers, or refuses the export before any work when none do.
@Suite struct GGUFRopeExportTests {
    static let llama = "gguf/llama-f32.gguf"

    /// The divisors llama.cpp's converter (convert_hf_to_gguf.py,
    /// `generate_extra_tensors`) writes for these parameters: Float32 tensor
    /// arithmetic on the default frequencies.
    static func converterDivisors(_ p: Llama3RopeParameters, base: Double, rotaryDim: Int) -> [Double] {
        let lowWavelength = Double(p.originalMaxPositions) / p.lowFrequencyFactor
        let highWavelength = Double(p.originalMaxPositions) / p.highFrequencyFactor
        return RotaryEmbedding.defaultInverseFrequencies(base: base, rotaryDim: rotaryDim).map { frequency in
            let wavelength = Float(2 * Double.pi) / frequency
            if Double(wavelength) < highWavelength { return 1 }
            if Double(wavelength) > lowWavelength { return Double(Float(p.factor)) }
            let smooth = (Float(p.originalMaxPositions) / wavelength - Float(p.lowFrequencyFactor))
                / Float(p.highFrequencyFactor - p.lowFrequencyFactor)
            return Double(1 / ((1 - smooth) / Float(p.factor) + smooth))
        }
    }

    /// Llama 3.1 / 3.2 (head width 128, base 500000) and a small model's
    /// settings come back as written; others that no single usual value
    /// fixes come back as parameters giving the same frequencies.
    @Test(arguments: [
        (Llama3RopeParameters(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositions: 8192), 500_000.0, 128, true),
        (Llama3RopeParameters(factor: 32, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositions: 8192), 500_000.0, 128, true),
        (Llama3RopeParameters(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositions: 32), 10_000.0, 12, true),
        (Llama3RopeParameters(factor: 16, lowFrequencyFactor: 2, highFrequencyFactor: 5, originalMaxPositions: 4096), 500_000.0, 128, false),
        (Llama3RopeParameters(factor: 4, lowFrequencyFactor: 1.5, highFrequencyFactor: 3, originalMaxPositions: 2048), 10_000.0, 64, false),
        (Llama3RopeParameters(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositions: 8192), 10_000.0, 16, true),
    ])
    func llama3ParametersAreRecovered(_ original: Llama3RopeParameters, base: Double, rotaryDim: Int, exact: Bool) throws {
        let divisors = Self.converterDivisors(original, base: base, rotaryDim: rotaryDim)
        let recovered = try #require(Llama3RopeParameters.recovering(divisors, base: base, rotaryDim: rotaryDim))
        #expect(recovered.reproduces(divisors, base: base, rotaryDim: rotaryDim))
        if exact { #expect(recovered == original) }
        // Both give transformers the same frequencies.
        for (a, b) in zip(recovered.inverseFrequencies(base: base, rotaryDim: rotaryDim), original.inverseFrequencies(base: base, rotaryDim: rotaryDim)) {
            #expect(abs(a - b) <= 1e-5 * b)
        }
    }

    /// Divisors no Llama 3 scaling gives (not rising with the wavelength,
    /// below 1, one frequency interpolated off the line the others fix) and
    /// all-1 divisors (no scaling) have no Llama 3 parameters.
    @Test func otherDivisorsAreNotLlama3() {
        let base = 500_000.0
        let standard = Self.converterDivisors(
            Llama3RopeParameters(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalMaxPositions: 8192), base: base, rotaryDim: 128)
        var bent = standard
        let medium = try! #require(bent.firstIndex { $0 > 1 && $0 < 8 })
        bent[medium + 1] *= 1.01
        for divisors in [
            [1, 8, 2, 8, 8, 8], [1, 0.5, 8, 8, 8, 8], Array(repeating: 1, count: 6),
        ] as [[Double]] {
            #expect(Llama3RopeParameters.recovering(divisors, base: 10_000, rotaryDim: 12) == nil, "\(divisors)")
        }
        #expect(Llama3RopeParameters.recovering(bent, base: base, rotaryDim: 128) == nil)
    }

    /// The export of the Llama 3 GGUF fixture (converted from
    /// models/llama-f32, rope_type llama3) holds that model's rope parameters,
    /// not the divisors transformers ignored (it then rotated by the default
    /// frequencies: another perplexity than droptrace's), and gives
    /// droptrace's perplexity of the dropped GGUF model.
    @Test func llama3DivisorsAreExportedAsRopeParameters() throws {
        let scratch = try ScratchDirectory()
        let model = try ModelRegistry.load(try Checkpoint(location: FixtureFiles.root.appendingPathComponent(Self.llama)))
        let export = scratch.path("export")
        let plan = DropPlan(blocks: [2])
        try DroppedModelExport.write(model: model, plan: plan, to: export)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: export.appendingPathComponent("config.json"))) as! [String: Any]
        let rope = try #require(config["rope_parameters"] as? [String: Any])
        let source = try FixtureFiles.config("llama-f32")
        #expect(NSDictionary(dictionary: rope) == NSDictionary(dictionary: source["rope_parameters"] as! [String: Any]), "\(rope)")
        let text = try String(contentsOf: export.appendingPathComponent("config.json"), encoding: .utf8)
        #expect(text.contains("\"factor\": 8.0") && text.contains("\"low_freq_factor\": 1.0"), "\(text)")

        let windows = FixtureFiles.jsonlSequences()
        let dropped = try LanguageModelLoss.evaluate(model: model, plan: plan, windows: windows, sourcePath: "fixture").perplexity
        let reloaded = try LanguageModelLoss.evaluate(
            model: try ModelRegistry.load(try Checkpoint(directory: export)), plan: .none, windows: windows, sourcePath: "fixture").perplexity
        #expect(abs(reloaded - dropped) <= 1e-5 * dropped, "\(reloaded) vs \(dropped)")
    }

    /// The llama fixture with its rope divisors replaced by `values`.
    static func withDivisors(_ values: [Float]) throws -> [UInt8] {
        var bytes = try GGUFBytes.fixture(llama)
        func le(_ value: Float) -> [UInt8] { GGUFBytes.le(value.bitPattern) }
        let eights = (0..<4).flatMap { _ in le(8) }
        let at = try #require((0...(bytes.count - 24)).first {
            bytes[$0..<($0 + 4)].elementsEqual(le(1)) && bytes[($0 + 8)..<($0 + 24)].elementsEqual(eights)
        })
        bytes.replaceSubrange(at..<(at + 24), with: values.flatMap(le))
        return bytes
    }

    /// Divisors no Llama 3 parameters give: `drop --export` is refused at
    /// once, with one line naming the file, nothing scored or written.
    @Test func exportOfOtherDivisorsIsRefusedBeforeAnyWork() throws {
        let scratch = try ScratchDirectory()
        let file = scratch.path("bent.gguf")
        try Data(try Self.withDivisors([1, 8, 2, 8, 8, 8])).write(to: file)
        let export = scratch.path("export")
        let result = try DroptraceCommand.run([
            "drop", file.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block", "--count", "1",
            "--export", export.path, "--speed-max-rounds", "1",
        ])
        #expect(result.status == 1)
        let errors = result.stderr.split(separator: "\n").filter { $0.contains("error:") }
        #expect(errors.count == 1 && errors[0].contains("error: \(file.path): --export: the rope frequency factors (llama.cpp's rope_freqs.weight) are not Llama 3 scaling"), "\(result.stderr)")
        #expect(!result.stderr.contains("scoring"), "refused only after scoring: \(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: export.path))
        // Without --export the file is scored as llama.cpp reads it.
        let plain = try DroptraceCommand.run([
            "drop", file.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block", "--count", "1",
            "--speed-max-rounds", "1",
        ])
        #expect(plain.status == 0, "\(plain.stderr)")
    }

    /// Divisors that are all 1 scale nothing: the export has the default rope and no divisors.
    @Test func unitDivisorsAreLeftOut() throws {
        let scratch = try ScratchDirectory()
        let file = scratch.path("plain.gguf")
        try Data(try Self.withDivisors(Array(repeating: 1, count: 6))).write(to: file)
        let export = scratch.path("export")
        try DroppedModelExport.write(model: try ModelRegistry.load(try Checkpoint(location: file)), plan: DropPlan(blocks: [1]), to: export)
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: export.appendingPathComponent("config.json"))) as! [String: Any]
        let rope = try #require(config["rope_parameters"] as? [String: Any])
        #expect(rope["rope_type"] as? String == "default" && rope["frequency_factors"] == nil, "\(rope)")
    }
}
