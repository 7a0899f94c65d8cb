import DroptraceSupport
import Crypto
import Foundation

/// The token sequences a scoring run feeds through the model.
public struct CalibrationSet: Sendable {
    public var sequences: [[Int]]
    public var sourcePath: String
    /// The `samples` asked for, if any. Text may yield fewer full windows
    /// (and a JSONL file fewer lines); `isShortOfRequestedSamples` tells the
    /// caller to warn.
    public var requestedSamples: Int?
    /// The line of each sequence in a JSONL file (1-based); nil for text,
    /// whose sequences are windows of its tokens.
    public var lineNumbers: [Int]?

    public init(sequences: [[Int]], sourcePath: String, requestedSamples: Int? = nil, lineNumbers: [Int]? = nil) {
        precondition(lineNumbers == nil || lineNumbers!.count == sequences.count)
        self.sequences = sequences
        self.sourcePath = sourcePath
        self.requestedSamples = requestedSamples
        self.lineNumbers = lineNumbers
    }

    /// Sequence `index` as a reader finds it in the file: "line 5" of JSONL
    /// (blank lines are skipped, so lines and sequences differ), "window 2"
    /// of text.
    public func origin(of index: Int) -> String {
        lineNumbers.map { "line \($0[index])" } ?? "window \(index + 1)"
    }

    /// Refuses sequences a model with `positions` positions and a
    /// vocabulary of `vocabularySize` ids cannot run, naming the line (or
    /// window) and what to change.
    /// - Throws: `DroptraceError` naming `sourcePath`.
    /// - Parameter seqLenSetting: the setting that cuts sequences, as the
    ///   user spells it (`--seq-len`, or a pipeline file's `seq_len`).
    public func checkFits(positions: Int, vocabularySize: Int, seqLenSetting: String = "--seq-len") throws {
        for (index, sequence) in sequences.enumerated() {
            if sequence.count > positions {
                throw DroptraceError(
                    "\(origin(of: index)) has \(sequence.count) tokens, more than the model's \(positions) positions "
                        + "(max_position_embeddings): cut the sequences to the positions with \(seqLenSetting) \(positions)", path: sourcePath)
            }
            if let bad = sequence.first(where: { $0 >= vocabularySize }) {
                throw DroptraceError(
                    "\(origin(of: index)): token id \(bad) is outside the model's vocabulary (vocab_size \(vocabularySize))",
                    path: sourcePath)
            }
        }
    }

    /// Refuses a token that perplexity would have to predict (any but a
    /// sequence's first) at or beyond `logits`, the width of a head pruned
    /// to the first ids of a larger vocabulary (Apertus 1.5's
    /// `output_vocab_size`), naming the line (or window): transformers'
    /// cross-entropy fails on such a label ("IndexError: Target … is out of
    /// bounds"); as an input it is read. Nothing to check when `logits` is
    /// the vocabulary's size, `checkFits`' bound.
    /// - Throws: `DroptraceError` naming `sourcePath`.
    public func checkPredictable(logits: Int, vocabularySize: Int) throws {
        guard logits < vocabularySize else { return }
        for (index, sequence) in sequences.enumerated() {
            if let bad = sequence.dropFirst().first(where: { $0 >= logits }) {
                throw DroptraceError(
                    "\(origin(of: index)): token id \(bad) is to be predicted, but the model's head gives only \(logits) logits "
                        + "(output_vocab_size \(logits) of vocab_size \(vocabularySize)), so transformers' cross-entropy refuses it as a "
                        + "label (Target \(bad) is out of bounds); measure perplexity on text whose tokens after the first are below \(logits)",
                    path: sourcePath)
            }
        }
    }

    public var tokenCount: Int { sequences.reduce(0) { $0 + $1.count } }

    public var isShortOfRequestedSamples: Bool {
        guard let requestedSamples else { return false }
        return sequences.count < requestedSamples
    }

