import CheckpointIO
import DroptraceSupport

/// Reads a score file, checking the layout as it goes so that a wrong file
/// gives one clear line instead of a crash or a misaligned table.
enum ScoreFileReader {
    /// Reads a store, or with `partial` a calibration shard's partial result.
    static func read(path: String, partial: Bool) throws -> ScoreFile {
        let file = try HDF5File.open(at: path)
        defer { try? file.close() }

        let metadata = try readMetadata(file)
        if !partial, let shard = metadata.shard {
            throw DroptraceError(
                "is the partial result of calibration \(shard) written by `droptrace slurm task`, not a store; "
                    + "`droptrace slurm finalize` merges a checkpoint's partials into the store", path: path)
        }
        let layers = metadata.numLayers

        let namesDataset = try dataset(ScoreFileLayout.checkpointNames, in: file, holding: .strings)
        guard namesDataset.shape.count == 1 else {
            throw DroptraceError(
                "/\(ScoreFileLayout.checkpointNames) has shape \(namesDataset.shape), expected one dimension",
                path: path)
        }
        let names = try namesDataset.readStrings()
        let count = names.count

        let steps = try dataset(ScoreFileLayout.checkpointSteps, in: file, holding: .integers, shape: [count])
            .read(as: Int64.self)
        let tokens = try dataset(ScoreFileLayout.checkpointTokens, in: file, holding: .integers, shape: [count])
            .read(as: Int64.self)
        // One row per checkpoint, named by one line of text (it is printed); steps and tokens are counts,
        // -1 when unknown.
        if let bad = names.first(where: { !$0.isEmpty && !ScoreFileMetadata.isOneLine($0, atMost: 4096) }) {
            throw DroptraceError(
                "/\(ScoreFileLayout.checkpointNames) holds '\(SystemError.oneLine(String(bad.prefix(40))))', not a checkpoint name "
                    + "(one line of text, at most 4096 bytes)", path: path)
        }
        var seen = Set<String>()
        if let twice = names.first(where: { !seen.insert($0).inserted }) {
            throw DroptraceError("/\(ScoreFileLayout.checkpointNames) holds checkpoint '\(SystemError.oneLine(twice))' twice", path: path)
        }
        for (dataset, values) in [(ScoreFileLayout.checkpointSteps, steps), (ScoreFileLayout.checkpointTokens, tokens)] {
            if let bad = values.firstIndex(where: { $0 < -1 }) {
                throw DroptraceError("/\(dataset) holds \(values[bad]) for checkpoint '\(SystemError.oneLine(names[bad]))', expected a count or -1 (unknown)", path: path)
            }
        }
        if let problem = outOfSeriesOrder(names: names, steps: steps) { throw DroptraceError(problem, path: path) }
        // Absent from files written before fingerprints were recorded.
        let fingerprints = try file.kind(of: ScoreFileLayout.checkpointFingerprints) == nil
            ? Array(repeating: "", count: count)
            : try dataset(ScoreFileLayout.checkpointFingerprints, in: file, holding: .strings, shape: [count]).readStrings()
        func perLayer(_ datasetPath: String) throws -> [Float] {
            try dataset(datasetPath, in: file, holding: .floats, shape: [count, layers]).read(as: Float.self)
        }
        let attention = try perLayer(ScoreFileLayout.attentionScores)
        let mlp = try perLayer(ScoreFileLayout.mlpScores)
        let block = try perLayer(ScoreFileLayout.blockScores)
        let gaps = try dataset(ScoreFileLayout.blockGap, in: file, holding: .floats, shape: [count, layers, layers])
            .read(as: Float.self)

        let sums = try readPerSequence(file, names: names, layers: layers)
        let angularDistances = try AngularDistanceColumns.read(from: file, count: count, layers: layers)

        let rows = (0..<count).map { index in
            let layerRange = (index * layers)..<((index + 1) * layers)
            let gapStart = index * layers * layers
            return CheckpointRow(
                name: names[index], step: steps[index], tokens: tokens[index],
                attention: Array(attention[layerRange]), mlp: Array(mlp[layerRange]), block: Array(block[layerRange]),
                blockGap: (0..<layers).map { row in
                    Array(gaps[(gapStart + row * layers)..<(gapStart + (row + 1) * layers)])
                },
                fingerprint: fingerprints[index], sums: sums[index], angularDistance: angularDistances[index])
        }
        if let problem = rows.lazy.compactMap({ outOfRange($0) ?? gapMismatch($0) ?? disagreement($0) }).first { throw DroptraceError(problem, path: path) }
        // A store's rows each scored every calibration token (a partial, its shard's share).
        if !partial, let row = rows.first(where: { $0.sums.map { Int64($0.tokens.reduce(0, +)) != metadata.calibrationTokens } ?? false }) {
            throw DroptraceError(
                "/\(ScoreFileLayout.PerSequence.tokens) of checkpoint '\(SystemError.oneLine(row.name))' counts \(row.sums!.tokens.reduce(0, +)) tokens, "
                    + "but root attribute \(ScoreFileLayout.Attribute.calibrationTokens) is \(metadata.calibrationTokens): the file was changed by other software",
                path: path)
        }
        return ScoreFile(metadata: metadata, rows: rows)
    }

