// droptrace-fuzz: an in-process mutation fuzzer for droptrace's weight-file
// readers (safetensors, GGUF, torch.save zip and legacy). See fuzz/README.md.
//
// Each execution mutates one seed file, writes it into a scratch checkpoint
// directory (beside the seed's config.json when it has one) and runs every
// reader over it: the format's own reader, its `expectedLength` (series
// discovery), `Checkpoint(location:)` and the expansion of every tensor.
// A clean outcome is success or one `DroptraceError` of one line. Anything
// else is a finding: another error type, a multi-line message, a crash (the
// input is kept in `last-input` and the run dies), a hang (a watchdog aborts
// after --timeout seconds) or an allocation the address-space cap refuses.

import CheckpointIO
import DroptraceSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var formats: [String] = ["safetensors", "gguf", "torch"]
    var executions = 20_000
    var seed: UInt64 = 1
    var timeout = 10.0
    var memoryGiB = 4
    var seedDirectories: [String] = []
    var work = FileManager.default.temporaryDirectory.appendingPathComponent("droptrace-fuzz").path
}

func parseOptions() -> Options {
    var options = Options()
    var arguments = Array(CommandLine.arguments.dropFirst())
    func value() -> String {
        guard !arguments.isEmpty else { fatalError("missing value for an option") }
        return arguments.removeFirst()
    }
    while let argument = arguments.first {
        arguments.removeFirst()
        switch argument {
        case "--format": options.formats = value().split(separator: ",").map(String.init)
        case "--executions": options.executions = Int(value())!
        case "--seed": options.seed = UInt64(value())!
        case "--timeout": options.timeout = Double(value())!
        case "--memory-gib": options.memoryGiB = Int(value())!
        case "--work": options.work = value()
        case "-h", "--help":
            print("""
                usage: droptrace-fuzz [--format safetensors,gguf,torch] [--executions N] [--seed S]
                                      [--timeout SECONDS] [--memory-gib G] [--work DIR] SEED_DIR...
                Seeds: every *.safetensors, *.gguf, *.bin under SEED_DIRs (config.json beside a seed is used).
                """)
            exit(0)
        default: options.seedDirectories.append(argument)
        }
    }
    return options
}

/// SplitMix64: reproducible from --seed.
struct Random {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(next() % UInt64(n)) }
}

/// Sizes and counts that break naive arithmetic.
let interesting: [UInt64] = [
    0, 1, 2, 7, 8, 16, 31, 32, 255, 256, 0x7FFF, 0xFFFF, 0x1_0000, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFE, 0xFFFF_FFFF,
    0x1_0000_0000, 0x1_0000_0001, 1 << 40, 1 << 62, 0x7FFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, UInt64.max - 1, UInt64.max,
]

