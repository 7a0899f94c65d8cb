import Architectures
import CheckpointIO
@testable import Dropping
import DroptraceSupport
import Foundation
import Testing

/// `drop --export` writes a config.json transformers loads: the source's own
/// text with only the layer count, the per-layer keys and the drop lists
/// rewritten — float fields stay floats, keys stay in their order.
@Suite struct ModelExportTests {
    /// A copy of fixture `name` whose config.json text is changed by `edit`.
    func model(_ name: String, in scratch: ScratchDirectory, edit: (String) -> String) throws -> URL {
        let model = try scratch.copyOfModel(name, as: "model")
        let url = model.appendingPathComponent("config.json")
        try Data(edit(try String(contentsOf: url, encoding: .utf8)).utf8).write(to: url)
        return model
    }

    func exportedConfig(_ model: URL, plan: DropPlan, in scratch: ScratchDirectory) throws -> (text: String, object: [String: Any]) {
        let export = scratch.path("export")
        try DroppedModelExport.write(model: try ModelRegistry.load(try Checkpoint(directory: model)), plan: plan, to: export)
        let data = try Data(contentsOf: export.appendingPathComponent("config.json"))
        // The export loads again.
        _ = try ModelRegistry.load(try Checkpoint(directory: export))
        return (String(decoding: data, as: UTF8.self), try JSONSerialization.jsonObject(with: data) as! [String: Any])
    }

