import Analysis
import DroptraceSupport
import ScoreStore

extension ReportFigures {
    static func blockGapFileName(_ metric: BlockGapMetric) -> String { "block_gap_\(metric.rawValue).svg" }

    /// Heatmaps of the final checkpoint's n-gap matrix, one per metric the
    /// store records: rows are the first dropped layer i (0-based), columns
    /// the block size n, cells the distance between h_i and h_i+n (cosine
    /// shown as 1 − cos so that darker is more redundant in every panel).
    static func blockGapFigures(_ scoreFile: ScoreFile) -> [ReportFigure] {
        guard let final = scoreFile.rows.last else { return [] }
        let layers = final.blockGap.count
        return BlockGapMetric.allCases.compactMap { metric in
            guard let matrix = metric.matrix(in: final), matrix.count == layers else { return nil }
            let values = matrix.map { row in
                row.map { metric == .cosine ? 1 - Double($0) : Double($0) }
            }
            let name = metric == .cosine ? "1 − mean cos" : metric.displayName
            let heatmap = Heatmap(
                title: "\(name) between h_i and h_i+n, final checkpoint", values: values,
                columnLabels: (1...max(1, layers)).map(String.init),
                xTitle: "Block size n (layers i … i+n−1 dropped)", yTitle: "First layer i (0-based)",
                colorbarTitle: metric == .cosine ? "1 − mean cos" : "Angular distance")
            return ReportFigure(
                fileName: blockGapFileName(metric), heading: "Contiguous block drops (n-gap matrix, final checkpoint)",
                altText: "Heatmap of the n-gap matrix by \(metric.displayName) at the final checkpoint, "
                    + "first dropped layer by block size",
                caption: "Cell (i, n) measures how far apart the hidden states before layer i and after layer "
                    + "i+n−1 (0-based) are: dropping those n layers costs little where it is dark. Grey cells run "
                    + "past the last layer. The table under *The peers' metrics* lists the best block for every n.",
                svg: heatmap.render())
        }
    }
}
