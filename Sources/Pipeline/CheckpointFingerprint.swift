import CheckpointIO
import DroptraceSupport
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What identifies the bytes a checkpoint was scored from, without reading
/// them: the size and modification time (to the nanosecond) of its
/// config.json and of each weight file `CheckpointLayout` opens. Rewriting
/// or replacing any of them changes the modification time, so a checkpoint
/// replaced under the same name is rescored. Inodes and paths are left out,
/// so a series moved or restored with its timestamps (`mv`, `rsync -a`,
/// `cp -p`) keeps its rows.
///
/// Stored per row in `/checkpoints/fingerprint` as JSON with sorted keys,
/// one entry per file named relative to the checkpoint directory:
///
///     {"config.json":{"mtime":"1732871234.123456789","size":664},"model.safetensors":{...}}
///
/// (`mtime` is seconds.nanoseconds since 1970 as a string, exact and free of
/// overflow; `size` in bytes).
struct CheckpointFingerprint: Equatable {
    struct File: Codable, Equatable {
        var size: Int64
        var mtime: String
    }

    var files: [String: File]

    /// The fingerprint of the checkpoint `layout` describes.
    /// - Throws: `DroptraceError` naming a file that cannot be stat'ed (it vanished).
    init(layout: CheckpointLayout) throws {
        let config = layout.directory.appendingPathComponent("config.json")
        let companions = FileManager.default.fileExists(atPath: config.path) ? [config] : []
        let folder = layout.directory.standardizedFileURL.path + "/"
        var files: [String: File] = [:]
        for url in companions + layout.weightFiles {
            let path = url.standardizedFileURL.path
            let name = path.hasPrefix(folder) ? String(path.dropFirst(folder.count)) : url.lastPathComponent
            files[name] = try Self.describe(path)
        }
        self.files = files
    }

    /// A stored fingerprint; nil when `stored` is empty (a row written
    /// before fingerprints were recorded) or not one.
    init?(stored: String) {
        guard !stored.isEmpty, let files = try? JSONDecoder().decode([String: File].self, from: Data(stored.utf8)) else {
            return nil
        }
        self.files = files
    }

    /// The form kept in the store.
    var stored: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(files)) ?? Data(), as: UTF8.self)
    }

    /// Why a row stored with fingerprint `stored` does not belong to the
    /// checkpoint now on disk with fingerprint `current`, or nil when it does.
    static func reasonToRescore(stored: String, current: String) -> String? {
        guard let now = CheckpointFingerprint(stored: current) else { return nil }
        guard let then = CheckpointFingerprint(stored: stored) else {
            return stored.isEmpty
                ? "its stored row has no fingerprint (written before droptrace recorded them), so a replaced checkpoint cannot be ruled out"
                : "its stored fingerprint is unreadable"
        }
        guard now != then else { return nil }
        let names = Set(now.files.keys).union(then.files.keys).sorted()
        let changes = names.compactMap { name -> String? in
            switch (then.files[name], now.files[name]) {
            case (nil, _): "\(name) added"
            case (_, nil): "\(name) removed"
            case let (old?, new?) where old.size != new.size: "\(name) now \(new.size) bytes, was \(old.size)"
            case let (old?, new?) where old.mtime != new.mtime: "\(name) rewritten"
            default: nil
            }
        }
        let shown = changes.shownInMessage()
        return "its files changed since it was scored (\(shown))"
    }

    private static func describe(_ path: String) throws -> File {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw DroptraceError("cannot read its size and modification time: \(String(cString: strerror(errno)))", path: path)
        }
        #if canImport(Darwin)
        let time = info.st_mtimespec
        #else
        let time = info.st_mtim
        #endif
        let nanoseconds = String(Int(time.tv_nsec))
        let mtime = "\(time.tv_sec)." + String(repeating: "0", count: max(0, 9 - nanoseconds.count)) + nanoseconds
        return File(size: Int64(info.st_size), mtime: mtime)
    }
}
