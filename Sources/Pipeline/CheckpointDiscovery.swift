import CheckpointIO
import DroptraceSupport
import Foundation

/// A checkpoint of a training run, as found on disk.
public struct DiscoveredCheckpoint: Sendable, Equatable {
    public var name: String
    public var directory: URL
    /// Training step, −1 when unknown.
    public var step: Int64
    /// Tokens seen in training, −1 when unknown.
    public var tokens: Int64
    /// What identifies its files (`CheckpointFingerprint`), kept with its row.
    public var fingerprint: String
    /// Its directory as discovery found it (entries added or removed change it).
    public var listing: FileVersion

    /// Whether the checkpoint is gone or no longer what discovery found: its
    /// directory's entries, config.json or weights changed. Training rotates
    /// checkpoints away file by file (`save_total_limit`) and saves them
    /// again: reading one meanwhile fails on whatever went first, which is
    /// no fault of the checkpoint (a later run sees it as it then is).
    var changedSinceDiscovery: Bool {
        guard PathKind.of(directory) == .directory else { return true }
        if FileVersion.current(directory.path) != listing { return true }
        return CheckpointDiscovery.currentFingerprint(of: directory) != fingerprint
    }
}

/// Finds the checkpoints of a training run and tells finished ones from
/// ones still being written and ones that will never be readable.
///
/// Being written or corrupt: a checkpoint that is not complete (no
/// config.json or one cut short, a weight file shorter than its header says, a header cut
/// short, an index naming a missing shard) counts as being written while
/// anything in it changed within the settle time (default 30 minutes);
/// once nothing has changed for longer, it is a failure. A weight file whose
/// first bytes are already wrong (a bad magic, a safetensors header that is
/// all there but does not parse) is a failure at once, as is a checkpoint in
/// a sharded training format droptrace cannot read (`UnreadableCheckpointFormat`).
public enum CheckpointDiscovery {
    /// How long an incomplete checkpoint may rest unchanged and still count as being written.
    public static let defaultSettleTime: TimeInterval = 30 * 60

    public struct Result: Sendable {
        public var ready: [DiscoveredCheckpoint] = []
        /// Checkpoints skipped for now, with the reason; a later run picks them up.
        public var incomplete: [(name: String, reason: String)] = []
        /// Checkpoints that waiting will not make readable, each with one
        /// line `path: problem`; the run fails on them.
        public var failed: [(name: String, error: String)] = []
        /// Those of `failed` that failed by their own files (unreadable,
        /// corrupt, incomplete too long), not as a duplicate of another.
        public var unreadable: Set<String> = []
        /// Those of `failed` (not in `unreadable`) without any weight file:
        /// deleted weights, which take nothing from a stored row.
        public var weightless: Set<String> = []
        /// One line each, `path: problem`: directories that look like
        /// checkpoints but follow no naming rule, or a series with none yet.
        public var warnings: [String] = []
    }

    /// The checkpoints of a run as `trace` is given them: a series
    /// directory (`scan`) or a list (`inspect`).
    public static func find(_ checkpoints: TraceOptions.Checkpoints, settleTime: TimeInterval) throws -> Result {
        switch checkpoints {
        case .series(let directory): try scan(directory, settleTime: settleTime)
        case .list(let directories): try inspect(directories, settleTime: settleTime)
        }
    }

