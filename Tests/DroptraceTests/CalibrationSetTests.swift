import DroptraceSupport
import Foundation
import Testing
@testable import Tokenization

@Suite("Calibration sets")
struct CalibrationSetTests {
    private var jsonlFixture: URL { TokenizerFixtures.root.appendingPathComponent("calibration/calib.jsonl") }
    private var textFixture: URL { TokenizerFixtures.root.appendingPathComponent("text/calib.txt") }

    /// Fixtures/reference.json → models → <model> → text: the windows
    /// transformers ran, and the settings that produced them.
    private func referenceTextWindows(_ model: String) throws -> (seqLen: Int, samples: Int, windows: [[Int]]) {
        let url = TokenizerFixtures.root.appendingPathComponent("reference.json")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        let entry = (json["models"] as! [String: Any])[model] as! [String: Any]
        let text = entry["text"] as! [String: Any]
        return (text["seq_len"] as! Int, text["samples"] as! Int, text["input_ids"] as! [[Int]])
    }

    private func loadError(_ url: URL, tokenizer: Tokenizer? = nil, seqLen: Int? = nil, samples: Int? = nil) -> DroptraceError? {
        let error = #expect(throws: DroptraceError.self) {
            try CalibrationSet.load(from: url, tokenizer: tokenizer, seqLen: seqLen, samples: samples)
        }
        #expect(error?.path == url.path)
        #expect(error?.description.contains("\n") == false)
        return error
    }

    private func gpt2Tokenizer() throws -> Tokenizer {
        try Tokenizer(contentsOf: TokenizerFixtures.tokenizerFile("gpt2"))
    }

    // MARK: JSONL

    /// One reader serves --calibration and drop's --eval: its errors name the
    /// path and not a role ("calibration file not found" for --eval).
    @Test func missingFileOrDirectoryIsNamedWithoutARole() throws {
        let scratch = try ScratchDirectory()
        let missing = scratch.path("eval.txt")
        #expect(throws: DroptraceError("no such file", path: missing.path)) {
            try CalibrationSet.load(from: missing, tokenizer: nil, seqLen: 8, samples: 1)
        }
        #expect(throws: DroptraceError("is a directory, not a file of text or token ids", path: scratch.url.path)) {
            try CalibrationSet.load(from: scratch.url, tokenizer: nil, seqLen: 8, samples: 1)
        }
    }

    @Test func jsonlLinesBecomeSequences() throws {
        let set = try CalibrationSet.load(from: jsonlFixture, tokenizer: nil, seqLen: nil, samples: nil)
        #expect(set.sequences.count == 4)
        #expect(set.sequences.allSatisfy { $0.count == 40 })
        #expect(set.tokenCount == 160)
        #expect(set.sourcePath == jsonlFixture.path)
        #expect(!set.isShortOfRequestedSamples)
        // hashlib.sha256 over the encoding documented on `sha256`, in Python.
        #expect(set.sha256 == "dd6383b69118e9bd3f064d29c52a65e221054f916562b0c35cb207d1e6657ca7")
    }

    @Test func jsonlIsCutToSeqLenAndSamples() throws {
        let full = try CalibrationSet.load(from: jsonlFixture, tokenizer: nil, seqLen: nil, samples: nil)
        let cut = try CalibrationSet.load(from: jsonlFixture, tokenizer: nil, seqLen: 16, samples: 2)
        #expect(cut.sequences == full.sequences.prefix(2).map { Array($0.prefix(16)) })
        #expect(cut.requestedSamples == 2)
        #expect(!cut.isShortOfRequestedSamples)
    }

    @Test func jsonlWithFewerLinesThanSamplesIsFlagged() throws {
        let set = try CalibrationSet.load(from: jsonlFixture, tokenizer: nil, seqLen: 100, samples: 10)
        #expect(set.sequences.count == 4)
        #expect(set.sequences.allSatisfy { $0.count == 40 })
        #expect(set.requestedSamples == 10)
        #expect(set.isShortOfRequestedSamples)
    }

    @Test func jsonlIgnoresBlankLinesAndOtherKeys() throws {
        let scratch = try TokenizerScratch()
        let file = try scratch.write("\n{\"text\": \"x\", \"input_ids\": [3, 1, 2]}\r\n   \n{\"input_ids\": [0]}\n\n", to: "c.jsonl")
        let set = try CalibrationSet.load(from: file, tokenizer: nil, seqLen: nil, samples: nil)
        #expect(set.sequences == [[3, 1, 2], [0]])
    }

    /// A byte order mark before the first line is skipped, as the kind check skips it.
    @Test func jsonlAfterAByteOrderMarkIsRead() throws {
        let scratch = try TokenizerScratch()
        let file = try scratch.write("\u{FEFF}{\"input_ids\": [3, 1, 2], \"attention_mask\": [1, 1, 1]}\n{\"input_ids\": [0]}\n", to: "c.jsonl")
        let set = try CalibrationSet.load(from: file, tokenizer: nil, seqLen: nil, samples: nil)
        #expect(set.sequences == [[3, 1, 2], [0]])
    }

    @Test func sha256EncodesLengthsAndIds() {
        // Python: hashlib.sha256(b"".join(struct.pack("<I", n) for n in [3, 1, 2, 3, 1, 4])).hexdigest()
        let set = CalibrationSet(sequences: [[1, 2, 3], [4]], sourcePath: "x")
        #expect(set.sha256 == "977161a9d0bade49631811d69b20be9641c9aadbd20294807391e0c8f184d310")
    }

    @Test("JSONL line errors name the line", arguments: [
        ("{\"input_ids\": [1, 2]}\n{\"input_ids\": [1, 2\n", "line 2: invalid JSON"),
        ("{\"input_ids\": [1]}\n\n{\"ids\": [1, 2]}\n", "line 3: missing \"input_ids\""),
        ("[1, 2, 3]\n", "is a JSON array (its first non-blank character is '['), not JSON Lines"),
        ("{\"input_ids\": [1]}\n[1, 2, 3]\n", "line 2: is a JSON list, not an object with \"input_ids\""),
        ("{\"input_ids\": [1]}\n7\n", "line 2: is a JSON value, not an object with \"input_ids\""),
        ("{\"input_ids\": \"1 2 3\"}\n", "line 1: \"input_ids\" should be a list"),
        ("{\"input_ids\": [1, 2.5]}\n", "line 1: input_ids[1] is 2.5"),
        ("{\"input_ids\": [1, 2.0]}\n", "line 1: input_ids[1]"),
        ("{\"input_ids\": [\"7\"]}\n", "line 1: input_ids[0] is \"7\""),
        ("{\"input_ids\": [true]}\n", "line 1: input_ids[0] is true"),
        ("{\"input_ids\": [null]}\n", "line 1: input_ids[0] is null"),
        ("{\"input_ids\": [4, -1]}\n", "line 1: input_ids[1] is -1, not a non-negative integer"),
        ("{\"input_ids\": [99999999999]}\n", "line 1: input_ids[0] = 99999999999 is too large"),
        ("{\"input_ids\": [1]}\n{\"input_ids\": []}\n", "line 2: empty sequence"),
        // A padded export: its pads would be scored as text.
        ("{\"input_ids\": [5, 6, 0], \"attention_mask\": [1, 1, 0]}\n", "line 1: \"attention_mask\" has zeros (padding)"),
        // Masks that hide pads otherwise, or belong to other ids.
        ("{\"input_ids\": [5, 6, 0], \"attention_mask\": [1, 1, 0.0]}\n", "line 1: \"attention_mask\" should be a list of 0s and 1s"),
        ("{\"input_ids\": [5, 6, 0], \"attention_mask\": [true, true, false]}\n", "line 1: \"attention_mask\" should be a list of 0s and 1s"),
        ("{\"input_ids\": [5, 6, 0], \"attention_mask\": \"1 1 0\"}\n", "line 1: \"attention_mask\" should be a list of 0s and 1s"),
        ("{\"input_ids\": [5, 6, 0], \"attention_mask\": [1, 1, 2]}\n", "line 1: \"attention_mask\" should be a list of 0s and 1s"),
        ("{\"input_ids\": [5, 6, 0], \"attention_mask\": [1]}\n", "line 1: \"attention_mask\" has 1 values for 3 input_ids"),
        ("\n  \n\n", "no sequences"),
    ])
    func jsonlErrors(contents: String, expectedPhrase: String) throws {
        let scratch = try TokenizerScratch()
        let error = loadError(try scratch.write(contents, to: "calibration.jsonl"))
        #expect(error?.message.contains(expectedPhrase) == true, "\(error?.message ?? "no error")")
    }

    @Test func dotJSONIsReadAsLines() throws {
        let scratch = try TokenizerScratch()
        let file = try scratch.write("{\"input_ids\": [5, 6]}\n", to: "calibration.json")
        #expect(try CalibrationSet.load(from: file, tokenizer: nil, seqLen: nil, samples: nil).sequences == [[5, 6]])
    }

    // MARK: Text

    /// The windows droptrace cuts must be the ones the reference scores
    /// were computed on (transformers' tokenizer, add_special_tokens=True).
    @Test("text windows equal the reference windows", arguments: [
        ("llama-f32", "llama3"), ("qwen2-f32", "qwen2"), ("gpt2-f32", "gpt2"),
    ])
    func textWindowsMatchReference(model: String, flavour: String) throws {
        let reference = try referenceTextWindows(model)
        let tokenizer = try Tokenizer(contentsOf: TokenizerFixtures.tokenizerFile(flavour))
        let set = try CalibrationSet.load(from: textFixture, tokenizer: tokenizer,
                                          seqLen: reference.seqLen, samples: reference.samples)
        #expect(set.sequences == reference.windows)
        #expect(!set.isShortOfRequestedSamples)
    }

    @Test func textWindowsAreConsecutiveAndFull() throws {
        let tokenizer = try gpt2Tokenizer()
        let text = try TokenizerFixtures.text("calib.txt")
        let ids = try tokenizer.encode(text)
        let set = try CalibrationSet.load(from: textFixture, tokenizer: tokenizer, seqLen: 50, samples: nil)
        #expect(set.sequences.count == ids.count / 50)
        #expect(set.sequences.flatMap { $0 } == Array(ids.prefix(set.sequences.count * 50)))
        #expect(set.requestedSamples == nil)
    }

    @Test func textWithFewerWindowsThanSamplesUsesThoseAvailable() throws {
        let tokenizer = try gpt2Tokenizer()
        let available = try tokenizer.encode(try TokenizerFixtures.text("calib.txt")).count / 32
        let set = try CalibrationSet.load(from: textFixture, tokenizer: tokenizer, seqLen: 32, samples: available + 5)
        #expect(set.sequences.count == available)
        #expect(set.requestedSamples == available + 5)
        #expect(set.isShortOfRequestedSamples)
    }

    @Test func textTooShortForOneWindow() throws {
        let tokenizer = try gpt2Tokenizer()
        let count = try tokenizer.encode(try TokenizerFixtures.text("calib.txt")).count
        let error = loadError(textFixture, tokenizer: tokenizer, seqLen: count + 1, samples: 4)
        #expect(error?.message.contains("\(count) tokens") == true)
        #expect(error?.message.contains("\(count + 1)") == true)
    }

    @Test func textNeedsTokenizer() {
        let error = loadError(textFixture, tokenizer: nil, seqLen: 32, samples: 2)
        // The reader serves --calibration and --eval: the message names neither.
        #expect(error?.message == "is text, which needs the checkpoint's tokenizer.json to be tokenised")
    }

    @Test func textNeedsSeqLen() throws {
        let error = loadError(textFixture, tokenizer: try gpt2Tokenizer(), seqLen: nil, samples: 2)
        #expect(error?.message.contains("sequence length") == true)
    }

    @Test func textMustBeUTF8() throws {
        let scratch = try TokenizerScratch()
        let file = scratch.url.appendingPathComponent("latin1.txt")
        try Data([0x63, 0x61, 0x66, 0xE9, 0x20, 0x6F, 0x6B]).write(to: file)  // "café ok" in Latin-1
        let error = loadError(file, tokenizer: try gpt2Tokenizer(), seqLen: 1, samples: nil)
        #expect(error?.message.contains("not valid UTF-8") == true)
        #expect(error?.message.contains("offset 3") == true)
    }

    // MARK: Streaming

    /// `prefix` followed by zeros up to 2 GiB without writing them (a sparse
    /// file): more than droptrace would ever read whole, and one "line" of
    /// gigabytes after the prefix.
    private func hugeFile(_ prefix: Data, name: String, in scratch: TokenizerScratch) throws -> URL {
        let file = scratch.url.appendingPathComponent(name)
        try prefix.write(to: file)
        let handle = try FileHandle(forWritingTo: file)
        try handle.truncate(atOffset: 1 << 31)
        try handle.close()
        return file
    }

    @Test func jsonlIsReadOnlyAsFarAsTheSamplesUsed() throws {
        let scratch = try TokenizerScratch()
        let lines = String(repeating: "{\"input_ids\": [5, 6, 7]}\n", count: 3)
        let file = try hugeFile(Data(lines.utf8), name: "huge.jsonl", in: scratch)
        let set = try CalibrationSet.load(from: file, tokenizer: nil, seqLen: 2, samples: 3)
        #expect(set.sequences == [[5, 6], [5, 6], [5, 6]])
        // Asked for more, it reaches the gigabytes line and refuses it by number.
        let error = loadError(file, samples: 4)
        #expect(error?.message.contains("line 4 is longer than \(1 << 24) bytes") == true, "\(error?.message ?? "no error")")
    }

    @Test func textIsReadOnlyAsFarAsTheWindowsUsed() throws {
        let scratch = try TokenizerScratch()
        let tokenizer = try gpt2Tokenizer()
        // Well past the first encoding (64 KiB) and the twice as long one that confirms it.
        var text = try TokenizerFixtures.text("calib.txt")
        while text.utf8.count < 300_000 { text += text }
        let whole = try tokenizer.encode(text)
        let file = try hugeFile(Data(text.utf8), name: "huge.txt", in: scratch)
        let set = try CalibrationSet.load(from: file, tokenizer: tokenizer, seqLen: 32, samples: 4)
        #expect(set.sequences == (0..<4).map { Array(whole[($0 * 32)..<(($0 + 1) * 32)]) })
    }

    /// A first line long enough is encoded on its own: with the line twice
    /// as long after it, the windows are settled before a third is read
    /// (here one that is not UTF-8).
    @Test func aLongFirstLineIsEncodedOnItsOwn() throws {
        let scratch = try TokenizerScratch()
        let tokenizer = try gpt2Tokenizer()
        var line = try TokenizerFixtures.text("calib.txt").replacingOccurrences(of: "\n", with: " ")
        while line.utf8.count < 100_000 { line += " " + line }
        let text = line + "\n" + line + " " + line + "\n"
        let file = scratch.url.appendingPathComponent("lines.txt")
        try (Data(text.utf8) + Data([0xFF, 0x0A])).write(to: file)
        let set = try CalibrationSet.load(from: file, tokenizer: tokenizer, seqLen: 32, samples: 4)
        #expect(set.sequences.flatMap { $0 } == Array(try tokenizer.encode(text).prefix(128)))
    }

    /// Text is held (and encoded) only as far as the memory given allows:
    /// past that, a refusal naming the file instead of an allocation failure.
    @Test func textBeyondWhatMemoryCanEncodeIsRefused() throws {
        let scratch = try TokenizerScratch()
        var text = try TokenizerFixtures.text("calib.txt")
        while text.utf8.count < 300_000 { text += text }
        let file = try scratch.write(text, to: "long.txt")
        let error = #expect(throws: DroptraceError.self) {
            try CalibrationSet.load(from: file, tokenizer: try gpt2Tokenizer(), seqLen: 32, samples: 4, memory: 96 * 50_000)
        }
        #expect(error?.path == file.path)
        #expect(error?.message.contains("more than 50000 bytes read before the windows were settled") == true)
        #expect(error?.message.contains("at most that much in this machine's memory") == true, "\(error?.message ?? "")")
    }

    /// Windows of a text read in part equal those of the whole text, with a
    /// post-processor that appends a token at the end of the text.
    @Test func textWindowsReadInPartEqualTheWholeText() throws {
        let scratch = try TokenizerScratch()
        let tokenizer = try gpt2Tokenizer()
        var text = try TokenizerFixtures.text("calib.txt")
        while text.utf8.count < 400_000 { text += "\n" + text }
        let whole = try tokenizer.encode(text)
        let file = try scratch.write(text, to: "long.txt")
        for (seqLen, samples) in [(32, 4), (7, 1), (512, 60), (1, 20_000)] {
            let set = try CalibrationSet.load(from: file, tokenizer: tokenizer, seqLen: seqLen, samples: samples)
            #expect(set.sequences.flatMap { $0 } == Array(whole.prefix(seqLen * samples)), "\(seqLen) × \(samples)")
        }
    }

    /// The Whitespace pre-tokenizer's regex (the library's own) ends its
    /// matches within a run of one kind: its text is read in part, and the
    /// windows equal the whole text's.
    @Test func whitespacePreTokenizerReadsInPartAlike() throws {
        let scratch = try TokenizerScratch()
        let tokenizer = try Tokenizer(contentsOf: TokenizerFixtures.caseFile("pretokenizer-whitespace-trained.json"))
        #expect(tokenizer.encodesPrefixesAlike)
        var text = try TokenizerFixtures.text("calib.txt")
        while text.utf8.count < 400_000 { text += "\n" + text }
        let whole = try tokenizer.encode(text)
        let file = try scratch.write(text, to: "long.txt")
        for (seqLen, samples) in [(32, 4), (512, 60)] {
            let set = try CalibrationSet.load(from: file, tokenizer: tokenizer, seqLen: seqLen, samples: samples)
            #expect(set.sequences.flatMap { $0 } == Array(whole.prefix(seqLen * samples)), "\(seqLen) × \(samples)")
        }
    }

    /// A regex that may reach arbitrarily far ahead (a quoted span closed
    /// only at the end of the file) makes every prefix agree with the next
    /// and all be wrong: such a tokenizer's text is encoded whole.
    @Test func farReachingRegexEncodesTheWholeText() throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(
            with: Data(contentsOf: TokenizerFixtures.tokenizerFile("gpt2"))) as! [String: Any]
        json["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [
            ["type": "Split", "pattern": ["Regex": #""[^"]*"|\s+"#], "behavior": "Isolated", "invert": false],
            ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
        ]] as [String: Any]
        let tokenizer = try Tokenizer(contentsOf: try scratch.write(json: json, to: "tokenizer.json"))
        #expect(!tokenizer.encodesPrefixesAlike)
        var text = "The \"quote starts here and"
        while text.utf8.count < 300_000 { text += " runs on, line after line\n" }
        text += "and ends\" here.\n"
        let whole = try tokenizer.encode(text)
        let file = try scratch.write(text, to: "quoted.txt")
        let set = try CalibrationSet.load(from: file, tokenizer: tokenizer, seqLen: 8, samples: 2)
        #expect(set.sequences.flatMap { $0 } == Array(whole.prefix(16)))
        #expect(try tokenizer.encode(String(text.prefix(100_000))).prefix(16) != whole.prefix(16), "a prefix must encode otherwise")
        // The text held is bounded: past the limit, a refusal naming the file.
        let error = #expect(throws: DroptraceError.self) {
            try CalibrationSet.load(from: file, tokenizer: tokenizer, seqLen: 8, samples: 2, textLimit: 100_000)
        }
        #expect(error?.path == file.path)
        #expect(error?.message.contains("more than 100000 bytes read before the windows were settled") == true)
    }

    /// Without a pre-tokenizer the whole text is one word; when merges join
    /// line ends with their neighbours, they can chain back from the text's
    /// end to its start: here every neighbouring pair merges, the rightmost
    /// first, so the first token depends on the parity of the whole text's
    /// length and a prefix twice as long agrees with a shorter one while both
    /// are wrong. Such a vocabulary's text is encoded whole (the first ids
    /// came from a prefix); Llama-2-style files, whose "\n" merges with
    /// nothing, are still read from prefixes.
    @Test func mergesAcrossLineEndsEncodeTheWholeText() throws {
        let scratch = try TokenizerScratch()
        var characters: [String] = []
        for line in 0..<34 {
            characters += (0..<999).map { String(UnicodeScalar(0x20000 + line * 999 + $0)!) } + ["\n"]
        }
        characters.append(String(UnicodeScalar(0x20000 + 34 * 999)!))
        var vocab: [String: Int] = [:]
        for character in characters where vocab[character] == nil { vocab[character] = vocab.count }
        var merges: [[String]] = []
        for index in stride(from: characters.count - 2, through: 0, by: -1) {
            let pair = [characters[index], characters[index + 1]]
            if vocab[pair.joined()] == nil { vocab[pair.joined()] = vocab.count }
            merges.append(pair)
        }
        let json: [String: Any] = ["model": ["type": "BPE", "vocab": vocab, "merges": merges] as [String: Any]]
        let tokenizer = try Tokenizer(contentsOf: try scratch.write(json: json, to: "tokenizer.json"))
        #expect(!tokenizer.encodesPrefixesAlike)
        let text = characters.joined()
        let whole = try tokenizer.encode(text)
        let set = try CalibrationSet.load(from: try scratch.write(text, to: "chain.txt"), tokenizer: tokenizer, seqLen: 1, samples: 3)
        #expect(set.sequences.flatMap { $0 } == Array(whole.prefix(3)))
        #expect(try tokenizer.encode(String(text.prefix(characters.count - 1))).first != whole.first, "a prefix must encode otherwise")

        // Without the merges that take "\n", prefixes are read again.
        let apart = merges.filter { !$0.contains("\n") }
        let barred = try Tokenizer(contentsOf: try scratch.write(
            json: ["model": ["type": "BPE", "vocab": vocab, "merges": apart] as [String: Any]], to: "barred.json"))
        #expect(barred.encodesPrefixesAlike)
    }

    /// An added token with `lstrip` swallows the whitespace before it, a run
    /// of any length: a cut inside the run encodes it as whitespace tokens,
    /// every longer prefix alike. Such a tokenizer's text is encoded whole.
    @Test func addedTokenStrippingLeftEncodesTheWholeText() throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(
            with: Data(contentsOf: TokenizerFixtures.tokenizerFile("gpt2"))) as! [String: Any]
        var added = json["added_tokens"] as! [[String: Any]]
        added[0]["lstrip"] = true
        json["added_tokens"] = added
        let content = added[0]["content"] as! String
        let tokenizer = try Tokenizer(contentsOf: try scratch.write(json: json, to: "tokenizer.json"))
        #expect(!tokenizer.encodesPrefixesAlike)
        let text = "Hello world\n" + String(repeating: "\n", count: 300_000) + String(repeating: "\(content) after the run\n", count: 20)
        let whole = try tokenizer.encode(text)
        let set = try CalibrationSet.load(from: try scratch.write(text, to: "run.txt"), tokenizer: tokenizer, seqLen: 8, samples: 1)
        #expect(set.sequences.flatMap { $0 } == Array(whole.prefix(8)))
        #expect(try tokenizer.encode(String(text.prefix(100_000))).prefix(8) != whole.prefix(8), "a prefix must encode otherwise")
    }

    /// An added token matched after normalization whose content the
    /// normalizer erases would match everywhere: refused by name.
    @Test func normalizedAddedTokenErasedByTheNormalizerIsRefused() throws {
        let scratch = try TokenizerScratch()
        var json = try JSONSerialization.jsonObject(
            with: Data(contentsOf: TokenizerFixtures.tokenizerFile("gpt2"))) as! [String: Any]
        json["normalizer"] = ["type": "Strip", "strip_left": true, "strip_right": true]
        var added = json["added_tokens"] as! [[String: Any]]
        added.append(["id": 50_300, "content": "  ", "single_word": false, "lstrip": false, "rstrip": false,
                      "normalized": true, "special": false])
        json["added_tokens"] = added
        let file = try scratch.write(json: json, to: "tokenizer.json")
        let error = #expect(throws: DroptraceError.self) { _ = try Tokenizer(contentsOf: file) }
        #expect(error?.path == file.path)
        #expect(error?.message.contains(#"added token "  " (id 512) is matched after normalization, which leaves nothing"#) == true,
                "\(String(describing: error))")
    }

    @Test(arguments: ["long.jsonl", "long.txt"])
    func overlongLineIsRefusedByNumber(name: String) throws {
        let scratch = try TokenizerScratch()
        let first = name.hasSuffix(".jsonl") ? "{\"input_ids\": [1, 2]}\n" : "Some text.\n"
        let long = name.hasSuffix(".jsonl")
            ? "{\"input_ids\": [" + String(repeating: "1, ", count: 6_000_000) + "1]}"
            : String(repeating: "word ", count: 3_500_000)
        let file = try scratch.write(first + long + "\n", to: name)
        let error = loadError(file, tokenizer: try gpt2Tokenizer(), seqLen: 4, samples: nil)
        #expect(error?.message.contains("line 2 is longer than") == true, "\(error?.message ?? "no error")")
    }

    // MARK: Files

    @Test(arguments: ["empty.jsonl", "empty.txt"])
    func emptyFile(name: String) throws {
        let scratch = try TokenizerScratch()
        let error = loadError(try scratch.write("", to: name), tokenizer: try gpt2Tokenizer(), seqLen: 8)
        #expect(error?.message.contains("empty") == true)
    }

    @Test func directoryIsNotACalibrationFile() throws {
        let scratch = try TokenizerScratch()
        let error = loadError(scratch.url)
        #expect(error?.message.contains("directory") == true)
    }

    @Test func nonPositiveSettingsAreRefused() throws {
        #expect(loadError(jsonlFixture, seqLen: 0)?.message.contains("sequence length") == true)
        #expect(loadError(jsonlFixture, samples: -1)?.message.contains("samples") == true)
    }
}
