import DroptraceSupport
import Foundation
import Yams

/// A pipeline file that compares runs instead of tracing one, the
/// declarative form of `droptrace compare`; relative paths are relative to
/// the file, as in `PipelineFile`:
///
///     title: Pythia 160m, three seeds        # optional
///     compare: [../reports/seed1, ../reports/seed2, ../reports/seed3]
///     output: ../reports/seeds
public struct ComparePipelineFile: Decodable {
    public var title: String?
    /// Output directories of `trace` (or score files), at least two.
    public var compare: [String]
    public var output: String

    enum CodingKeys: String, CodingKey, CaseIterable {
        case title, compare, output
    }

    /// The stores and the output directory, resolved against `base`.
    public func paths(relativeTo base: URL) -> (stores: [URL], output: URL) {
        func resolve(_ path: String) -> URL {
            path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path).standardizedFileURL
        }
        return (compare.map(resolve), resolve(output))
    }
}

/// What a pipeline file asks for: a trace (`series` or `checkpoints`) or a
/// comparison (`compare`).
public enum PipelineDocument {
    case trace(PipelineFile)
    case compare(ComparePipelineFile)

    /// Reads a pipeline file with the guards of `PipelineFile.load`; a
    /// mapping with a `compare` setting is a comparison, anything else a trace.
    /// - Throws: `DroptraceError` naming the file.
    public static func load(_ url: URL) throws -> PipelineDocument {
        let text = try PipelineYAML.read(url)
        guard let mapping = (try? Yams.compose(yaml: text))?.mapping,
              mapping.keys.contains(where: { $0.string == ComparePipelineFile.CodingKeys.compare.rawValue })
        else { return .trace(try PipelineFile.load(url)) }
        try PipelineYAML.checkShape(mapping, path: url.path)
        try PipelineYAML.checkPaths(mapping, path: url.path)
        try PipelineYAML.checkQuotedTitle(mapping, path: url.path)
        let known = ComparePipelineFile.CodingKeys.allCases.map(\.rawValue)
        if let unknown = mapping.keys.compactMap(\.string).sorted().first(where: { !known.contains($0) }) {
            throw DroptraceError(
                "unknown setting \"\(SystemError.oneLine(unknown))\" in a comparison (known: "
                    + "\(known.sorted().joined(separator: ", ")); a pipeline file either traces or compares",
                path: url.path)
        }
        let file = try PipelineYAML.decode(ComparePipelineFile.self, from: text, path: url.path)
        guard file.compare.count >= 2 else {
            throw DroptraceError("\"compare\" lists \(file.compare.count) store(s); give at least two", path: url.path)
        }
        if let problem = file.title.flatMap(TraceOptions.titleProblem) { throw DroptraceError(problem, path: url.path) }
        return .compare(file)
    }
}
