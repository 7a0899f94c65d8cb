/// Where the analysis lives inside a droptrace score file. Like
/// `ScoreFileLayout` this is a public interface (read with h5py): change it
/// only together with the documentation.
///
/// C = checkpoints (rows of `/checkpoints/*`, same order), L = layers,
/// <module> = attention | mlp | block, <k> = each analysed drop-k.
///
///     /analysis                         group
///       @drop_k                 int64 [K]  analysed k values, ascending
///       @verdict                string     "inherent" | "not inherent" | "inconclusive"
///       @verdict_k              int64      drop-k used by the verdict (round(A/2), A = layers
///                                          with attention: /analysis/attention@layers)
///       @verdict_reason         string     one sentence on why
///       @verdict_rule           string     the rule, in words
///       @verdict_criteria       string     JSON list of {id, description, value (null if
///                                          unmeasurable), comparison (">=" | "<="), threshold,
///                                          passed, status ("pass" | "fail" | "inconclusive" |
///                                          "n/a"), detail, and with the bootstrap
///                                          interval_low, interval_high (null if undefined)}
///       @bootstrap_replicates   int64      B; this and the three below, and every *_ci_* and
///                                          *_probability dataset, only when the scores carry
///                                          per-sequence sums
///       @bootstrap_seed         int64      seed of SplitMix64 (see BootstrapSettings)
///       @bootstrap_confidence   float64    level of the percentile intervals, e.g. 0.95
///       @bootstrap_sequences    int64      S, the calibration sequences resampled
///     /analysis/<module>                group
///       @layers                 int64 [A]     the layers the module is in, ascending: those scored at
///                                             some checkpoint (absent in files written before it: all L).
///                                             Means, correlations and drop-k sets are over these A layers.
///       rankings                int32 [C, L]  layers by ascending importance (ties: lower index;
///                                             undefined scores last)
///       drop_k<k>               int32 [C, k]  the k least important layers, ascending by index; only
///                                             for k ≤ A (as drop_k<k>_probability, jaccard_final_k<k>
///                                             and the stabilisation attributes)
///       spearman_final          float64 [C]   Spearman ρ vs the final checkpoint (NaN if undefined)
///       kendall_final           float64 [C]   Kendall τ-b vs the final checkpoint
///       spearman_previous       float64 [C]   vs the previous checkpoint (NaN for the first)
///       kendall_previous        float64 [C]
///       jaccard_final_k<k>      float64 [C]   Jaccard(drop-k set, final's drop-k set)
///       mean_importance         float64 [C]   mean importance over the A layers
///       importance_ci_low       float32 [C, L] bootstrap interval of /scores/<module>
///       importance_ci_high      float32 [C, L]
///       drop_k<k>_probability   float32 [C, L] share of replicates with the layer in the drop-k set
///       mean_importance_ci_low, mean_importance_ci_high     float64 [C]
///       spearman_final_ci_low, spearman_final_ci_high       float64 [C]
///       kendall_final_ci_low, kendall_final_ci_high         float64 [C]
///       @stabilisation_step_k<k>   int64   step of the first checkpoint after which the
///                                          drop-k set no longer changes (-1 if unknown)
///       @stabilisation_index_k<k>  int64   its row index
public enum AnalysisLayout {
    public static let group = "analysis"

    public static func moduleGroup(_ module: ModuleKind) -> String { "\(group)/\(module.storeName)" }

    public static let rankings = "rankings"
    public static func dropSets(k: Int) -> String { "drop_k\(k)" }
    public static let spearmanFinal = "spearman_final"
    public static let kendallFinal = "kendall_final"
    public static let spearmanPrevious = "spearman_previous"
    public static let kendallPrevious = "kendall_previous"
    public static func jaccardFinal(k: Int) -> String { "jaccard_final_k\(k)" }
    public static let meanImportance = "mean_importance"
    public static let importanceLow = "importance_ci_low"
    public static let importanceHigh = "importance_ci_high"
    public static func dropProbability(k: Int) -> String { "drop_k\(k)_probability" }
    /// The interval ends of a per-checkpoint statistic: `<name>_ci_low`, `<name>_ci_high`.
    public static func intervalEnds(_ name: String) -> (low: String, high: String) {
        ("\(name)_ci_low", "\(name)_ci_high")
    }

    public enum Attribute {
        public static let dropK = "drop_k"
        /// Of each module group: the layers the module is in.
        public static let moduleLayers = "layers"
        public static let verdict = "verdict"
        public static let verdictK = "verdict_k"
        public static let verdictReason = "verdict_reason"
        public static let verdictRule = "verdict_rule"
        public static let verdictCriteria = "verdict_criteria"
        public static let bootstrapReplicates = "bootstrap_replicates"
        public static let bootstrapSeed = "bootstrap_seed"
        public static let bootstrapConfidence = "bootstrap_confidence"
        public static let bootstrapSequences = "bootstrap_sequences"
        public static func stabilisationStep(k: Int) -> String { "stabilisation_step_k\(k)" }
        public static func stabilisationIndex(k: Int) -> String { "stabilisation_index_k\(k)" }
    }
}