    /// Subdirectories of `seriesDirectory` named like checkpoints
    /// (`CheckpointName`), ordered by `CheckpointName.Position`.
    /// - Throws: `DroptraceError` when the directory is missing, is a file, is itself a
    ///   single checkpoint, or holds checkpoints of which none is named by a rule.
    public static func scan(_ seriesDirectory: URL, settleTime: TimeInterval = defaultSettleTime) throws -> Result {
        let path = seriesDirectory.path
        let expected = "expected subdirectories named \(CheckpointName.acceptedForms)"
        guard PathKind.of(seriesDirectory) == .directory else {
            guard FileManager.default.fileExists(atPath: path) else { throw DroptraceError("series directory not found", path: path) }
            throw DroptraceError(
                "is a file, not a series directory (\(expected)); score one checkpoint with `droptrace score`", path: path)
        }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: path).sorted()
        } catch {
            throw DroptraceError("cannot list the series directory", path: path)
        }
        var checkpoints: [URL] = []
        var unmatched: [String] = []
        // Foundation's listing leaves these out; a checkpoint among them would be missed without a word.
        var brokenLinks: [(name: String, error: String)] = DirectoryHandle.nonUTF8Subdirectories(of: path).map { name in
            (name, DroptraceError("the name is not UTF-8, which the store and its messages are written in: rename it",
                                  path: path + "/" + name).description)
        }
        var staged: [String] = []
        for name in names {
            let entry = seriesDirectory.appendingPathComponent(name)
            if CheckpointName.parse(name) != nil, let problem = brokenLink(entry, in: seriesDirectory) {
                brokenLinks.append((name, DroptraceError(problem, path: entry.path).description))
                continue
            }
            guard PathKind.of(entry) == .directory else { continue }
            // The Trainer saves some versions' checkpoints as tmp-checkpoint-<N> and renames them when complete.
            if CheckpointName.isStaging(name) {
                staged.append(name)
                continue
            }
            if CheckpointName.parse(name) != nil {
                checkpoints.append(entry)
            } else if looksLikeCheckpoint(entry) {
                unmatched.append(name)
            }
        }
        if checkpoints.isEmpty, looksLikeCheckpoint(seriesDirectory) {
            throw DroptraceError(
                "is a single checkpoint, not a series of them (\(expected)); score one checkpoint with `droptrace score`",
                path: path)
        }
        if checkpoints.isEmpty, unmatched.isEmpty, let unreadable = UnreadableCheckpointFormat.diagnoseSeries(seriesDirectory) {
            throw DroptraceError(unreadable, path: path)
        }
        if checkpoints.isEmpty, !unmatched.isEmpty {
            let shown = unmatched.shownInMessage()
            throw DroptraceError("holds checkpoints (\(shown)) but none named by a checkpoint naming rule; \(expected)", path: path)
        }
        var result = try inspect(checkpoints, settleTime: settleTime, listed: true)
        for name in staged {
            // A save the Trainer never renamed (killed meanwhile) waits no longer than an incomplete checkpoint.
            switch settled("a save the Trainer has not renamed yet", seriesDirectory.appendingPathComponent(name), settleTime) {
            case .writing: result.incomplete.append((name, "the Trainer is still saving it (it renames \(name) when the save is complete)"))
            case .failed(let problem):
                let abandoned = problem.replacingOccurrences(
                    of: "taken as corrupt", with: "taken as abandoned (the Trainer stopped before renaming it): remove it")
                result.failed.append((name, DroptraceError(abandoned, path: seriesDirectory.appendingPathComponent(name).path).description))
            case .gone, .ready: break
            }
        }
        result.incomplete.sort { $0.name < $1.name }
        result.failed.sort { $0.name < $1.name }
        // A link that leads to no checkpoint holds no weights: it fails the run but takes nothing from a stored row.
        result.failed += brokenLinks
        result.weightless.formUnion(brokenLinks.map(\.name))
        result.warnings += unmatched.map {
            DroptraceError(
                "looks like a checkpoint but its name follows no checkpoint naming rule (\(CheckpointName.acceptedForms)); not traced",
                path: seriesDirectory.appendingPathComponent($0).path
            ).description
        }
        if checkpoints.isEmpty {
            result.warnings.append(DroptraceError("no checkpoints yet (\(expected))", path: path).description)
        }
        return result
    }

    /// The name of a listed checkpoint's row: its directory's last component.
    public static func rowName(of directory: URL) -> String {
        directory.standardizedFileURL.lastPathComponent
    }

    /// Where in training a checkpoint was saved: step and tokens seen
    /// (−1 when unknown), with what is worth a warning.
    public struct TrainingPlace: Sendable {
        public var step: Int64
        public var tokens: Int64
        public var warnings: [String]
    }

    /// The step and tokens seen of the checkpoint in `directory` named
    /// `name`: from its `trainer_state.json` (`global_step`,
    /// `num_input_tokens_seen`), else from the name.
    /// - Throws: `DroptraceError` naming trainer_state.json when a count
    ///   there is no count (`TrainerState.read`).
    public static func trainingPlace(of directory: URL, name: String) throws -> TrainingPlace {
        let state = try TrainerState.read(in: directory)
        var warnings: [String] = []
        if CheckpointName.parse(name)?.overflowed == true {
            warnings.append(DroptraceError(
                "a number in the checkpoint's name is beyond \(Int64.max), so the name gives no step, token count or stage",
                path: directory.path
            ).description)
        }
        // The Trainer names a checkpoint by its global_step: a disagreement means a renamed
        // directory or a link to another run's checkpoint, worth a word.
        if let saved = state?.globalStep, let named = CheckpointName.step(name), saved != named {
            warnings.append(DroptraceError(
                "its name gives step \(named) but its trainer_state.json says global_step \(saved); the row takes step \(saved)",
                path: directory.path
            ).description)
        }
        return TrainingPlace(
            step: state?.globalStep ?? CheckpointName.step(name) ?? -1,
            tokens: state?.tokensSeen ?? CheckpointName.tokens(name) ?? -1, warnings: warnings)
    }

    /// An explicit list of checkpoint directories, ordered by
    /// `CheckpointName.Position` (ties keep their given order).
    /// - Parameter listed: the directories were listed from a series just
    ///   now: one removed since is a warning, not an error.
    /// - Throws: `DroptraceError` naming the first directory that does not exist.
    public static func inspect(_ directories: [URL], settleTime: TimeInterval = defaultSettleTime, listed: Bool = false) throws -> Result {
        var result = Result()
        let gone = { (directory: URL) in
            DroptraceError("removed while this run looked at it; not traced in this run", path: directory.path).description
        }
        for directory in directories {
            guard FileManager.default.fileExists(atPath: directory.path) else {
                guard listed else { throw DroptraceError("checkpoint not found", path: directory.path) }
                result.warnings.append(gone(directory))
                continue
            }
            let name = rowName(of: directory)
            let listing = FileVersion.current(directory.path)
            switch state(of: directory, settleTime: settleTime) {
            case .writing(let reason):
                result.incomplete.append((name, reason))
            case .gone:
                result.warnings.append(gone(directory))
            case .failed(let problem):
                result.failed.append((name, DroptraceError(problem, path: directory.path).description))
                if CheckpointLayout.holdsNoWeights(directory) {
                    result.weightless.insert(name)
                } else {
                    result.unreadable.insert(name)
                }
            case .ready(let fingerprint):
                let place: TrainingPlace
                do { place = try trainingPlace(of: directory, name: name) } catch let error as DroptraceError {
                    result.failed.append((name, error.description))
                    result.unreadable.insert(name)
                    continue
                }
                result.warnings += place.warnings
                result.ready.append(DiscoveredCheckpoint(
                    name: name, directory: directory, step: place.step, tokens: place.tokens,
                    fingerprint: fingerprint.stored, listing: listing))
            }
        }
        result.ready = result.ready.enumerated().sorted { a, b in
            let (x, y) = (position(a.element), position(b.element))
            return x != y ? x < y : a.offset < b.offset
        }.map(\.element)
        refuseDuplicates(&result)
        result.incomplete.sort { $0.name < $1.name }
        result.failed.sort { $0.name < $1.name }
        return result
    }

    /// Moves to `failed` the ready checkpoints a series cannot hold twice.
    /// A directory found again (through a symbolic link, or a list entry
    /// spelled twice) is traced once, at its first place. Two directories with
    /// the same name (the store keeps rows by name) or at the same place in
    /// training (stage, ingredient and step) are both failed, each naming
    /// the other: which of them belongs to the run is not droptrace's guess.
    static func refuseDuplicates(_ result: inout Result) {
        var firstOf: [DirectoryIdentity: DiscoveredCheckpoint] = [:]
        var distinct: [DiscoveredCheckpoint] = []
        for checkpoint in result.ready {
            guard let identity = DirectoryIdentity(checkpoint.directory) else { distinct.append(checkpoint); continue }
            if let first = firstOf[identity] {
                let again = first.directory.standardizedFileURL.path == checkpoint.directory.standardizedFileURL.path
                    ? "is given twice" : "is the same directory as \(first.directory.path) (a symbolic link or a second spelling)"
                result.failed.append((checkpoint.name, DroptraceError(
                    "\(again); it is traced once, as \(first.name)", path: checkpoint.directory.path).description))
            } else {
                firstOf[identity] = checkpoint
                distinct.append(checkpoint)
            }
        }
        // Each clash names the first checkpoint of that name or place.
        var refused: [Int: String] = [:]
        var firstByName: [String: Int] = [:]
        var firstByPlace: [CheckpointName.Position: Int] = [:]
        for (index, checkpoint) in distinct.enumerated() {
            let place = position(checkpoint)
            let placeKey = place.isKnown ? place : nil
            let problem: (Int) -> String
            let first: Int
            if let named = firstByName[checkpoint.name] {
                first = named
                problem = { "has the same name as \(distinct[$0].directory.path), and the store keeps one row per name: rename one or list only one" }
            } else if let placeKey, let placed = firstByPlace[placeKey] {
                first = placed
                problem = { "is at the same point of training (step \(place.step)) as \(distinct[$0].directory.path): keep one of them in the series" }
            } else {
                firstByName[checkpoint.name] = index
                if let placeKey { firstByPlace[placeKey] = index }
                continue
            }
            refused[index] = problem(first)
            if refused[first] == nil { refused[first] = problem(index) }
        }
        for (index, problem) in refused.sorted(by: { $0.key < $1.key }) {
            let checkpoint = distinct[index]
            result.failed.append((checkpoint.name, DroptraceError(problem, path: checkpoint.directory.path).description))
        }
        result.ready = distinct.enumerated().filter { refused[$0.offset] == nil }.map(\.element)
    }

    static func position(_ checkpoint: DiscoveredCheckpoint) -> CheckpointName.Position {
        CheckpointName.position(name: checkpoint.name, step: checkpoint.step)
    }

    enum State {
        case ready(CheckpointFingerprint)
        case writing(String)
        case failed(String)
        /// The directory was removed while discovery looked at it (`save_total_limit` rotating
        /// checkpoints out): as if gone before, no failure.
        case gone
    }

    /// Whether `directory` is a finished checkpoint, one still being written,
    /// or one that waiting will not make readable.
    static func state(of directory: URL, settleTime: TimeInterval) -> State {
        // A directory we may not list would look empty, "being written" until taken as corrupt.
        if let stream = opendir(directory.path) { closedir(stream) } else {
            if errno == ENOENT { return .gone }
            return .failed("cannot list the checkpoint directory: \(SystemError.describe())")
        }
        let layout: CheckpointLayout
        do {
            layout = try CheckpointLayout.resolve(directory)
        } catch {
            if let error = error as? DroptraceError, error.isTransient { return .failed(error.description) }
            if let unreadable = UnreadableCheckpointFormat.diagnose(directory) { return .failed(unreadable) }
            // A series given where a checkpoint is expected (a `checkpoints:` entry) never becomes one.
            let inner = CheckpointName.entries(in: directory)
            if CheckpointLayout.holdsNoWeights(directory), !inner.isEmpty {
                return .failed("holds checkpoint directories (\(inner.shownInMessage(atMost: 2))), "
                    + "not a checkpoint: give it as the series directory, or list its checkpoints")
            }
            // A complete index naming no usable shards stays wrong however long one waits.
            if let defect = CheckpointLayout.indexDefect(in: directory) { return .failed(defect) }
            return settled((error as? DroptraceError)?.message ?? "\(error)", directory, settleTime)
        }
        // A GGUF file carries its own configuration: no config.json to wait for.
        if layout.format != .gguf,
           !FileManager.default.fileExists(atPath: directory.appendingPathComponent("config.json").path) {
            // An adapter saved beside a whole-model state dict (pytorch_model.bin holding the PEFT model) never gets one.
            if let adapter = UnreadableCheckpointFormat.peftAdapter(directory) { return .failed(adapter) }
            return settled("no config.json yet", directory, settleTime)
        }
        if layout.format != .gguf, Checkpoint.configIsCutShort(directory.appendingPathComponent("config.json")) {
            return settled("config.json is not complete yet (it ends inside its JSON)", directory, settleTime)
        }
        // The weight files are the ones CheckpointLayout opens; each must be
        // as long as its own header (or zip directory) says.
        for file in layout.weightFiles {
            let name = file.lastPathComponent
            // Bytes already there and wrong will not become right by waiting.
            if let corruption = WeightFileStart.corruption(of: file, format: layout.format) {
                return .failed("\(name) \(corruption)")
            }
            let expected: Int?
            do {
                switch layout.format {
                case .safetensors: expected = try SafetensorsFile.expectedLength(path: file.path)
                case .pytorch: expected = try TorchCheckpointFile.expectedLength(path: file.path)
                case .gguf: expected = try GGUFCheckpoint.expectedLength(path: file.path)
                }
            } catch {
                // An I/O error is the disk's, not a write in progress: waiting would call it "corrupt".
                return .failed("\(name): \((error as? DroptraceError)?.message ?? "\(error)")")
            }
            guard let expected else {
                return settled(
                    layout.format == .pytorch
                        ? "\(name) is not complete yet (it ends before its zip directory or last storage)"
                        : "\(name) has an incomplete header",
                    directory, settleTime)
            }
            let size = Int(followedStatus(file.path)?.st_size ?? 0)
            if size < expected { return settled("\(name) has \(size) of \(expected) bytes", directory, settleTime) }
        }
        do {
            return .ready(try CheckpointFingerprint(layout: layout))
        } catch let error as DroptraceError where error.isTransient {
            return .failed(error.description)
        } catch {
            return settled("\(error)", directory, settleTime)
        }
    }

    /// A time in the future by more than this is the clock's doing (another
    /// machine's, or restored files'), not a write in progress.
    static let clockTolerance: TimeInterval = 5 * 60

    /// `.writing(reason)` while anything in `directory` changed within
    /// `settleTime`; after that the checkpoint is taken as corrupt. Files
    /// dated ahead of this machine's clock say nothing about when they were
    /// last written: the checkpoint is taken as corrupt at once, naming the
    /// clock (a later run scores it once it is complete).
    /// A directory no longer there is `.gone`, whatever reading it failed on
    /// (its files vanished: sizes of 0, no times).
    private static func settled(_ reason: String, _ directory: URL, _ settleTime: TimeInterval) -> State {
        guard followedStatus(directory.path) != nil || errno != ENOENT else { return .gone }
        let last = lastChange(in: directory)
        let rest = Date().timeIntervalSince(last)
        if -rest > clockTolerance {
            return .failed(
                "\(reason), and its files are dated \(minutes(-rest)) ahead of this machine's clock "
                    + "(\(ISO8601DateFormatter().string(from: last))), so whether it is still being written cannot be told: "
                    + "taken as corrupt until it is complete (check the clocks, or reset the files' times)")
        }
        guard rest > settleTime else { return .writing(reason) }
        if settleTime <= 0 { return .failed("\(reason), and with a settle time of 0 no write in progress is waited for: taken as corrupt") }
        return .failed(
            "\(reason), and nothing in it changed for \(minutes(rest)) (a checkpoint still being written changes "
                + "within \(minutes(settleTime))): taken as corrupt")
    }

    /// The latest modification of `directory` or anything directly in it
    /// (of the files symbolic links there point to: the ones being written).
    private static func lastChange(in directory: URL) -> Date {
        let entries = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? [])
            .map { directory.appendingPathComponent($0).path }
        return ([directory.path] + entries).compactMap { path in
            followedStatus(path).map { Date(timeIntervalSince1970: Double($0.st_mtim.tv_sec) + Double($0.st_mtim.tv_nsec) / 1e9) }
        }.max() ?? .distantPast
    }

    /// stat(2) of `path`, following symbolic links (a Hugging Face cache
    /// snapshot or git-annex links every file; the link's own size and time
    /// say nothing of the file); nil when it cannot be read.
    private static func followedStatus(_ path: String) -> stat? {
        var info = stat()
        return stat(path, &info) == 0 ? info : nil
    }

    private static func minutes(_ interval: TimeInterval) -> String {
        interval >= 120 ? "\(Int(interval / 60)) min" : "\(Int(interval)) s"
    }

    /// Whether `directory` holds what a checkpoint holds: a config.json, a
    /// weight file, or a sharded training state.
    static func looksLikeCheckpoint(_ directory: URL) -> Bool {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.contains { name in
            name == "config.json" || name.hasSuffix(".index.json")
                || CheckpointLayout.format(ofFile: URL(fileURLWithPath: name)) != nil
        } || UnreadableCheckpointFormat.diagnose(directory) != nil
    }

    /// Why `entry`, a symbolic link named like a checkpoint, leads to no
    /// checkpoint: its target is missing, the links loop, it leads to a file,
    /// or back to the series directory or a directory holding it. nil for anything else.
    static func brokenLink(_ entry: URL, in seriesDirectory: URL) -> String? {
        var info = stat()
        guard lstat(entry.path, &info) == 0, info.st_mode & S_IFMT == S_IFLNK else { return nil }
        let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: entry.path)).map { " (\($0.forErrorMessage))" } ?? ""
        guard stat(entry.path, &info) == 0 else {
            let why = errno == ELOOP ? "its links loop" : "its target does not exist"
            return "a symbolic link named like a checkpoint, but \(why)\(target); remove it or restore its checkpoint"
        }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            return "a symbolic link named like a checkpoint that leads to a file\(target), not to a checkpoint directory"
        }
        guard let identity = DirectoryIdentity(entry) else { return nil }
        var directory = seriesDirectory.standardizedFileURL
        while true {
            if DirectoryIdentity(directory) == identity {
                return "a symbolic link named like a checkpoint that leads back to \(directory.path)\(target), not to a checkpoint"
            }
            // Up to "/" (a relative path's parents would never reach it).
            guard directory.path != "/", directory.path.hasPrefix("/") else { return nil }
            directory = directory.deletingLastPathComponent().standardizedFileURL
        }
    }
}

