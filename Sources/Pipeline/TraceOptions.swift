import CheckpointIO
import DroptraceSupport
import Evaluation
import Foundation
import ScoreStore
import Scoring
import TensorEngine

/// Everything one `trace` (or `run`) invocation needs.
public struct TraceOptions: Sendable {
    /// Where the checkpoints come from.
    public enum Checkpoints: Sendable {
        /// A run's output directory, scanned for `checkpoint-<step>`-style subdirectories.
        case series(URL)
        /// An explicit list of checkpoint directories.
        case list([URL])

        /// The checkpoints' row names (`CheckpointDiscovery.rowName(of:)`) in
        /// the order listed; [] for a series directory.
        public var listedNames: [String] {
            guard case .list(let directories) = self else { return [] }
            return directories.map(CheckpointDiscovery.rowName(of:))
        }

        /// Whether `directory` is one of these checkpoints: listed, or an
        /// entry of the series directory named like a checkpoint. Compared
        /// by name in their directory resolved: an entry may be a link to a
        /// checkpoint elsewhere, which is the series' all the same.
        public func contains(_ directory: URL) -> Bool {
            func place(_ url: URL) -> (directory: String, name: String) {
                let url = url.standardizedFileURL
                return (ResolvedPath.of(url.deletingLastPathComponent()), url.lastPathComponent)
            }
            let (parent, name) = place(directory)
            switch self {
            case .series(let series): return CheckpointName.parse(name) != nil && parent == ResolvedPath.of(series)
            case .list(let directories): return directories.contains { place($0) == (parent, name) }
            }
        }
    }

    public var checkpoints: Checkpoints
    public var calibration: CalibrationSource
    public var output: URL
    /// Drop-k sizes for the analysis, each from 1 to the layer count of the
    /// series' first finished checkpoint (a run refuses others before it
    /// creates anything); nil: 25% and 50% of the layers each module is in.
    public var dropK: [Int]?
    /// How `dropK` was given, for a message about its values.
    public var dropKSetting = UserSetting(name: "drop-k")
    /// Rescore every checkpoint, even those already in the store.
    public var force: Bool
    /// The report's title; nil: derived from the series.
    public var title: String?

    /// Why `title` cannot title a report, nil when it can: it is one line of
    /// a Markdown heading and an HDF5 string attribute (C strings end at NUL).
    public static func titleProblem(_ title: String) -> String? {
        if title.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return "title must be one line without control characters (NUL, tab, line breaks)"
        }
        // An empty heading; leaving the title out gives the default one.
        return title.allSatisfy(\.isWhitespace) ? "title is empty; leave it out for the default title" : nil
    }
    /// Evaluation data: when given, each checkpoint's perplexity in full and
    /// without its own / the final checkpoint's drop-k attention layers.
    public var evaluation: CalibrationSource?
    /// lm-evaluation-harness tasks: when given, each checkpoint's accuracy in
    /// full and without its own drop-k attention layers.
    public var tasks: [TaskRequest] = []
    /// Few-shot examples per prompt for tasks without their own count; nil: 0.
    public var numFewshot: Int?
    /// Seconds an incomplete checkpoint may rest unchanged and still count as
    /// being written; after that it is a failure (see `CheckpointDiscovery`).
    public var settleTime: TimeInterval = CheckpointDiscovery.defaultSettleTime
    /// The arithmetic checkpoints are scored in, recorded in the store; a
    /// store is never continued in the other one (without `force`). The
    /// caller sets `EnginePrecision` to it before anything is scored.
    public var precision: Precision = .f32

    public init(
        checkpoints: Checkpoints, calibration: CalibrationSource, output: URL, dropK: [Int]? = nil,
        force: Bool = false, title: String? = nil, evaluation: CalibrationSource? = nil
    ) {
        self.evaluation = evaluation
        self.checkpoints = checkpoints
        self.calibration = calibration
        self.output = output
        self.dropK = dropK
        self.force = force
        self.title = title
    }

    public var storeURL: URL { output.appendingPathComponent(ScoreFile.outputFileName) }
}
