import Foundation

/// A layers × checkpoints heatmap with a viridis colour bar: one row per
/// layer (layer 0 at the top, as in the tables), one column per checkpoint
/// in training order.
struct Heatmap {
    var title: String
    /// values[layer][checkpoint]; NaN cells are drawn grey.
    var values: [[Double]]
    /// One label per checkpoint (its step, or its index when unknown).
    var columnLabels: [String]
    var xTitle: String
    var yTitle = "Layer"
    var colorbarTitle: String
    /// Legend of the grey cells.
    var undefinedLabel = "undefined"
    /// marked[layer][checkpoint]: cells drawn with a dot (unstable drop-k
    /// membership); empty for none.
    var marked: [[Bool]] = []
    /// The dot's legend entry under the colour bar.
    var markLabel = ""
    /// Row tick labels; nil: the row's index.
    var rowLabels: [String]?
    /// A line under the title saying how cells were merged (`binned()`).
    var binNote: String?

    static let undefinedColour = "#c8c8c8"

    /// At most this many cells a side are drawn: past it, runs of adjacent
    /// rows (columns) are merged into bins of equal size (the last one
    /// shorter), each cell the mean of the finite values it covers. A
    /// screen shows no more, and a 4096-layer n-gap matrix drawn cell by cell
    /// would be a 150 MB file.
    static let maximumSide = 512

    /// `count` indices in at most `maximumSide` runs of equal length (the last shorter).
    static func bins(_ count: Int) -> [Range<Int>] {
        let size = max(1, (count + maximumSide - 1) / maximumSide)
        return stride(from: 0, to: count, by: size).map { $0..<min($0 + size, count) }
    }

    /// This heatmap with rows and columns merged by `bins`; nil when no side is too long.
    func binned() -> Heatmap? {
        let (rowBins, columnBins) = (Self.bins(values.count), Self.bins(columnLabels.count))
        guard rowBins.count < values.count || columnBins.count < columnLabels.count else { return nil }
        var merged = self
        merged.values = rowBins.map { rows in
            columnBins.map { columns in
                let finite = rows.flatMap { row in columns.map { values[row][$0] } }.filter(\.isFinite)
                return finite.isEmpty ? .nan : finite.reduce(0, +) / Double(finite.count)
            }
        }
        merged.marked = marked.isEmpty ? [] : rowBins.map { rows in
            columnBins.map { columns in rows.contains { row in columns.contains { marked[row][$0] } } }
        }
        merged.columnLabels = columnBins.map { columnLabels[$0.lowerBound] }
        merged.rowLabels = rowBins.map { rowLabels?[$0.lowerBound] ?? String($0.lowerBound) }
        merged.binNote = "each cell the mean of \(rowBins[0].count) × \(columnBins[0].count) cells (a tick labels the first of them)"
        return merged
    }

    /// The colour range. A few extreme layers (often layer 0, or the last
    /// MLP) can be many times more important than the rest; on a plain
    /// min–max scale everything else would be one dark colour. So when the
    /// top 5% of values would take more than half of the scale, the scale
    /// ends at the 95th percentile and the colour bar says values above it
    /// share the top colour.
    static func colourRange(_ values: [Double]) -> (lo: Double, hi: Double, clipped: Bool) {
        let finite = values.filter(\.isFinite).sorted()
        guard let lo = finite.first, let hi = finite.last else { return (0, 1, false) }
        if hi == lo { return (lo, lo + 1, false) }
        let q95 = finite[Int((Double(finite.count - 1) * 0.95).rounded())]
        if q95 > lo && hi - lo > 2 * (q95 - lo) {
            return (lo, q95, true)
        }
        return (lo, hi, false)
    }

