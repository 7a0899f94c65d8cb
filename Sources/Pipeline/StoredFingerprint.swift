extension DiscoveredCheckpoint {
    /// Whether a store row with fingerprint `stored` holds this checkpoint's
    /// scores, by the rule `trace` uses (`CheckpointFingerprint.reasonToRescore`):
    /// false when its files were replaced since.
    public func isScored(asFingerprint stored: String) -> Bool {
        CheckpointFingerprint.reasonToRescore(stored: stored, current: fingerprint) == nil
    }
}
