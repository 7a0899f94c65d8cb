internal import CHDF5Probe
import DroptraceSupport
import Foundation

/// Reads an HDF5 file once in a child process before this process opens it.
///
/// libhdf5 validates little of its own metadata: a store crafted with a
/// valid checksum (or an old store without one) can point a global heap
/// object or a chunk index anywhere, and libhdf5 then segfaults or loops
/// forever inside `H5Aread`/`H5Dread`, where no return code can help. The
/// child reads every object and attribute the way `HDF5File`'s readers do;
/// only a file it survives is opened here.
enum HDF5Probe {
    /// The child's time: five seconds plus one per 4 MiB, far beyond what
    /// reading a real store takes (milliseconds) even on a loaded machine.
    static func timeLimit(fileBytes: Int) -> Double {
        5 + Double(fileBytes) / Double(4 << 20)
    }

    /// - Parameter seconds: the child's time; `timeLimit` of the file's size when nil.
    /// - Throws: `DroptraceError` naming `path` when libhdf5 crashed or
    ///   hung on it (the file is damaged); transient when no child could be
    ///   started or the file system kept it waiting past its time.
    static func check(_ path: String, seconds: Double? = nil) throws {
        let bytes = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        let limit = plausibleElementLimit(path)
        let seconds = seconds ?? timeLimit(fileBytes: bytes)
        let result = hdf5_probe_file(path, seconds, limit)
        switch result.outcome {
        case HDF5_PROBE_READ:
            return
        case HDF5_PROBE_CRASHED:
            let how = result.signal_number != 0 ? " (\(String(cString: strsignal(result.signal_number))))" : ""
            throw DroptraceError("the HDF5 file is damaged: libhdf5 crashes reading its metadata\(how)", path: path)
        case HDF5_PROBE_TIMED_OUT:
            throw DroptraceError(
                "the HDF5 file is damaged: libhdf5 was still reading its metadata after \(Int(seconds)) s", path: path)
        case HDF5_PROBE_STALLED:
            throw DroptraceError(
                "reading it took over \(Int(seconds)) s, nearly all of it waiting for the file system (stalled or "
                    + "very slow storage, not a damaged file)", path: path, isTransient: true)
        default:
            throw DroptraceError(
                "cannot check the HDF5 file before reading it: \(ProcessLimits.startFailure(result.error_number))",
                path: path, isTransient: true)
        }
    }
}
