import DroptraceSupport

extension HDF5Group {
    /// Dataset `name` of this group (at `/<groupPath>/<name>`) read as one
    /// measurement per checkpoint: shape [`count`], a floating-point type,
    /// each value NaN (not measured) or one for which `valid` holds.
    /// - Throws: `DroptraceError` naming the file and the dataset, saying
    ///   what a value must be (`expected`, e.g. "a perplexity ≥ 1").
    public func measurements(
        _ name: String, count: Int, groupPath: String, expected: String, valid: (Double) -> Bool
    ) throws -> [Double] {
        let data = try dataset(name)
        guard data.shape == [count], case .float = data.elementType else {
            throw DroptraceError(
                "/\(groupPath)/\(name) has shape \(data.shape) of \(data.elementType), expected [\(count)] floats", path: filePath)
        }
        let values = try data.read(as: Double.self)
        if let bad = values.firstIndex(where: { !$0.isNaN && !valid($0) }) {
            throw DroptraceError("/\(groupPath)/\(name) holds \(values[bad]) at checkpoint \(bad), expected \(expected)", path: filePath)
        }
        return values
    }
}
