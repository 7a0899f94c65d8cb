import Analysis
import ScoreStore

extension ReportMarkdown {
    /// The final checkpoint by the peers' metrics: drop-k sets per method
    /// and the best contiguous block for every size, from the stored scores.
    func peerMetrics() -> String {
        let rows = writer.scoreFile.rows
        let final = rows[rows.count - 1]
        var text = "## The peers' metrics\n\n"
            + "The metrics other layer-dropping methods rank layers by, from the same pass and the same pairs of "
            + "hidden states, at the final checkpoint. **ShortGPT's Block Influence** BI = 1 − mean cos(h_i, h_i+1) "
            + "is identical to LLM-Drop's block importance, so its drop sets are LLM-Drop's block drop sets. The "
            + "**angular distance** arccos(cos)/π of Gromov et al. (as PruneMe computes it) is taken over every "
            + "token and, as PruneMe and Gromov et al. do, at each sequence's last token only. Lower is more "
            + "redundant for every method; layer indices are 0-based.\n"
        if final.angularDistance == nil {
            text += "\nThis store holds no angular distances (it was scored before droptrace stored them); "
                + "`trace --force` rescores it.\n"
        }
        text += "\n### Drop-k sets by method\n\nThe k layers each method would drop; *Disagree on* lists the layers "
            + "some methods drop and others keep.\n\n"
            + PeerMetricTables.dropSets(MethodDropSets(row: final, dropK: writer.analysis.dropK))
        text += "\n### Best contiguous block to drop, by size\n\nFor every n, the n contiguous layers i … i+n−1 "
            + "(0-based, inclusive) whose removal joins the most similar boundary states h_i and h_i+n; a mergekit "
            + "`passthrough` keeps `layer_range: [0, i]` and `[i+n, L]` (end-exclusive), which "
            + "`droptrace drop --target block --consecutive --count n --export-mergekit FILE` writes. PruneMe's "
            + "`block_start`/`block_end` are i and i+n, though it never considers i = 0 and compares against "
            + "transformers' final normed state at i+n = L.\n\n"
            + PeerMetricTables.blockGaps(BlockGapTable(row: final))
        return text
    }
}
