import DroptraceSupport
import Foundation
import Testing
import Tokenization

/// The BOS/EOS lm-evaluation-harness takes as its prefix token, as
/// transformers 5.23's AutoTokenizer resolves them (each expectation was
/// read from `AutoTokenizer.from_pretrained` on the same files:
/// `bos_token_id`, else `eos_token_id`; an id past tokenizer.json is a token
/// transformers added).
@Suite struct SpecialTokenSettingsTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var model = "llama-f32"
        var modelType = "llama"
        var config: String?
        var map: String?
        var expected: PrefixToken
        var testDescription: String { name }
    }

    static let bos = PrefixToken.token(id: 510, text: "<|begin_of_text|>")
    static let eos = PrefixToken.token(id: 511, text: "<|end_of_text|>")

    static let cases: [Case] = [
        Case(name: "no files", expected: .none(reason: "")),
        Case(name: "tokenizer_config.json", config: #"{"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}"#,
             expected: bos),
        Case(name: "AddedToken object", config: #"{"bos_token": {"content": "<|begin_of_text|>", "__type": "AddedToken"}}"#,
             expected: bos),
        Case(name: "special_tokens_map.json alone", map: #"{"bos_token": "<|begin_of_text|>"}"#, expected: bos),
        Case(name: "special_tokens_map.json over tokenizer_config.json",
             config: #"{"bos_token": "<|end_of_text|>"}"#, map: #"{"bos_token": "<|begin_of_text|>"}"#, expected: bos),
        Case(name: "special_tokens_map.json ignored beside added_tokens_decoder",
             config: #"{"bos_token": "<|end_of_text|>", "added_tokens_decoder": {}}"#,
             map: #"{"bos_token": "<|begin_of_text|>"}"#, expected: eos),
        Case(name: "null BOS: EOS", config: #"{"bos_token": null, "eos_token": "<|end_of_text|>"}"#, expected: eos),
        Case(name: "a BOS transformers adds as a new token (id 512)",
             config: #"{"bos_token": "<nosuch>", "eos_token": "<|end_of_text|>"}"#,
             expected: .unknown(text: "<nosuch>", reason: "")),
        Case(name: "GPT2Tokenizer's default, not in this vocabulary", config: #"{"tokenizer_class": "GPT2Tokenizer"}"#,
             expected: .unknown(text: "<|endoftext|>", reason: "")),
        Case(name: "LlamaTokenizerFast over byte-level BPE loads the generic backend",
             config: #"{"tokenizer_class": "LlamaTokenizerFast"}"#, expected: .none(reason: "")),
        Case(name: "gpt2 model_type: GPT2Tokenizer's default", model: "gpt2-f32", modelType: "gpt2",
             expected: .token(id: 0, text: "<|endoftext|>")),
        Case(name: "qwen2 model_type: Qwen2Tokenizer's EOS", model: "qwen2-f32", modelType: "qwen2",
             expected: .token(id: 509, text: "<|endoftext|>")),
        Case(name: "unknown tokenizer class", config: #"{"tokenizer_class": "FancyTokenizer"}"#,
             expected: .unknown(text: nil, reason: "")),
        // Model types whose Hub tokenizer_class transformers overrides, and declared classes beside registered ones.
        Case(name: "llava: a declared class beside the registered generic backend loads the backend", modelType: "llava",
             config: #"{"tokenizer_class": "LlamaTokenizerFast"}"#, expected: .none(reason: "")),
        Case(name: "phi3: the same", modelType: "phi3", config: #"{"tokenizer_class": "LlamaTokenizerFast"}"#,
             expected: .none(reason: "")),
        Case(name: "smolvlm: GPT2Tokenizer declared, the generic backend loaded", model: "gpt2-f32", modelType: "smolvlm",
             config: #"{"tokenizer_class": "GPT2Tokenizer"}"#, expected: .none(reason: "")),
        Case(name: "internvl: LlamaTokenizerFast over byte-level BPE loads the generic backend", model: "qwen2-f32",
             modelType: "internvl", config: #"{"tokenizer_class": "LlamaTokenizerFast"}"#, expected: .none(reason: "")),
        Case(name: "ovis2: a declared class beside a registered one is kept", model: "qwen2-f32", modelType: "ovis2",
             config: #"{"tokenizer_class": "GPT2Tokenizer"}"#, expected: .token(id: 509, text: "<|endoftext|>")),
        Case(name: "qwen3_5_text model_type: Qwen3_5Tokenizer's EOS", model: "qwen2-f32", modelType: "qwen3_5_text",
             expected: .token(id: 509, text: "<|endoftext|>")),
        Case(name: "aya_vision model_type: CohereTokenizer's BOS, not in this vocabulary", model: "gpt2-f32",
             modelType: "aya_vision", expected: .unknown(text: "<BOS_TOKEN>", reason: "")),
    ]

    /// Reasons are for people; the test compares what the harness would do.
    static func withoutReason(_ token: PrefixToken) -> PrefixToken {
        switch token {
        case .token: return token
        case .none: return .none(reason: "")
        case .unknown(let text, _): return .unknown(text: text, reason: "")
        }
    }

    func settings(_ scratch: ScratchDirectory, config: String?, map: String?, modelType: String, model: String) throws
        -> (SpecialTokenSettings, Tokenizer)
    {
        let directory = scratch.path("tokenizer")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let tokenizerFile = directory.appendingPathComponent("tokenizer.json")
        try FileManager.default.copyItem(
            at: FixtureFiles.model(model).appendingPathComponent("tokenizer.json"), to: tokenizerFile)
        if let config { _ = try scratch.write(config, to: "tokenizer/tokenizer_config.json") }
        if let map { _ = try scratch.write(map, to: "tokenizer/special_tokens_map.json") }
        let tokenizer = try Tokenizer(contentsOf: tokenizerFile)
        return (try SpecialTokenSettings(directory: directory, modelType: modelType, tokenizer: tokenizer), tokenizer)
    }

    @Test(arguments: cases)
    func prefixTokenIsTransformers(_ example: Case) throws {
        let scratch = try ScratchDirectory()
        let (settings, tokenizer) = try settings(
            scratch, config: example.config, map: example.map, modelType: example.modelType, model: example.model)
        #expect(Self.withoutReason(settings.prefixToken(in: tokenizer)) == example.expected)
    }

    @Test func malformedSettingsNameTheirFile() throws {
        let scratch = try ScratchDirectory()
        for (config, problem) in [
            (#"{"bos_token": 5}"#, "bos_token should be a string, an AddedToken object or null"),
            (#"{"eos_token": {"id": 5}}"#, "eos_token is an object without a \"content\" string"),
            (#"["bos_token"]"#, "should be a JSON object"),
            (#"{"bos_token": "#, "is not valid JSON"),
        ] {
            #expect {
                _ = try settings(scratch, config: config, map: nil, modelType: "llama", model: "llama-f32")
            } throws: { error in
                let text = "\(error)"
                return text.contains("tokenizer_config.json") && text.contains(problem)
            }
            try FileManager.default.removeItem(at: scratch.path("tokenizer"))
        }
    }

    /// transformers 5 reads `added_tokens_decoder` with `.items()`, each
    /// entry a dict: null, a list or an entry that is a string stops
    /// AutoTokenizer (AttributeError, TypeError), so lm-evaluation-harness
    /// cannot run; an empty object loads (and hides special_tokens_map.json).
    @Test("an added_tokens_decoder transformers cannot read is refused naming the file and field", arguments: [
        (#"{"bos_token": "<|begin_of_text|>", "added_tokens_decoder": null}"#, "added_tokens_decoder should be an object"),
        (#"{"added_tokens_decoder": []}"#, "added_tokens_decoder should be an object"),
        (#"{"added_tokens_decoder": {"5": "x"}}"#, #"added_tokens_decoder entry "5" should be an object"#),
    ])
    func unreadableAddedTokensDecoder(config: String, problem: String) throws {
        let scratch = try ScratchDirectory()
        #expect {
            _ = try settings(scratch, config: config, map: #"{"bos_token": "<|end_of_text|>"}"#, modelType: "llama", model: "llama-f32")
        } throws: { error in
            let text = "\(error)"
            return text.contains("tokenizer_config.json") && text.contains(problem)
        }
    }

    /// An empty prompt (OpenBookQA with an empty question_stem) needs the
    /// prefix token; without one it is refused naming the document.
    @Test func emptyPromptWithoutBOSOrEOSIsRefusedNamingTheDocument() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try FileManager.default.removeItem(at: model.appendingPathComponent("tokenizer_config.json"))
        let document = #"{"id": "E1", "question_stem": "", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "A"}"#
        let tasks = try scratch.write(document + "\n", to: "obqa.jsonl")
        let result = try DroptraceCommand.run(["eval", model.path, "--task", "openbookqa=\(tasks.path)"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(tasks.path): line 1, choice 1: lm-evaluation-harness conditions an empty prompt"))
        #expect(result.stderr.contains("names no bos_token or eos_token"))

        // A prompt that starts with a BOS droptrace cannot place is refused too.
        _ = try scratch.write(#"{"bos_token": "<nosuch>"}"#, to: "llama-f32/tokenizer_config.json")
        let led = document.replacingOccurrences(of: #""question_stem": """#, with: #""question_stem": "<nosuch> x""#)
        _ = try scratch.write(led + "\n", to: "obqa.jsonl")
        let refused = try DroptraceCommand.run(["eval", model.path, "--task", "openbookqa=\(tasks.path)"])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("line 1, choice 1"))
        #expect(refused.stderr.contains(#"bos_token "<nosuch>""#) && refused.stderr.contains("not a token of tokenizer.json"))
    }
}
