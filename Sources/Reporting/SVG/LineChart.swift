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
    /// line (undefined intervals leave a gap); empty for none.
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
    var steps: [Int64]
    var panels: [LinePanel]

    static let width = 820.0
    static let plotHeight = 220.0
    /// Beyond this many checkpoints the point markers would merge into a band.
    static let maxMarkers = 40

    func render() -> String {
        let left = 70.0, right = 180.0, top = 44.0, panelTitleHeight = 24.0, belowPlot = 52.0
        let plotWidth = Self.width - left - right
        let panelHeight = panelTitleHeight + Self.plotHeight + belowPlot
        let height = top + Double(panels.count) * panelHeight + 8
        let axis = StepAxis.choose(steps: steps)

        var svg = SVGDocument(width: Self.width, height: height, title: title)
        svg.add(SVG.text(title, x: left, y: 26, size: 15, weight: "bold"))
        for (index, panel) in panels.enumerated() {
            let panelTop = top + Double(index) * panelHeight + panelTitleHeight
            svg.add(SVG.text(panel.title, x: left, y: panelTop - 8, size: 13, weight: "bold"))
            draw(panel, axis: axis, into: &svg, x: left, y: panelTop, width: plotWidth)
            if index == 0 {
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
        svg.add(SVG.text(axis.title, x: left + width / 2, y: bottom + 38, size: 12, anchor: .middle))
        svg.add(SVG.text(panel.yTitle, x: left - 48, y: top + height / 2, size: 12, anchor: .middle, middle: true,
                         rotate: -90))

        for series in panel.series {
            let x = { (index: Int) in axis.position(step: steps[index], index: index, from: left + inset, to: right - inset) }
            addBand(series, into: &svg, x: x, y: { yScale.position(min(hi, max(lo, $0))) })
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

    /// One polygon per run of defined intervals: along the upper ends, back
    /// along the lower ones.
    private func addBand(_ series: LineSeries, into svg: inout SVGDocument, x: (Int) -> Double,
                         y: (Double) -> Double) {
        let defined = series.band.indices.map { index in
            index < steps.count && series.band[index].low.isFinite && series.band[index].high.isFinite
        }
        var start = 0
        while start < defined.count {
            guard defined[start] else {
                start += 1
                continue
            }
            var end = start
            while end + 1 < defined.count && defined[end + 1] { end += 1 }
            let upper = (start...end).map { "\(SVG.number(x($0))),\(SVG.number(y(series.band[$0].high)))" }
            let lower = (start...end).reversed().map { "\(SVG.number(x($0))),\(SVG.number(y(series.band[$0].low)))" }
            svg.add(#"<polygon points="\#((upper + lower).joined(separator: " "))" fill="\#(series.colour)" "#
                    + #"fill-opacity="0.18" stroke="none"/>"#)
            start = end + 1
        }
    }

    private func addLegend(_ series: [LineSeries], to svg: inout SVGDocument, x: Double, y: Double) {
        for (index, entry) in series.enumerated() {
            let rowY = y + Double(index) * 20
            svg.add(SVG.line(x1: x, y1: rowY, x2: x + 26, y2: rowY, stroke: entry.colour, width: entry.width,
                             extra: entry.dash.map { #"stroke-dasharray="\#($0)""# } ?? ""))
            svg.add(SVG.text(entry.label, x: x + 32, y: rowY, size: 12, middle: true))
        }
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
