import Analysis
import DroptraceSupport
import ScoreStore

/// The tables that set droptrace's cosine importance beside the peers'
/// metrics (ShortGPT, Gromov et al./PruneMe), in GitHub-flavoured Markdown:
/// the report uses them, and `droptrace score` prints them.
public enum PeerMetricTables {
    /// What `droptrace score` prints for one checkpoint's row: both tables
    /// under headings, drop-k at the default 25% and 50% of the layers.
    public static func summary(of row: CheckpointRow) -> String {
        var text = "Importance per layer (LLM-Drop's 1 − mean cos(input, output); lower is more redundant):\n\n"
            + importances(row)
            + "\nDrop-k sets by method (layer indices 0-based; ShortGPT's Block Influence is LLM-Drop's block importance):\n\n"
            + dropSets(MethodDropSets(row: row, dropK: MethodDropSets.defaultDropK(row: row)))
        let gaps = BlockGapTable(row: row)
        if !gaps.rows.isEmpty {
            text += "\nBest contiguous block to drop, by size n (layers i … i+n−1, 0-based, inclusive):\n\n" + blockGaps(gaps)
        }
        return text
    }

    /// Attention, MLP and block importance of every layer (0-based), 4 decimals.
    public static func importances(_ row: CheckpointRow) -> String {
        var table = MarkdownTable(["Layer"] + ModuleKind.allCases.map(\.displayName), alignments: [.right, .right, .right, .right])
        for layer in row.attention.indices {
            table.add([String(layer)] + ModuleKind.allCases.map { NumberFormatting.fixed(Double($0.importance(in: row)[layer]), 4) })
        }
        return table.render()
    }

    /// Which layers each method drops, per module type and k, and the
    /// layers on which they disagree. Layer indices are 0-based.
    public static func dropSets(_ comparison: MethodDropSets) -> String {
        let methods = RedundancyMethod.allCases
        var table = MarkdownTable(
            ["Module", "k"] + methods.map { "\($0.displayName): layers (0-based)" } + ["Disagree on"],
            alignments: [.left, .right] + methods.map { _ in .left } + [.left])
        for entry in comparison.entries {
            let cells = methods.map { method -> String in
                guard RedundancyMethod.methods(for: entry.module).contains(method) else { return "n/a" }
                guard let set = entry.sets.first(where: { $0.method == method }) else { return "not recorded" }
                return NumberFormatting.layers(set.layers)
            }
            let disagreement = entry.disagreement.isEmpty ? "agree" : NumberFormatting.layers(entry.disagreement)
            table.add([entry.module.displayName, String(entry.k)] + cells + [disagreement])
        }
        return table.render()
    }

    /// For every block size n, the best contiguous block to drop by each
    /// metric: its layers (0-based, inclusive) and the metric's value.
    public static func blockGaps(_ table: BlockGapTable) -> String {
        var headers = ["n (blocks dropped)"]
        for metric in table.metrics {
            headers += ["\(metric.displayName): layers (0-based, inclusive)", valueHeader(metric)]
        }
        headers.append("Agree")
        var markdown = MarkdownTable(
            headers, alignments: [.right] + table.metrics.flatMap { _ in [.left, .right] as [MarkdownTable.Alignment] }
                + [.center])
        for row in table.rows {
            var cells = [String(row.size)]
            for metric in table.metrics {
                if let choice = row.choices.first(where: { $0.metric == metric }) {
                    cells += [layers(choice.block), NumberFormatting.score(choice.value)]
                } else {
                    cells += [NumberFormatting.undefined, NumberFormatting.undefined]
                }
            }
            cells.append(row.choices.count < 2 ? NumberFormatting.undefined : row.agrees ? "yes" : "no")
            markdown.add(cells)
        }
        return markdown.render()
    }

    /// "3–5" (0-based, inclusive), or "3" for one layer.
    static func layers(_ block: BlockRange) -> String {
        block.size == 1 ? String(block.start) : "\(block.start)–\(block.last)"
    }

    private static func valueHeader(_ metric: BlockGapMetric) -> String {
        switch metric {
        case .cosine: "mean cos(h_i, h_i+n)"
        case .angularDistance: "distance"
        case .angularDistanceLastToken: "last-token distance"
        }
    }
}
