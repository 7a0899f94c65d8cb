import DroptraceSupport

/// Reads a score file, checking the layout as it goes so that a wrong file
/// gives one clear line instead of a crash or a misaligned table.
enum ScoreFileReader {
    static func read(path: String) throws -> ScoreFile {
        let file = try HDF5File.open(at: path)
        defer { try? file.close() }

        let metadata = try readMetadata(file)
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
                fingerprint: fingerprints[index], angularDistance: angularDistances[index])
        }
        return ScoreFile(metadata: metadata, rows: rows)
    }

    private static func readMetadata(_ file: HDF5File) throws -> ScoreFileMetadata {
        typealias Names = ScoreFileLayout.Attribute
        let layers = try file.scalarAttribute(Names.numLayers, as: Int64.self)
        guard layers > 0 else {
            throw DroptraceError("root attribute \(Names.numLayers) is \(layers), must be positive",
                                 path: file.filePath)
        }
        return ScoreFileMetadata(
            modelType: try file.stringAttribute(Names.modelType),
            numLayers: Int(layers),
            metric: try file.stringAttribute(Names.metric),
            calibrationSHA256: try file.stringAttribute(Names.calibrationSHA256),
            calibrationTokens: try file.scalarAttribute(Names.calibrationTokens, as: Int64.self),
            droptraceVersion: try file.stringAttribute(Names.droptraceVersion))
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