    /// SHA-256 of the token windows, lowercase hex. The bytes hashed are,
    /// for each sequence in order, its length as a UInt32 little-endian
    /// followed by each id as a UInt32 little-endian (ids are checked to be
    /// below 2^31 on loading, so this is also their Int32 encoding).
    public var sha256: String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(4 * (tokenCount + sequences.count))
        func append(_ value: Int) {
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: value).littleEndian) { bytes.append(contentsOf: $0) }
        }
        for sequence in sequences {
            append(sequence.count)
            sequence.forEach(append)
        }
        return SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    /// Loads calibration data.
    ///
    /// - JSONL (`.jsonl`, and `.json` read the same way): one
    ///   `{"input_ids": [...]}` per non-blank line, other keys ignored (an
    ///   `attention_mask` must be a 1 per token: zeros, a padded export, are
    ///   refused); a leading byte order mark is skipped; each
    ///   line is one sequence, cut to its first `seqLen` tokens when given;
    ///   only the first `samples` sequences when given, and only the lines
    ///   before them are read. No tokenizer needed.
    /// - Anything else is UTF-8 text: the file is encoded with `tokenizer`
    ///   (special tokens added) and cut into consecutive, non-overlapping
    ///   windows of exactly `seqLen` tokens, the first `samples` of them; a
    ///   partial last window is dropped. The file is read only as far as
    ///   those windows need (see `textWindows`).
    ///
    /// No line may be longer than `CalibrationLines.maximumLineLength` bytes.
    ///
    /// The extension must agree with the content, judged by the first
    /// non-blank line: a `.jsonl`/`.json` file whose first line starts with
    /// neither `{` nor `[` is text, and any other file whose first line is a
    /// JSON object with `input_ids` is JSONL; either mismatch is refused
    /// rather than read as the other kind. A `.jsonl`/`.json` file starting
    /// with `[` is one JSON array (`to_json(lines=False)`), refused as such.
    ///
    /// Ids are not checked against a vocabulary here; the caller knows the model.
    ///
    /// - Parameter memory: bytes the process may use; text is held (and
    ///   encoded) only up to what fits in them (`textLimit(memory:)`).
    public static func load(
        from url: URL, tokenizer: Tokenizer?, seqLen: Int?, samples: Int?, memory: Int = .max
    ) throws -> CalibrationSet {
        try load(from: url, tokenizer: tokenizer, seqLen: seqLen, samples: samples, textLimit: textLimit(memory: memory))
    }

    /// The most text held for encoding: `textLimit`, or less when `memory`
    /// bytes could not encode that much. A tokenizer without a pre-tokenizer
    /// (Llama 2's) makes the whole text one BPE word, whose symbols, links,
    /// merge queue and ids take about 40 bytes a byte of text, and the
    /// prefixes encoded on the way as much again (measured).
    static func textLimit(memory: Int) -> Int {
        min(textLimit, memory / 96)
    }

    /// `load` holding at most `textLimit` bytes of text.
    static func load(from url: URL, tokenizer: Tokenizer?, seqLen: Int?, samples: Int?, textLimit: Int) throws -> CalibrationSet {
        let path = url.path
        if let seqLen, seqLen <= 0 {
            throw DroptraceError("sequence length must be positive, got \(seqLen)", path: path)
        }
        if let samples, samples <= 0 {
            throw DroptraceError("number of samples must be positive, got \(samples)", path: path)
        }
        var lines = CalibrationLines(try openFile(at: url))
        let sequences: [[Int]]
        var lineNumbers: [Int]?
        let named = url.pathExtension.isEmpty ? "no extension" : "the extension .\(url.pathExtension)"
        switch url.pathExtension.lowercased() {
        case "jsonl", "json":
            // One JSON array of records (datasets' to_json(lines=False)), told
            // from its first character alone: the array, which may be one
            // line longer than any read, is never parsed.
            if try TokenIdLines.firstNonBlankByte(of: lines.file) == UInt8(ascii: "[") {
                throw DroptraceError(
                    "is a JSON array (its first non-blank character is '['), not JSON Lines: calibration token ids "
                        + "are one {\"input_ids\": [...]} object per line; write them with datasets' "
                        + "to_json(path, lines=True) (its default) or as a .jsonl file", path: path)
            }
            (sequences, lineNumbers) = try TokenIdLines.parse(&lines, path: path, seqLen: seqLen, samples: samples) { firstLine in
                // A broken object is a JSONL mistake, reported by line.
                if let first = firstLine.first, first != UInt8(ascii: "{") {
                    throw DroptraceError(
                        "looks like text (its first line is not a JSON object), but \(named) says JSONL token ids; "
                            + "give calibration text a .txt extension", path: path)
                }
            }
        default:
            sequences = try textWindows(
                &lines, path: path, tokenizer: tokenizer, seqLen: seqLen, samples: samples, textLimit: textLimit
            ) { firstLine in
                if TokenIdLines.holdsTokenIds(firstLine) {
                    throw DroptraceError(
                        "looks like JSONL token ids (its first line is a JSON object with \"input_ids\"), but \(named) "
                            + "says text; give it a .jsonl extension", path: path)
                }
            }
        }
        return CalibrationSet(sequences: sequences, sourcePath: path, requestedSamples: samples, lineNumbers: lineNumbers)
    }

    private static func openFile(at url: URL) throws -> RegularFile {
        switch PathKind.of(url) {
        // The same reader serves --calibration and --eval: the message names neither.
        case .missing: throw DroptraceError("no such file", path: url.path)
        case .directory: throw DroptraceError("is a directory, not a file of text or token ids", path: url.path)
        case .other: break
        }
        // A FIFO or device is refused rather than read forever.
        let file = try RegularFile(path: url.path)
        if file.size == 0 { throw DroptraceError("is empty", path: url.path) }
        return file
    }

    /// Text is encoded from its start, read a line at a time, only as far
    /// as the windows asked for need: the first `samples` windows are the
    /// first `samples × seqLen` ids of the whole file's encoding, and a
    /// prefix ending at a line end encodes to the same ids up to its last
    /// words. A prefix is taken once it gives more ids than needed and a
    /// prefix at least twice as long agrees with it on all of them (an
    /// end-of-text token a post-processor appends, or words the cut joins
    /// or splits, lie past them or make the two disagree, and reading goes
    /// on). Without `samples`, when the file ends first, or when a regex of
    /// the tokenizer may reach arbitrarily far ahead (`encodesPrefixesAlike`),
    /// the whole file is encoded. No more than `textLimit` bytes are held.
    /// The most text ever held for encoding: calibration takes well under a
    /// million tokens (LLM-Drop: 256 × 2048), a few megabytes of text.
    static let textLimit = 1 << 28

    private static func textWindows(
        _ lines: inout CalibrationLines, path: String, tokenizer: Tokenizer?, seqLen: Int?, samples: Int?, textLimit: Int,
        checkFirstLine: (ArraySlice<UInt8>) throws -> Void
    ) throws -> [[Int]] {
        // Blank lines up to the first that is not, so that the kind check comes before the other complaints.
        var text: [UInt8] = []
        var pending: [(line: ArraySlice<UInt8>, start: Int)] = []
        while let line = try lines.next() {
            pending.append((line, lines.lineStart))
            let content = TokenIdLines.trimmed(line, isFirst: lines.lineNumber == 1)
            if !content.isEmpty {
                try checkFirstLine(content)
                break
            }
        }
        guard let tokenizer else {
            throw DroptraceError("is text, which needs the checkpoint's tokenizer.json to be tokenised", path: path)
        }
        guard let seqLen else {
            throw DroptraceError("is text, which needs a sequence length to be cut into windows", path: path)
        }
        // A multi-byte sequence never holds a 0x0A byte, so checking line by line checks the text.
        func append(_ line: ArraySlice<UInt8>, start: Int) throws {
            if let offset = UTF8Validation.firstInvalidByte(in: [UInt8](line)) {
                throw DroptraceError("is not valid UTF-8 text (bad byte at offset \(start + offset))", path: path)
            }
            text += line
        }
        for (line, start) in pending { try append(line, start: start) }
        func windows(_ ids: [Int]) throws -> [[Int]] {
            let fullWindows = ids.count / seqLen
            guard fullWindows > 0 else {
                throw DroptraceError(
                    "text gives \(ids.count) tokens with \(tokenizer.sourcePath), not enough for one window of \(seqLen) tokens",
                    path: path)
            }
            let count = min(fullWindows, samples ?? fullWindows)
            return (0..<count).map { window in Array(ids[(window * seqLen)..<((window + 1) * seqLen)]) }
        }
        let needed = samples.flatMap { samples -> Int? in
            guard tokenizer.encodesPrefixesAlike else { return nil }
            let (product, overflow) = samples.multipliedReportingOverflow(by: seqLen)
            return overflow ? nil : product
        }
        // Real text is a few bytes a token; start well past that and double.
        var encodeAt = needed.map { max(1 << 16, min($0, Int.max >> 8) * 16) } ?? Int.max
        var candidate: [Int]?
        /// The windows, once the text read so far settles them.
        func settled() throws -> [[Int]]? {
            guard text.count <= textLimit else {
                throw DroptraceError(
                    "text calibration: more than \(textLimit) bytes read before the windows were settled "
                        + (needed == nil ? "(this tokenizer's regexes need the whole text)" : "(prefixes kept encoding otherwise)")
                        + "; droptrace encodes at most that much"
                        + (textLimit < Self.textLimit ? " in this machine's memory" : "")
                        + ": pass a shorter file or pre-tokenised JSONL", path: path)
            }
            guard let needed, text.count >= encodeAt else { return nil }
            let ids = try tokenizer.encode(utf8: text)
            if ids.count > needed {
                if let candidate, candidate.elementsEqual(ids.prefix(needed)) { return try windows(candidate) }
                candidate = Array(ids.prefix(needed))
            }
            encodeAt = text.count * 2
            return nil
        }
        if let windows = try settled() { return windows }
        while let line = try lines.next() {
            try append(line, start: lines.lineStart)
            if let windows = try settled() { return windows }
        }
        return try windows(try tokenizer.encode(utf8: text))
    }
}

