/// droptrace's version, recorded in every score file it writes.
///
/// Bump `engine` whenever a change can alter scores: `trace` rescores rows
/// written by a different engine version.
public enum DroptraceVersion {
    public static let string = "0.1.0"
    public static let engine = "1"
}
