import Foundation
import XCTest

/// What a run of the real `maqet` binary produced.
struct CLIResult {
    var code: Int32
    var stdout: String
    var stderr: String
}

/// The built `maqet` executable (next to the test bundle), or `$MAQET_BIN`.
let maqetBinary: String = {
    if let path = ProcessInfo.processInfo.environment["MAQET_BIN"], !path.isEmpty { return path }
    return Bundle.main.bundleURL.appendingPathComponent("maqet").path
}()

/// A temporary directory removed when the value is released.
final class TempDir {
    let path: String

    init(_ label: String = "maqet-test") {
        let base = ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        var template = Array("\(base)/\(label).XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("mkdtemp failed in \(base)") }
        path = String(cString: made)
    }

    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// The environment tests run maqet with: no real home, no real data or runtime directory.
func testEnvironment(home: String, extra: [String: String] = [:]) -> [String: String] {
    var env: [String: String] = [:]
    // The sanitizer options reach the child maqet too (Tools/test's AddressSanitizer run).
    for key in ["PATH", "LANG", "LC_ALL", "TMPDIR", "ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"] {
        if let v = ProcessInfo.processInfo.environment[key] { env[key] = v }
    }
    env["HOME"] = home
    env["XDG_DATA_HOME"] = (home as NSString).appendingPathComponent("xdg-data")
    env["XDG_CONFIG_HOME"] = (home as NSString).appendingPathComponent("xdg-config")
    env["XDG_RUNTIME_DIR"] = (home as NSString).appendingPathComponent("xdg-runtime")
    for (k, v) in extra { env[k] = v }
    return env
}

/// Runs a program to completion, feeding `stdin`, and collects its output.
@discardableResult
func runProcess(_ executable: String, _ arguments: [String], environment: [String: String], stdin: String? = nil, cwd: String? = nil) -> CLIResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = environment
    if let cwd { process.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    let out = Pipe(), err = Pipe(), input = Pipe()
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input
    do { try process.run() } catch {
        return CLIResult(code: -1, stdout: "", stderr: "cannot start \(executable): \(error)")
    }
    if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
    try? input.fileHandleForWriting.close()
    var outData = Data(), errData = Data()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async { outData = out.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    group.enter()
    DispatchQueue.global().async { errData = err.fileHandleForReading.readDataToEndOfFile(); group.leave() }
    group.wait()
    process.waitUntilExit()
    let code = process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    return CLIResult(code: code, stdout: String(decoding: outData, as: UTF8.self), stderr: String(decoding: errData, as: UTF8.self))
}

/// A sandbox for one test: a temporary home whose data dir is `dataDir`, and a way to run maqet in it.
final class Sandbox {
    let root = TempDir()
    var home: String { root.path }
    var dataDir: String { root.file("data") }
    var databasePath: String { (dataDir as NSString).appendingPathComponent("instances.db") }
    var extraEnvironment: [String: String] = [:]

    /// Runs `maqet --maqet-data-dir <dataDir> ARGS`.
    @discardableResult
    func maqet(_ arguments: [String], stdin: String? = nil, cwd: String? = nil, useDataDirOption: Bool = true) -> CLIResult {
        let args = useDataDirOption ? ["--maqet-data-dir", dataDir] + arguments : arguments
        return runProcess(maqetBinary, args, environment: testEnvironment(home: home, extra: extraEnvironment), stdin: stdin, cwd: cwd)
    }

    /// Writes `text` to a file in the sandbox and returns its path.
    @discardableResult
    func write(_ name: String, _ text: String) -> String {
        let path = root.file(name)
        try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
        return path
    }

    /// Copies a fixture from Tests/MaqetTests/Fixtures into the data dir as instances.db.
    func installFixture(_ name: String) {
        try? FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: databasePath)
        try! FileManager.default.copyItem(atPath: fixturePath(name), toPath: databasePath)
    }
}

/// Path of a file under Tests/MaqetTests/Fixtures.
func fixturePath(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures").appendingPathComponent(name).path
}

/// Runs the `sqlite3` CLI (a baseline and an independent reader of our files).
func sqlite3(_ path: String, _ sql: String) -> String {
    runProcess("/usr/bin/sqlite3", [path, sql], environment: ProcessInfo.processInfo.environment).stdout
}

extension CLIResult {
    /// Fails the test with both streams when the exit code is not `expected`.
    func assertExit(_ expected: Int32, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(code, expected, "exit \(code)\n--- stdout\n\(stdout)\n--- stderr\n\(stderr)", file: file, line: line)
    }
}
