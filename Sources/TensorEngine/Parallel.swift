import Dispatch
import DroptraceSupport
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

    /// Threads a run starts beside the engine's: the block prefetch, the
    /// hidden-state writer and libdispatch's own.
    static let helpers = 3

    /// Throws unless the engine's threads and its helpers can all run at
    /// once: where the limit on the user's processes and threads
    /// (RLIMIT_NPROC, `ulimit -u`, a container's pids limit) leaves fewer,
    /// libdispatch waits forever for a thread it cannot start. Starts that
    /// many threads, each waiting on a pipe, and ends them.
    /// - Throws: `DroptraceError` naming the limit.
    public static func checkCanStart() throws {
        let wanted = count + helpers
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { return }  // no descriptor to spare: the run itself will say so
        var started: [pthread_t] = []
        var failure: Int32 = 0
        for _ in 0..<wanted {
            var thread = pthread_t()
            failure = pthread_create(&thread, nil, { argument in
                var byte: UInt8 = 0
                _ = read(Int32(Int(bitPattern: argument)), &byte, 1)  // returns at the write end's close
                return nil
            }, UnsafeMutableRawPointer(bitPattern: Int(ends[0])))
            guard failure == 0 else { break }
            started.append(thread)
        }
        close(ends[1])
        for thread in started { pthread_join(thread, nil) }
        close(ends[0])
        guard failure == 0 else {
            throw DroptraceError(
                "cannot start \(wanted) threads (\(count) for --threads, \(helpers) beside them) after \(started.count): "
                    + "\(ProcessLimits.startFailure(failure)); raise the limit, or use fewer --threads")
        }
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