    /// The top-level keys of pretty-printed JSON, in order.
    func keys(_ text: String) -> [String] {
        text.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("  \""), !line.hasPrefix("   ") else { return nil }
            return String(line.dropFirst(3).prefix { $0 != "\"" })
        }
    }

    func ints(_ value: Any?) -> [Int]? { (value as? [NSNumber])?.map(\.intValue) }

    /// Blocks 1 and 3 of 5 removed: every per-layer key keeps the entries of
    /// layers 0, 2 and 4, renumbered 0, 1, 2.
    @Test func blockDropRewritesEveryPerLayerKey() throws {
        let scratch = try ScratchDirectory()
        let model = try model("llama-f32", in: scratch) { text in
            text.replacingOccurrences(of: "\"vocab_size\": 512", with: """
                "vocab_size": 512,
                  "layer_types": ["full_attention", "sliding_attention", "sliding_attention", "full_attention", "full_attention"],
                  "sliding_window": 4,
                  "no_rope_layers": [1, 0, 0, 1, 1],
                  "mlp_only_layers": [0, 3, 4],
                  "max_window_layers": 3,
                  "first_k_dense_replace": 2,
                  "drop_attn_list": [2]
                """)
        }
        let original = try String(contentsOf: model.appendingPathComponent("config.json"), encoding: .utf8)
        let (text, config) = try exportedConfig(model, plan: DropPlan(blocks: [1, 3]), in: scratch)
        #expect((config["num_hidden_layers"] as! NSNumber).intValue == 3)
        #expect(config["layer_types"] as? [String] == ["full_attention", "sliding_attention", "full_attention"])
        #expect(ints(config["no_rope_layers"]) == [1, 0, 1])
        #expect(ints(config["mlp_only_layers"]) == [0, 2])
        #expect((config["max_window_layers"] as! NSNumber).intValue == 2)
        #expect((config["first_k_dense_replace"] as! NSNumber).intValue == 1)
        #expect(ints(config["drop_attn_list"]) == [1])
        for spelled in ["\"rope_theta\": 10000.0", "\"factor\": 8.0", "\"high_freq_factor\": 4.0", "\"attention_dropout\": 0.0", "\"rms_norm_eps\": 1e-05"] {
            #expect(text.contains(spelled), "export lost \(spelled)")
        }
        // The attention drop that stays names LLM-Drop's classes (`moduleDropsNameLLMDropsClasses`).
        #expect(keys(text) == keys(original) + ["auto_map"])
    }

    /// Gemma-3's sliding pattern (`sliding_window_pattern`: every n-th layer
    /// global) is spelled out as `layer_types` for the kept layers, so
    /// removing blocks cannot move the global layers. Llama reads no pattern
    /// and no list: its export gets none (transformers 5 would build a
    /// sliding cache layer from the list, and fail without a window).
    @Test func blockDropSpellsOutASlidingPatternWhereTheFamilyReadsIt() throws {
        let scratch = try ScratchDirectory()
        let gemma = try model("gemma3_text-f32", in: scratch) { text in
            let start = text.range(of: "\"layer_types\": [")!, end = text.range(of: "],", range: start.upperBound..<text.endIndex)!
            return text.replacingCharacters(in: start.lowerBound..<end.upperBound, with: "\"sliding_window_pattern\": 3,")
        }
        let (_, config) = try exportedConfig(gemma, plan: DropPlan(blocks: [1]), in: scratch)
        #expect(config["layer_types"] as? [String] == ["sliding_attention", "full_attention", "sliding_attention"])

        let other = try ScratchDirectory()
        let llama = try model("llama-f32", in: other) {
            $0.replacingOccurrences(of: "\"vocab_size\": 512", with: "\"vocab_size\": 512,\n  \"sliding_window_pattern\": 3")
        }
        let (_, plain) = try exportedConfig(llama, plan: DropPlan(blocks: [1, 3]), in: other)
        #expect(plain["layer_types"] == nil)
    }

    /// Per-layer settings config.json leaves to transformers' index rules
    /// are written out for the kept layers: Qwen2-MoE's layer types (even
    /// layers below `max_window_layers` slide), which renumbering would
    /// otherwise move, and a threshold the family read as its default
    /// (DeepSeek's `first_k_dense_replace`).
    @Test func blockDropWritesOutPerLayerDefaults() throws {
        let scratch = try ScratchDirectory()
        let model = try model("qwen2_moe-f32", in: scratch) { text in
            text.replacingOccurrences(of: #""layer_types": \[[^\]]*\],"#, with: "", options: .regularExpression)
        }
        let source = try String(contentsOf: model.appendingPathComponent("config.json"), encoding: .utf8)
        try #require(!source.contains("layer_types"))
        let (_, config) = try exportedConfig(model, plan: DropPlan(blocks: [0]), in: scratch)
        #expect(config["layer_types"] as? [String] == ["full_attention", "sliding_attention", "full_attention"])

        let deepseek = try ModelRegistry.load(try Checkpoint(directory: FixtureFiles.model("deepseek_v3-f32")))
        #expect(deepseek.layerNaming.layerThresholds["first_k_dense_replace"] == 1)
        var text = try ConfigJSONText(Data(#"{"num_hidden_layers": 4}"#.utf8), path: "config.json")
        try DroppedModelExport.renumberLayers(
            in: &text, naming: deepseek.layerNaming, renumber: .init(removing: [0], layers: 4))
        #expect(text.text.contains(#""first_k_dense_replace": 0"#), "\(text.text)")
    }

    /// Attention and MLP drops leave the text as it was, plus the drop lists.
    @Test func moduleDropOnlyAddsTheDropLists() throws {
        let scratch = try ScratchDirectory()
        let model = FixtureFiles.model("gemma2-f32")
        let original = try String(contentsOf: model.appendingPathComponent("config.json"), encoding: .utf8)
        let (text, _) = try exportedConfig(model, plan: DropPlan(attention: [1, 3], mlp: [2]), in: scratch)
        let added = ",\n  \"drop_attn_list\": [1,3],\n  \"drop_mlp_list\": [2]"
        #expect(text.replacingOccurrences(of: added, with: "") == original, "\(text)")
    }

    /// Plain transformers reads no drop lists (it filled the dropped modules
    /// with random weights, unsaid): a llama or mistral export with dropped
    /// modules names LLM-Drop's classes in `auto_map`, as LLM-Drop's own
    /// export does; one whose module drops all fell with their blocks loses
    /// them again, and a block drop never gets them.
    @Test(arguments: [("llama-f32", "llama"), ("mistral-f32", "mistral")])
    func moduleDropsNameLLMDropsClasses(fixture: String, type: String) throws {
        let scratch = try ScratchDirectory()
        let classes = ["AutoConfig": "configuration_dropped_\(type).\(type.capitalized)Config",
                       "AutoModelForCausalLM": "modeling_dropped_\(type).\(type.capitalized)ForCausalLM"]
        let (text, object) = try exportedConfig(FixtureFiles.model(fixture), plan: DropPlan(attention: [1]), in: scratch)
        #expect(object["auto_map"] as? [String: String] == classes, "\(text)")
        #expect(text.contains(#""auto_map": {"AutoConfig":"configuration_dropped_"#), "\(text)")
        let again = try ScratchDirectory()
        let (_, blocks) = try exportedConfig(scratch.path("export"), plan: DropPlan(blocks: [1]), in: again)
        #expect(blocks["auto_map"] == nil && blocks["drop_attn_list"] == nil, "\(blocks)")
        let plain = try ScratchDirectory()
        #expect(try exportedConfig(FixtureFiles.model(fixture), plan: DropPlan(blocks: [1]), in: plain).object["auto_map"] == nil)
    }

    /// Gemma-2 and Mixtral block drops (the wild case: transformers refused
    /// `final_logit_softcapping: 30` and `router_jitter_noise: 0`).
    @Test(arguments: [
        ("gemma2-f32", ["\"final_logit_softcapping\": 8.0", "\"attn_logit_softcapping\": 2.0", "\"rope_theta\": 10000.0"]),
        ("mixtral-f32", ["\"router_jitter_noise\": 0.0", "\"rope_theta\": 1000000.0", "\"router_aux_loss_coef\": 0.001"]),
    ])
    func blockDropKeepsFloatFieldsFloats(fixture: String, spellings: [String]) throws {
        let scratch = try ScratchDirectory()
        let (text, config) = try exportedConfig(FixtureFiles.model(fixture), plan: DropPlan(blocks: [0]), in: scratch)
        for spelled in spellings { #expect(text.contains(spelled), "\(fixture) export lost \(spelled)") }
        #expect((config["num_hidden_layers"] as! NSNumber).intValue == 3)
    }

    /// A GGUF's synthesised config spells its floats as floats too.
    @Test func ggufExportKeepsFloatFieldsFloats() throws {
        let scratch = try ScratchDirectory()
        let model = try ModelRegistry.load(try Checkpoint(location: FixtureFiles.root.appendingPathComponent("gguf/llama-f32.gguf")))
        let export = scratch.path("export")
        try DroppedModelExport.write(model: model, plan: DropPlan(blocks: [2]), to: export)
        let text = try String(contentsOf: export.appendingPathComponent("config.json"), encoding: .utf8)
        #expect(text.contains("\"rope_theta\": 10000.0"), "\(text)")
        #expect(text.contains("\"num_hidden_layers\": 4"), "\(text)")
    }

    func export(_ model: URL, to export: URL) throws {
        try DroppedModelExport.write(model: try ModelRegistry.load(try Checkpoint(directory: model)), plan: DropPlan(blocks: [1]), to: export)
    }

    /// A Hugging Face cache snapshot links each file to a blob: the export
    /// holds the files' bytes, not links that dangle once moved.
    @Test func symlinkedCompanionFilesAreCopiedAsFiles() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "snapshot")
        let blob = scratch.path("blob-tokenizer")
        let tokenizer = model.appendingPathComponent("tokenizer.json")
        try FileManager.default.moveItem(at: tokenizer, to: blob)
        try FileManager.default.createSymbolicLink(atPath: tokenizer.path, withDestinationPath: "../blob-tokenizer")
        let exported = scratch.path("export")
        try export(model, to: exported)
        let copy = exported.appendingPathComponent("tokenizer.json")
        #expect(try FileManager.default.attributesOfItem(atPath: copy.path)[.type] as? FileAttributeType == .typeRegular)
        #expect(try Data(contentsOf: copy) == Data(contentsOf: blob))
    }

    /// Only what belongs to the model travels with the dropped weights: a
    /// store `score` wrote beside them, the source's weights in other
    /// frameworks' formats (the undropped model) and hidden files were copied.
    @Test func onlyFilesOfTheModelTravelWithTheExport() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "model")
        let travelling = ["README.md", "generation_config.json", "modeling_custom.py", "special_tokens_map.json"]
        let staying = ["out.h5", "tf_model.h5", "flax_model.msgpack", "model.onnx", "tf_model.h5.index.json",
                       ".droptrace.lock", ".gitattributes", "optimizer.pt", "rng_state_1.pth", "pytorch_model.bin"]
        for name in travelling + staying { try Data("x".utf8).write(to: model.appendingPathComponent(name)) }
        let exported = scratch.path("export")
        try export(model, to: exported)
        let expected = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] + travelling
        #expect(try FileManager.default.contentsOfDirectory(atPath: exported.path).sorted() == expected.sorted())
    }

    /// A link to nothing among the companions is named (the export would
    /// have been written without that file, said nowhere).
    @Test func danglingCompanionLinkIsRefused() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "model")
        let link = model.appendingPathComponent("tokenizer_config.json")
        try? FileManager.default.removeItem(at: link)
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: "../missing-blob")
        let error = #expect(throws: DroptraceError.self) { try export(model, to: scratch.path("export")) }
        #expect(error?.description == "\(link.path): is a symbolic link to a missing file; cannot copy it into the export")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).sorted() == ["model"])
    }

    /// A FIFO beside the weights blocked the export forever: it is refused by
    /// name, and neither the export, nor its staging directory, nor the
    /// parent directories created for it is left; `drop` refuses it before
    /// any work (it did after every measurement).
    @Test func companionThatIsNoRegularFileIsRefused() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "model")
        let fifo = model.appendingPathComponent("notes.txt")
        try #require(mkfifo(fifo.path, 0o644) == 0)
        let exported = scratch.path("new/deeper/export")
        let problem = "\(fifo.path): not a regular file (a FIFO); refusing to read it; cannot copy it into the export"
        let error = #expect(throws: DroptraceError.self) { try export(model, to: exported) }
        #expect(error?.description == problem)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).sorted() == ["model"])

        let result = try DroptraceCommand.run([
            "drop", model.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block", "--count", "1",
            "--export", exported.path, "--threads", "1",
        ])
        #expect(result.status == 1)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.filter { $0.contains("error:") }.count == 1 && lines.contains { $0.hasSuffix("error: " + problem) }, "\(result.stderr)")
        #expect(!result.stderr.contains("scoring"), "refused only after scoring: \(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).sorted() == ["model"])
    }

    /// Staging directories of exports to the same path killed outright
    /// (their process gone) are removed; another path's, or a live one's, stay.
    @Test func staleStagingDirectoriesOfTheSameExportAreRemoved() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "model")
        let dead = scratch.path(TemporaryFileName.forTarget("export", pid: Int32.max))
        let live = scratch.path(TemporaryFileName.forTarget("export", pid: 1))
        let other = scratch.path(TemporaryFileName.forTarget("other", pid: Int32.max))
        for directory in [dead, live, other] {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            try Data("partial".utf8).write(to: directory.appendingPathComponent("model.safetensors"))
        }
        try export(model, to: scratch.path("export"))
        let names = try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).sorted()
        #expect(names == [live.lastPathComponent, other.lastPathComponent, "export", "model"].sorted())
    }

    /// A directory created at the export path while the export is written
    /// (by hand, or by another drop exporting there) is left as it is: the
    /// export fails with one line naming the path, and its staging directory
    /// goes. The run is stopped (SIGSTOP) once its staging directory appears,
    /// while a large companion file is still being copied into it.
    @Test func exportPathTakenDuringTheWriteIsLeftAsItIs() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "model")
        try Data(count: 32 << 20).write(to: model.appendingPathComponent("notes-large.txt"))
        let exported = scratch.path("export"), slices = scratch.path("slices.yaml")
        let process = Process()
        process.executableURL = DroptraceCommand.executable
        process.arguments = [
            "drop", model.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block", "--count", "1",
            "--export", exported.path, "--export-mergekit", slices.path, "--speed-max-rounds", "1", "--threads", "1", "--json",
        ]
        let errors = Pipe(), output = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let staging = scratch.path(TemporaryFileName.forTarget("export", pid: process.processIdentifier))
        while access(staging.path, F_OK) != 0 && process.isRunning { usleep(100) }
        kill(process.processIdentifier, SIGSTOP)
        let created = mkdir(exported.path, 0o755) == 0
        if created { try Data("precious".utf8).write(to: exported.appendingPathComponent("notes.txt")) }
        kill(process.processIdentifier, SIGCONT)
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stdout = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        try #require(created, "the export was in place before the run could be stopped: \(stderr)")
        // The measurements are printed all the same, without the export that failed, nor the mergekit
        // configuration never written after it (its path was printed as written).
        let json = try JSONSerialization.jsonObject(with: stdout) as? [String: Any]
        #expect(json?["dropped_blocks"] as? [Int] != nil && json?["export"] as? String == nil
            && json?["export_mergekit"] as? String == nil, "\(String(decoding: stdout, as: UTF8.self))")

        #expect(process.terminationStatus == 1, "\(stderr)")
        let lines = stderr.split(separator: "\n").filter { $0.contains("error:") }
        #expect(lines.count == 1 && lines[0].hasSuffix(
            "error: \(exported.path): was created or filled while the export was being written (Directory not empty); "
                + "left as it is and the export discarded: choose a new path"), "\(stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: exported.path) == ["notes.txt"])
        #expect(try String(contentsOf: exported.appendingPathComponent("notes.txt"), encoding: .utf8) == "precious")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).sorted() == ["export", "model"])
    }

    /// Interrupted while it writes the export (Ctrl-C, kill, a closed
    /// terminal), drop removes its staging directory and the parent
    /// directories it created for it, says so in one log line (it ended
    /// silently), then ends by the signal.
    @Test(arguments: [SIGTERM, SIGINT])
    func anInterruptedExportIsRemovedAndSaidSo(signal number: Int32) throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "model")
        try Data(count: 32 << 20).write(to: model.appendingPathComponent("notes-large.txt"))
        let exported = scratch.path("new/deeper/export")
        let process = Process()
        process.executableURL = DroptraceCommand.executable
        process.arguments = [
            "drop", model.path, "--calibration", FixtureFiles.calibrationJSONL.path, "--target", "block", "--count", "1",
            "--export", exported.path, "--speed-max-rounds", "1", "--threads", "1",
        ]
        let errors = Pipe()
        process.standardOutput = FileHandle.nullDevice
        process.standardError = errors
        try process.run()
        let staging = scratch.path("new/deeper/" + TemporaryFileName.forTarget("export", pid: process.processIdentifier))
        while access(staging.path, F_OK) != 0 && process.isRunning { usleep(100) }
        kill(process.processIdentifier, number)
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        try #require(process.terminationReason == .uncaughtSignal, "the export finished before the signal: \(stderr)")
        #expect(process.terminationStatus == number)
        let lines = stderr.split(separator: "\n").filter { $0.contains("error:") }
        let expected = try Regex(
            #"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ error: "# + NSRegularExpression.escapedPattern(for: exported.path)
                + ": interrupted; the export under way was removed, nothing was exported")
        #expect(lines.count == 1 && lines[0].wholeMatch(of: expected) != nil, "\(stderr)")
        if let line = lines.first, let stamp = ISO8601DateFormatter().date(from: String(line.prefix(20))) {
            #expect(abs(stamp.timeIntervalSinceNow) < 600, "the time is now's: \(line)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path) == ["model"])
    }

    /// The rename into place takes a free path or an empty directory, and
    /// leaves anything else there (and the directory to move) as it was.
    @Test func placementTakesOnlyAFreePathOrAnEmptyDirectory() throws {
        let scratch = try ScratchDirectory()
        let files = FileManager.default
        func staged() throws -> URL {
            let source = scratch.path("staging")
            try files.createDirectory(at: source, withIntermediateDirectories: true)
            try Data("new".utf8).write(to: source.appendingPathComponent("config.json"))
            return source
        }
        let free = scratch.path("free"), empty = scratch.path("empty")
        try DirectoryPlacement.move(try staged().path, to: free.path)
        try files.createDirectory(at: empty, withIntermediateDirectories: true)
        try DirectoryPlacement.move(try staged().path, to: empty.path)
        for placed in [free, empty] { #expect(try files.contentsOfDirectory(atPath: placed.path) == ["config.json"]) }

        let full = scratch.path("full"), file = scratch.path("file"), link = scratch.path("link")
        try files.createDirectory(at: full, withIntermediateDirectories: true)
        _ = try scratch.write("kept", to: "full/notes.txt")
        _ = try scratch.write("kept", to: "file")
        try files.createDirectory(at: scratch.path("elsewhere"), withIntermediateDirectories: true)
        try files.createSymbolicLink(atPath: link.path, withDestinationPath: "elsewhere")
        for taken in [full, file, link] {
            let source = try staged()
            #expect(throws: DirectoryPlacement.Failure.self, "\(taken.lastPathComponent)") {
                try DirectoryPlacement.move(source.path, to: taken.path)
            }
            #expect(try files.contentsOfDirectory(atPath: source.path) == ["config.json"])
        }
        #expect(try files.contentsOfDirectory(atPath: full.path) == ["notes.txt"])
        #expect(try String(contentsOf: file, encoding: .utf8) == "kept")
        #expect(try files.destinationOfSymbolicLink(atPath: link.path) == "elsewhere")
        #expect(try files.contentsOfDirectory(atPath: scratch.path("elsewhere").path).isEmpty)
    }

    /// A full disk names the file as the export would have held it (it named
    /// a staging file already removed, or the source file being copied), and
    /// why; with no room at all, at the header.
    @Test(arguments: ["ulimit -f 64", "ulimit -f 0"])
    func fullDiskNamesTheExport(limit: String) throws {
        let scratch = try ScratchDirectory()
        let exported = scratch.path("export")
        let result = try ChildProcess.droptraceInShell(setup: limit, [
            "drop", FixtureFiles.model("llama-f32").path, "--calibration", FixtureFiles.calibrationJSONL.path,
            "--target", "block", "--count", "1", "--export", exported.path, "--speed-max-rounds", "1", "--threads", "1",
        ])
        #expect(result.status == 1)
        let errors = result.stderr.split(separator: "\n").filter { $0.contains("error:") }
        #expect(errors.count == 1 && errors[0].hasSuffix("error: \(exported.path)/model.safetensors: cannot write the export: cannot write: File too large"),
                "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.url.path).isEmpty)
    }
}
