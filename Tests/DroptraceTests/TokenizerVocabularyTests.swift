import Foundation
import Testing
@testable import Tokenization

/// The vocabulary as the tokenizers library (0.23.3) builds it from
/// `model.vocab`, and what that means for reading text from a prefix.
@Suite struct TokenizerVocabularyTests {
    static func tokenizer(vocab: String, added: String = "[]") throws -> Tokenizer {
        let scratch = try ScratchDirectory()
        let file = scratch.path("tokenizer.json")
        try Data("""
            {"version":"1.0","truncation":null,"padding":null,"added_tokens":\(added),"normalizer":null,
             "pre_tokenizer":null,"post_processor":null,"decoder":null,
             "model":{"type":"BPE","dropout":null,"unk_token":null,"continuing_subword_prefix":null,
                      "end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges":false,
                      "vocab":\(vocab),"merges":[]}}
            """.utf8).write(to: file)
        return try Tokenizer(contentsOf: file)
    }

    /// A key given twice keeps its last id (serde's map), and added tokens
    /// are numbered from the count of distinct keys: tokenizers 0.23.3 gives
    /// `<X>` id 3 and "ab<X>x" [0, 2, 3, 10] for this file.
    @Test func aRepeatedVocabularyKeyCountsOnce() throws {
        let added = #"[{"id":11,"content":"<X>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}]"#
        let tokenizer = try Self.tokenizer(vocab: #"{"x":10,"a":0,"b":1,"b":2}"#, added: added)
        #expect(tokenizer.tokenID(of: "<X>") == 3)
        #expect(tokenizer.tokenID(of: "b") == 2)
        #expect(try tokenizer.encode("ab<X>x") == [0, 2, 3, 10])
    }

    /// A token kilobytes long can be completed far into the text and change
    /// its first ids: such a vocabulary is encoded whole, never from a prefix.
    @Test func aVeryLongTokenRulesOutPrefixes() throws {
        #expect(try Self.tokenizer(vocab: #"{"a":0,"b":1}"#).encodesPrefixesAlike)
        let long = String(repeating: "a", count: Tokenizer.longestTokenForPrefixes + 1)
        #expect(try !Self.tokenizer(vocab: #"{"a":0,"\#(long)":1}"#).encodesPrefixesAlike)
    }
}
