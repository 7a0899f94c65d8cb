import DroptraceSupport
import ScoreStore

/// The three module types LLM-Drop scores: an attention layer, an MLP layer,
/// and a whole block (attention + MLP together).
public enum ModuleKind: String, CaseIterable, Sendable, Codable {
    case attention, mlp, block

    /// Lower-case name as used in the HDF5 layout (`/analysis/<rawValue>/...`).
    public var storeName: String { rawValue }

    /// Name for prose and table headers.
    public var displayName: String {
        switch self {
        case .attention: "Attention"
        case .mlp: "MLP"
        case .block: "Block"
        }
    }

    /// This module's per-sequence sums.
    public func sums(in sums: SequenceSums) -> ModuleSequenceSums {
        switch self {
        case .attention: sums.attention
        case .mlp: sums.mlp
        case .block: sums.block
        }
    }

    /// This module's importance vector in a score-file row.
    public func importance(in row: CheckpointRow) -> [Float] {
        switch self {
        case .attention: row.attention
        case .mlp: row.mlp
        case .block: row.block
        }
    }
}
