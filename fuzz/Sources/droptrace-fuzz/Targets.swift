// The targets: which seed files each one mutates and what it runs over a mutant.

import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import Pipeline
import Scoring
import Tokenization

let allTargets = ["safetensors", "gguf", "torch", "config", "tokenizer", "calibration", "pipeline"]

struct Seed {
    var target: String
    var path: String
    var bytes: [UInt8]
    /// The mutant's name in the scratch directory.
    var fileName: String
    /// Files symlinked beside the mutant (the seed's weights beside a mutated
    /// config.json, the config.json beside mutated weights).
    var companions: [String]
    /// Bytes at the start that hold sizes and offsets (byte mutations aim there).
    var header: Int
}

/// The target a seed file belongs to, and the mutant's file name.
func classify(_ path: String) -> (target: String, fileName: String)? {
    let name = (path as NSString).lastPathComponent
    let folder = ((path as NSString).deletingLastPathComponent as NSString).lastPathComponent
    switch (name as NSString).pathExtension.lowercased() {
    case "safetensors": return ("safetensors", "model.safetensors")
    case "gguf": return ("gguf", "model.gguf")
    case "bin": return ("torch", "pytorch_model.bin")
    case "jsonl", "txt": return ("calibration", name)
    case "yaml", "yml": return ("pipeline", "pipeline.yaml")
    case "json" where name == "config.json": return ("config", name)
    case "json" where name == "tokenizer.json" || folder == "tokenizer-cases" && name != "expected.json":
        return ("tokenizer", "tokenizer.json")
    default: return nil
    }
}

func loadSeeds(_ directories: [String], targets: [String]) -> [Seed] {
    var seeds: [Seed] = []
    for directory in directories {
        let root = URL(fileURLWithPath: directory).standardizedFileURL.path
        guard let walker = FileManager.default.enumerator(atPath: root) else { continue }
        for relative in (walker.allObjects as? [String] ?? []).sorted() {
            let path = (root as NSString).appendingPathComponent(relative)
            guard let (target, fileName) = classify(path), targets.contains(target),
                let data = FileManager.default.contents(atPath: path),
                // Large files slow every execution; a 1 MB JSON is parsed and rewritten per mutation.
                data.count < (["config", "tokenizer"].contains(target) ? 1 << 20 : 4 << 20)
            else { continue }
            let folder = (path as NSString).deletingLastPathComponent
            let siblings = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
                .map { (folder as NSString).appendingPathComponent($0) }
            var companions: [String] = []
            switch target {
            case "safetensors", "gguf", "torch":
                companions = siblings.filter { $0.hasSuffix("/config.json") }
            case "config":
                // A config.json is a seed only beside weights.
                companions = siblings.filter { !$0.hasSuffix("/config.json") }
                guard companions.contains(where: { ["safetensors", "bin", "gguf"].contains(($0 as NSString).pathExtension) })
                else { continue }
            default: break
            }
            let bytes = [UInt8](data)
            seeds.append(Seed(target: target, path: path, bytes: bytes, fileName: fileName, companions: companions,
                              header: seedHeaderLength(bytes, target: target)))
        }
    }
    return seeds
}

func seedHeaderLength(_ bytes: [UInt8], target: String) -> Int {
    switch target {
    case "safetensors":
        guard bytes.count >= 8 else { return bytes.count }
        let length = bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        return Int(min(UInt64(bytes.count), 8 + length))
    case "gguf":
        // Metadata and tensor infos take the start; vocabularies make it long.
        return min(bytes.count, 1 << 20)
    default:
        return bytes.count
    }
}

/// Mutates a seed's bytes the way its target's files break.
func mutate(_ bytes: inout [UInt8], seed: Seed, _ random: inout Random) {
    for _ in 0..<(1 + random.below(3)) {
        switch seed.target {
        case "config", "tokenizer":
            if random.below(10) == 0 || !mutateJSON(&bytes, modelTypes: ModelRegistry.supportedModelTypes, &random) {
                mutateBytes(&bytes, header: bytes.count, &random)
            }
        case "calibration", "pipeline":
            if random.below(2) == 0 { mutateText(&bytes, &random) } else { mutateBytes(&bytes, header: bytes.count, &random) }
        default:
            mutateBytes(&bytes, header: seed.header, &random)
        }
    }
}

