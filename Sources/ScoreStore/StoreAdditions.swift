internal import CHDF5
import CHDF5Probe
import DroptraceSupport
import Foundation

/// What a user added at the root of a store — groups, datasets, links and
/// root attributes outside `ScoreFileLayout.rootGroups` and
/// `rootAttributes` (with h5py, then `droptrace reseal`). A trace rewrites
/// its store from its rows; these are copied into each new store as they
/// are, so a rewrite never loses them: objects with all they hold and their
/// attributes, soft and external links as links.
public struct StoreAdditions: Sendable, Equatable {
    /// Root link names, in HDF5's name order.
    public let links: [String]
    /// Root attribute names, in HDF5's name order.
    public let attributes: [String]

    public var isEmpty: Bool { links.isEmpty && attributes.isEmpty }

    private init(links: [String], attributes: [String]) {
        self.links = links
        self.attributes = attributes
    }

    /// The additions of the store at `url` (read through `HDF5File.open`'s
    /// checksum and probe).
    /// - Throws: `DroptraceError` naming the store when it does not read.
    public init(of url: URL) throws {
        let file = try HDF5File.open(at: url)
        defer { try? file.close() }
        links = try file.childNames().filter { !ScoreFileLayout.rootGroups.contains($0) }
        attributes = try file.attributeNames().filter { !ScoreFileLayout.rootAttributes.contains($0) }
    }

    /// What `copy` left out, which later copies need not try again (`dropping`).
    public struct Unkept: Sendable, Equatable, CustomStringConvertible {
        /// Root attributes holding HDF5 object references (into the old file).
        public var attributes: [String] = []
        /// Second names of droptrace's objects the new store no longer has,
        /// each with the path it named, e.g. "alias" → "analysis/attention".
        public var links: [String: String] = [:]

        public var isEmpty: Bool { attributes.isEmpty && links.isEmpty }

        /// One clause per kind, e.g. `root attribute 'x' holds HDF5 object references, which would point into the old file`.
        public var description: String {
            var parts: [String] = []
            if !attributes.isEmpty {
                let names = attributes.map { "'\($0)'" }.joined(separator: ", ")
                parts.append(attributes.count == 1
                    ? "root attribute \(names) holds HDF5 object references, which would point into the old file"
                    : "root attributes \(names) hold HDF5 object references, which would point into the old file")
            }
            for (name, path) in links.sorted(by: { $0.key < $1.key }) {
                parts.append("/\(name) was another name of /\(path), which this store no longer has")
            }
            return parts.joined(separator: "; ")
        }
    }

    /// These additions without what `unkept` names.
    public func dropping(_ unkept: Unkept) -> StoreAdditions {
        StoreAdditions(links: links.filter { unkept.links[$0] == nil },
                       attributes: attributes.filter { !unkept.attributes.contains($0) })
    }

    /// Copies the additions from the store at `url` into `target` (a new
    /// store being written), leaving out any name `target` already has:
    /// what droptrace writes wins. A hard link naming one of droptrace's own
    /// objects (`f["alias"] = f["scores/attention"]` in h5py) names the new
    /// object at that path, not a copy of the old one.
    /// - Returns: what was left out (object references, names of objects
    ///   the new store lacks).
    /// - Throws: `DroptraceError` naming the store when an addition cannot be
    ///   read or written (the new store is then not written: nothing is lost).
    public func copy(from url: URL, into target: HDF5File) throws -> Unkept {
        var unkept = Unkept()
        guard !isEmpty else { return unkept }
        let source = try HDF5File.open(at: url)
        defer { try? source.close() }
        let owned = ScoreFileLayout.rootGroups.sorted()
        for name in links where try !target.exists(name) {
            var shared = [CChar](repeating: 0, count: 4096)
            let outcome = try target.withLinkCreationList { linkCreation in
                try HDF5Strings.withCStringArray(owned, what: "droptrace's group names", path: url.path) { groups in
                    hdf5_copy_link(source.id, name, target.id, linkCreation,
                                   groups?.assumingMemoryBound(to: UnsafePointer<CChar>?.self), owned.count,
                                   &shared, shared.count)
                }
            }
            if outcome == HDF5_LINK_NOT_KEPT.rawValue {
                unkept.links[name] = String(decoding: shared.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            }
            try HDF5Failure.check(herr_t(min(outcome, 0)), "cannot copy /\(name), which was added to the store, into its new copy (move it to another file and run `droptrace reseal`)",
                                  path: url.path)
        }
        let limit = plausibleElementLimit(url.path)
        for name in attributes where try !target.hasAttribute(name) {
            let status = try target.withAttributeCreationList { attributeCreation in
                hdf5_copy_attribute(source.id, name, target.id, attributeCreation, limit)
            }
            if status == 1 { unkept.attributes.append(name); continue }
            try HDF5Failure.check(status, "cannot copy the root attribute '\(name)', which was added to the store, into its new copy (move it to another file and run `droptrace reseal`)",
                                  path: url.path)
        }
        return unkept
    }
}

extension StoreAdditions: CustomStringConvertible {
    /// E.g. `/notes, /baseline; root attributes 'run_id'`.
    public var description: String {
        let objects = links.map { "/\($0)" }.joined(separator: ", ")
        let named = attributes.isEmpty ? "" : "root attributes " + attributes.map { "'\($0)'" }.joined(separator: ", ")
        return [objects, named].filter { !$0.isEmpty }.joined(separator: "; ")
    }
}
