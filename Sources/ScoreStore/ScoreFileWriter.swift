import DroptraceSupport

/// Writes the `ScoreFileLayout` datasets and attributes.
enum ScoreFileWriter {
    /// Checks shapes before anything touches the disk, naming the offending row.
    static func validate(_ scores: ScoreFile, path: String) throws {
        let layers = scores.metadata.numLayers
        guard layers > 0 else {
            throw DroptraceError("cannot write score file: num_layers is \(layers), must be positive", path: path)
        }
        if let problem = ScoreFileReader.problem(of: scores.metadata) {
            throw DroptraceError("cannot write score file: \(problem)", path: path)
        }
        for (index, row) in scores.rows.enumerated() {
            func fail(_ problem: String) -> DroptraceError {
                DroptraceError("cannot write score file: checkpoint '\(row.name)' (row \(index)): \(problem)",
                               path: path)
            }
            for (label, values) in [("attention", row.attention), ("mlp", row.mlp), ("block", row.block)]
            where values.count != layers {
                throw fail("\(label) has \(values.count) entries, expected \(layers) (num_layers)")
            }
            if row.blockGap.count != layers {
                throw fail("blockGap has \(row.blockGap.count) rows, expected \(layers) (num_layers)")
            }
            if let bad = row.blockGap.firstIndex(where: { $0.count != layers }) {
                let entries = row.blockGap[bad].count
                throw fail("blockGap row \(bad) has \(entries) entries, expected \(layers) (num_layers)")
            }
            if let sums = row.sums {
                do { try sums.validate() } catch let error as DroptraceError { throw fail(error.message) }
                if sums.layerCount != layers {
                    throw fail("per-sequence sums have \(sums.layerCount) layers, expected \(layers) (num_layers)")
                }
                let sequences = scores.rows.lazy.compactMap(\.sums).first!.sequenceCount
                if sums.sequenceCount != sequences || sequences < 1 {
                    throw fail("per-sequence sums hold \(sums.sequenceCount) sequences, expected \(sequences) as in every row, at least 1")
                }
            }
            if let angular = row.angularDistance, let problem = AngularDistanceColumns.problem(in: angular, layers: layers) {
                throw fail(problem)
            }
        }
    }

    /// Writes everything into a freshly created file; assumes `validate` passed.
    static func writeLayout(of scores: ScoreFile, into file: HDF5File) throws {
        let rows = scores.rows
        let layers = scores.metadata.numLayers
        let storage = ScoreFileLayout.storage

        try file.createDataset(ScoreFileLayout.checkpointNames, strings: rows.map(\.name), storage: storage)
        try file.createDataset(ScoreFileLayout.checkpointSteps, values: rows.map(\.step), storage: storage)
        try file.createDataset(ScoreFileLayout.checkpointTokens, values: rows.map(\.tokens), storage: storage)
        try file.createDataset(ScoreFileLayout.checkpointFingerprints, strings: rows.map(\.fingerprint), storage: storage)

        let perLayer: [(String, KeyPath<CheckpointRow, [Float]>)] = [
            (ScoreFileLayout.attentionScores, \.attention),
            (ScoreFileLayout.mlpScores, \.mlp),
            (ScoreFileLayout.blockScores, \.block),
        ]
        for (datasetPath, column) in perLayer {
            try file.createDataset(datasetPath, values: rows.flatMap { $0[keyPath: column] },
                                   shape: [rows.count, layers], storage: storage)
        }
        try file.createDataset(ScoreFileLayout.blockGap, values: rows.flatMap { $0.blockGap.flatMap { $0 } },
                               shape: [rows.count, layers, layers], storage: storage)
        try AngularDistanceColumns.write(rows, layers: layers, into: file)

        try writePerSequence(of: rows, layers: layers, into: file)

        let metadata = scores.metadata
        typealias Names = ScoreFileLayout.Attribute
        try file.setAttribute(Names.modelType, metadata.modelType)
        try file.setAttribute(Names.numLayers, Int64(metadata.numLayers))
        if let width = metadata.hiddenSize { try file.setAttribute(Names.hiddenSize, Int64(width)) }
        if let digest = metadata.layerShapesSHA256 { try file.setAttribute(Names.layerShapesSHA256, digest) }
        try file.setAttribute(Names.metric, metadata.metric)
        try file.setAttribute(Names.calibrationSHA256, metadata.calibrationSHA256)
        try file.setAttribute(Names.calibrationTokens, metadata.calibrationTokens)
        try file.setAttribute(Names.droptraceVersion, metadata.droptraceVersion)
        try file.setAttribute(Names.precision, metadata.precision)
        if let kernel = metadata.matrixKernel { try file.setAttribute(Names.matrixKernel, kernel) }
        if let series = metadata.seriesDirectory { try file.setAttribute(Names.seriesDirectory, series) }
        if let shard = metadata.shard {
            try file.setAttribute(Names.shardIndex, Int64(shard.index))
            try file.setAttribute(Names.shardCount, Int64(shard.count))
        }
    }

    /// The `ScoreFileLayout.PerSequence` datasets, when any row has sums:
    /// rows without them get tokens −1 and NaN sums.
    private static func writePerSequence(of rows: [CheckpointRow], layers: Int, into file: HDF5File) throws {
        guard let sequences = rows.lazy.compactMap(\.sums).first?.sequenceCount else { return }
        typealias Names = ScoreFileLayout.PerSequence
        let storage = ScoreFileLayout.storage
        try file.createDataset(
            Names.tokens,
            values: rows.flatMap { $0.sums?.tokens.map(Int64.init) ?? Array(repeating: -1, count: sequences) },
            shape: [rows.count, sequences], storage: storage)

        func write(_ path: String, rows perRow: Int, _ values: (SequenceSums) -> [[Double]]) throws {
            let missing = [Double](repeating: .nan, count: perRow * layers)
            try file.createDataset(
                path, values: rows.flatMap { row in row.sums.map { values($0).flatMap { $0 } } ?? missing },
                shape: [rows.count, perRow, layers], storage: storage)
        }
        for (index, name) in SequenceSums.moduleNames.enumerated() {
            try write(Names.cosineSum(name), rows: sequences) { $0.modules[index].sums.cosineSum }
            try write(Names.angularDistanceSum(name), rows: sequences) { $0.modules[index].sums.angularDistanceSum }
            try write(Names.lastTokenCosine(name), rows: sequences) { $0.modules[index].sums.lastTokenCosine }
        }
        try write(Names.blockGapCosineSum, rows: layers) { $0.blockGap.cosineSum }
        try write(Names.blockGapAngularDistanceSum, rows: layers) { $0.blockGap.angularDistanceSum }
        try write(Names.blockGapLastTokenAngularDistanceSum, rows: layers) { $0.blockGap.lastTokenAngularDistanceSum }
    }
}
