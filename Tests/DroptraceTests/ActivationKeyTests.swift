import DroptraceSupport
import Testing

/// An activation droptrace does not implement is refused with one error
/// naming config.json and the key that gave it, whichever key the family
/// reads it from (at load, or when the first block is built).
@Suite struct ActivationKeyTests {
    static let cases: [(fixture: String, key: String)] = [
        ("llama-f32", "hidden_act"), ("gpt2-f32", "activation_function"), ("gpt_bigcode-f32", "activation_function"),
        ("opt-f32", "activation_function"), ("gptj-f32", "activation_function"), ("gpt_neo-f32", "activation_function"),
        ("falcon-f32", "activation"), ("gemma2-f32", "hidden_activation"), ("gemma3_text-f32", "hidden_activation"),
        ("gemma4_text-f32", "hidden_activation"),
    ]

    @Test(arguments: cases)
    func unknownActivationIsRefusedNamingItsKey(fixture: String, key: String) throws {
        let edited = try EditedFixture(fixture) { $0[key] = "no_such_activation" }
        do {
            _ = try edited.attentionScores()
            Issue.record("scored with activation no_such_activation")
        } catch let error as DroptraceError {
            #expect(error.path == edited.configPath, "\(error)")
            #expect(error.message.hasPrefix("\(key) is \"no_such_activation\""), "\(error)")
            #expect(!error.message.contains("\n"))
        }
    }
}
