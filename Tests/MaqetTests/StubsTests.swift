import Foundation
import XCTest

/// docs/lua/maqet.lua and docs/lua-api.md must describe exactly what the runtime registers.
final class StubsTests: XCTestCase {
    static let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("docs")

    /// Walks the live `maqet` table and the handle metatables of a real `maqet run`; returns
    /// entries like "function maqet.process.run", "method maqet.database:exec", "field maqet.version".
    func registeredSurface() throws -> Set<String> {
        let surface = LuaSurface.registered(in: Sandbox())
        // Sanity: the walk itself works.
        XCTAssertTrue(surface.contains("function maqet.process.run"), "\(surface)")
        XCTAssertTrue(surface.contains("method maqet.database:exec"), "\(surface)")
        return surface
    }

    /// The same entries, read from the LuaCATS stubs.
    func stubbedSurface() throws -> Set<String> {
        let text = try String(contentsOf: Self.docs.appendingPathComponent("lua/maqet.lua"), encoding: .utf8)
        var classOfLocal: [String: String] = [:]
        var pendingClass: String?
        var functions: Set<String> = []
        var assignments: Set<String> = []
        for raw in text.split(separator: "\n") {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if let m = line.firstMatch(of: #/^---@class\s+([\w.]+)/#) {
                pendingClass = String(m.1)
            } else if let m = line.firstMatch(of: #/^local\s+(\w+)\s*=\s*\{\}/#), let cls = pendingClass {
                // Handle classes: `---@class maqet.Process` + `local Process = {}` is metatable "maqet.process".
                classOfLocal[String(m.1)] = cls.lowercased()
                pendingClass = nil
            } else if let m = line.firstMatch(of: #/^function\s+(maqet[\w.]*)\s*\(/#) {
                functions.insert("function " + m.1)
            } else if let m = line.firstMatch(of: #/^function\s+(\w+):(\w+)\s*\(/#) {
                let cls = classOfLocal[String(m.1)] ?? "?\(m.1)"
                functions.insert("method \(cls):\(m.2)")
            } else if let m = line.firstMatch(of: #/^(maqet[\w.]*)\s*=/#) {
                assignments.insert(String(m.1))
                pendingClass = nil
            } else if !line.hasPrefix("---") {
                pendingClass = nil
            }
        }
        // An assigned name that prefixes functions is a module table, not a field.
        let fields = assignments.filter { name in
            name != "maqet" && !functions.contains { $0.hasPrefix("function \(name).") }
        }
        return functions.union(fields.map { "field " + $0 })
    }

    func testStubsMatchTheRuntime() throws {
        let registered = try registeredSurface()
        let stubbed = try stubbedSurface()
        XCTAssertEqual(registered.subtracting(stubbed).sorted(), [], "registered but missing from docs/lua/maqet.lua")
        XCTAssertEqual(stubbed.subtracting(registered).sorted(), [], "in docs/lua/maqet.lua but not registered")
    }

    /// Every registered name has a `### name` heading in docs/lua-api.md, and every heading names
    /// something registered. Methods are written with the usual variable: db:, rows:, proc:, conn:.
    func testAPIReferenceHeadingsMatchTheRuntime() throws {
        let registered = try registeredSurface()
        let variable = ["maqet.database": "db", "maqet.rows": "rows", "maqet.process": "proc", "maqet.qmp": "conn", "maqet.regex": "re"]
        var expected: Set<String> = []
        for entry in registered {
            let parts = entry.split(separator: " ", maxSplits: 1).map(String.init)
            if parts[0] == "method" {
                let pieces = parts[1].split(separator: ":").map(String.init)
                expected.insert("\(variable[pieces[0]] ?? pieces[0]):\(pieces[1])")
            } else {
                expected.insert(parts[1])
            }
        }
        let text = try String(contentsOf: Self.docs.appendingPathComponent("lua-api.md"), encoding: .utf8)
        var documented: Set<String> = []
        for line in text.split(separator: "\n") where line.hasPrefix("### ") {
            if let m = line.firstMatch(of: #/^### `?([\w.:]+)/#) { documented.insert(String(m.1)) }
        }
        XCTAssertEqual(expected.subtracting(documented).sorted(), [], "registered but without a ### heading in docs/lua-api.md")
        XCTAssertEqual(documented.subtracting(expected).sorted(), [], "### headings in docs/lua-api.md naming nothing registered")
    }
}