    func render() -> String {
        if let merged = binned() { return merged.render() }
        let layers = values.count
        let checkpoints = columnLabels.count
        let cellWidth = min(60, max(2, 720 / Double(max(1, checkpoints))))
        let cellHeight = min(28, max(4, 480 / Double(max(1, layers))))
        let plotWidth = cellWidth * Double(checkpoints), plotHeight = cellHeight * Double(layers)
        let left = 64.0, top = 46.0, bottom = 58.0, colorbarGap = 22.0, colorbarWidth = 16.0
        let colorbarHeight = max(plotHeight, 140)
        // Wide enough for the title too (a long one ran past the figure's edge and was cut off).
        let width = max(480, left + plotWidth + colorbarGap + colorbarWidth + 110, left + SVG.estimatedWidth(title, size: 15) + 16)
        let height = top + colorbarHeight + bottom
        let plotRight = left + plotWidth, plotBottom = top + plotHeight

        var svg = SVGDocument(width: width, height: height, title: title)
        svg.add(SVG.text(title, x: left, y: 26, size: 15, weight: "bold"))
        if let binNote { svg.add(SVG.text(binNote, x: left, y: 40, size: 11)) }

        let (lo, hi, clipped) = Self.colourRange(values.flatMap { $0 })
        // Cells are drawn in cell units (one unit = one cell, scaled by the
        // group's transform) as one path per colour, with runs of equal
        // colour in a row merged: C = 300, L = 100 as 30,000 <rect>s would
        // be ~2 MB, this is a fraction of that.
        var runsByColour: [String: [String]] = [:]
        var colourOrder: [String] = []
        for (layer, row) in values.enumerated() {
            var start = 0
            while start < row.count {
                let colour = cellColour(row[start], lo: lo, hi: hi)
                var end = start + 1
                while end < row.count && cellColour(row[end], lo: lo, hi: hi) == colour { end += 1 }
                if runsByColour[colour] == nil { colourOrder.append(colour) }
                runsByColour[colour, default: []].append("M\(start) \(layer)h\(end - start)v1h-\(end - start)z")
                start = end
            }
        }
        let hasUndefined = runsByColour[Self.undefinedColour] != nil
        // crispEdges: no anti-aliased hairlines between adjacent cells.
        svg.add(#"<g shape-rendering="crispEdges" transform="translate(\#(SVG.number(left)) \#(SVG.number(top))) "#
                + #"scale(\#(SVG.number(cellWidth)) \#(SVG.number(cellHeight)))">"#)
        for colour in colourOrder {
            svg.add(#"<path fill="\#(colour)" d="\#(runsByColour[colour]!.joined())"/>"#)
        }
        svg.add("</g>")
        let hasMarks = addMarks(to: &svg, left: left, top: top, cellWidth: cellWidth, cellHeight: cellHeight)
        svg.add(SVG.rect(x: left, y: top, width: plotWidth, height: plotHeight, fill: "none",
                         extra: ##"stroke="#444444" stroke-width="1""##))

        // Layer ticks: every n-th so labels stay at least ~13 px apart.
        let layerEvery = [1, 2, 5, 10, 20, 50, 100, 200, 500].first { Double($0) * cellHeight >= 13 } ?? 1000
        for layer in stride(from: 0, to: layers, by: layerEvery) {
            let y = top + (Double(layer) + 0.5) * cellHeight
            svg.add(SVG.line(x1: left - 4, y1: y, x2: left, y2: y, stroke: "#444444"))
            svg.add(SVG.text(rowLabels?[layer] ?? String(layer), x: left - 7, y: y, size: 11, anchor: .end, middle: true))
        }
        svg.add(SVG.text(yTitle, x: 18, y: top + plotHeight / 2, size: 13, anchor: .middle, middle: true,
                         rotate: -90))

        // Checkpoint ticks: every m-th so the widest label fits between them.
        let widest = columnLabels.map { SVG.estimatedWidth($0, size: 11) }.max() ?? 0
        let columnEvery = [1, 2, 5, 10, 20, 25, 50, 100, 200, 500, 1000]
            .first { Double($0) * cellWidth >= widest + 8 } ?? 2000
        var labelled = Array(stride(from: 0, to: checkpoints, by: columnEvery))
        if let last = labelled.last, last != checkpoints - 1,
           Double(checkpoints - 1 - last) * cellWidth >= widest + 8 {
            labelled.append(checkpoints - 1)  // the final checkpoint matters most
        }
        for column in labelled {
            let x = left + (Double(column) + 0.5) * cellWidth
            svg.add(SVG.line(x1: x, y1: plotBottom, x2: x, y2: plotBottom + 4, stroke: "#444444"))
            svg.add(SVG.text(columnLabels[column], x: x, y: plotBottom + 17, size: 11, anchor: .middle))
        }
        // Centred under the plot, but never pushed off the left edge of a narrow one.
        let xTitleCentre = max(left + plotWidth / 2, 8 + SVG.estimatedWidth(xTitle, size: 13) / 2)
        svg.add(SVG.text(xTitle, x: xTitleCentre, y: plotBottom + 40, size: 13, anchor: .middle))

        addColourBar(to: &svg, x: plotRight + colorbarGap, y: top, width: colorbarWidth, height: colorbarHeight,
                     lo: lo, hi: hi, clipped: clipped, hasUndefined: hasUndefined, hasMarks: hasMarks)
        return svg.render()
    }

    /// A white dot with a dark rim, centred in each marked cell, readable on
    /// every viridis colour; all dots are one path. Returns whether any was drawn.
    private func addMarks(to svg: inout SVGDocument, left: Double, top: Double, cellWidth: Double,
                          cellHeight: Double) -> Bool {
        let radius = Self.markRadius(cellWidth: cellWidth, cellHeight: cellHeight)
        var dots = ""
        for (layer, row) in marked.enumerated() {
            for (column, isMarked) in row.enumerated() where isMarked {
                let x = left + (Double(column) + 0.5) * cellWidth, y = top + (Double(layer) + 0.5) * cellHeight
                dots += Self.dot(x: x, y: y, radius: radius)
            }
        }
        guard !dots.isEmpty else { return false }
        svg.add(##"<path fill="#ffffff" stroke="#222222" stroke-width="0.6" d="\##(dots)"/>"##)
        return true
    }

    static func markRadius(cellWidth: Double, cellHeight: Double) -> Double {
        max(1, min(4, min(cellWidth, cellHeight) * 0.3))
    }

    /// A circle as two arcs, so many of them fit in one path.
    static func dot(x: Double, y: Double, radius: Double) -> String {
        let r = SVG.number(radius), diameter = SVG.number(2 * radius)
        return "M\(SVG.number(x - radius)) \(SVG.number(y))a\(r) \(r) 0 1 0 \(diameter) 0a\(r) \(r) 0 1 0 -\(diameter) 0z"
    }

    private func cellColour(_ value: Double, lo: Double, hi: Double) -> String {
        guard value.isFinite else { return Self.undefinedColour }
        return Viridis.hex(level: Viridis.level((value - lo) / (hi - lo)))
    }

    private func addColourBar(to svg: inout SVGDocument, x: Double, y: Double, width: Double, height: Double,
                              lo: Double, hi: Double, clipped: Bool, hasUndefined: Bool, hasMarks: Bool) {
        // A vertical gradient through the same samples the cells use; bottom = low.
        let stops = Viridis.samples.indices.map { index -> String in
            let t = Double(index) / Double(Viridis.samples.count - 1)
            return #"<stop offset="\#(SVG.number(t))" stop-color="\#(Viridis.hex(t))"/>"#
        }
        svg.define(#"<linearGradient id="colourbar" x1="0" y1="1" x2="0" y2="0">"#
                   + stops.joined() + "</linearGradient>")
        svg.add(SVG.rect(x: x, y: y, width: width, height: height, fill: "url(#colourbar)",
                         extra: ##"stroke="#444444" stroke-width="1""##))
        let scale = LinearScale(domain: (lo, hi), range: (y + height, y))
        let (ticks, step) = Ticks.values(lo, hi, target: max(2, Int(height / 40)))
        for tick in ticks {
            let ty = scale.position(tick)
            svg.add(SVG.line(x1: x + width, y1: ty, x2: x + width + 4, y2: ty, stroke: "#444444"))
            svg.add(SVG.text(Ticks.label(tick, step: step), x: x + width + 7, y: ty, size: 11, middle: true))
        }
        if clipped {
            svg.add(SVG.text("≥ \(Ticks.label(hi, step: step / 10))", x: x + width + 7, y: y - 6, size: 11))
        }
        svg.add(SVG.text(colorbarTitle, x: x + width + 62, y: y + height / 2, size: 12, anchor: .middle,
                         middle: true, rotate: 90))
        var swatchY = y + height + 14
        if hasUndefined {
            svg.add(SVG.rect(x: x, y: swatchY, width: width, height: 10, fill: Self.undefinedColour))
            svg.add(SVG.text(undefinedLabel, x: x + width + 5, y: swatchY + 5, size: 11, middle: true))
            swatchY += 16
        }
        if hasMarks {
            let legendDot = Self.dot(x: x + width / 2, y: swatchY + 5, radius: 4)
            svg.add(##"<path fill="#ffffff" stroke="#222222" stroke-width="0.6" d="\##(legendDot)"/>"##)
            svg.add(SVG.text(markLabel, x: x + width + 5, y: swatchY + 5, size: 11, middle: true))
        }
    }
}
