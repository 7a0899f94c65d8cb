import Architectures
import CheckpointIO
import DroptraceSupport
import Foundation
import ScoreStore
import Scoring
import Testing
import Tokenization

/// Every bad input gets a one-line error naming the file, a non-zero exit
/// code, and no output file; an existing output file is left untouched.
@Suite struct BadInputTests {
    /// Runs `droptrace score` over an existing output file and checks the
    /// failure contract; returns stderr for further checks.
    @discardableResult
    func expectRefused(
        checkpoint: URL, calibration: URL = FixtureFiles.calibrationJSONL, extra: [String] = [],
        naming expectedPath: String, mentioning words: [String], in scratch: ScratchDirectory
    ) throws -> String {
        let output = scratch.path("scores.h5")
        let previous = Self.hdf5Signature + Data("previous results".utf8)
        try previous.write(to: output)
        let result = try DroptraceCommand.run(
            ["score", checkpoint.path, "--calibration", calibration.path, "--output", output.path] + extra)
        #expect(result.status != 0)
        let errorLines = result.stderr.split(separator: "\n").filter { $0.contains("error") }
        #expect(errorLines.count == 1, "expected one error line, got: \(result.stderr)")
        let line = String(errorLines.first ?? "")
        #expect(line.contains(expectedPath), "error does not name \(expectedPath): \(line)")
        for word in words { #expect(line.contains(word), "error does not mention '\(word)': \(line)") }
        #expect(try Data(contentsOf: output) == previous, "existing output was modified")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).filter { $0.contains(".tmp") }
        #expect(leftovers.isEmpty, "temporary files left behind: \(leftovers)")
        return line
    }

    @Test func missingConfig() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try FileManager.default.removeItem(at: model.appendingPathComponent("config.json"))
        try expectRefused(checkpoint: model, naming: "config.json", mentioning: ["missing"], in: scratch)
    }

    /// A tokenizer.json whose vocabulary gives an id the embedding has no
    /// row for is named with the id and its token; the message blamed the
    /// calibration text.
    @Test func tokenizerIdOutsideTheVocabularyNamesTheTokenizer() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let url = model.appendingPathComponent("tokenizer.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var tokenizerModel = json["model"] as! [String: Any]
        var vocab = tokenizerModel["vocab"] as! [String: Any]
        // A token the text is encoded with.
        let tokenizer = try Tokenizer(contentsOf: url)
        let ids = try tokenizer.encode(try String(contentsOf: FixtureFiles.calibrationText, encoding: .utf8))
        let token = try #require(ids.lazy.compactMap { tokenizer.tokenText($0) }.first { vocab[$0] != nil })
        vocab[token] = 65536
        tokenizerModel["vocab"] = vocab
        json["model"] = tokenizerModel
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        let result = try DroptraceCommand.run([
            "score", model.path, "--calibration", FixtureFiles.calibrationText.path, "--output", scratch.path("s.h5").path])
        let errors = result.stderr.split(separator: "\n").filter { $0.contains("error:") }
        #expect(result.status == 1 && errors.count == 1, "\(result.stderr)")
        #expect(errors.first?.contains("\(url.path): gives id 65536 (token ") == true, "\(result.stderr)")
        #expect(errors.first?.contains("outside the model's vocabulary (vocab_size 512)") == true, "\(result.stderr)")
    }

    /// A number beyond float64 in tokenizer.json: the tokenizers library
    /// (serde_json) refuses the file, "number out of range"; it was read as
    /// infinity and the model scored.
    @Test func aNumberBeyondFloat64InTheTokenizerIsRefused() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let url = model.appendingPathComponent("tokenizer.json")
        var text = try String(contentsOf: url, encoding: .utf8)
        let opening = try #require(text.range(of: #""model": {"#))
        text.insert(contentsOf: #""dropout_scale": 1e400, "#, at: opening.upperBound)
        try Data(text.utf8).write(to: url)
        try expectRefused(checkpoint: model, calibration: FixtureFiles.calibrationText, extra: ["--seq-len", "16", "--samples", "2"],
                          naming: "tokenizer.json", mentioning: ["number out of range"], in: scratch)
    }

