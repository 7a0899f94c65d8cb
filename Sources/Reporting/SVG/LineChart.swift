import Analysis
import Foundation

/// One line of a chart: a value per checkpoint (NaN leaves a gap).
struct LineSeries {
    var label: String
    var colour: String
    var dash: String? = nil
    var width = 2.0
    var markerRadius = 3.0
    var values: [Double]
    /// An interval per checkpoint drawn as a translucent band behind the
    /// line (a confidence interval, or min–max across runs); undefined
    /// intervals leave a gap; empty for none.
    var band: [ConfidenceInterval] = []
}

/// One panel: its own y axis, sharing the chart's x axis (training steps).
struct LinePanel {
    var title: String
    var yTitle: String
    /// Fixed y range (e.g. -1...1 for correlations); nil to fit the data.
    var yDomain: (Double, Double)? = nil
    var series: [LineSeries]
}

/// Values over training, one or more panels stacked vertically, with a
/// legend on the right of the first panel.
struct LineChart {
    var title: String
    /// [C] x values: tokens seen or steps, as `unit` says (-1 when unknown).
    var steps: [Int64]
    var unit: TrainingProgress.Unit = .steps
    var panels: [LinePanel]

    init(title: String, progress: TrainingProgress, panels: [LinePanel]) {
        self.title = title
        self.steps = progress.values
        self.unit = progress.unit
        self.panels = panels
    }

    /// The x axis these values get (linear, log or indices).
    var axis: StepAxis { StepAxis.choose(steps: steps) }

    static let width = 820.0
    static let plotHeight = 220.0
    /// Beyond this many checkpoints the point markers would merge into a band.
    static let maxMarkers = 40

    func render() -> String {
        let left = 70.0, right = 180.0, top = 44.0, panelTitleHeight = 24.0, belowPlot = 52.0
        let plotWidth = Self.width - left - right
        let panelHeight = panelTitleHeight + Self.plotHeight + belowPlot
        let height = top + Double(panels.count) * panelHeight + 8
        let axis = self.axis

        var svg = SVGDocument(width: Self.width, height: height, title: title)
        svg.add(SVG.text(title, x: left, y: 26, size: 15, weight: "bold"))
        for (index, panel) in panels.enumerated() {
            let panelTop = top + Double(index) * panelHeight + panelTitleHeight
            svg.add(SVG.text(panel.title, x: left, y: panelTop - 8, size: 13, weight: "bold"))
            draw(panel, axis: axis, into: &svg, x: left, y: panelTop, width: plotWidth)
            // A panel with other lines than the one above gets its own legend.
            if index == 0 || panel.series.map(\.label) != panels[index - 1].series.map(\.label) {
                addLegend(panel.series, to: &svg, x: left + plotWidth + 20, y: panelTop + 6)
            }
        }
        return svg.render()
    }

