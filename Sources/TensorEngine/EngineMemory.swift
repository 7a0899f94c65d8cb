import Foundation

/// How the process allocates the engine's large buffers.
public enum EngineMemory {
    /// Bytes the process may use: physical memory, or the address-space
    /// limit (RLIMIT_AS) when one is set below it.
    public static var available: Int {
        let physical = Int(clamping: ProcessInfo.processInfo.physicalMemory)
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return physical }
        return min(physical, Int(clamping: limit.rlim_cur))
    }

    /// Keeps freed buffers in the heap for reuse instead of returning them to
    /// the kernel.
    ///
    /// Every layer allocates activation matrices of tens to hundreds of MB.
    /// glibc serves blocks that large with a fresh mmap each time, whose pages
    /// the kernel zero-fills on first touch and unmaps again on free: on a
    /// 12-layer model that was ~400k page faults and about a tenth of the CPU
    /// time. From the heap, the next layer's matrices reuse the same pages.
    /// Peak memory stays that of the largest layer's live buffers.
    ///
    /// All threads share the one heap: with glibc's per-thread arenas, the
    /// buffers the block prefetch thread and the engine's workers freed were
    /// kept apart, each heap holding its own free space, which put up to
    /// 250 MB (a fifth) on the peak of a 1.1B model's pass, varying from
    /// run to run with the threads' timing. The engine's allocations are
    /// few and large, so one heap's lock costs nothing measurable.
    public static func reuseFreedBuffers() {
        #if os(Linux)
        // <malloc.h> is not part of Swift's Glibc module; these are its values.
        let trimThreshold: Int32 = -1, mmapMax: Int32 = -4, arenaMax: Int32 = -8
        _ = glibcMallopt(mmapMax, 0)
        _ = glibcMallopt(trimThreshold, Int32.max)
        _ = glibcMallopt(arenaMax, 1)
        #endif
    }
}

#if os(Linux)
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
#endif
