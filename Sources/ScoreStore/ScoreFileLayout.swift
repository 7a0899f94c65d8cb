/// Where things live in a droptrace score file. This layout is a public
/// interface (users open the file with h5py/pandas): change it only
/// together with the documentation and a version note.
///
/// C = number of checkpoints (rows, in the order given), L = number of layers.
public enum ScoreFileLayout {
    /// Variable-length UTF-8 strings, [C].
    public static let checkpointNames = "checkpoints/name"
    /// int64 [C], -1 when unknown.
    public static let checkpointSteps = "checkpoints/step"
    /// int64 [C], -1 when unknown.
    public static let checkpointTokens = "checkpoints/tokens"
    /// Variable-length UTF-8 strings, [C]: what identifies the files each row
    /// was scored from (JSON, see the README), "" when not recorded. Optional:
    /// files written before it existed lack it, and read as all "".
    public static let checkpointFingerprints = "checkpoints/fingerprint"
    /// float32 [C, L] importance scores.
    public static let attentionScores = "scores/attention"
    public static let mlpScores = "scores/mlp"
    public static let blockScores = "scores/block"
    /// float32 [C, L, L], NaN where undefined.
    public static let blockGap = "similarity/block_gap"

    /// Root attributes.
    public enum Attribute {
        public static let modelType = "model_type"              // string
        public static let numLayers = "num_layers"              // int64
        public static let metric = "metric"                     // string, "cosine"
        public static let calibrationSHA256 = "calibration_sha256"  // string
        public static let calibrationTokens = "calibration_tokens"  // int64
        public static let droptraceVersion = "droptrace_version"    // string
    }

    /// Every dataset is chunked and compressed: score series over many
    /// checkpoints are mostly similar floats and shrink well.
    public static let storage = HDF5StorageOptions.compressed(level: 4)
}
