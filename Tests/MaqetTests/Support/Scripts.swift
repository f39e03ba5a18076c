import Foundation
import XCTest

extension Sandbox {
    /// Writes `source` as `name` in the sandbox and runs `maqet run OPTIONS name ARGS` from the
    /// sandbox directory, so chunk names (and error messages) read `name:LINE:`.
    @discardableResult
    func runScript(_ source: String, name: String = "script.lua", options: [String] = [], args: [String] = [], stdin: String? = nil) -> CLIResult {
        write(name, source)
        return maqet(["run"] + options + [name] + args, stdin: stdin, cwd: home)
    }
}

extension XCTestCase {
    /// Asserts `haystack` contains `needle`, showing both on failure.
    func assertContains(_ haystack: String, _ needle: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertTrue(haystack.contains(needle), "expected to find \(needle.debugDescription) in:\n\(haystack)", file: file, line: line)
    }
}
