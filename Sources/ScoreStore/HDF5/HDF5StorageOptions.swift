internal import CHDF5
import DroptraceSupport

/// How a dataset is laid out in the file: contiguous, or chunked with
/// optional shuffle + deflate (gzip) compression, which h5py and every other
/// HDF5 reader decode without extra plugins.
public struct HDF5StorageOptions: Sendable, Equatable {
    /// Chunk shape; nil lets the writer pick one when chunking is needed.
    public var chunkShape: [Int]?
    /// zlib level 0...9; nil for no compression.
    public var deflateLevel: Int?
    /// Byte-shuffle before compressing: groups the exponent bytes of floats
    /// together, which typically compresses noticeably better.
    public var shuffle: Bool

    public init(chunkShape: [Int]? = nil, deflateLevel: Int? = nil, shuffle: Bool = false) {
        self.chunkShape = chunkShape
        self.deflateLevel = deflateLevel
        self.shuffle = shuffle
    }

    public static let contiguous = HDF5StorageOptions()

    public static func compressed(level: Int = 4, chunkShape: [Int]? = nil) -> HDF5StorageOptions {
        HDF5StorageOptions(chunkShape: chunkShape, deflateLevel: level, shuffle: true)
    }

    /// Filters and explicit chunks both need the chunked layout.
    var needsChunking: Bool { chunkShape != nil || deflateLevel != nil || shuffle }

    /// Aim for chunks of about this size: big enough to compress well,
    /// small enough that reading one row does not decompress much else.
    static let targetChunkBytes = 256 * 1024

    /// The chunk shape to use for a dataset of `shape`, or nil for contiguous.
    /// Scalars and empty datasets (a zero dimension) cannot be chunked with a
    /// fixed size in HDF5, and have nothing to compress, so they stay
    /// contiguous.
    func resolvedChunkShape(for shape: [Int], elementBytes: Int) -> [Int]? {
        guard needsChunking, !shape.isEmpty, !shape.contains(0) else { return nil }
        if let chunkShape { return chunkShape }
        // Halve the leading axes first: keeps whole trailing rows (one
        // checkpoint's layers) together in a chunk.
        var chunk = shape
        while elementCount(of: chunk) * elementBytes > Self.targetChunkBytes,
              let axis = chunk.firstIndex(where: { $0 > 1 }) {
            chunk[axis] = (chunk[axis] + 1) / 2
        }
        return chunk
    }

    /// Checks user-supplied values before HDF5 sees them, for clearer errors.
    func validate(for shape: [Int], dataset: String, path: String) throws {
        if let deflateLevel, !(0...9).contains(deflateLevel) {
            throw DroptraceError("cannot create \(dataset): deflate level \(deflateLevel) is not in 0...9",
                                 path: path)
        }
        if let chunkShape, !shape.isEmpty, !shape.contains(0) {
            let fits = chunkShape.count == shape.count
                && zip(chunkShape, shape).allSatisfy { chunk, size in chunk >= 1 && chunk <= size }
            if !fits {
                throw DroptraceError(
                    "cannot create \(dataset): chunk shape \(chunkShape) does not fit dataset shape \(shape)",
                    path: path)
            }
        }
    }
}

/// Runs `body` with a dataset-creation property list set up for `options`.
func withDatasetCreationList<Result>(
    options: HDF5StorageOptions, shape: [Int], elementBytes: Int, dataset: String, path: String,
    _ body: (hid_t) throws -> Result
) throws -> Result {
    try options.validate(for: shape, dataset: dataset, path: path)
    return try withHDF5ID(H5Pcreate(HDF5Library.ids.datasetCreate), closedBy: H5Pclose,
                          failure: "cannot create dataset-creation property list", path: path) { dcpl in
        if let chunk = options.resolvedChunkShape(for: shape, elementBytes: elementBytes) {
            let dims = chunk.map { hsize_t($0) }
            try HDF5Failure.check(H5Pset_chunk(dcpl, Int32(dims.count), dims),
                                  "cannot set chunk shape \(chunk) for \(dataset)", path: path)
            // Filters run in the order added: shuffle must come before deflate.
            if options.shuffle {
                try HDF5Failure.check(H5Pset_shuffle(dcpl), "cannot enable shuffle for \(dataset)", path: path)
            }
            if let level = options.deflateLevel {
                try HDF5Failure.check(H5Pset_deflate(dcpl, UInt32(level)),
                                      "cannot enable deflate for \(dataset)", path: path)
            }
        }
        return try body(dcpl)
    }
}

/// Reads back the layout and filters of an existing dataset.
func storageOptions(ofDataset datasetID: hid_t, dataset: String, path: String) throws -> HDF5StorageOptions {
    try withHDF5ID(H5Dget_create_plist(datasetID), closedBy: H5Pclose,
                   failure: "cannot read storage settings of \(dataset)", path: path) { dcpl in
        var options = HDF5StorageOptions()
        guard H5Pget_layout(dcpl) == H5D_CHUNKED else { return options }
        let rank = try HDF5Failure.checkedValue(H5Pget_chunk(dcpl, 0, nil), "cannot read chunk shape of \(dataset)",
                                                path: path)
        var dims = [hsize_t](repeating: 0, count: Int(rank))
        try HDF5Failure.check(H5Pget_chunk(dcpl, rank, &dims), "cannot read chunk shape of \(dataset)", path: path)
        options.chunkShape = dims.map { Int($0) }
        let filterCount = try HDF5Failure.checkedValue(H5Pget_nfilters(dcpl), "cannot read filters of \(dataset)",
                                                       path: path)
        for index in 0..<UInt32(filterCount) {
            var flags: UInt32 = 0
            var valueCount = 8
            var values = [UInt32](repeating: 0, count: valueCount)
            var config: UInt32 = 0
            let filter = H5Pget_filter2(dcpl, index, &flags, &valueCount, &values, 0, nil, &config)
            if filter == H5Z_FILTER_SHUFFLE { options.shuffle = true }
            if filter == H5Z_FILTER_DEFLATE { options.deflateLevel = valueCount > 0 ? Int(values[0]) : nil }
        }
        return options
    }
}
