/// Bounds on what droptrace reads, far beyond any released model, so that a
/// crafted file cannot make it allocate or compute without bound.
public enum ModelLimits {
    /// Decoder layers of a model, and of a store (whose block-gap matrices
    /// are layers × layers per checkpoint). The deepest released decoders
    /// have about 130.
    public static let maxLayers = 4096
}
