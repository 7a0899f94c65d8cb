import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// While alive, the given signals first remove the paths registered with
/// `add` (newest first: files unlinked, directories removed once empty) and
/// then end the process: with `exitCode` when given, else as the signal
/// would have. So a run interrupted while it writes files under temporary
/// names (an export's staging directory, a shard task's partial result)
/// leaves nothing behind.
///
/// The handler makes only async-signal-safe calls (unlink, rmdir, _exit,
/// signal, raise) on paths copied before it can run. One instance at a
/// time per process.
public final class InterruptCleanup {
    private static let capacity = 4096
    nonisolated(unsafe) private static var paths =
        UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: capacity)
    nonisolated(unsafe) private static var count = 0
    /// The exit status, or −1 to end as the signal would.
    nonisolated(unsafe) private static var exitCode: Int32 = -1
    private let signals: [Int32]

    /// - Parameters:
    ///   - signals: e.g. SIGINT, SIGTERM, SIGHUP.
    ///   - exitCode: the status to exit with; nil ends the process by the signal itself.
    public init(signals: [Int32], exitCode: Int32? = nil) {
        self.signals = signals
        Self.count = 0
        Self.exitCode = exitCode ?? -1
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for number in signals {
            signal(number) { number in
                for index in stride(from: InterruptCleanup.count - 1, through: 0, by: -1) {
                    guard let path = InterruptCleanup.paths[index] else { continue }
                    if unlink(path) != 0 { rmdir(path) }
                }
                if InterruptCleanup.exitCode >= 0 { _exit(InterruptCleanup.exitCode) }
                signal(number, SIG_DFL)
                raise(number)
            }
            sigaddset(&unblock, number)
        }
        // A blocked mask is inherited from whoever started us (some
        // launchers block SIGTERM): the signal would wait until the end.
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
    }

    /// Registers `path` (a file, or a directory to remove once its
    /// registered files are gone) before it is created. Paths beyond the
    /// first 4096 are not removed.
    public func add(_ path: String) {
        guard Self.count < Self.capacity else { return }
        Self.paths[Self.count] = strdup(path)
        Self.count += 1
    }

    deinit {
        for number in signals { signal(number, SIG_DFL) }
        let registered = Self.count
        Self.count = 0
        for index in 0..<registered {
            free(Self.paths[index])
            Self.paths[index] = nil
        }
    }
}