/// The JSONL calibration format: `{"input_ids": [...]}` per line.
enum TokenIdLines {
    /// Sequences from the lines, read only as far as the first `samples`
    /// of them, with the line of each; `checkFirstLine` is given the first
    /// non-blank line, trimmed.
    static func parse(
        _ lines: inout CalibrationLines, path: String, seqLen: Int?, samples: Int?,
        checkFirstLine: (ArraySlice<UInt8>) throws -> Void
    ) throws -> (sequences: [[Int]], lineNumbers: [Int]) {
        var sequences: [[Int]] = [], lineNumbers: [Int] = []
        var sawContent = false
        while samples.map({ sequences.count < $0 }) ?? true, let line = try lines.next() {
            let content = trimmed(line, isFirst: lines.lineNumber == 1)
            guard !content.isEmpty else { continue }
            if !sawContent {
                try checkFirstLine(content)
                sawContent = true
            }
            var ids = try parseLine(content, number: lines.lineNumber, path: path)
            if let seqLen, ids.count > seqLen { ids.removeLast(ids.count - seqLen) }
            sequences.append(ids)
            lineNumbers.append(lines.lineNumber)
        }
        if sequences.isEmpty {
            throw DroptraceError("no sequences: every line is blank", path: path)
        }
        return (sequences, lineNumbers)
    }

