import Foundation

/// Runs droptrace under another program: a shell that lowers a resource
/// limit first, or `script`, which gives it a pseudo-terminal.
enum ChildProcess {
    /// Runs `/bin/sh -c "<setup>; exec droptrace <arguments>"`.
    static func droptraceInShell(setup: String, _ arguments: [String]) throws -> DroptraceCommand.Result {
        let command = "\(setup); exec \(([DroptraceCommand.executable.path] + arguments).map(quoted).joined(separator: " "))"
        return try run("/bin/sh", ["-c", command])
    }

    /// Runs droptrace on a pseudo-terminal (util-linux `script`); everything
    /// it wrote to the terminal comes back as `stdout`, raw.
    static func droptraceOnTerminal(_ arguments: [String]) throws -> DroptraceCommand.Result {
        let command = ([DroptraceCommand.executable.path] + arguments).map(quoted).joined(separator: " ")
        return try run("/usr/bin/script", ["-qfec", command, "/dev/null"])
    }

    static var hasScript: Bool { FileManager.default.isExecutableFile(atPath: "/usr/bin/script") }

    static func quoted(_ argument: String) -> String {
        "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    static func run(_ executable: String, _ arguments: [String]) throws -> DroptraceCommand.Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        try process.run()
        // Read stderr on another thread so neither pipe can fill and block the child.
        nonisolated(unsafe) var stderr = Data()
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            stderr = err.fileHandleForReading.readDataToEndOfFile()
            done.signal()
        }
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        done.wait()
        process.waitUntilExit()
        return DroptraceCommand.Result(
            status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self))
    }
}
