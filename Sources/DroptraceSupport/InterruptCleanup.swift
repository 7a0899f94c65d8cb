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
/// With a `notice`, the handler first writes it to standard error as one
/// log line ("<UTC time> error: <notice>"), so a log says the run was
/// interrupted and what was removed.
///
/// The handler makes only async-signal-safe calls (clock_gettime, write,
/// unlink, rmdir, _exit, signal, raise) on memory prepared before it can
/// run. One instance at a time per process: a second waits in `init` until
/// the first is gone (two at once, two exports in one process, freed the
/// same registered paths twice). Never nest two on one thread.
public final class InterruptCleanup {
    private static let exclusive = DispatchSemaphore(value: 1)
    private static let capacity = 4096
    nonisolated(unsafe) private static var paths =
        UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: capacity)
    nonisolated(unsafe) private static var count = 0
    /// The exit status, or −1 to end as the signal would.
    nonisolated(unsafe) private static var exitCode: Int32 = -1
    /// " error: <notice>\n", or nil; and room for the timestamp before it.
    nonisolated(unsafe) private static var notice: UnsafeMutableBufferPointer<UInt8>?
    nonisolated(unsafe) private static var timestamp = UnsafeMutablePointer<UInt8>.allocate(capacity: 20)
    private let signals: [Int32]

    /// - Parameters:
    ///   - signals: e.g. SIGINT, SIGTERM, SIGHUP.
    ///   - exitCode: the status to exit with; nil ends the process by the signal itself.
    ///   - notice: the error line written when a signal comes, e.g. "<path>: interrupted; … removed".
    public init(signals: [Int32], exitCode: Int32? = nil, notice: String? = nil) {
        Self.exclusive.wait()
        self.signals = signals
        Self.count = 0
        Self.exitCode = exitCode ?? -1
        Self.notice = notice.map { text in
            let bytes = Array(" error: \(text)\n".utf8)
            let buffer = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: bytes.count)
            _ = buffer.initialize(from: bytes)
            return buffer
        }
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for number in signals {
            signal(number) { number in
                InterruptCleanup.writeNotice()
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

    /// Writes the notice, if any, after the current UTC time as the log
    /// writes it (YYYY-MM-DDTHH:MM:SSZ), computed without the C library's
    /// time functions, which a signal handler may not call.
    private static func writeNotice() {
        guard let notice else { return }
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let seconds = Int(now.tv_sec), daySeconds = seconds % 86_400
        // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
        let z = seconds / 86_400 + 719_468, era = z / 146_097, dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shiftedMonth = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shiftedMonth + 2) / 5 + 1
        let month = shiftedMonth < 10 ? shiftedMonth + 3 : shiftedMonth - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        var at = 0
        put(year, digits: 4, then: 45, at: &at)  // -
        put(month, digits: 2, then: 45, at: &at)
        put(day, digits: 2, then: 84, at: &at)  // T
        put(daySeconds / 3600, digits: 2, then: 58, at: &at)  // :
        put(daySeconds / 60 % 60, digits: 2, then: 58, at: &at)
        put(daySeconds % 60, digits: 2, then: 90, at: &at)  // Z
        _ = write(2, timestamp, at)
        _ = write(2, notice.baseAddress, notice.count)
    }

    /// `value`'s last `digits` decimal digits and `separator` into `timestamp` from `at` on.
    private static func put(_ value: Int, digits: Int, then separator: UInt8, at: inout Int) {
        var divisor = 1
        for _ in 1..<digits { divisor *= 10 }
        for _ in 0..<digits {
            timestamp[at] = UInt8(48 + (value / divisor) % 10)
            at += 1
            divisor /= 10
        }
        timestamp[at] = separator
        at += 1
    }

    deinit {
        for number in signals { signal(number, SIG_DFL) }
        let registered = Self.count
        Self.count = 0
        Self.notice?.deallocate()
        Self.notice = nil
        for index in 0..<registered {
            free(Self.paths[index])
            Self.paths[index] = nil
        }
        Self.exclusive.signal()
    }
}