/// One mutation of `bytes`; `header` bounds the region most mutations aim at
/// (the part of the file that holds sizes), since the tensor data is rarely parsed.
func mutate(_ bytes: inout [UInt8], header: Int, _ random: inout Random) {
    let target = random.below(4) == 0 ? bytes.count : max(1, min(header, bytes.count))
    func position() -> Int { random.below(target) }
    switch random.below(9) {
    case 0: // flip bits
        for _ in 0..<(1 + random.below(4)) where !bytes.isEmpty { bytes[position()] ^= UInt8(1 << random.below(8)) }
    case 1: // random bytes
        for _ in 0..<(1 + random.below(8)) where !bytes.isEmpty { bytes[position()] = UInt8(truncatingIfNeeded: random.next()) }
    case 2, 3: // an interesting little-endian integer of 1, 2, 4 or 8 bytes
        let width = [1, 2, 4, 8][random.below(4)]
        let value = interesting[random.below(interesting.count)]
        let at = position()
        for i in 0..<width where at + i < bytes.count { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(i))) }
    case 4: // a decimal number in text (safetensors' JSON header) replaced by an interesting one
        let digits = (0..<min(target, bytes.count)).filter { (0x30...0x39).contains(bytes[$0]) }
        guard let at = digits.isEmpty ? nil : digits[random.below(digits.count)] else { return }
        var end = at
        while end < bytes.count, (0x30...0x39).contains(bytes[end]) { end += 1 }
        var start = at
        while start > 0, (0x30...0x39).contains(bytes[start - 1]) { start -= 1 }
        let choices = ["0", "-1", "1", "4294967295", "4294967296", "9223372036854775807", "9223372036854775808",
                       "18446744073709551615", "4611686018427387904", "1e30", "2.5", "99999999999999999999999"]
        bytes.replaceSubrange(start..<end, with: Array(choices[random.below(choices.count)].utf8))
    case 5: // truncate
        bytes.removeLast(random.below(bytes.count + 1))
    case 6: // delete a chunk
        guard !bytes.isEmpty else { return }
        let at = position()
        bytes.removeSubrange(at..<min(bytes.count, at + 1 + random.below(64)))
    case 7: // duplicate a chunk
        guard !bytes.isEmpty else { return }
        let at = position()
        let chunk = Array(bytes[at..<min(bytes.count, at + 1 + random.below(64))])
        bytes.insert(contentsOf: chunk, at: position())
    default: // copy one region over another (swaps sizes and offsets around)
        guard bytes.count > 16 else { return }
        let length = 1 + random.below(16)
        let (from, to) = (random.below(max(1, target - length)), random.below(max(1, target - length)))
        guard from + length <= bytes.count, to + length <= bytes.count else { return }
        bytes.replaceSubrange(to..<(to + length), with: Array(bytes[from..<(from + length)]))
    }
}

struct Seed {
    var format: String
    var bytes: [UInt8]
    var fileName: String
    var config: Data?
    /// Bytes at the start that hold sizes and offsets.
    var header: Int
}

