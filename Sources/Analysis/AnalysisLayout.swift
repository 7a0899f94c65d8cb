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
///       @verdict_k              int64      drop-k used by the verdict (round(L/2))
///       @verdict_reason         string     one sentence on why
///       @verdict_rule           string     the rule, in words
///       @verdict_criteria       string     JSON list of {id, description, value (null if
///                                          unmeasurable), comparison (">=" | "<="), threshold,
///                                          passed, detail}
///     /analysis/<module>                group
///       rankings                int32 [C, L]  layers by ascending importance (ties: lower index)
///       drop_k<k>               int32 [C, k]  the k least important layers, ascending by index
///       spearman_final          float64 [C]   Spearman ρ vs the final checkpoint (NaN if undefined)
///       kendall_final           float64 [C]   Kendall τ-b vs the final checkpoint
///       spearman_previous       float64 [C]   vs the previous checkpoint (NaN for the first)
///       kendall_previous        float64 [C]
///       jaccard_final_k<k>      float64 [C]   Jaccard(drop-k set, final's drop-k set)
///       mean_importance         float64 [C]   mean importance over layers
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

    public enum Attribute {
        public static let dropK = "drop_k"
        public static let verdict = "verdict"
        public static let verdictK = "verdict_k"
        public static let verdictReason = "verdict_reason"
        public static let verdictRule = "verdict_rule"
        public static let verdictCriteria = "verdict_criteria"
        public static func stabilisationStep(k: Int) -> String { "stabilisation_step_k\(k)" }
        public static func stabilisationIndex(k: Int) -> String { "stabilisation_index_k\(k)" }
    }
}
