import DroptraceSupport
import Foundation
import Scoring
import Yams

/// A pipeline file (YAML), the declarative form of `droptrace trace`.
/// Relative paths are relative to the pipeline file itself, so a file in
/// `pipelines/` runs the same from any working directory.
///
///     title: Demo series
///     series: ../data/demo-series          # or: checkpoints: [a, b, ...]
///     calibration: ../data/calibration.txt
///     seq_len: 128
///     samples: 16
///     drop_k: [2, 4]
///     eval: ../data/eval.txt               # optional: perplexity full vs dropped
///     output: ../reports/demo
public struct PipelineFile: Decodable {
    public var title: String?
    public var series: String?
    public var checkpoints: [String]?
    public var calibration: String
    public var seqLen: Int?
    public var samples: Int?
    public var dropK: [Int]?
    public var output: String
    /// Evaluation text or JSONL: perplexity per checkpoint, full and dropped.
    public var eval: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case title, series, checkpoints, calibration, samples, output, eval
        case seqLen = "seq_len"
        case dropK = "drop_k"
    }

    /// Reads and checks a pipeline file; every problem names the file.
    public static func load(_ url: URL) throws -> PipelineFile {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw DroptraceError("pipeline file not found", path: url.path)
        }
        let text = String(decoding: data, as: UTF8.self)
        let top: Any?
        do { top = try Yams.load(yaml: text) } catch {
            throw DroptraceError("not valid YAML: \(String(describing: error).split(separator: "\n").first ?? "")", path: url.path)
        }
        guard let keys = (top as? [String: Any])?.keys else {
            throw DroptraceError("expected a mapping of pipeline settings", path: url.path)
        }
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        if let unknown = keys.sorted().first(where: { !known.contains($0) }) {
            throw DroptraceError(
                "unknown setting \"\(unknown)\" (known: \(known.sorted().joined(separator: ", ")))", path: url.path)
        }
        let file: PipelineFile
        do { file = try YAMLDecoder().decode(PipelineFile.self, from: text) } catch let DecodingError.keyNotFound(key, _) {
            throw DroptraceError("missing setting \"\(key.stringValue)\"", path: url.path)
        } catch let DecodingError.typeMismatch(_, context) {
            throw DroptraceError(
                "setting \"\(context.codingPath.map(\.stringValue).joined(separator: "."))\" has the wrong type", path: url.path)
        } catch {
            throw DroptraceError("cannot read: \(error)", path: url.path)
        }
        guard (file.series == nil) != (file.checkpoints == nil) else {
            throw DroptraceError("give exactly one of \"series\" (a directory) or \"checkpoints\" (a list)", path: url.path)
        }
        if let seqLen = file.seqLen, seqLen < 1 { throw DroptraceError("seq_len must be at least 1", path: url.path) }
        if let samples = file.samples, samples < 1 { throw DroptraceError("samples must be at least 1", path: url.path) }
        if let dropK = file.dropK, dropK.contains(where: { $0 < 1 }) {
            throw DroptraceError("drop_k values must be at least 1", path: url.path)
        }
        return file
    }

    /// The trace these settings describe, paths resolved against `base`.
    public func options(relativeTo base: URL, force: Bool) -> TraceOptions {
        func resolve(_ path: String) -> URL {
            path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path).standardizedFileURL
        }
        return TraceOptions(
            checkpoints: series.map { .series(resolve($0)) } ?? .list((checkpoints ?? []).map(resolve)),
            calibration: CalibrationSource(url: resolve(calibration), seqLen: seqLen, samples: samples),
            output: resolve(output), dropK: dropK, force: force, title: title,
            evaluation: eval.map { CalibrationSource(url: resolve($0), seqLen: seqLen, samples: samples) })
    }
}
