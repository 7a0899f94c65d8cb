import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The process's resource limits, made workable before a command runs: the
/// open-file limit raised to its hard limit (as build tools and servers
/// do), and limits too small to run in refused in one line instead of a
/// crash deep in a library (libdispatch traps when it cannot open a
/// descriptor; OpenBLAS and oneDNN reserve thread buffers of tens of MB).
public enum ProcessLimits {
    /// Open files: the standard streams, a run lock, a store, weights, a
    /// tokenizer, and the thread pool's own descriptors.
    public static let minimumOpenFiles: UInt64 = 64
    /// Address space (`ulimit -v`): the libraries' thread buffers and a
    /// small model's layer; larger models fail later naming what did not fit.
    public static let minimumAddressSpace: UInt64 = 1 << 30

    /// Why a thread or process could not start (`code`: pthread_create's
    /// or fork's errno), in words: EAGAIN is a limit the C library's text
    /// does not name — the user's processes and threads, or the address
    /// space each thread's stack is taken from, whichever is set lower.
    public static func startFailure(_ code: Int32) -> String {
        let text = SystemError.describe(code)
        guard code == EAGAIN else { return text }
        var space = rlimit()
        let spaceLimited = getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &space) == 0 && space.rlim_cur != rlim_t.max
        let processes = "this user's processes and threads, ulimit -u or a container's pids limit"
        return text + (spaceLimited
            ? " (a limit is reached: \(processes), or the address space, ulimit -v, that thread stacks take)"
            : " (the limit on \(processes), is reached)")
    }

    /// Raises the soft open-file limit and checks both limits.
    /// - Throws: `DroptraceError` naming the limit, its value and the least
    ///   droptrace runs with.
    public static func prepare() throws {
        let unlimited = rlim_t.max  // RLIM_INFINITY, which Swift imports as -1
        var files = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &files) == 0, files.rlim_cur < files.rlim_max {
            var raised = files
            raised.rlim_cur = files.rlim_max == unlimited ? max(files.rlim_cur, 65_536) : files.rlim_max
            if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &raised) == 0 { files = raised }
        }
        if files.rlim_cur != unlimited && UInt64(files.rlim_cur) < minimumOpenFiles {
            throw DroptraceError(
                "the open-file limit (ulimit -n) is \(files.rlim_cur), hard limit \(files.rlim_max == unlimited ? "unlimited" : String(files.rlim_max)); "
                    + "droptrace needs at least \(minimumOpenFiles) open files")
        }
        var space = rlimit()
        if getrlimit(__rlimit_resource_t(RLIMIT_AS.rawValue), &space) == 0, space.rlim_cur != unlimited, UInt64(space.rlim_cur) < minimumAddressSpace {
            throw DroptraceError(
                "the address-space limit (ulimit -v) is \(space.rlim_cur >> 20) MiB; droptrace needs at least "
                    + "\(minimumAddressSpace >> 20) MiB (its matrix libraries reserve thread buffers)")
        }
    }
}
