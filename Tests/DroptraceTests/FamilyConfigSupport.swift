import Architectures
import CheckpointIO
import Dropping
import DroptraceSupport
import Foundation
import Scoring
import Testing

/// Which of block 0's q/k/v, o_proj and MLP down_proj have bias vectors,
/// for families with a fused q/k/v attention and a gated MLP.
func blockZeroBiases(_ fixture: EditedFixture) throws -> (qkv: Bool, output: Bool, mlp: Bool) {
    let block = try fixture.load().block(0)
    guard case .fused(let qkv)? = block.attention?.attention.projection, let output = block.attention?.attention.output,
          case .gated(_, let down, _)? = block.mlp?.feedForward
    else {
        Issue.record("not a fused q/k/v attention with a gated MLP")
        return (false, false, false)
    }
    return (qkv.bias != nil, output.bias != nil, down.bias != nil)
}

/// Every module's importance on the JSONL calibration sequences, the
/// attention scores, then the MLP's, then the blocks'.
func scores(_ fixture: EditedFixture) throws -> [Double] {
    let scored = try ImportanceScorer(model: try fixture.load()).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib")
    return scored.attention + scored.mlp + scored.block
}

/// A fixture model whose config.json a test changes, loaded through the registry.
/// A wrapper whose head is tied unless both the top-level and the text
/// config's flags are false, each true where absent
/// (`TextModelPlacement.textConfigOrTopLevel`), its fixture storing no head:
/// only both false is refused.
func expectHeadTiedUnlessBothFlagsFalse(_ fixture: String) throws {
    func head(top: Bool?, text: Bool?) throws -> OutputHead {
        try EditedFixture(fixture) { config in
            config["tie_word_embeddings"] = top
            EditedModel.set(text, at: "text_config.tie_word_embeddings", in: &config)
        }.load().head()
    }
    for (top, text) in [(false, true), (false, nil), (nil, false), (true, false)] as [(Bool?, Bool?)] {
        #expect(throws: Never.self, "\(fixture): top \(String(describing: top)), text \(String(describing: text))") { try head(top: top, text: text) }
    }
    #expect(throws: DroptraceError.self) { try head(top: false, text: false) }
}

struct EditedFixture {
    let scratch: ScratchDirectory
    let model: URL
    var configPath: String { model.appendingPathComponent("config.json").path }

    init(_ name: String, _ change: (inout [String: Any]) -> Void = { _ in }) throws {
        scratch = try ScratchDirectory()
        model = try scratch.copyOfModel(name, as: "model")
        try BadInputTests().rewriteConfig(model, change)
    }

    /// The fixture with `rope_parameters.<key>` set to `value` (nil removes it).
    init(_ name: String, rope key: String, _ value: Any?) throws {
        try self.init(name) { config in
            var rope = config["rope_parameters"] as! [String: Any]
            rope[key] = value
            config["rope_parameters"] = rope
        }
    }

    func load() throws -> any LanguageModel { try ModelRegistry.load(try Checkpoint(directory: model)) }

    /// The attention scores of the JSONL calibration sequences.
    func attentionScores() throws -> [Double] {
        try ImportanceScorer(model: try load()).score(FixtureFiles.jsonlSequences(), calibrationPath: "calib").attention
    }

    /// The load fails with one error naming config.json and `key`.
    func expectRefused(naming key: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            let loaded = try load()
            Issue.record("loaded as a \(loaded.layerCount)-layer model", sourceLocation: sourceLocation)
        } catch let error as DroptraceError {
            #expect(error.path == configPath, "\(error)", sourceLocation: sourceLocation)
            #expect(error.message.contains(key), "does not name \(key): \(error)", sourceLocation: sourceLocation)
            #expect(!error.message.contains("\n"), sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    /// config.json of a block-dropped export of the model.
    func exportedConfig(droppingBlocks blocks: Set<Int>) throws -> [String: Any] {
        let export = scratch.path("export")
        try DroppedModelExport.write(model: try load(), plan: DropPlan(blocks: blocks), to: export)
        let data = try Data(contentsOf: export.appendingPathComponent("config.json"))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }
}