func seedHeaderLength(_ bytes: [UInt8], format: String) -> Int {
    switch format {
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

func loadSeeds(_ directories: [String], formats: [String]) -> [Seed] {
    var seeds: [Seed] = []
    for directory in directories {
        guard let walker = FileManager.default.enumerator(atPath: directory) else { continue }
        for case let relative as String in walker {
            let path = (directory as NSString).appendingPathComponent(relative)
            let format: String
            switch (path as NSString).pathExtension.lowercased() {
            case "safetensors": format = "safetensors"
            case "gguf": format = "gguf"
            case "bin": format = "torch"
            default: continue
            }
            guard formats.contains(format), let data = FileManager.default.contents(atPath: path), data.count < 4 << 20 else { continue }
            let folder = (path as NSString).deletingLastPathComponent
            let config = FileManager.default.contents(atPath: (folder as NSString).appendingPathComponent("config.json"))
            let bytes = [UInt8](data)
            let name = format == "safetensors" ? "model.safetensors" : format == "torch" ? "pytorch_model.bin" : "model.gguf"
            seeds.append(Seed(format: format, bytes: bytes, fileName: name, config: config, header: seedHeaderLength(bytes, format: format)))
        }
    }
    return seeds
}

/// Runs every reader over the checkpoint in `directory` holding `file`.
func exercise(format: String, file: String, directory: String) throws {
    switch format {
    case "safetensors":
        _ = SafetensorsFile.expectedLength(path: file)
        for slice in try SafetensorsFile(path: file).tensors.values { _ = try slice.floats() }
    case "gguf":
        _ = GGUFFile.expectedLength(path: file)
        _ = try GGUFFile(path: file)
        for slice in try GGUFCheckpoint(path: file).tensors.values { _ = try slice.floats() }
    default:
        _ = TorchCheckpointFile.expectedLength(path: file)
        for slice in try TorchCheckpointFile(path: file).tensors.values { _ = try slice.floats() }
    }
    let checkpoint = try Checkpoint(location: URL(fileURLWithPath: directory))
    for name in checkpoint.tensorNames {
        let slice = try checkpoint.tensor(name)
        _ = try slice.floats()
        if slice.shape.count == 2, slice.storedOrder != .transposed, slice.shape[0] > 0 {
            var row = [Float](repeating: 0, count: slice.shape[1])
            try row.withUnsafeMutableBufferPointer { try slice.expandRow(slice.shape[0] - 1, into: $0.baseAddress!) }
        }
    }
}

// MARK: - Main

setvbuf(stdout, nil, _IOLBF, 0) // progress lines appear as they come, even into a file
let options = parseOptions()
var limit = rlimit(rlim_cur: rlim_t(options.memoryGiB) << 30, rlim_max: rlim_t(options.memoryGiB) << 30)
setrlimit(Int32(RLIMIT_AS.rawValue), &limit)

let seeds = loadSeeds(options.seedDirectories, formats: options.formats)
guard !seeds.isEmpty else {
    FileHandle.standardError.write(Data("no seed files (*.safetensors, *.gguf, *.bin) under \(options.seedDirectories)\n".utf8))
    exit(2)
}
let work = options.work
let findings = (work as NSString).appendingPathComponent("findings")
try FileManager.default.createDirectory(atPath: findings, withIntermediateDirectories: true)

// The watchdog aborts a hung execution, leaving its input in last-input.
nonisolated(unsafe) var executionStarted = Date()
nonisolated(unsafe) var executionRunning = false
let watchdog = Thread {
    while true {
        sleep(1)
        if executionRunning, Date().timeIntervalSince(executionStarted) > options.timeout {
            FileHandle.standardError.write(Data("HANG: an execution ran over \(options.timeout) s; input in \(work)/last-input\n".utf8))
            abort()
        }
    }
}
watchdog.start()

var random = Random(state: options.seed)
var counts: [String: (runs: Int, accepted: Int, refused: Int)] = [:]
var findingCount = 0
let checkpointDirectory = (work as NSString).appendingPathComponent("checkpoint")
let started = Date()
for execution in 0..<(options.executions * Set(seeds.map(\.format)).count) {
    // Round-robin over formats so each gets its share of executions.
    let formats = Array(Set(seeds.map(\.format))).sorted()
    let format = formats[execution % formats.count]
    let candidates = seeds.filter { $0.format == format }
    let seed = candidates[random.below(candidates.count)]
    var bytes = seed.bytes
    for _ in 0..<(1 + random.below(4)) { mutate(&bytes, header: seed.header, &random) }

    try? FileManager.default.removeItem(atPath: checkpointDirectory)
    try FileManager.default.createDirectory(atPath: checkpointDirectory, withIntermediateDirectories: true)
    let file = (checkpointDirectory as NSString).appendingPathComponent(seed.fileName)
    try Data(bytes).write(to: URL(fileURLWithPath: file))
    try Data(bytes).write(to: URL(fileURLWithPath: (work as NSString).appendingPathComponent("last-input")))
    if let config = seed.config {
        try config.write(to: URL(fileURLWithPath: (checkpointDirectory as NSString).appendingPathComponent("config.json")))
    }

    executionStarted = Date()
    executionRunning = true
    var outcome = "accepted"
    do {
        try exercise(format: format, file: file, directory: checkpointDirectory)
    } catch let error as DroptraceError {
        outcome = error.description.contains("\n") ? "multi-line error: \(error.description)" : "refused"
    } catch {
        outcome = "not a DroptraceError: \(error)"
    }
    executionRunning = false

    var tally = counts[format] ?? (0, 0, 0)
    tally.runs += 1
    if outcome == "accepted" { tally.accepted += 1 } else if outcome == "refused" { tally.refused += 1 } else {
        findingCount += 1
        let kept = (findings as NSString).appendingPathComponent("finding-\(findingCount).\(format)")
        try Data(bytes).write(to: URL(fileURLWithPath: kept))
        print("FINDING \(kept): \(outcome.prefix(300))")
    }
    counts[format] = tally
    if (execution + 1) % 2000 == 0 {
        let summary = counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.runs)" }.joined(separator: ", ")
        print("\(execution + 1) executions (\(summary)), \(findingCount) findings, \(Int(Date().timeIntervalSince(started))) s")
    }
}
for (format, tally) in counts.sorted(by: { $0.key < $1.key }) {
    print("\(format): \(tally.runs) executions, \(tally.accepted) accepted, \(tally.refused) refused cleanly")
}
print("findings: \(findingCount) (crashes and hangs end the run; see \(work)/last-input)")
exit(findingCount == 0 ? 0 : 1)
