import DroptraceSupport
import Foundation

/// What a user added at the root of a store (with h5py, then `droptrace
/// reseal`): groups, datasets, links and root attributes outside
/// `ScoreFileLayout.rootGroups` and `rootAttributes`. The store's writer
/// writes droptrace's layout only, so a rewrite would lose them; a trace
/// keeps the store as it was beside it first (`StoreAside.keepCopy`).
public struct StoreAdditions: Sendable, Equatable, CustomStringConvertible {
    /// Root link names, in HDF5's name order.
    public let links: [String]
    /// Root attribute names, in HDF5's name order.
    public let attributes: [String]

    public var isEmpty: Bool { links.isEmpty && attributes.isEmpty }

    /// The additions of the open store `file`.
    /// - Throws: `DroptraceError` naming the store when its root does not list.
    public init(in file: HDF5File) throws {
        links = try file.childNames().filter { !ScoreFileLayout.rootGroups.contains($0) }
        attributes = try file.attributeNames().filter { !ScoreFileLayout.rootAttributes.contains($0) }
    }

    /// E.g. `/notes, /baseline, root attribute 'run_id'`.
    public var description: String {
        let names = attributes.map { "'\($0)'" }.joined(separator: ", ")
        let named = attributes.isEmpty ? [] : [(attributes.count == 1 ? "root attribute " : "root attributes ") + names]
        return (links.map { "/\($0)" } + named).joined(separator: ", ")
    }
}