    /// Where rows are not in the series order `trace` writes them in
    /// (`CheckpointName.Position`: stage, ingredient, step; unknown steps
    /// last), or two rows name one point of training (a known step): the
    /// analysis takes the last row for the final checkpoint and the figures
    /// draw rows in order, so a store reordered by hand would be reported
    /// against another final checkpoint, and a point stored twice counted twice.
    private static func outOfSeriesOrder(names: [String], steps: [Int64]) -> String? {
        let places = zip(names, steps).map { CheckpointName.position(name: $0, step: $1) }
        guard let index = places.indices.dropFirst().first(where: { places[$0] < places[$0 - 1] || (places[$0] == places[$0 - 1] && places[$0].isKnown) })
        else { return nil }
        let (earlier, later) = (SystemError.oneLine(names[index - 1]), SystemError.oneLine(names[index]))
        if places[index] == places[index - 1] {
            return "holds checkpoints '\(earlier)' and '\(later)' at one point of training (step \(places[index].step)), "
                + "which the analysis would count twice: the file was changed by other software"
        }
        return "holds checkpoint '\(later)' after '\(earlier)', which comes later in training; droptrace writes rows in "
            + "training order, and the analysis takes the last for the final checkpoint: the file was changed by other software"
    }

    /// Where a row holds a value no run computes (NaN aside, which stands
    /// for undefined): an importance outside [0, 2] (1 − a mean cosine), a
    /// block-gap cosine outside [−1, 1], an angular distance outside [0, 1],
    /// beyond float32 rounding. Stores without per-sequence sums have
    /// nothing else to check their values against.
    private static func outOfRange(_ row: CheckpointRow) -> String? {
        let tolerance: Float = 1e-4
        var checked: [(path: String, values: [Float], range: ClosedRange<Float>)] = [
            (ScoreFileLayout.attentionScores, row.attention, 0...2), (ScoreFileLayout.mlpScores, row.mlp, 0...2),
            (ScoreFileLayout.blockScores, row.block, 0...2),
        ] + row.blockGap.enumerated().map { start, values in ("\(ScoreFileLayout.blockGap)[\(start)]", values, -1...1) }
        if let stored = row.angularDistance {
            checked += stored.perLayer.map { ($0.path, $0.values, 0...1) }
            checked += stored.perGap.flatMap { gap in
                gap.values.enumerated().map { start, values in ("\(gap.path)[\(start)]", values, 0...1) }
            }
        }
        for (path, values, range) in checked {
            let bounds = (range.lowerBound - tolerance)...(range.upperBound + tolerance)
            if let index = values.indices.first(where: { !values[$0].isNaN && !bounds.contains(values[$0]) }) {
                return "/\(path) of checkpoint '\(SystemError.oneLine(row.name))', index \(index), is \(values[index]), "
                    + "outside [\(range.lowerBound), \(range.upperBound)] where no run puts it: the file was changed by other software"
            }
        }
        return nil
    }

