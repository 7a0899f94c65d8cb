import DroptraceSupport
import Foundation
import Testing

/// `InterruptCleanup` keeps its paths where a signal handler can read them,
/// one instance at a time: two exports at once in one process (the export
/// round-trip tests) freed each other's registered paths, a double free
/// that aborted the process now and then.
@Suite struct InterruptCleanupTests {
    @Test func instancesOnSeveralThreadsTakeTurns() {
        let active = ManagedAtomicCounter()
        DispatchQueue.concurrentPerform(iterations: 16) { index in
            let cleanup = InterruptCleanup(signals: [SIGUSR2], notice: "test \(index)")
            let inside = active.increment()
            for path in 0..<64 { cleanup.add("/nonexistent/\(index)/\(path)") }
            usleep(200)
            #expect(inside == 1, "two instances alive at once")
            active.decrement()
            withExtendedLifetime(cleanup) {}
        }
    }
}

/// A counter several threads change under a lock.
private final class ManagedAtomicCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0

    func increment() -> Int { lock.withLock { value += 1; return value } }
    func decrement() { lock.withLock { value -= 1 } }
}
