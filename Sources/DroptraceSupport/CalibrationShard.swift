/// Shard `index` (0-based) of `count` of a calibration set: the contiguous
/// windows [index·S/count, (index+1)·S/count) of its S windows, in order, so
/// the shards' sequences concatenated in index order are the whole set.
public struct CalibrationShard: Sendable, Equatable, Hashable, CustomStringConvertible {
    public let index: Int
    public let count: Int

    /// Shards per set beyond this are refused: a finer split only adds tasks.
    public static let maximumCount = 100_000

    /// - Throws: `DroptraceError` unless 1 ≤ count ≤ `maximumCount` and 0 ≤ index < count.
    public init(index: Int, count: Int) throws {
        guard (1...Self.maximumCount).contains(count) else {
            throw DroptraceError("the number of shards must be between 1 and \(Self.maximumCount), not \(count)")
        }
        guard (0..<count).contains(index) else {
            throw DroptraceError("shard \(index) does not exist: shards of \(count) are numbered 0 to \(count - 1)")
        }
        self.index = index
        self.count = count
    }

    /// The windows of this shard among `total` windows (empty when total < count).
    public func windows(of total: Int) -> Range<Int> {
        func boundary(_ shard: Int) -> Int {
            // total·shard / count without overflow: the quotient is at most total.
            count.dividingFullWidth(max(total, 0).multipliedFullWidth(by: shard)).quotient
        }
        return boundary(index)..<boundary(index + 1)
    }

    /// "shard I of N".
    public var description: String { "shard \(index) of \(count)" }
}