    /// Where a row's n-gap matrices contradict its per-layer scores, which
    /// hold the same pairs of states: `[i][0]` is block i's input and
    /// output (cosine = 1 − `/scores/block`[i], angular distance = the
    /// block's), and cells past the last layer (i + n > L) have no states,
    /// NaN. Checked in every row: stores without per-sequence sums have no
    /// other check of either.
    private static func gapMismatch(_ row: CheckpointRow) -> String? {
        let layers = row.block.count
        var pairs = [(ScoreFileLayout.blockGap, row.blockGap, row.block.map { 1 - $0 })]
        if let angular = row.angularDistance {
            pairs += [(ScoreFileLayout.AngularDistance.blockGap, angular.blockGap, angular.block),
                      (ScoreFileLayout.AngularDistance.blockGapLastToken, angular.blockGapLastToken, angular.blockLastToken)]
        }
        let name = SystemError.oneLine(row.name)
        for (path, gap, adjacent) in pairs {
            for start in 0..<layers {
                if let span = (layers - start..<layers).first(where: { !gap[start][$0].isNaN }) {
                    return "/\(path)[\(start)][\(span)] of checkpoint '\(name)' is \(gap[start][span]), but layer \(start) + \(span + 1) "
                        + "is past the model's \(layers) layers, where no run measures (NaN): the file was changed by other software"
                }
                let (stored, expected) = (gap[start][0], adjacent[start])
                // Both float32 roundings of one mean (1 − m and m): a few float32 steps apart at most.
                if stored.isNaN != expected.isNaN || abs(stored - expected) > 1e-5 {
                    return "/\(path)[\(start)][0] of checkpoint '\(name)' is \(stored), but the block's own score gives \(expected) "
                        + "for the same pair of states: the file was changed by other software"
                }
            }
        }
        return nil
    }

    /// Where a row's scores are not the means its per-sequence sums give
    /// (importance = 1 − Σ cos / Σ tokens, block gap = Σ cos / Σ tokens, the
    /// angular distances their means, as droptrace derives them all), beyond
    /// float32 rounding: a store changed by hand, whose intervals and report
    /// would contradict its scores.
    private static func disagreement(_ row: CheckpointRow) -> String? {
        guard let sums = row.sums else { return nil }
        // droptrace stores Float(derived); one float32 step either way allows
        // for sums added in another order (shards), nothing a hand edit needs.
        func differs(_ stored: Float, _ derived: Double) -> Bool {
            if stored.isNaN || derived.isNaN { return stored.isNaN != derived.isNaN }
            let rounded = Float(derived)
            return stored != rounded && stored != rounded.nextUp && stored != rounded.nextDown
        }
        let modules = [
            (ScoreFileLayout.attentionScores, sums.attention, row.attention), (ScoreFileLayout.mlpScores, sums.mlp, row.mlp),
            (ScoreFileLayout.blockScores, sums.block, row.block),
        ]
        var checked = modules.map { path, module, stored in (path, stored, sums.meanCosine(module).map { 1 - $0 }) }
            + zip(row.blockGap, sums.blockGapMeanCosine).enumerated().map { start, pair in
                ("\(ScoreFileLayout.blockGap)[\(start)]", pair.0, pair.1)
            }
        // Rows stored before angular distances existed hold NaN there (`undefined`).
        if let stored = row.angularDistance, stored.isDefined {
            let derived = AngularDistanceScores(sums: sums)
            checked += zip(stored.perLayer, derived.perLayer).map { ($0.path, $0.values, $1.values.map(Double.init)) }
            for (storedGap, derivedGap) in zip(stored.perGap, derived.perGap) {
                checked += zip(storedGap.values, derivedGap.values).enumerated().map { start, pair in
                    ("\(storedGap.path)[\(start)]", pair.0, pair.1.map(Double.init))
                }
            }
        }
        for (path, stored, derived) in checked {
            if let layer = stored.indices.first(where: { differs(stored[$0], derived[$0]) }) {
                return "/\(path) of checkpoint '\(SystemError.oneLine(row.name))', layer \(layer), is \(stored[layer]), "
                    + "but its per-sequence sums (/per_sequence) give \(derived[layer])"
            }
        }
        return nil
    }

