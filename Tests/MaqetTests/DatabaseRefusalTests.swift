import Foundation
import XCTest

final class DatabaseRefusalTests: XCTestCase {
    func testNewerVersionIsRefusedAndLeftUntouched() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        sandbox.maqet(["ls"]).assertExit(0)
        _ = sqlite3(sandbox.databasePath, "UPDATE schema_version SET value = 99")
        let sha = fileSHA(sandbox.databasePath)
        let backups = sandbox.automaticBackups
        let result = sandbox.maqet(["ls"])
        result.assertExit(3)
        XCTAssertEqual(result.stdout, "")
        XCTAssertTrue(result.stderr.hasPrefix("maqet: "), result.stderr)
        XCTAssertTrue(result.stderr.contains("version 99") && result.stderr.contains("latest 7"), result.stderr)
        XCTAssertTrue(result.stderr.contains("maqet db restore") && result.stderr.contains("--maqet-data-dir"), result.stderr)
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha)
        XCTAssertEqual(sandbox.automaticBackups, backups)
        // db migrate refuses the same way.
        sandbox.maqet(["db", "migrate"]).assertExit(3)
        sandbox.maqet(["db", "migrate", "--dry-run"]).assertExit(3)
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha)
    }

    func testNonSQLiteFileIsRefused() {
        let sandbox = Sandbox()
        try! FileManager.default.createDirectory(atPath: sandbox.dataDir, withIntermediateDirectories: true)
        let text = String(repeating: "these are not the pages you are looking for\n", count: 200)
        try! text.write(toFile: sandbox.databasePath, atomically: true, encoding: .utf8)
        let sha = fileSHA(sandbox.databasePath)
        for args in [["ls"], ["db", "status"], ["db", "check"], ["db", "backup"], ["db", "migrate"]] {
            let result = sandbox.maqet(args)
            result.assertExit(3)
            XCTAssertTrue(result.stderr.contains("not an SQLite database"), "\(args): \(result.stderr)")
            XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
        }
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha)
        XCTAssertEqual(sandbox.dataFiles("instances.db"), ["instances.db"])
    }

    func testTruncatedDatabaseIsRefused() {
        let sandbox = Sandbox()
        try! FileManager.default.createDirectory(atPath: sandbox.dataDir, withIntermediateDirectories: true)
        let whole = FileManager.default.contents(atPath: fixturePath("python-maqet-v1.db"))!
        FileManager.default.createFile(atPath: sandbox.databasePath, contents: whole.prefix(whole.count / 4))
        let sha = fileSHA(sandbox.databasePath)
        let result = sandbox.maqet(["ls"])
        result.assertExit(3)
        XCTAssertTrue(result.stderr.contains("damaged") || result.stderr.contains("malformed"), result.stderr)
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha)
        XCTAssertTrue(sandbox.automaticBackups.isEmpty)
    }

    func testCorruptPageIsRefusedBeforeMigrating() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        // Overwrite the b-tree page header of vm_instances' root page; the file header stays valid.
        let root = Int(sqlite3(sandbox.databasePath, "SELECT rootpage FROM sqlite_master WHERE name = 'vm_instances'")
            .trimmingCharacters(in: .whitespacesAndNewlines))!
        var bytes = [UInt8](FileManager.default.contents(atPath: sandbox.databasePath)!)
        for i in ((root - 1) * 4096)..<((root - 1) * 4096 + 64) { bytes[i] = 0xA5 }
        FileManager.default.createFile(atPath: sandbox.databasePath, contents: Data(bytes))
        let sha = fileSHA(sandbox.databasePath)
        let result = sandbox.maqet(["ls"])
        result.assertExit(3)
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha)
        XCTAssertTrue(sandbox.automaticBackups.isEmpty)
    }

    func testForeignTablesWithoutSchemaVersionAreRefused() {
        let sandbox = Sandbox()
        sandbox.createDatabase("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT);")
        let sha = fileSHA(sandbox.databasePath)
        let result = sandbox.maqet(["ls"])
        result.assertExit(3)
        XCTAssertTrue(result.stderr.contains("photos") && result.stderr.contains("not made by maqet"), result.stderr)
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha)
    }

    func testZeroByteFileIsANewDatabase() {
        let sandbox = Sandbox()
        try! FileManager.default.createDirectory(atPath: sandbox.dataDir, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: sandbox.databasePath, contents: Data())
        sandbox.maqet(["ls"]).assertExit(0)
        XCTAssertEqual(sandbox.schemaVersion(), "7")
    }
}
