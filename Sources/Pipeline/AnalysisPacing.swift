/// Whether a store rewrite within a run (one after every scored checkpoint)
/// carries the analysis.
///
/// The bootstrap makes one analysis cost O(C) in the C stored checkpoints,
/// so analysing after each of them is O(C²) over a first trace: for a
/// series of hundreds of quickly scored checkpoints it outgrows the scoring.
/// An intermediate rewrite analyses only while the last analysis took at
/// most a tenth of the time since it ended; otherwise the store holds the
/// rows (and perplexities) without `/analysis` until a later rewrite. The
/// run's last write always analyses (`TraceRun.finish`), so the store a
/// finished run leaves does not depend on this; one left by a killed run
/// may lack its analysis, which readers compute from the rows (as for
/// `droptrace score`'s files) and the next run writes.
struct AnalysisPacing {
    /// At most this share of the time goes to intermediate analyses.
    static let share = 0.1
    private var lastCost: Duration = .zero
    private var lastEnd: ContinuousClock.Instant?
    /// The time (a parameter so tests can step it instead of sleeping).
    private let now: () -> ContinuousClock.Instant

    init(now: @escaping () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        self.now = now
    }

    /// `analyse()` when it is due, timed; nil otherwise.
    mutating func analysis<Analysis>(_ analyse: () throws -> Analysis) rethrows -> Analysis? {
        if let lastEnd, (now() - lastEnd) * Self.share < lastCost { return nil }
        let start = now()
        let analysis = try analyse()
        let end = now()
        (lastCost, lastEnd) = (end - start, end)
        return analysis
    }
}
