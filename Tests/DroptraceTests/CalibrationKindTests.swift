import DroptraceSupport
import Evaluation
import Foundation
import Testing
import Tokenization

/// Calibration whose content contradicts its extension is refused with one
/// line naming the file, what it looks like and what the extension says,
/// instead of being tokenised as the other kind.
@Suite("Calibration extension and content must agree")
struct CalibrationKindTests {
    private func loadError(_ url: URL) throws -> DroptraceError? {
        let tokenizer = try Tokenizer(contentsOf: TokenizerFixtures.tokenizerFile("gpt2"))
        let error = #expect(throws: DroptraceError.self) {
            try CalibrationSet.load(from: url, tokenizer: tokenizer, seqLen: 2, samples: nil)
        }
        #expect(error?.path == url.path)
        #expect(error?.description.contains("\n") == false)
        return error
    }

    @Test("token-id JSONL in a text file is refused",
          arguments: ["calib.txt", "calib", "calib.md"], ["{\"input_ids\": [1, 2, 3]}\n", "\u{FEFF}\n  {\"input_ids\":[4],\"text\":\"a\"}  \n{\"input_ids\": [5]}\n"])
    func jsonlInTextFile(name: String, contents: String) throws {
        let scratch = try TokenizerScratch()
        let error = try loadError(scratch.write(contents, to: name))
        #expect(error?.message.contains("looks like JSONL token ids") == true, "\(error?.message ?? "")")
        let ext = (name as NSString).pathExtension
        #expect(error?.message.contains(ext.isEmpty ? "no extension" : "the extension .\(ext) says text") == true)
    }

    @Test("text in a .jsonl or .json file is refused", arguments: ["calib.jsonl", "calib.json", "calib.JSONL"])
    func textInJSONLFile(name: String) throws {
        let scratch = try TokenizerScratch()
        let text = try TokenizerFixtures.text("calib.txt")
        let error = try loadError(scratch.write("\n\n" + text, to: name))
        #expect(error?.message.contains("looks like text") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("the extension .\((name as NSString).pathExtension) says JSONL") == true)
    }

    /// datasets' `to_json(lines=False)` writes one JSON array of records
    /// (pretty-printed with `indent`, or on one line): refused as an array,
    /// with the fix, not as a line missing "input_ids" (which it holds).
    @Test("a JSON array of records is refused as an array, not JSON Lines",
          arguments: ["calib.json", "calib.jsonl"], [
              "[{\"input_ids\": [1, 2, 3, 4]}, {\"input_ids\": [5, 6, 7, 8]}]\n",
              "\u{FEFF}\n  [\n  {\n    \"input_ids\": [1, 2, 3, 4]\n  }\n]\n",
              "[" + String(repeating: "{\"input_ids\": [1, 2, 3, 4]}, ", count: 2000) + "{\"input_ids\": [1]}]",
          ])
    func jsonArrayOfRecords(name: String, contents: String) throws {
        let scratch = try TokenizerScratch()
        let error = try loadError(scratch.write(contents, to: name))
        let message = error?.message ?? ""
        #expect(message.hasPrefix("is a JSON array") && message.contains("not JSON Lines"), "\(message)")
        #expect(message.contains("to_json(path, lines=True)") && !message.contains("missing"), "\(message)")
    }

    /// An array on one line longer than any line droptrace reads is still
    /// named as an array (the file is not parsed).
    @Test func aLongJSONArrayIsRefusedAsAnArray() throws {
        let scratch = try TokenizerScratch()
        let record = Data(#"{"input_ids": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]}, "#.utf8)
        var contents = Data("[".utf8)
        while contents.count <= (1 << 24) + 1 { contents += record }
        contents += Data(#"{"input_ids": [1]}]"#.utf8)
        let url = try scratch.write("", to: "calib.json")
        try contents.write(to: url)
        let error = try loadError(url)
        #expect(error?.message.hasPrefix("is a JSON array") == true, "\(error?.message ?? "")")
    }

    @Test("text that merely mentions JSON is still text")
    func textWithBracesIsText() throws {
        let scratch = try TokenizerScratch()
        let tokenizer = try Tokenizer(contentsOf: TokenizerFixtures.tokenizerFile("gpt2"))
        for contents in ["{\"text\": \"a b c d e f\"}\n", "{ not json at all } and more words here\n", "input_ids: 1 2 3 4\n"] {
            let file = try scratch.write(contents, to: "calib.txt")
            let set = try CalibrationSet.load(from: file, tokenizer: tokenizer, seqLen: 2, samples: nil)
            #expect(set.sequences.flatMap { $0 }.count >= 2)
        }
    }

    @Test("a FIFO as calibration or task file is refused, not read forever")
    func fifoInputsAreRefused() throws {
        let scratch = try ScratchDirectory()
        for name in ["calibration.txt", "tasks.jsonl"] {
            let fifo = scratch.path(name)
            #expect(mkfifo(fifo.path, 0o644) == 0)
            let started = Date()
            let error = #expect(throws: DroptraceError.self) {
                if name == "tasks.jsonl" {
                    _ = try TaskSuite([TaskRequest(argument: "piqa=\(fifo.path)")], numFewshot: nil)
                } else {
                    _ = try CalibrationSet.load(from: fifo, tokenizer: nil, seqLen: nil, samples: nil)
                }
            }
            #expect(error?.path == fifo.path)
            #expect(error?.message.contains("not a regular file") == true, "\(String(describing: error))")
            #expect(Date().timeIntervalSince(started) < 10)
        }
    }
}
