import CheckpointIO
import Foundation

extension DiscoveredCheckpoint {
    /// Whether a store row with fingerprint `stored` holds this checkpoint's
    /// scores, by the rule `trace` uses (`CheckpointFingerprint.reasonToRescore`):
    /// false when its files were replaced since.
    public func isScored(asFingerprint stored: String) -> Bool {
        CheckpointDiscovery.holdsFiles(stored, current: fingerprint)
    }
}

extension CheckpointDiscovery {
    /// The fingerprint (`CheckpointFingerprint`'s stored form) of the
    /// checkpoint in `directory` as its files are now; nil when it cannot be
    /// read as a checkpoint.
    public static func currentFingerprint(of directory: URL) -> String? {
        guard let layout = try? CheckpointLayout.resolve(directory) else { return nil }
        return try? CheckpointFingerprint(layout: layout).stored
    }

    /// Whether a store row with fingerprint `stored` holds the files whose
    /// fingerprint is `current` (`currentFingerprint(of:)`; nil: unreadable).
    public static func holdsFiles(_ stored: String, current: String?) -> Bool {
        guard let current else { return false }
        return CheckpointFingerprint.reasonToRescore(stored: stored, current: current) == nil
    }
}