    @Test func garbledConfig() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try Data("{\"model_type\": \"llama\", \"hidden_size\": ".utf8).write(to: model.appendingPathComponent("config.json"))
        try expectRefused(checkpoint: model, naming: "config.json", mentioning: ["JSON"], in: scratch)
    }

    @Test func configMissingKey() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("gpt2-f32")
        try rewriteConfig(model) { $0.removeValue(forKey: "n_embd") }
        try expectRefused(checkpoint: model, naming: "config.json", mentioning: ["n_embd"], in: scratch)
    }

    @Test func unsupportedModelType() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try rewriteConfig(model) { $0["model_type"] = "bert" }
        try expectRefused(
            checkpoint: model, naming: "config.json", mentioning: ["bert", "llama", "mistral", "qwen2", "gpt_neox", "gpt2"],
            in: scratch)
    }

    @Test func headerPointsPastEnd() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let weights = model.appendingPathComponent("model.safetensors")
        var bytes = try Data(contentsOf: weights)
        bytes.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian) { Data($0) })
        try bytes.write(to: weights)
        try expectRefused(checkpoint: model, naming: "model.safetensors", mentioning: ["past the end"], in: scratch)
    }

    @Test func truncatedWeights() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let weights = model.appendingPathComponent("model.safetensors")
        let bytes = try Data(contentsOf: weights)
        try bytes.prefix(bytes.count - 1000).write(to: weights)
        try expectRefused(checkpoint: model, naming: "model.safetensors", mentioning: ["truncated"], in: scratch)
    }

    @Test func missingShard() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-sharded")
        let shard = try FileManager.default.contentsOfDirectory(atPath: model.path)
            .first { $0.hasPrefix("model-0000") }!
        try FileManager.default.removeItem(at: model.appendingPathComponent(shard))
        try expectRefused(checkpoint: model, naming: "model.safetensors.index.json", mentioning: [shard, "missing"], in: scratch)
    }

    /// A tensor stored in two shards: which copy would be read depends on
    /// the shards' order, so neither is chosen silently.
    @Test func tensorInTwoShards() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-sharded")
        let (first, second) = ("model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors")
        let copied = try #require(try SafetensorsFile(path: model.appendingPathComponent(first).path).tensors["model.layers.0.input_layernorm.weight"])
        let url = model.appendingPathComponent(second)
        let entries = try SafetensorsFile(path: url.path).tensors.values.map { SafetensorsWriter.Entry($0) }
        try SafetensorsWriter.encode(entries + [SafetensorsWriter.Entry(copied)]).write(to: url)
        try expectRefused(
            checkpoint: model, naming: second, mentioning: ["model.layers.0.input_layernorm.weight", "both", first], in: scratch)
    }

    @Test func missingTensor() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try rewriteWeights(model) { entries in entries.removeAll { $0.name == "model.layers.3.mlp.up_proj.weight" } }
        try expectRefused(checkpoint: model, naming: model.lastPathComponent, mentioning: ["model.layers.3.mlp.up_proj.weight"], in: scratch)
    }

    @Test func tensorShapeDisagreesWithConfig() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try rewriteConfig(model) { $0["intermediate_size"] = 128 }
        try expectRefused(
            checkpoint: model, naming: "model.safetensors", mentioning: ["gate_proj", "shape", "config.json"], in: scratch)
    }

    /// A stored head or final norm of another shape (here one row or value
    /// short) is another model's; transformers refuses to load it. `score`
    /// never uses them but refuses them too, reading only the header.
    @Test(arguments: [
        ("llama-f32", "lm_head.weight"), ("gpt_neox-f32", "embed_out.weight"), ("llama-f32", "model.norm.weight"),
        ("gpt2-f32", "ln_f.weight"), ("gpt_neox-f32", "final_layer_norm.weight"), ("phi-f32", "model.final_layernorm.weight"),
    ])
    func storedHeadOfAnotherShapeIsRefused(model name: String, head: String) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel(name)
        try rewriteWeights(model) { entries in
            let index = entries.firstIndex { $0.name.hasSuffix(head) }!
            let entry = entries[index]
            entries[index] = SafetensorsWriter.Entry(
                name: entry.name, dtype: entry.dtype, shape: [entry.shape[0] - 1] + entry.shape.dropFirst(),
                bytes: Data(count: entry.byteCount / entry.shape[0] * (entry.shape[0] - 1)))
        }
        try expectRefused(
            checkpoint: model, naming: "model.safetensors", mentioning: [head, "shape", "config.json"], in: scratch)
    }

    /// GPT-NeoX's head stored under both its names: transformers renames the
    /// 4.x `embed_out` onto `lm_head`, loading one over the other; which one
    /// is not droptrace's to guess, so such a checkpoint is refused.
    @Test func headStoredUnderBothNamesIsRefused() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("gpt_neox-f32")
        try rewriteWeights(model) { entries in
            let head = entries.first { $0.name == "embed_out.weight" }!
            entries.append(SafetensorsWriter.Entry(name: "lm_head.weight", dtype: head.dtype, shape: head.shape, bytes: Data(count: head.byteCount)))
        }
        try expectRefused(
            checkpoint: model, naming: "gpt_neox-f32", mentioning: ["'lm_head.weight' and 'embed_out.weight' are both stored"], in: scratch)
    }

    @Test func unsupportedDType() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let weights = model.appendingPathComponent("model.safetensors")
        var bytes = try Data(contentsOf: weights)
        // Relabel one F32 tensor as I32: same byte size, a dtype droptrace does not read.
        let headerLength = Int(bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        var header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        header = header.replacingOccurrences(of: "\"F32\"", with: "\"I32\"")
        bytes.replaceSubrange(8..<(8 + headerLength), with: Data(header.utf8))
        try bytes.write(to: weights)
        try expectRefused(checkpoint: model, naming: "model.safetensors", mentioning: ["I32", "unsupported dtype"], in: scratch)
    }

    @Test func tokenOutsideVocabulary() throws {
        let scratch = try ScratchDirectory()
        let calibration = try scratch.write("{\"input_ids\": [1, 2, 3]}\n{\"input_ids\": [4, 512, 6]}\n", to: "bad.jsonl")
        try expectRefused(
            checkpoint: FixtureFiles.model("llama-f32"), calibration: calibration, naming: "bad.jsonl",
            mentioning: ["512", "vocab_size 512"], in: scratch)
    }

    @Test func emptyCalibrationFile() throws {
        let scratch = try ScratchDirectory()
        let calibration = try scratch.write("", to: "empty.jsonl")
        try expectRefused(
            checkpoint: FixtureFiles.model("llama-f32"), calibration: calibration, naming: "empty.jsonl",
            mentioning: ["empty"], in: scratch)
    }

    @Test func sequenceLongerThanPositions() throws {
        let scratch = try ScratchDirectory()
        let ids = (0..<129).map { String($0 % 500) }.joined(separator: ", ")
        let calibration = try scratch.write("{\"input_ids\": [\(ids)]}\n", to: "long.jsonl")
        // gpt2 fixture: n_positions 128.
        try expectRefused(
            checkpoint: FixtureFiles.model("gpt2-f32"), calibration: calibration, naming: "long.jsonl",
            mentioning: ["129", "128"], in: scratch)
    }

    @Test func textCalibrationLongerThanPositions() throws {
        let scratch = try ScratchDirectory()
        try expectRefused(
            checkpoint: FixtureFiles.model("gpt2-f32"), calibration: FixtureFiles.calibrationText,
            extra: ["--seq-len", "200", "--samples", "1"], naming: "calib.txt", mentioning: ["200", "128"], in: scratch)
    }

    @Test func nonFiniteActivations() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try rewriteWeights(model) { entries in
            let index = entries.firstIndex { $0.name == "model.layers.2.mlp.down_proj.weight" }!
            let entry = entries[index]
            var values = [Float](repeating: 0, count: entry.byteCount / 4)
            values[7] = .infinity
            entries[index] = SafetensorsWriter.Entry(
                name: entry.name, dtype: entry.dtype, shape: entry.shape, bytes: values.withUnsafeBytes { Data($0) })
        }
        try expectRefused(checkpoint: model, naming: model.lastPathComponent, mentioning: ["NaN or Inf", "layer 2"], in: scratch)
    }

    @Test func missingCheckpointDirectory() throws {
        let scratch = try ScratchDirectory()
        try expectRefused(checkpoint: scratch.path("nowhere"), naming: "nowhere", mentioning: ["not found"], in: scratch)
    }

    static let hdf5Signature = Data([0x89, 0x48, 0x44, 0x46, 0x0D, 0x0A, 0x1A, 0x0A])

    @Test func successfulRunReplacesAnEarlierOutput() throws {
        let scratch = try ScratchDirectory()
        let output = scratch.path("scores.h5")
        try (Self.hdf5Signature + Data("old".utf8)).write(to: output)
        let result = try DroptraceCommand.run(
            ["score", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
             "--output", output.path])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try ScoreFile.read(from: output).rows.count == 1)
    }

    /// An output path naming one of the run's inputs (the weights, config.json,
    /// the calibration file), any other file that is not HDF5, or a directory
    /// is refused before any work, and the file is left as it was.
    @Test func outputThatIsNotAnEarlierOutputIsRefusedUntouched() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let calibration = scratch.path("calib.jsonl")
        try Data(contentsOf: FixtureFiles.calibrationJSONL).write(to: calibration)
        let notes = scratch.path("notes.txt")
        try Data("my notes".utf8).write(to: notes)
        for target in [model.appendingPathComponent("model.safetensors"), model.appendingPathComponent("config.json"),
                       calibration, notes] {
            let before = try Data(contentsOf: target)
            let result = try DroptraceCommand.run(
                ["score", model.path, "--calibration", calibration.path, "--output", target.path])
            #expect(result.status == 1)
            let errors = result.stderr.split(separator: "\n").filter { $0.contains("error") }
            #expect(errors.count == 1 && errors[0].contains(target.path) && errors[0].contains("refusing to replace"),
                    "\(result.stderr)")
            #expect(!result.stderr.contains("scoring"), "refused before any work: \(result.stderr)")
            #expect(try Data(contentsOf: target) == before, "\(target.lastPathComponent) was changed")
        }
        let directory = try DroptraceCommand.run(
            ["score", model.path, "--calibration", calibration.path, "--output", scratch.url.path])
        #expect(directory.status == 1 && directory.stderr.contains("it is a directory"), "\(directory.stderr)")
    }

    /// A config size only sizes an allocation once the tensors confirm it: an
    /// absurd intermediate_size is a shape mismatch, not a terabyte request.
    @Test func absurdIntermediateSizeIsAShapeMismatch() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try rewriteConfig(model) { $0["intermediate_size"] = 4_294_967_295 }
        try expectRefused(
            checkpoint: model, naming: "model.safetensors", mentioning: ["gate_proj", "shape", "4294967295"], in: scratch)
    }

    /// Finite as a double but infinite (or zero) in float32, the engine's
    /// arithmetic: every score would come out 0.
    @Test(arguments: [1e39, 1e308, 1e-50])
    func epsilonFloat32CannotHoldIsRefused(eps: Double) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try rewriteConfig(model) { $0["rms_norm_eps"] = eps }
        try expectRefused(checkpoint: model, naming: "config.json", mentioning: ["rms_norm_eps", "float32"], in: scratch)
    }

    /// Foundation names no key for a number that does not fit its setting
    /// (1.5 for a count is refused first as transformers refuses it, a float for an int),
    /// nor for one JSON cannot hold (Python's json.dumps writes `NaN` and
    /// `Infinity`); the error does.
    @Test(arguments: [
        ("1.5", "takes an integer"), ("1e20", "holds 1e+20 (a float)"), ("1e400", "not a finite number"),
        ("NaN", "not a finite number"), ("-Infinity", "not a finite number"),
    ])
    func unfitNumberNamesItsKey(literal: String, problem: String) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try writeConfig(model, key: "num_attention_heads", literal: literal)
        try expectRefused(checkpoint: model, naming: "config.json", mentioning: ["\"num_attention_heads\"", problem], in: scratch)
    }

    /// A number that is not finite inside a section is named by its path,
    /// as written bare or as transformers 5 tags it (`{"__float__": "NaN"}`).
    @Test(arguments: [("NaN", "holds NaN"), ("1e400", "holds 1e400"), (#"{"__float__": "-Infinity"}"#, "holds -Infinity")])
    func nonFiniteNumberInASectionNamesItsPath(literal: String, holds: String) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let url = model.appendingPathComponent("config.json")
        let text = try String(contentsOf: url, encoding: .utf8)
        let theta = try #require(text.range(of: #""rope_theta": "#))
        let end = try #require(text[theta.upperBound...].firstIndex { $0 == "," || $0 == "}" })
        try Data(text.replacingCharacters(in: theta.upperBound..<end, with: literal).utf8).write(to: url)
        try expectRefused(
            checkpoint: model, naming: "config.json", mentioning: ["\"rope_parameters.rope_theta\"", holds, "not a finite number"],
            in: scratch)
    }

    /// transformers (Python's json) keeps a repeated key's last value,
    /// Foundation the first: refused, naming the key, at any depth.
    @Test(arguments: [("num_hidden_layers", "num_hidden_layers"), ("factor", "rope_parameters.factor")])
    func repeatedConfigKeyIsRefused(key: String, path: String) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let url = model.appendingPathComponent("config.json")
        let text = try String(contentsOf: url, encoding: .utf8)
        let repeated = try #require(text.range(of: "\"\(key)\": "))
        try Data(text.replacingCharacters(in: repeated, with: "\"\(key)\": 4, \"\(key)\": ").utf8).write(to: url)
        try expectRefused(checkpoint: model, naming: "config.json", mentioning: ["\"\(path)\"", "given twice"], in: scratch)
    }

    /// Spellings Python reads and Foundation's decoder does not: the error
    /// is about the value, under its own key, never another one's.
    @Test(arguments: ["0e5", "1e-400"])
    func zeroSpelledWithAnExponentNamesItsKey(literal: String) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try rewriteConfig(model) { $0["initializer_range"] = 0.02 }
        try writeConfig(model, key: "rms_norm_eps", literal: literal)
        try expectRefused(checkpoint: model, naming: "config.json", mentioning: ["\"rms_norm_eps\"", "above 0"], in: scratch)
    }

    /// Python's json (so transformers) refuses a byte-order mark before
    /// config.json's text, and UTF-16; Foundation would take both.
    @Test(arguments: [true, false])
    func configThatPythonCannotReadIsRefused(byteOrderMark: Bool) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        let url = model.appendingPathComponent("config.json")
        let text = try String(contentsOf: url, encoding: .utf8)
        try (byteOrderMark ? Data(("\u{FEFF}" + text).utf8) : text.data(using: .utf16)!).write(to: url)
        try expectRefused(checkpoint: model, naming: "config.json", mentioning: ["not valid JSON", "byte 0"], in: scratch)
    }

    /// JSON that is not an object (a list, a number) holds no settings.
    @Test(arguments: ["[1, 2]", "3"])
    func configThatIsNotAnObjectIsRefused(text: String) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try Data(text.utf8).write(to: model.appendingPathComponent("config.json"))
        try expectRefused(checkpoint: model, naming: "config.json", mentioning: ["is JSON but not an object of settings"], in: scratch)
    }

    // MARK: - Damaging fixture copies

    /// State dicts of wrapped models keep the wrapper's prefix on every name:
    /// torch.compile's `_orig_mod.`, DDP's `module.`, a PEFT model's
    /// `base_model.model.`. transformers loads none of these (it initialises
    /// the model randomly and warns of every key); droptrace refuses them, and
    /// says what the file holds instead of "missing tensor" alone.
    @Test(arguments: ["_orig_mod.", "module.", "base_model.model."])
    func wrapperPrefixIsNamed(_ wrapper: String) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try rewriteWeights(model) { entries in
            for index in entries.indices { entries[index].name = wrapper + entries[index].name }
        }
        try expectRefused(
            checkpoint: model, naming: model.path,
            mentioning: ["missing tensor 'model.embed_tokens.weight'", "stored under the prefix '\(wrapper)'", "save_pretrained"],
            in: scratch)
    }

    /// A module holding the ...ForCausalLM as `model` saves every name with
    /// one more `model.` (`model.model.layers.0…`, `model.lm_head.weight`,
    /// e.g. a Lightning module's state dict). transformers 5 strips one
    /// base-model prefix from such keys and loads the model (checked with
    /// 5.23: same logits); droptrace reads it as the model, head included.
    @Test func doubledBaseModelPrefixReadsAsTheModel() throws {
        let scratch = try ScratchDirectory()
        let original = try scratch.copyOfModel("llama-f32")
        let wrapped = try scratch.copyOfModel("llama-f32", as: "wrapped")
        try renameWeights(wrapped, prefix: "", to: "model.")
        let sequences = FixtureFiles.jsonlSequences()
        func loaded(_ url: URL) throws -> any LanguageModel { try ModelRegistry.load(try Checkpoint(directory: url)) }
        let expected = try ImportanceScorer(model: try loaded(original)).score(sequences, calibrationPath: "fixture")
        let scores = try ImportanceScorer(model: try loaded(wrapped)).score(sequences, calibrationPath: "fixture")
        #expect(scores.attention == expected.attention && scores.mlp == expected.mlp && scores.block == expected.block)
        #expect(try loaded(wrapped).head().projection.weight == (try loaded(original).head().projection.weight))

        // 'model.model.x' and 'model.x' are one key to transformers: both stored is refused.
        try rewriteWeights(wrapped) { entries in
            entries += entries.filter { $0.name.hasPrefix("model.model.layers.1.") }.map {
                var copy = $0
                copy.name = String($0.name.dropFirst("model.".count))
                return copy
            }
        }
        try expectRefused(checkpoint: wrapped, naming: wrapped.path, mentioning: ["is stored twice", "model.model.layers.1."], in: scratch)
    }

    /// Layers stored in a form the model is not read from, each refused
    /// naming what is stored instead of a bare missing weight: a PEFT model
    /// saved without merging keeps `<layer>.base_layer.weight` beside
    /// `lora_A` / `lora_B` (transformers leaves such layers randomly
    /// initialised; scoring the base weight would drop the adapter); GPTQ and
    /// AWQ keep packed integers `<layer>.qweight` with `qzeros` and `scales`
    /// (with their quantization_config, refused before: see below).
    @Test(arguments: [
        ("q_proj.base_layer.weight", ["'model.layers.0.self_attn.q_proj.base_layer.weight'", "merge_and_unload()"]),
        ("q_proj.qweight", ["'model.layers.0.self_attn.q_proj.qweight'", "qzeros and scales"]),
        // A module PEFT trains whole (modules_to_save), not merged.
        ("q_proj.modules_to_save.default.weight", ["'model.layers.0.self_attn.q_proj.modules_to_save.default.weight'", "merge_and_unload()"]),
    ])
    func layerStoredInAnotherFormIsNamed(storedAs: String, mentioning: [String]) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try rewriteWeights(model) { entries in
            for index in entries.indices where entries[index].name.hasSuffix("self_attn.q_proj.weight") {
                entries[index].name = entries[index].name.replacingOccurrences(of: "q_proj.weight", with: storedAs)
            }
        }
        try expectRefused(
            checkpoint: model, naming: model.path,
            mentioning: ["missing tensor 'model.layers.0.self_attn.q_proj.weight'"] + mentioning, in: scratch)
    }

    /// The token embedding of an unmerged PEFT model that trained it whole
    /// (`modules_to_save=["embed_tokens"]`) is named as such, not as a bare missing tensor.
    @Test func unmergedPeftEmbeddingIsNamed() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try rewriteWeights(model) { entries in
            for index in entries.indices where entries[index].name == "model.embed_tokens.weight" {
                entries[index].name = "model.embed_tokens.original_module.weight"
            }
        }
        try expectRefused(
            checkpoint: model, naming: model.path,
            mentioning: ["missing tensor 'model.embed_tokens.weight'", "'model.embed_tokens.original_module.weight'", "merge_and_unload()"],
            in: scratch)
    }

    /// Weights saved under DeepSpeed ZeRO-3 without gathering them: every
    /// tensor an empty placeholder, or no tensor at all. Refused naming the
    /// cause, where it was a shape mismatch or a bare missing tensor.
    @Test(arguments: [true, false])
    func zero3PlaceholdersAreNamed(placeholders: Bool) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try rewriteWeights(model) { entries in
            entries = placeholders ? entries.map { .init(name: $0.name, dtype: .float32, shape: [0], bytes: Data()) } : []
        }
        try expectRefused(
            checkpoint: model, naming: model.appendingPathComponent("model.safetensors").path,
            mentioning: [placeholders ? "every tensor is empty (shape [0]" : "holds no tensors", "stage3_gather_16bit_weights_on_model_save"],
            in: scratch)
    }

    /// A quantization_config whose method droptrace does not implement is
    /// refused naming it, whatever the tensors: quantised integers (GPTQ's
    /// qweight, bitsandbytes' I8) were refused as a bare missing or
    /// unsupported tensor, and plain float weights under a method
    /// transformers quantises on load (bitsandbytes) were scored as stored.
    /// null is no quantisation; none without a quant_method loads in transformers.
    @Test(arguments: [
        (#"{"quant_method": "bitsandbytes", "load_in_8bit": true}"#, #""quantization_config.quant_method" is "bitsandbytes""#),
        (#"{"quant_method": "gptq", "bits": 4, "group_size": 128}"#, #""quantization_config.quant_method" is "gptq""#),
        (#"{"quant_method": "compressed-tensors", "format": "float-quantized"}"#, #"is "compressed-tensors""#),
        ("{}", "no quant_method"), (#""fp8""#, "not an object"), ("null", nil),
        (#"{"quant_method": "FP8"}"#, nil),
    ] as [(String, String?)])
    func quantisationDroptraceDoesNotReadIsRefusedNamingIt(config: String, mentioning: String?) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32")
        try writeConfig(model, key: "quantization_config", literal: config)
        let configPath = model.appendingPathComponent("config.json").path
        do {
            _ = try ModelRegistry.load(try Checkpoint(directory: model))
            #expect(mentioning == nil, "\(config) was read")
        } catch let error as DroptraceError {
            #expect(error.path == configPath && mentioning.map(error.message.contains) == true, "\(config): \(error)")
        }
    }

    func rewriteConfig(_ model: URL, _ change: (inout [String: Any]) -> Void) throws {
        let url = model.appendingPathComponent("config.json")
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        change(&object)
        try KindPreservingJSON.data(object).write(to: url)
    }

    /// Sets config.json's `key` to `literal` as written, JSON or not (`NaN`,
    /// `0e5`, `1e400`: spellings JSONSerialization does not write).
    func writeConfig(_ model: URL, key: String, literal: String) throws {
        try rewriteConfig(model) { $0[key] = "@@" }
        let url = model.appendingPathComponent("config.json")
        let text = try String(contentsOf: url, encoding: .utf8).replacingOccurrences(of: #""@@""#, with: literal)
        try Data(text.utf8).write(to: url)
    }

    func rewriteWeights(_ model: URL, _ change: (inout [SafetensorsWriter.Entry]) throws -> Void) throws {
        let url = model.appendingPathComponent("model.safetensors")
        let file = try SafetensorsFile(path: url.path)
        // The float tensors, and those of the others a reader reads (DeepSeek-V4's I64 `tid2eid` tables, FP8 / MXFP4 blocks).
        var entries = (Array(file.tensors.values) + Array(file.scaledTensors.values)).map { SafetensorsWriter.Entry($0) }
        try change(&entries)
        let data = try SafetensorsWriter.encode(entries)
        try data.write(to: url)
    }

    /// Renames the tensors of `model` whose names begin with `prefix` to begin with `replacement` instead.
    func renameWeights(_ model: URL, prefix: String, to replacement: String) throws {
        try rewriteWeights(model) { entries in
            for index in entries.indices where entries[index].name.hasPrefix(prefix) {
                entries[index].name = replacement + entries[index].name.dropFirst(prefix.count)
            }
        }
    }
}
