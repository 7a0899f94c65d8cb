import Foundation
@testable import Pipeline
import Testing

/// `AnalysisPacing`: intermediate analyses take at most a tenth of a run.
@Suite struct AnalysisPacingTests {
    @Test func anAnalysisIsSkippedUntilTenTimesItsCostHasPassed() {
        var pacing = AnalysisPacing()
        var analysed = 0
        func slowAnalysis() -> Int {
            Thread.sleep(forTimeInterval: 0.1)
            analysed += 1
            return analysed
        }
        #expect(pacing.analysis(slowAnalysis) == 1, "the first rewrite of a run analyses")
        #expect(pacing.analysis(slowAnalysis) == nil, "0.1 s of analysis just now: the next rewrite does not")
        #expect(analysed == 1)
        Thread.sleep(forTimeInterval: 1.2)
        #expect(pacing.analysis(slowAnalysis) == 2, "over ten times its cost later, it does again")
        #expect(pacing.analysis { 7 } == nil, "and waits again")
    }

    @Test func quickAnalysesAreNeverSkipped() {
        var pacing = AnalysisPacing()
        for value in 0..<3 {
            #expect(pacing.analysis { value } == value)
            Thread.sleep(forTimeInterval: 0.01)
        }
    }
}