    /// The first byte of `file` that is not JSON whitespace (after a leading
    /// byte order mark), read a chunk at a time; nil for a blank file.
    static func firstNonBlankByte(of file: RegularFile) throws -> UInt8? {
        var offset = 0
        while offset < file.size {
            var chunk = try file.bytes(min(CalibrationLines.chunkSize, file.size - offset), at: offset)[...]
            if offset == 0, chunk.starts(with: UTF8.byteOrderMark) { chunk = chunk.dropFirst(UTF8.byteOrderMark.count) }
            if let byte = chunk.first(where: { !isJSONWhitespace($0) }) { return byte }
            offset += CalibrationLines.chunkSize
        }
        return nil
    }

    /// `line` without surrounding JSON whitespace (its `\n` included); on
    /// the first line a leading UTF-8 byte order mark, which editors on
    /// Windows write, counts as whitespace too. Empty for a blank line.
    static func trimmed(_ line: ArraySlice<UInt8>, isFirst: Bool) -> ArraySlice<UInt8> {
        var line = line
        if isFirst, line.starts(with: UTF8.byteOrderMark) { line = line.dropFirst(UTF8.byteOrderMark.count) }
        line = line.drop(while: isJSONWhitespace)
        guard let last = line.lastIndex(where: { !isJSONWhitespace($0) }) else { return [] }
        return line[...last]
    }

