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

    /// The float64 sums every score is derived from, S = number of
    /// calibration sequences (the same for every row: one calibration set).
    /// Present when any row has them; a row stored without them has tokens
    /// −1 and NaN sums. Optional: files written before they existed lack
    /// the group.
    public enum PerSequence {
        /// int64 [C, S]: tokens of each calibration sequence.
        public static let tokens = "per_sequence/tokens"
        /// float64 [C, S, L]: Σ over the sequence's tokens of cos(input, output) of `module`
        /// ("attention", "mlp", "block"), NaN where the module is dropped.
        public static func cosineSum(_ module: String) -> String { "per_sequence/cosine_sum/\(module)" }
        /// float64 [C, S, L]: Σ of the angular distance arccos(clamp(cos, −1, 1)) / π.
        public static func angularDistanceSum(_ module: String) -> String { "per_sequence/angular_distance_sum/\(module)" }
        /// float64 [C, S, L]: cos at the sequence's last token.
        public static func lastTokenCosine(_ module: String) -> String { "per_sequence/last_token_cosine/\(module)" }
        /// float64 [C, L, L]: totals over every token of every sequence of
        /// cos(h_i, h_{i+n}) at [c, i, n−1], NaN where i + n > L.
        public static let blockGapCosineSum = "similarity/block_gap_sums/cosine_sum"
        /// float64 [C, L, L]: the same for the angular distance.
        public static let blockGapAngularDistanceSum = "similarity/block_gap_sums/angular_distance_sum"
        /// float64 [C, L, L]: Σ over sequences of the angular distance at the last token.
        public static let blockGapLastTokenAngularDistanceSum = "similarity/block_gap_sums/last_token_angular_distance_sum"
        /// Files declaring more values than this per dataset are refused
        /// rather than read into memory (a hostile shape in a few bytes);
        /// 1,000 checkpoints × 1,000 sequences × 134 layers fit.
        public static let maximumValues = 1 << 27
        /// Files declaring more (checkpoint, sequence) pairs than this are
        /// refused too: each is a row of layers in memory, whatever the
        /// layer count (2,048 sequences of 1,000 checkpoints fit).
        public static let maximumSequenceRows = 1 << 21
    }

    /// Root attributes.
    public enum Attribute {
        public static let modelType = "model_type"              // string
        public static let numLayers = "num_layers"              // int64
        /// int64, the model's `hidden_size`; absent in stores written before it was recorded.
        public static let hiddenSize = "hidden_size"
        /// string, 64 hex digits: SHA-256 of the shapes of the scored
        /// model's layer tensors (`ScoreFileMetadata.layerShapesSHA256`);
        /// absent in stores written before it was recorded.
        public static let layerShapesSHA256 = "layer_shapes_sha256"
        public static let metric = "metric"                     // string, "cosine"
        public static let calibrationSHA256 = "calibration_sha256"  // string
        public static let calibrationTokens = "calibration_tokens"  // int64
        public static let droptraceVersion = "droptrace_version"    // string
        /// int64, only in a calibration shard's partial result
        /// (`droptrace slurm task`): which shard of how many it holds.
        public static let shardIndex = "shard_index"
        public static let shardCount = "shard_count"
        /// string, one of `precisions`; absent in stores written before it
        /// was recorded, which were scored in "f32".
        public static let precision = "precision"
        /// string, one line: the matrix kernels that scored the rows; optional.
        public static let matrixKernel = "matrix_kernel"
        /// string, an absolute path: the series directory the rows were
        /// traced from (for a list of checkpoints, the directory that holds
        /// them all); absent in `score` files and in stores written before
        /// it was recorded.
        public static let seriesDirectory = "series_directory"
    }

    /// What droptrace writes at the file's root: its groups (those later
    /// stages add, `/analysis`, `/evaluation` and `/failed`, included) and its root
    /// attributes (the report's `report_title` included). Anything else at
    /// the root was added by a user, and a trace keeps the store with it
    /// beside the rewritten one (`StoreAdditions`); what a user adds inside
    /// these groups is droptrace's to rewrite.
    public static let rootGroups: Set<String> = [
        "checkpoints", "scores", "similarity", "per_sequence", "analysis", "evaluation", "failed", "pending",
    ]
    public static let rootAttributes: Set<String> = [
        Attribute.modelType, Attribute.numLayers, Attribute.hiddenSize, Attribute.layerShapesSHA256, Attribute.metric, Attribute.calibrationSHA256,
        Attribute.calibrationTokens, Attribute.droptraceVersion, Attribute.shardIndex, Attribute.shardCount,
        Attribute.precision, Attribute.matrixKernel, Attribute.seriesDirectory, "report_title",
    ]

    /// Whether `text` is a name as transformers names model types and
    /// lm-evaluation-harness names tasks (`gemma3_text`, `arc_easy`): a
    /// lowercase letter, then lowercase letters, digits and underscores, at
    /// most 64 in all. Task groups hold such names; the `model_type` attribute
    /// one that may hold hyphens too (`isModelTypeName`).
    static func isLowercaseName(_ text: String) -> Bool {
        text.wholeMatch(of: #/[a-z][a-z0-9_]{0,63}/#) != nil
    }

    /// Whether `text` is a name as transformers names model types: a
    /// lowercase name that may also hold hyphens (`modernbert-decoder`).
    static func isModelTypeName(_ text: String) -> Bool {
        text.wholeMatch(of: #/[a-z][a-z0-9_\-]{0,63}/#) != nil
    }

    /// The values of the `precision` attribute: TensorEngine's `Precision`
    /// names (f32: float32 matrix products; bf16: bfloat16 inputs, float32
    /// accumulation).
    public static let precisions = ["f32", "bf16"]

    /// Every dataset is chunked and compressed: score series over many
    /// checkpoints are mostly similar floats and shrink well.
    public static let storage = HDF5StorageOptions.compressed(level: 4)
}