    private func draw(_ panel: LinePanel, axis: StepAxis, into svg: inout SVGDocument,
                      x left: Double, y top: Double, width: Double) {
        let height = Self.plotHeight
        let bottom = top + height, right = left + width
        // A little inset so points at the ends are not cut by the frame.
        let inset = 8.0
        let (lo, hi) = panel.yDomain
            ?? Self.fittedDomain(panel.series.flatMap { $0.values + $0.band.flatMap { [$0.low, $0.high] } })
        let yScale = LinearScale(domain: (lo, hi), range: (bottom - inset, top + inset))

        // Grid and y ticks.
        let (yTicks, yStep) = Ticks.values(lo, hi, target: 5)
        for tick in yTicks {
            let y = yScale.position(tick)
            svg.add(SVG.line(x1: left, y1: y, x2: right, y2: y, stroke: tick == 0 ? "#999999" : "#e3e3e3"))
            svg.add(SVG.text(Ticks.label(tick, step: yStep), x: left - 7, y: y, size: 11, anchor: .end, middle: true))
        }
        // x ticks (minor ones unlabelled and shorter).
        for tick in axis.ticks(from: left + inset, to: right - inset) {
            if let label = tick.label {
                svg.add(SVG.line(x1: tick.position, y1: top, x2: tick.position, y2: bottom, stroke: "#eeeeee"))
                svg.add(SVG.line(x1: tick.position, y1: bottom, x2: tick.position, y2: bottom + 5, stroke: "#444444"))
                svg.add(SVG.text(label, x: tick.position, y: bottom + 18, size: 11, anchor: .middle))
            } else {
                svg.add(SVG.line(x1: tick.position, y1: bottom, x2: tick.position, y2: bottom + 3, stroke: "#777777"))
            }
        }
        if case .log(_, _, true) = axis {
            // An axis break between step 0 and the log-scaled steps.
            let breakX = left + inset + (width - 2 * inset) * StepAxis.zeroGap / 2
            for offset in [-2.0, 2.0] {
                svg.add(SVG.line(x1: breakX + offset - 3, y1: bottom + 5, x2: breakX + offset + 3, y2: bottom - 5,
                                 stroke: "#444444"))
            }
        }
        svg.add(SVG.rect(x: left, y: top, width: width, height: height, fill: "none",
                         extra: ##"stroke="#444444" stroke-width="1""##))
        svg.add(SVG.text(axis.title(unit), x: left + width / 2, y: bottom + 38, size: 12, anchor: .middle))
        svg.add(SVG.text(panel.yTitle, x: left - 48, y: top + height / 2, size: 12, anchor: .middle, middle: true,
                         rotate: -90))

        func x(_ index: Int) -> Double {
            axis.position(step: steps[index], index: index, from: left + inset, to: right - inset)
        }
        // Bands may reach past a fixed y domain (a correlation's interval near ±1): clamp them to it.
        let clampedY = { (value: Double) in yScale.position(min(hi, max(lo, value))) }
        for series in panel.series where !series.band.isEmpty {
            drawBand(series.band, colour: series.colour, x: x, y: clampedY, into: &svg)
        }
        for series in panel.series {
            let points: [(Double, Double)?] = series.values.enumerated().map { index, value in
                guard value.isFinite, index < steps.count else { return nil }
                return (axis.position(step: steps[index], index: index, from: left + inset, to: right - inset),
                        yScale.position(value))
            }
            if let path = SVG.path(points, stroke: series.colour, width: series.width, dash: series.dash) {
                svg.add(path)
            }
            if steps.count <= Self.maxMarkers {
                for case let (x, y)? in points {
                    svg.add(#"<circle cx="\#(SVG.number(x))" cy="\#(SVG.number(y))" "#
                            + #"r="\#(SVG.number(series.markerRadius))" fill="\#(series.colour)"/>"#)
                }
            }
        }
    }

    /// The band as one filled polygon per run of checkpoints whose interval
    /// is defined (along the upper ends, back along the lower ones); a lone
    /// checkpoint gets a short vertical bar.
    private func drawBand(_ band: [ConfidenceInterval], colour: String, x: (Int) -> Double,
                          y: (Double) -> Double, into svg: inout SVGDocument) {
        let count = min(band.count, steps.count)
        func defined(_ index: Int) -> Bool { band[index].low.isFinite && band[index].high.isFinite }
        var start = 0
        while start < count {
            guard defined(start) else { start += 1; continue }
            var end = start
            while end + 1 < count && defined(end + 1) { end += 1 }
            if end == start {
                svg.add(SVG.line(x1: x(start), y1: y(band[start].low), x2: x(start),
                                 y2: y(band[start].high), stroke: colour, width: 5,
                                 extra: #"stroke-opacity="0.25""#))
            } else {
                let upper = (start...end).map { "\(SVG.number(x($0))) \(SVG.number(y(band[$0].high)))" }
                let lower = (start...end).reversed().map {
                    "\(SVG.number(x($0))) \(SVG.number(y(band[$0].low)))"
                }
                svg.add(#"<path d="M\#((upper + lower).joined(separator: " L"))Z" fill="\#(colour)" "#
                        + #"fill-opacity="0.18" stroke="none"/>"#)
            }
            start = end + 1
        }
    }

    /// Entries beyond what fits beside one plot are summed up in a last line.
    static let maxLegendEntries = 10

    private func addLegend(_ series: [LineSeries], to svg: inout SVGDocument, x: Double, y: Double) {
        if series.count > Self.maxLegendEntries {
            let rowY = y + Double(Self.maxLegendEntries) * 20
            svg.add(SVG.text("… and \(series.count - Self.maxLegendEntries) more", x: x, y: rowY, size: 12, middle: true))
        }
        let shown = series.prefix(Self.maxLegendEntries)
        for (index, (entry, label)) in zip(shown, Self.legendLabels(shown.map(\.label))).enumerated() {
            let rowY = y + Double(index) * 20
            svg.add(SVG.line(x1: x, y1: rowY, x2: x + 26, y2: rowY, stroke: entry.colour, width: entry.width,
                             extra: entry.dash.map { #"stroke-dasharray="\#($0)""# } ?? ""))
            svg.add(SVG.text(label, x: x + 32, y: rowY, size: 12, middle: true))
        }
    }

    /// The legend's room right of the plot (x + 32 to the figure's edge):
    /// about 18 characters at 12 px.
    static let legendCharacters = 18

    /// `labels` as the legend shows them, each within `legendCharacters` so
    /// none is cut off at the figure's edge: whole when all fit; else
    /// without what they all share at their start and end ("…" in its
    /// place), which leaves what tells runs apart ("seed1-pythia-160m-…",
    /// "seed2-…" read "seed1…", "seed2…"); ends that still differ past the
    /// room are kept instead (runs named by paths differ at the end).
    static func legendLabels(_ labels: [String]) -> [String] {
        let room = legendCharacters
        func end(_ label: String) -> String { label.count <= room ? label : "…" + label.suffix(room - 1) }
        guard labels.count > 1, labels.contains(where: { $0.count > room }) else { return labels.map(end) }
        let characters = labels.map(Array.init)
        let shortest = characters.map(\.count).min() ?? 0
        func shared(_ position: (Int, [Character]) -> Int, within limit: Int) -> Int {
            var count = 0
            while count < limit, characters.allSatisfy({ $0[position(count, $0)] == characters[0][position(count, characters[0])] }) { count += 1 }
            return count
        }
        // Whole words only: "seed1" and "seed2" share no word at their start.
        func isBoundary(_ character: Character) -> Bool { !character.isLetter && !character.isNumber }
        var prefix = shared({ index, _ in index }, within: shortest)
        while prefix > 0, !isBoundary(characters[0][prefix - 1]) { prefix -= 1 }
        var suffix = shared({ index, label in label.count - 1 - index }, within: shortest - prefix)
        while suffix > 0, !isBoundary(characters[0][characters[0].count - suffix]) { suffix -= 1 }
        let cores = characters.map { label in
            let (lead, core, tail) = (prefix > 0 ? "…" : "", String(label[prefix..<(label.count - suffix)]), suffix > 0 ? "…" : "")
            return lead.count + core.count + tail.count <= room ? lead + core + tail : lead + core.prefix(room - lead.count - 1) + "…"
        }
        return Set(cores).count == labels.count ? cores : labels.map(end)
    }

    /// A y range with nice ends around the finite values.
    static func fittedDomain(_ values: [Double]) -> (Double, Double) {
        let finite = values.filter(\.isFinite)
        guard var lo = finite.min(), var hi = finite.max() else { return (0, 1) }
        if lo == hi {
            let pad = max(abs(lo) * 0.1, 0.01)
            lo -= pad
            hi += pad
        }
        let step = Ticks.niceStep((hi - lo) / 5)
        return (floor(lo / step) * step, ceil(hi / step) * step)
    }
}