    /// Each row's `ScoreFileLayout.PerSequence` sums; all nil when the file
    /// has none, nil for a row stored without them (tokens all −1).
    private static func readPerSequence(_ file: HDF5File, names: [String], layers: Int) throws -> [SequenceSums?] {
        typealias Names = ScoreFileLayout.PerSequence
        let (path, count) = (file.filePath, names.count)
        guard try file.kind(of: Names.tokens) != nil else { return Array(repeating: nil, count: count) }
        let tokensDataset = try dataset(Names.tokens, in: file, holding: .integers)
        let shape = tokensDataset.shape
        guard shape.count == 2, shape[0] == count, shape[1] >= 1 else {
            throw DroptraceError(
                "/\(Names.tokens) has shape \(shape), expected [\(count), sequences] (checkpoints, sequences ≥ 1)",
                path: path)
        }
        let sequences = shape[1]
        // The largest dataset: [C, S, L] or the gaps' [C, L, L].
        let values = [max(sequences, layers), layers].reduce(Optional(count)) { product, factor in
            product.flatMap { product in
                let (result, overflow) = product.multipliedReportingOverflow(by: factor)
                return overflow ? nil : result
            }
        }
        guard let values, values <= Names.maximumValues, count * sequences <= Names.maximumSequenceRows else {
            throw DroptraceError(
                "/\(Names.tokens): \(count) checkpoints × \(sequences) sequences × \(layers) layers is more per-sequence values than droptrace reads "
                    + "(\(Names.maximumValues) values, \(Names.maximumSequenceRows) checkpoint-sequence pairs)",
                path: path)
        }
        let tokens = try tokensDataset.read(as: Int64.self)

        func cubes(_ datasetPath: String, rows: Int) throws -> [[[Double]]] {
            let flat = try dataset(datasetPath, in: file, holding: .floats, shape: [count, rows, layers])
                .read(as: Double.self)
            return (0..<count).map { c in
                (0..<rows).map { r in Array(flat[((c * rows + r) * layers)..<((c * rows + r + 1) * layers)]) }
            }
        }
        func module(_ name: String) throws -> [ModuleSequenceSums] {
            let (cosine, angular, last) = (
                try cubes(Names.cosineSum(name), rows: sequences), try cubes(Names.angularDistanceSum(name), rows: sequences),
                try cubes(Names.lastTokenCosine(name), rows: sequences))
            return (0..<count).map {
                ModuleSequenceSums(cosineSum: cosine[$0], angularDistanceSum: angular[$0], lastTokenCosine: last[$0])
            }
        }
        let (attention, mlp, block) = (try module("attention"), try module("mlp"), try module("block"))
        let gap = (
            cosine: try cubes(Names.blockGapCosineSum, rows: layers),
            angular: try cubes(Names.blockGapAngularDistanceSum, rows: layers),
            last: try cubes(Names.blockGapLastTokenAngularDistanceSum, rows: layers))

        return try (0..<count).map { index in
            let counts = tokens[(index * sequences)..<((index + 1) * sequences)]
            if counts.allSatisfy({ $0 == -1 }) { return nil }
            let sums = SequenceSums(
                tokens: counts.map { Int($0) }, attention: attention[index], mlp: mlp[index], block: block[index],
                blockGap: BlockGapSums(
                    cosineSum: gap.cosine[index], angularDistanceSum: gap.angular[index],
                    lastTokenAngularDistanceSum: gap.last[index]))
            do { try sums.validate() } catch let error as DroptraceError {
                throw DroptraceError("/\(Names.tokens): checkpoint '\(names[index])' (row \(index)): \(error.message)", path: path)
            }
            return sums
        }
    }

    private static func readMetadata(_ file: HDF5File) throws -> ScoreFileMetadata {
        typealias Names = ScoreFileLayout.Attribute
        let layers = try file.scalarAttribute(Names.numLayers, as: Int64.self)
        guard layers > 0, layers <= ModelLimits.maxLayers else {
            throw DroptraceError("root attribute \(Names.numLayers) is \(layers), must be between 1 and \(ModelLimits.maxLayers)",
                                 path: file.filePath)
        }
        var shard: CalibrationShard?
        if try file.hasAttribute(Names.shardIndex) || file.hasAttribute(Names.shardCount) {
            let (index, count) = (try file.scalarAttribute(Names.shardIndex, as: Int64.self),
                                  try file.scalarAttribute(Names.shardCount, as: Int64.self))
            do {
                shard = try CalibrationShard(index: Int(clamping: index), count: Int(clamping: count))
            } catch let error as DroptraceError {
                throw DroptraceError("root attributes \(Names.shardIndex), \(Names.shardCount): \(error.message)", path: file.filePath)
            }
        }
        var hiddenSize: Int?
        if try file.hasAttribute(Names.hiddenSize) {
            let width = try file.scalarAttribute(Names.hiddenSize, as: Int64.self)
            guard width > 0, let value = Int(exactly: width) else {
                throw DroptraceError("root attribute \(Names.hiddenSize) is \(width), must be positive", path: file.filePath)
            }
            hiddenSize = value
        }
        // Both absent from stores written before they were recorded, which were scored in float32.
        let precision = try file.hasAttribute(Names.precision) ? try file.stringAttribute(Names.precision) : "f32"
        let kernel = try file.hasAttribute(Names.matrixKernel) ? try file.stringAttribute(Names.matrixKernel) : nil
        let series = try file.hasAttribute(Names.seriesDirectory) ? try file.stringAttribute(Names.seriesDirectory) : nil
        let shapes = try file.hasAttribute(Names.layerShapesSHA256) ? try file.stringAttribute(Names.layerShapesSHA256) : nil
        let metadata = ScoreFileMetadata(
            modelType: try file.stringAttribute(Names.modelType),
            numLayers: Int(layers), hiddenSize: hiddenSize, layerShapesSHA256: shapes,
            metric: try file.stringAttribute(Names.metric),
            calibrationSHA256: try file.stringAttribute(Names.calibrationSHA256),
            calibrationTokens: try file.scalarAttribute(Names.calibrationTokens, as: Int64.self),
            droptraceVersion: try file.stringAttribute(Names.droptraceVersion), shard: shard,
            precision: precision, matrixKernel: kernel, seriesDirectory: series)
        if let problem = problem(of: metadata) { throw DroptraceError(problem, path: file.filePath) }
        return metadata
    }

