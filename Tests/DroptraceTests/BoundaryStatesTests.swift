import DroptraceSupport
import Foundation
@testable import Scoring
import TensorEngine
import Testing

/// Block-boundary states written to their temporary file in the background
/// still fail the score when a write fails, naming the file.
@Suite struct BoundaryStatesTests {
    func state(_ value: Float) -> Matrix { Matrix(rows: 4, cols: 8, data: [Float](repeating: value, count: 32)) }

    @Test func aFailedBackgroundWriteIsThrownByTheNextStep() throws {
        for failsAt in ["append", "pairTotals"] {
            let descriptor = open("/dev/full", O_WRONLY | O_CLOEXEC)
            try #require(descriptor >= 0)
            let states = BoundaryStates(rows: 4, cols: 8, descriptor: descriptor, path: "/dev/full")
            do {
                try states.append(state(1))  // queued; its failure comes later
                if failsAt == "append" { try states.append(state(2)) } else { _ = try states.pairTotals(lastRows: [3]) }
                Issue.record("a write to a full device was not reported (\(failsAt))")
            } catch let error as DroptraceError {
                #expect(error.path == "/dev/full")
                #expect(error.message.contains("cannot write"), "\(error)")
            }
        }
    }

    @Test func statesInTheFileGiveTheSamePairsAsInMemory() throws {
        let inFile = try BoundaryStates(rows: 4, cols: 8, expectedStates: 3, memoryBudget: 0)
        let inMemory = try BoundaryStates(rows: 4, cols: 8, expectedStates: 3)
        var values: [Matrix] = []
        for s in 0..<3 {
            values.append(Matrix(rows: 4, cols: 8, data: (0..<32).map { Float(($0 * (s + 3)) % 11) - 5 }))
        }
        for value in values {
            try inFile.append(value)
            try inMemory.append(value)
        }
        let (a, b) = (try inFile.pairTotals(lastRows: [3]), try inMemory.pairTotals(lastRows: [3]))
        #expect(a.map { $0.map(\.cosine) } == b.map { $0.map(\.cosine) })
        #expect(a.count == 2 && a[1].count == 2)
        #expect(a[0][0].cosine != 0)
    }
}
