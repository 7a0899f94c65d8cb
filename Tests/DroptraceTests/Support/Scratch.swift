import Foundation

/// A fresh temporary directory, removed when the value is released.
final class ScratchDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("droptrace-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func path(_ name: String) -> URL { url.appendingPathComponent(name) }

    /// A copy of fixture model `name` that a test may damage.
    func copyOfModel(_ name: String, as copyName: String? = nil) throws -> URL {
        let destination = path(copyName ?? name)
        try FileManager.default.copyItem(at: FixtureFiles.model(name), to: destination)
        return destination
    }

    func write(_ text: String, to name: String) throws -> URL {
        let file = path(name)
        try Data(text.utf8).write(to: file)
        return file
    }
}

/// Runs the built `droptrace` executable.
enum DroptraceCommand {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// SwiftPM puts the executable next to the test bundle.
    static var executable: URL {
        var directory = Bundle.module.bundleURL.deletingLastPathComponent()
        for _ in 0..<3 where !FileManager.default.fileExists(atPath: directory.appendingPathComponent("droptrace").path) {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent("droptrace")
    }

    /// - Parameter launcher: a command that runs droptrace (its path
    ///   follows the launcher's own arguments), e.g. setpriv.
    static func run(_ arguments: [String], environment: [String: String] = [:], launcher: [String] = []) throws -> Result {
        let process = Process()
        process.executableURL = launcher.first.map(URL.init(fileURLWithPath:)) ?? executable
        process.arguments = launcher.isEmpty ? arguments : launcher.dropFirst() + [executable.path] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read before waiting so a full pipe cannot block the child.
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self))
    }
}
