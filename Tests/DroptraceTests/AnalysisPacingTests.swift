import Foundation
@testable import Pipeline
import Testing

/// `AnalysisPacing`: intermediate analyses take at most a tenth of a run.
@Suite struct AnalysisPacingTests {
    /// A clock the test moves by hand: no sleeping, so a loaded machine changes nothing.
    final class SteppedClock {
        var instant = ContinuousClock.now
        func advance(_ seconds: Double) { instant = instant.advanced(by: .seconds(seconds)) }
    }

    @Test func anAnalysisIsSkippedUntilTenTimesItsCostHasPassed() {
        let clock = SteppedClock()
        var pacing = AnalysisPacing(now: { clock.instant })
        var analysed = 0
        func slowAnalysis() -> Int {
            clock.advance(0.1)
            analysed += 1
            return analysed
        }
        #expect(pacing.analysis(slowAnalysis) == 1, "the first rewrite of a run analyses")
        clock.advance(0.5)
        #expect(pacing.analysis(slowAnalysis) == nil, "0.1 s of analysis 0.5 s ago: the next rewrite does not")
        #expect(analysed == 1)
        clock.advance(0.6)
        #expect(pacing.analysis(slowAnalysis) == 2, "over ten times its cost later, it does again")
        #expect(pacing.analysis { 7 } == nil, "and waits again")
    }

    @Test func quickAnalysesAreNeverSkipped() {
        let clock = SteppedClock()
        var pacing = AnalysisPacing(now: { clock.instant })
        for value in 0..<3 {
            #expect(pacing.analysis { value } == value, "no time spent analysing: every rewrite analyses")
            clock.advance(0.01)
        }
    }
}