/// Mixed text for tokenizers: ASCII, digits, CJK, emoji with modifiers, CRLF, combining marks.
let mixedText = "Hello, world! It's 2026: 12345 items.\r\n日本語のテキスト、中文。 😀👍🏽👨‍👩‍👧 naïve café\t  x\n\n e\u{301}"

/// Long runs for tokenizers, one of which a tokenizer mutant encodes now and
/// then: costs that grow with the square of a run (an added token whose
/// beginning the run repeats, lstrip/rstrip over whitespace, a literal
/// pattern's naive search, text growing step after step) show as hangs here,
/// never in `mixedText`.
let longRuns = ["a", "\t", " ", "<|", "ab", "\u{2581}", "["].map { String(repeating: $0, count: 65_536 / $0.utf8.count) }

/// The tokenizer calibration text is encoded with (the first seed tokenizer.json that loads).
nonisolated(unsafe) var calibrationTokenizer: Tokenizer?

/// Runs droptrace's readers for `target` over the mutant `file` in `directory`.
func exercise(target: String, file: String, directory: String, _ random: inout Random) throws {
    let url = URL(fileURLWithPath: file)
    switch target {
    case "safetensors":
        _ = try SafetensorsFile.expectedLength(path: file)
        for slice in try SafetensorsFile(path: file).tensors.values { _ = try slice.floats() }
        try exerciseCheckpoint(directory)
    case "gguf":
        _ = try GGUFFile.expectedLength(path: file)
        _ = try GGUFFile(path: file)
        for slice in try GGUFCheckpoint(path: file).tensors.values { _ = try slice.floats() }
        try exerciseCheckpoint(directory)
    case "torch":
        _ = try TorchCheckpointFile.expectedLength(path: file)
        for slice in try TorchCheckpointFile(path: file).tensors.values { _ = try slice.floats() }
        try exerciseCheckpoint(directory)
    case "config":
        try exerciseModel(directory)
    case "tokenizer":
        let tokenizer = try Tokenizer(contentsOf: url)
        _ = tokenizer.decode(try tokenizer.encode(mixedText))
        _ = try tokenizer.encode(mixedText, addSpecialTokens: false)
        if random.below(4) == 0 { _ = try tokenizer.encode(longRuns[random.below(longRuns.count)]) }
    case "calibration":
        let seqLen = [nil, 1, 4, 64][random.below(4)]
        let samples = [nil, 1, 3][random.below(3)]
        _ = try CalibrationSet.load(from: url, tokenizer: calibrationTokenizer, seqLen: seqLen, samples: samples)
    default:
        _ = try PipelineDocument.load(url)
    }
}

/// `Checkpoint(location:)` and the expansion of every tensor.
func exerciseCheckpoint(_ directory: String) throws {
    let checkpoint = try Checkpoint(location: URL(fileURLWithPath: directory))
    for name in checkpoint.tensorNames {
        let slice = try checkpoint.tensor(name)
        _ = try slice.floats()
        if slice.shape.count == 2, slice.storedOrder != .transposed, slice.shape[0] > 0 {
            var row = [Float](repeating: 0, count: slice.shape[1])
            try row.withUnsafeMutableBufferPointer { try slice.expandRows([slice.shape[0] - 1], into: $0.baseAddress!) }
        }
    }
}

/// The model a config.json describes: every block, the head, and a short
/// scoring pass (2 sequences of 4 tokens) through `ImportanceScorer`, which
/// checks the tokens against the model as `droptrace score` does.
func exerciseModel(_ directory: String) throws {
    let model = try ModelRegistry.load(try Checkpoint(location: URL(fileURLWithPath: directory)))
    for index in 0..<model.layerCount { _ = try model.block(index) }
    _ = try model.head()
    let ids = max(1, min(model.vocabularySize, 8))
    let sequences = [[1, 2, 3, 4], [5, 6, 7, 0]].map { $0.map { $0 % ids } }
    _ = try ImportanceScorer(model: model).score(sequences, calibrationPath: "fuzz-calibration")
}