/// A directory's device and inode, symbolic links followed: the same
/// directory under two paths has one identity.
struct DirectoryIdentity: Hashable {
    var device: UInt64
    var inode: UInt64

    init?(_ directory: URL) {
        var info = stat()
        guard stat(directory.path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
    }
}

/// The parts of the Trainer's trainer_state.json droptrace uses.
struct TrainerState {
    var globalStep: Int64?
    var tokensSeen: Int64?

    static let fileName = "trainer_state.json"

    /// The state saved in `directory`; nil when there is none or it is not
    /// JSON as Python's json module reads it (NaN losses included; the file is
    /// optional, and may still be being written).
    /// - Throws: `DroptraceError` naming the file when `global_step` or
    ///   `num_input_tokens_seen` holds what no count can be (a fraction, a
    ///   negative or boolean value, a number beyond Int64; a whole number
    ///   written as a float, 4.0 or 1.5e12, is the count): read as a count,
    ///   it would put the checkpoint at another point of training.
    static func read(in directory: URL) throws -> TrainerState? {
        let path = directory.appendingPathComponent(fileName).path
        guard let data = try? RegularFile.contents(path: path, limit: 1 << 26),
              let object = try? JSONParser.parse([UInt8](data), allowingNonFinite: true) as? JSONObject
        else { return nil }
        func count(_ value: Any?, key: String) throws -> Int64? {
            guard let value, !(value is JSONNull) else { return nil }
            // A whole number written as a float (4.0, 1.5e12) is still the count.
            if type(of: value) == Double.self, let number = value as? Double, number >= 0, number < 0x1p63,
               number.rounded(.towardZero) == number {
                return Int64(number)
            }
            guard type(of: value) == Int.self, let number = value as? Int, number >= 0 else {
                let shown = switch value {
                case let text as String: "\"\(SystemError.oneLine(text))\""
                case is JSONObject, is [Any]: "a list or object"
                case let big as JSONBigInteger: big.text
                default: "\(value)"
                }
                throw DroptraceError("\(key) is \(shown), not a count from 0 to \(Int64.max)", path: path)
            }
            return Int64(number)
        }
        var state = TrainerState()
        state.globalStep = try count(object["global_step"], key: "global_step")
        // Recent transformers keep the count at the top level; older ones only in log_history.
        let history = (object["log_history"] as? [Any])?.compactMap { ($0 as? JSONObject)?["num_input_tokens_seen"] } ?? []
        let key = "num_input_tokens_seen"
        let seen = try count(object[key], key: key) ?? count(history.last, key: "log_history's last \(key)")
        // The Trainer writes 0 when it does not count tokens (its default): a 0 is a count only at step 0.
        state.tokensSeen = seen.flatMap { $0 > 0 || state.globalStep == 0 ? $0 : nil }
        return state
    }
}
