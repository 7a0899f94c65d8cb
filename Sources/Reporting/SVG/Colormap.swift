/// Viridis (van der Walt & Smith, matplotlib's default): perceptually
/// uniform, readable in greyscale and by colour-blind readers, dark for low
/// values. Stored as 33 samples of matplotlib's table (every 8th of 256, in
/// 0...255 sRGB) and interpolated linearly between them; the largest error
/// against the full table is under 3/255 per channel, invisible in a heatmap.
enum Viridis {
    static let samples: [(Double, Double, Double)] = [
        (68, 1, 84), (71, 13, 96), (72, 24, 106), (72, 35, 116), (71, 45, 123), (69, 55, 129),
        (66, 64, 134), (62, 73, 137), (59, 82, 139), (55, 91, 141), (51, 99, 141), (47, 107, 142),
        (44, 114, 142), (41, 122, 142), (38, 130, 142), (35, 137, 142), (33, 145, 140), (31, 152, 139),
        (31, 160, 136), (34, 167, 133), (40, 174, 128), (50, 182, 122), (63, 188, 115), (78, 195, 107),
        (94, 201, 98), (112, 207, 87), (132, 212, 75), (152, 216, 62), (173, 220, 48), (194, 223, 35),
        (216, 226, 25), (236, 229, 27), (253, 231, 37),
    ]

    /// The colour at `t` in 0...1 (clamped) as "#rrggbb".
    static func hex(_ t: Double) -> String {
        let (r, g, b) = rgb(t)
        return "#" + [r, g, b].map { channel in
            let value = Int(channel.rounded())
            return (value < 16 ? "0" : "") + String(value, radix: 16)
        }.joined()
    }

    static func rgb(_ t: Double) -> (Double, Double, Double) {
        let clamped = t.isNaN ? 0 : min(1, max(0, t))
        let position = clamped * Double(samples.count - 1)
        let lower = min(Int(position), samples.count - 2)
        let fraction = position - Double(lower)
        let a = samples[lower], b = samples[lower + 1]
        return (a.0 + (b.0 - a.0) * fraction, a.1 + (b.1 - a.1) * fraction, a.2 + (b.2 - a.2) * fraction)
    }

    /// 256 quantised levels: cells with the same level get the same colour,
    /// which lets the heatmap merge neighbouring cells into one rectangle.
    static let levels = 256

    static func level(_ t: Double) -> Int {
        Int((min(1, max(0, t)) * Double(levels - 1)).rounded())
    }

    static func hex(level: Int) -> String { hex(Double(level) / Double(levels - 1)) }
}
