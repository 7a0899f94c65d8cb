import Dispatch
import Foundation

/// How many threads the engine uses, for its GEMMs and its own loops.
///
/// OpenBLAS itself stays single-threaded: the engine splits each large GEMM
/// across its own workers (`Linear`), so one pool of threads does all the
/// work. OpenBLAS's own threads would otherwise spin (sched_yield) for a
/// while after every GEMM, stealing the cores from the elementwise phases
/// that follow it.
public enum EngineThreads {
    nonisolated(unsafe) private static var configured = ProcessInfo.processInfo.activeProcessorCount
    private static let blasPinned: Void = BLAS.setThreads(1)

    public static var count: Int {
        _ = blasPinned
        return configured
    }

    /// More threads than any machine has cores; a bound that keeps the
    /// engine's work splits (threads × rows) far from overflow.
    public static let maximum = 4096

    /// Sets the engine's thread count (a process-wide setting), within 1...`maximum`.
    public static func set(_ count: Int) {
        _ = blasPinned
        configured = min(max(1, count), maximum)
    }
}

/// Runs `body` over `0..<count` split into contiguous ranges, one per thread.
///
/// Small inputs run inline: spawning work costs more than a short loop.
public func parallelFor(chunks count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
    let workers = min(EngineThreads.count, max(1, count / max(1, minimumChunk)))
    if workers <= 1 {
        body(0..<count)
        return
    }
    let step = (count + workers - 1) / workers
    DispatchQueue.concurrentPerform(iterations: workers) { worker in
        let start = worker * step
        let end = min(count, start + step)
        if start < end { body(start..<end) }
    }
}

/// Runs `body(task, worker)` for every task, with tasks dealt round-robin to a
/// fixed set of workers so each worker can own a scratch buffer.
public func parallelTasks(_ count: Int, _ body: (_ task: Int, _ worker: Int) -> Void) {
    let workers = min(EngineThreads.count, count)
    if workers <= 1 {
        for task in 0..<count { body(task, 0) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { worker in
        var task = worker
        while task < count {
            body(task, worker)
            task += workers
        }
    }
}
