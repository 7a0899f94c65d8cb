import Architectures
import CheckpointIO
import Foundation
import Testing

/// The model registry is the one list of supported families: the README,
/// `score --help` and the fixtures are checked against it, so a family
/// cannot be added (or documented) without the others.
@Suite struct RegistryTests {
    static let readme: String = {
        // This file is Tests/DroptraceTests/RegistryTests.swift in the repository.
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)) ?? ""
    }()

    /// The `model_type` column of the README's "Supported models" table.
    static var readmeModelTypes: [String] {
        guard let start = readme.range(of: "## Supported models") else { return [] }
        return readme[start.upperBound...].split(separator: "\n").drop { !$0.hasPrefix("|") }.prefix { $0.hasPrefix("|") }
            .dropFirst(2)
            .compactMap { row in row.split(separator: "|").first.map { $0.trimmingCharacters(in: .whitespaces).trimmingCharacters(in: ["`"]) } }
    }

    @Test func readmeListsExactlyTheRegisteredModelTypes() {
        #expect(!Self.readme.isEmpty)
        #expect(Self.readmeModelTypes == ModelRegistry.supportedModelTypes)
    }

    @Test func everyRegisteredModelTypeHasAReferenceFixture() throws {
        for name in FixtureFiles.familyFixtures {
            #expect(FixtureFiles.modelNames.contains(name), "\(name): no reference scores in reference.json")
            #expect(DropTests.evalModels.contains(name), "\(name): no perplexity reference in drop_reference.json")
            let config = try FixtureFiles.config(name)
            #expect("\(config["model_type"] ?? "")-f32" == name)
        }
    }

    @Test func scoreHelpNamesEveryRegisteredModelType() throws {
        let result = try DroptraceCommand.run(["score", "--help"])
        for type in ModelRegistry.supportedModelTypes { #expect(result.stdout.contains(type), "\(type)") }
    }

    @Test func anUnregisteredModelTypeIsRefusedNamingTheSupportedOnes() throws {
        let scratch = try ScratchDirectory()
        let model = try scratch.copyOfModel("llama-f32", as: "model")
        let configURL = model.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
        config["model_type"] = "not_a_family"
        try KindPreservingJSON.data(config).write(to: configURL)
        let error = try #require(throws: (any Error).self) { try ModelRegistry.load(Checkpoint(directory: model)) }
        #expect("\(error)".contains("not_a_family") && "\(error)".contains(ModelRegistry.supportedModelTypes.joined(separator: ", ")))
    }
}
