import CheckpointIO
import DroptraceSupport
import Foundation
import Scoring
import Testing
import Tokenization

/// What llama.cpp's loader takes from a GGUF vocabulary but would log is
/// said as a warning naming the file, not passed over in silence.
@Suite struct GGUFVocabularyWarningsTests {
    /// The warnings loading the tokenizer of `bytes` (a GGUF file) gives.
    func warnings(_ bytes: [UInt8]) throws -> (path: String, lines: [String]) {
        let scratch = try ScratchDirectory()
        let url = scratch.path("model.gguf")
        try Data(bytes).write(to: url)
        var lines: [String] = []
        _ = try CheckpointTokenizer.load(
            for: try Checkpoint(location: url), purpose: "calibration", requestedBy: "calib.txt", warn: { lines.append($0) })
        return (url.path, lines)
    }

    @Test func aCompleteVocabularyIsNotWarnedAbout() throws {
        #expect(try warnings(try GGUFBytes.fixture("gguf-arch/phi3-f32.gguf")).lines.isEmpty)
    }

    /// An id outside the vocabulary keeps llama.cpp's default ("bad special token"), said once.
    @Test func aSpecialTokenOutsideTheVocabularyIsNamed() throws {
        var bytes = try GGUFBytes.fixture("gguf-arch/phi3-f32.gguf")
        try GGUFBytes.insertPair(
            &bytes, GGUFBytes.string("tokenizer.ggml.unknown_token_id") + GGUFBytes.value(.uint32, GGUFBytes.le(UInt32.max)))
        let (path, lines) = try warnings(bytes)
        #expect(lines.count == 1, "\(lines)")
        #expect(lines.first?.hasPrefix("\(path): tokenizer.ggml.unknown_token_id 4294967295 is outside the vocabulary of ") == true,
                "\(lines)")
    }

    /// A byte-level vocabulary lacking a byte's token (one renamed, or
    /// duplicated over it) drops that byte from any text, as llama.cpp does.
    @Test func bytesWithoutATokenAreNamed() throws {
        let scratch = try ScratchDirectory()
        let url = scratch.path("model.gguf")
        try Data(try GGUFBytes.fixture("gguf-arch/phi3-f32.gguf")).write(to: url)
        var spec = try VocabularySpec(gguf: try #require(try Checkpoint(location: url).gguf))
        #expect(spec.bytesWithoutToken.isEmpty)
        for text in ["1", "Ċ"] { spec.tokens[try #require(spec.tokens.firstIndex(of: text))] = "renamed-" + text }
        #expect(spec.bytesWithoutToken == [0x0A, 0x31])
        #expect(VocabularySpec(model: .sentencePiece, tokens: ["a"]).bytesWithoutToken.isEmpty)
    }
}
