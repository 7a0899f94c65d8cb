import DroptraceSupport
import ScoreStore
import TensorEngine

extension ScoreFileMetadata {
    /// The precision of a store's rows (`precision`, "f32" in older stores).
    /// The store's reader accepts only `ScoreFileLayout.precisions`, which are `Precision`'s names.
    public var storedPrecision: Precision { Precision(rawValue: precision) ?? .f32 }

    /// Records that the rows are scored in `precision` by the engine's kernels for it.
    mutating func record(_ precision: Precision) {
        self.precision = precision.rawValue
        matrixKernel = MatrixKernels.description(for: precision)
    }

    /// Refuses to add rows scored in `precision` to the store at `path`
    /// when its rows were scored in the other one: a series in two
    /// arithmetics would compare rounding, not training.
    /// - Throws: `DroptraceError` naming the store and the ways on.
    public func checkContinued(in precision: Precision, store path: String) throws {
        let stored = storedPrecision
        guard stored != precision else { return }
        throw DroptraceError(
            "was scored in \(stored.rawValue) precision, this run's is \(precision.rawValue); continue it in \(stored.rawValue) (--precision \(stored.rawValue), or precision: \(stored.rawValue) in the pipeline file), rescore every checkpoint in \(precision.rawValue) with --force (trace or run), or use another output directory",
            path: path)
    }
}
