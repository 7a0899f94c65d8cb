// droptrace-fuzz: an in-process mutation fuzzer for every input droptrace
// reads: weight files (safetensors, GGUF, torch.save zip and legacy),
// config.json, tokenizer.json, calibration JSONL/text and pipeline YAML.
// See fuzz/README.md; the targets are in Targets.swift.
//
// Each execution mutates one seed file, writes it into a scratch directory
// (beside symlinks to the files its readers need: the seed's weights for a
// config.json, its config.json for weights) and runs the target's readers.
// A clean outcome is success or one `DroptraceError` of one line. Anything
// else is a finding: another error type, a multi-line message, a crash (the
// input is kept in `last-input` and the run dies), a hang (a watchdog aborts
// after --timeout seconds) or an allocation the address-space cap refuses.

import DroptraceSupport
import Tokenization
import Foundation
#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var targets = allTargets
    var executions = 20_000
    var seed: UInt64 = 1
    var timeout = 10.0
    var memoryGiB = 2
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
        case "--target", "--format": options.targets = value().split(separator: ",").map(String.init)
        case "--executions": options.executions = Int(value())!
        case "--seed": options.seed = UInt64(value())!
        case "--timeout": options.timeout = Double(value())!
        case "--memory-gib": options.memoryGiB = Int(value())!
        case "--work": options.work = value()
        case "-h", "--help":
            print("""
                usage: droptrace-fuzz [--target \(allTargets.joined(separator: ","))] [--executions N]
                                      [--seed S] [--timeout SECONDS] [--memory-gib G] [--work DIR] SEED_DIR...
                Seeds under SEED_DIRs: *.safetensors, *.gguf, *.bin; config.json beside weights; tokenizer.json;
                calibration *.jsonl, *.txt; pipeline *.yaml. --executions is per target.
                """)
            exit(0)
        default: options.seedDirectories.append(argument)
        }
    }
    return options
}

// MARK: - Main

setvbuf(stdout, nil, _IOLBF, 0) // progress lines appear as they come, even into a file
let options = parseOptions()
var limit = rlimit(rlim_cur: rlim_t(options.memoryGiB) << 30, rlim_max: rlim_t(options.memoryGiB) << 30)
setrlimit(Int32(RLIMIT_AS.rawValue), &limit)

let seeds = loadSeeds(options.seedDirectories, targets: options.targets)
guard !seeds.isEmpty else {
    FileHandle.standardError.write(Data("no seed files for \(options.targets) under \(options.seedDirectories)\n".utf8))
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
let scratch = (work as NSString).appendingPathComponent("checkpoint")
let targets = Array(Set(seeds.map(\.target))).sorted()
calibrationTokenizer = loadSeeds(options.seedDirectories, targets: ["tokenizer"]).lazy
    .compactMap { try? Tokenizer(contentsOf: URL(fileURLWithPath: $0.path)) }.first
let started = Date()
for execution in 0..<(options.executions * targets.count) {
    // Round-robin over targets so each gets its share of executions.
    let target = targets[execution % targets.count]
    let candidates = seeds.filter { $0.target == target }
    let seed = candidates[random.below(candidates.count)]
    var bytes = seed.bytes
    mutate(&bytes, seed: seed, &random)

    try? FileManager.default.removeItem(atPath: scratch)
    try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
    let file = (scratch as NSString).appendingPathComponent(seed.fileName)
    try Data(bytes).write(to: URL(fileURLWithPath: file))
    try Data(bytes).write(to: URL(fileURLWithPath: (work as NSString).appendingPathComponent("last-input")))
    try Data("\(target) \(seed.fileName)\n".utf8).write(to: URL(fileURLWithPath: (work as NSString).appendingPathComponent("last-target")))
    for companion in seed.companions {
        let link = (scratch as NSString).appendingPathComponent((companion as NSString).lastPathComponent)
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: companion)
    }

    executionStarted = Date()
    executionRunning = true
    var outcome = "accepted"
    do {
        try exercise(target: target, file: file, directory: scratch, &random)
    } catch let error as DroptraceError {
        outcome = error.description.contains("\n") ? "multi-line error: \(error.description)" : "refused"
    } catch {
        outcome = "not a DroptraceError: \(error)"
    }
    executionRunning = false

    var tally = counts[target] ?? (0, 0, 0)
    tally.runs += 1
    if outcome == "accepted" { tally.accepted += 1 } else if outcome == "refused" { tally.refused += 1 } else {
        findingCount += 1
        let kept = (findings as NSString).appendingPathComponent("finding-\(findingCount)-\(target)-\(seed.fileName)")
        try Data(bytes).write(to: URL(fileURLWithPath: kept))
        print("FINDING \(kept): \(outcome.prefix(300))")
    }
    counts[target] = tally
    if (execution + 1) % 2000 == 0 {
        let summary = counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.runs)" }.joined(separator: ", ")
        print("\(execution + 1) executions (\(summary)), \(findingCount) findings, \(Int(Date().timeIntervalSince(started))) s")
    }
}
for (target, tally) in counts.sorted(by: { $0.key < $1.key }) {
    print("\(target): \(tally.runs) executions, \(tally.accepted) accepted, \(tally.refused) refused cleanly")
}
print("findings: \(findingCount) (crashes and hangs end the run; see \(work)/last-input and last-target)")
exit(findingCount == 0 ? 0 : 1)