    /// Whether `line` is a JSON object with an `input_ids` key.
    static func holdsTokenIds(_ line: ArraySlice<UInt8>) -> Bool {
        guard line.first == UInt8(ascii: "{"),
              let object = try? JSONParser.parse(Array(line)) as? JSONObject else { return false }
        return object["input_ids"] != nil
    }

    private static func isJSONWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A
    }

    private static func parseLine(_ line: ArraySlice<UInt8>, number: Int, path: String) throws -> [Int] {
        func failure(_ message: String) -> DroptraceError {
            DroptraceError("line \(number): \(message)", path: path)
        }
        guard let object = try? JSONParser.parse([UInt8](line)) else {
            throw failure("invalid JSON")
        }
        guard let fields = object as? JSONObject else {
            throw failure("is \(object is [Any] ? "a JSON list" : "a JSON value"), not an object with \"input_ids\"")
        }
        guard let value = fields["input_ids"] else {
            throw failure("missing \"input_ids\"")
        }
        guard let items = value as? [Any] else {
            throw failure("\"input_ids\" should be a list of token ids")
        }
        guard !items.isEmpty else { throw failure("empty sequence") }
        if let mask = fields["attention_mask"], let problem = maskProblem(mask, tokens: items.count) {
            throw failure(problem)
        }
        return try items.enumerated().map { index, item in
            guard let id = JSONFields.integer(item), id >= 0 else {
                throw failure("input_ids[\(index)] is \(describe(item)), not a non-negative integer")
            }
            guard id <= Int(Int32.max) else {
                throw failure("input_ids[\(index)] = \(id) is too large to be a token id")
            }
            return id
        }
    }

    /// What is wrong with a line's `attention_mask`, nil when it is all
    /// ones, one per token. A padded export (tokenizer(..., padding=...)
    /// then to_json) masks its pads with zeros; scoring them as text would
    /// count tokens the model never attends to. A mask of another length, or
    /// of values other than 0 and 1 (false, 0.0), belongs to other ids or
    /// hides pads the same way: sequences here are unpadded.
    private static func maskProblem(_ mask: Any, tokens: Int) -> String? {
        guard let values = mask as? [Any], values.allSatisfy({ JSONFields.integer($0).map { $0 == 0 || $0 == 1 } == true }) else {
            return "\"attention_mask\" should be a list of 0s and 1s, one per token"
        }
        if values.contains(where: { JSONFields.integer($0) == 0 }) {
            return "\"attention_mask\" has zeros (padding); give each sequence unpadded, without its pad tokens"
        }
        guard values.count == tokens else {
            return "\"attention_mask\" has \(values.count) values for \(tokens) input_ids"
        }
        return nil
    }

    private static func describe(_ value: Any) -> String {
        switch value {
        case is JSONNull: return "null"
        case let text as String: return quoted(text)
        case let flag as Bool: return flag ? "true" : "false"
        case let number as Int: return "\(number)"
        case let number as Double: return "\(number)"
        case let number as JSONBigInteger: return number.text
        default: return "a list or object"
        }
    }
}

enum UTF8Validation {
    /// Offset of the first byte that is not part of well-formed UTF-8
    /// (Unicode Table 3-7: no overlongs, no surrogates, nothing past
    /// U+10FFFF), or nil when the whole buffer is well-formed.
    static func firstInvalidByte(in bytes: [UInt8]) -> Int? {
        var index = 0
        let count = bytes.count
        while index < count {
            let lead = bytes[index]
            if lead < 0x80 { index += 1; continue }
            let length: Int
            var secondRange: ClosedRange<UInt8> = 0x80...0xBF
            switch lead {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; secondRange = 0xA0...0xBF
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; secondRange = 0x80...0x9F
            case 0xF0: length = 4; secondRange = 0x90...0xBF
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; secondRange = 0x80...0x8F
            default: return index
            }
            guard index + length <= count, secondRange.contains(bytes[index + 1]) else { return index }
            for offset in 2..<max(2, length) where !(0x80...0xBF).contains(bytes[index + offset]) {
                return index
            }
            index += length
        }
        return nil
    }
}