    /// What is wrong with these attribute values, nil when nothing: a
    /// metric other than cosine, a calibration hash that is no SHA-256 in
    /// hex, a negative token count, a version that is not one line, a
    /// precision droptrace does not know, a kernel name that is not one line
    /// of text (it is printed in reports and messages), a series directory
    /// that is not an absolute path on one line (it is printed in messages),
    /// a layer-shapes digest that is not a SHA-256 in hex.
    static func problem(of metadata: ScoreFileMetadata) -> String? {
        typealias Names = ScoreFileLayout.Attribute
        if !ScoreFileLayout.isModelTypeName(metadata.modelType) {
            return "root attribute \(Names.modelType) is \"\(SystemError.oneLine(String(metadata.modelType.prefix(40))))\", not a model type"
        }
        if metadata.metric != "cosine" {
            return "root attribute \(Names.metric) is \"\(SystemError.oneLine(String(metadata.metric.prefix(40))))\", expected cosine"
        }
        if !ScoreFileMetadata.isDigest(metadata.calibrationSHA256) {
            return "root attribute \(Names.calibrationSHA256) is not 64 lowercase hex digits"
        }
        if metadata.calibrationTokens < 0 {
            return "root attribute \(Names.calibrationTokens) is \(metadata.calibrationTokens), expected a count"
        }
        if !oneLine(metadata.droptraceVersion, atMost: 100) {
            return "root attribute \(Names.droptraceVersion) is not one line of text (at most 100 bytes)"
        }
        let precision = metadata.precision
        if !ScoreFileLayout.precisions.contains(precision) {
            return "root attribute \(Names.precision) is \"\(SystemError.oneLine(String(precision.prefix(40))))\", expected \(ScoreFileLayout.precisions.joined(separator: " or "))"
        }
        if let kernel = metadata.matrixKernel, !oneLine(kernel, atMost: 1000) {
            return "root attribute \(Names.matrixKernel) is not one line of text (at most 1000 bytes)"
        }
        if let series = metadata.seriesDirectory, !ScoreFileMetadata.canRecord(seriesDirectory: series) {
            return "root attribute \(Names.seriesDirectory) is not an absolute path on one line"
        }
        if let digest = metadata.layerShapesSHA256, !ScoreFileMetadata.isDigest(digest) {
            return "root attribute \(Names.layerShapesSHA256) is not 64 lowercase hex digits"
        }
        return nil
    }

    static func oneLine(_ text: String, atMost limit: Int) -> Bool {
        !text.isEmpty && text.utf8.count <= limit
            && !text.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0 == "\u{2028}" || $0 == "\u{2029}" })
    }

    enum Contents: String {
        case strings, integers, floats = "floating-point numbers"

        func matches(_ type: HDF5ElementType) -> Bool {
            switch (self, type) {
            case (.strings, .string), (.integers, .integer), (.floats, .float): true
            default: false
            }
        }
    }

    /// Opens a required dataset and checks what it holds and, if given, its shape.
    static func dataset(
        _ datasetPath: String, in file: HDF5File, holding contents: Contents, shape: [Int]? = nil
    ) throws -> HDF5Dataset {
        let path = file.filePath
        guard try file.kind(of: datasetPath) == .dataset else {
            throw DroptraceError("missing dataset /\(datasetPath) (not a droptrace score file?)", path: path)
        }
        let dataset = try file.dataset(datasetPath)
        guard contents.matches(dataset.elementType) else {
            throw DroptraceError(
                "/\(datasetPath) holds \(dataset.elementType) values, expected \(contents.rawValue)", path: path)
        }
        if let shape, dataset.shape != shape {
            throw DroptraceError(
                "/\(datasetPath) has shape \(dataset.shape), expected \(shape) (checkpoints, num_layers...)",
                path: path)
        }
        return dataset
    }
}
