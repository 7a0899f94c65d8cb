import ScoreStore

/// The report's part on task accuracy over training (`trace --task`): one
/// figure and one section, both made from the stored `TaskAccuracyRecord`
/// alone, so `droptrace report` rebuilds them byte for byte.
enum TaskAccuracyReport {
    static let figureFileName = "task_accuracy.svg"
    static let sectionTitle = "Task accuracy over training"

    typealias Names = ScoreFileLayout.TaskAccuracy

    /// The full model in black; each drop-k in its own Okabe–Ito colour and dash.
    private static let dropColours = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"]
    private static let dropDashes = ["8 5", "2 4", "12 4 2 4"]

    /// One panel per task and metric (acc, then acc_norm where the task has
    /// it): accuracy over training (tokens seen or step), full and without the
    /// checkpoint's own drop-k attention layers. None without tasks.
    static func figures(_ record: TaskAccuracyRecord, rows: [CheckpointRow], progress: TrainingProgress) -> [ReportFigure] {
        guard !record.isEmpty else { return [] }
        var panels: [LinePanel] = []
        for (name, task) in record.tasks.sorted(by: { $0.key < $1.key }) {
            for metric in metrics(task) {
                let pick = value(metric)
                let values = rows.map { task.byCheckpoint[$0.name] ?? TaskAccuracyRecord.Values() }
                var series = [LineSeries(label: "full", colour: "#000000", width: 3, markerRadius: 4,
                                         values: values.map { pick($0.full) })]
                for (index, k) in task.dropK.enumerated() {
                    series.append(LineSeries(
                        label: "own drop-\(k)", colour: dropColours[index % dropColours.count],
                        dash: dropDashes[index % dropDashes.count], width: 2, markerRadius: 3,
                        values: values.map { pick($0.own[k]) }))
                }
                panels.append(LinePanel(title: "\(name): \(metric)", yTitle: metric, series: series))
            }
        }
        let chart = LineChart(title: "Task accuracy over training", progress: progress, panels: panels)
        return [ReportFigure(
            fileName: figureFileName, heading: "Task accuracy, full and dropped",
            altText: "Accuracy on each task over training, full and without each checkpoint's own drop-k attention layers",
            caption: "Per task, the accuracy of each checkpoint in full (black) and without its own k least important "
                + "attention layers, scored as lm-evaluation-harness scores multiple choice. Gaps are values that "
                + "were not measured." + (chart.axis.zeroNote.map { " " + $0 } ?? ""),
            svg: chart.render())]
    }

    /// The section: per task, what it was measured on and a table of every
    /// checkpoint's values. Nil without tasks.
    static func section(_ record: TaskAccuracyRecord, rows: [CheckpointRow]) -> ReportSection? {
        guard !record.isEmpty else { return nil }
        var text = "Accuracy of each checkpoint on multiple-choice tasks, scored as lm-evaluation-harness scores "
            + "them (`acc`: the choice with the highest summed log-likelihood; `acc_norm`: per character of the "
            + "choice): the full model and the model without its own drop-k attention layers (the k least important "
            + "by its own scores). If dropping costs little accuracy at every stage, the redundancy is usable "
            + "throughout training.\n"
        var missing = false
        for (name, task) in record.tasks.sorted(by: { $0.key < $1.key }) {
            let settings = task.settings
            let fewshot = settings.fewshotSHA256.isEmpty
                ? "no few-shot file" : "few-shot file sha256 `\(settings.fewshotSHA256.prefix(16))…`"
            text += "\n### \(Markdown.escape(name))\n\n\(settings.numFewshot)-shot; evaluation file sha256 "
                + "`\(settings.evaluationSHA256.prefix(16))…`, \(fewshot).\n\n"
            var headers = ["Step", "Checkpoint"]
            for metric in metrics(task) {
                headers += ["\(metric) full"] + task.dropK.map { "\(metric) own drop-\($0)" }
            }
            var table = MarkdownTable(headers, alignments: [.right, .left] + Array(repeating: .right, count: headers.count - 2))
            for row in rows {
                let values = task.byCheckpoint[row.name] ?? TaskAccuracyRecord.Values()
                var cells = [NumberFormatting.step(row.step), Markdown.escape(row.name)]
                for metric in metrics(task) {
                    let pick = value(metric)
                    let measured = ([values.full] + task.dropK.map { values.own[$0] }).map(pick)
                    if measured.contains(where: { !$0.isFinite }) { missing = true }
                    cells += measured.map { NumberFormatting.fixed($0, 4) }
                }
                table.add(cells)
            }
            text += table.render()
        }
        if missing {
            text += "\n\(NumberFormatting.undefined): not measured: the run that needed this value did not evaluate the task (a "
                + "drop-k added, a checkpoint rescored, the drop set changed; `trace --task` fills it in), or the checkpoint was "
                + "no longer on disk then.\n"
        }
        return ReportSection(title: sectionTitle, body: text)
    }

    private static func metrics(_ task: TaskAccuracyRecord.Task) -> [String] {
        task.hasNormalized ? [Names.acc, Names.accNorm] : [Names.acc]
    }

    private static func value(_ metric: String) -> (TaskAccuracyRecord.Accuracy?) -> Double {
        metric == Names.acc ? { $0?.acc ?? .nan } : { $0?.accNorm ?? .nan }
    }
}
