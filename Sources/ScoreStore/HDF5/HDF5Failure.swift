internal import CHDF5
import DroptraceSupport

/// Turns HDF5 return codes into `DroptraceError`s that name the file and say
/// what went wrong, using HDF5's own error stack for the detail.
enum HDF5Failure {
    /// A one-line error: `path: <what we were doing> (<HDF5's reason>)`.
    static func error(_ what: String, path: String) -> DroptraceError {
        if let reason = currentReason(), !reason.isEmpty {
            return DroptraceError("\(what) (\(SystemError.oneLine(reason)))", path: path)
        }
        return DroptraceError(what, path: path)
    }

    /// Checks an id-returning call; negative means failure.
    static func check(_ id: hid_t, _ what: @autoclosure () -> String, path: String) throws -> hid_t {
        if id < 0 { throw error(what(), path: path) }
        return id
    }

    /// Checks a size-returning call (`ssize_t`); negative means failure.
    static func check(_ size: Int, _ what: @autoclosure () -> String, path: String) throws -> Int {
        if size < 0 { throw error(what(), path: path) }
        return size
    }

    /// Checks a status-returning call (`herr_t`); negative means failure.
    static func check(_ status: herr_t, _ what: @autoclosure () -> String, path: String) throws {
        if status < 0 { throw error(what(), path: path) }
    }

    /// Checks a call returning a count or a boolean (`htri_t`) and passes it
    /// on; negative means failure.
    static func checkedValue(_ value: Int32, _ what: @autoclosure () -> String, path: String) throws -> Int32 {
        if value < 0 { throw error(what(), path: path) }
        return value
    }

    /// The most specific message on this thread's HDF5 error stack, e.g.
    /// "file signature not found" or "truncated file: eof = 800, ...".
    /// The outermost entries only repeat the API function's name ("unable to
    /// open file"), which our own `what` already says better.
    static func currentReason() -> String? {
        final class Collector { var innermost: String? }
        let collector = Collector()
        let walker: H5E_walk2_t = { _, entry, clientData in
            guard let entry, let clientData else { return 0 }
            let collector = Unmanaged<Collector>.fromOpaque(clientData).takeUnretainedValue()
            // Walking upward visits the innermost (most specific) entry first.
            if collector.innermost == nil, let desc = entry.pointee.desc {
                collector.innermost = String(cString: desc)
            }
            return 0
        }
        _ = H5Ewalk2(HDF5Library.errorStackDefault, H5E_WALK_UPWARD, walker,
                     Unmanaged.passUnretained(collector).toOpaque())
        _ = H5Eclear2(HDF5Library.errorStackDefault)
        return withExtendedLifetime(collector) { collector.innermost }
    }
}
