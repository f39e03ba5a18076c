import Foundation
import XCTest

final class DbCommandTests: XCTestCase {
    func testCheckPassesThenFindsADroppedIndex() throws {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        sandbox.maqet(["ls"]).assertExit(0)
        let ok = sandbox.maqet(["db", "check"])
        ok.assertExit(0)
        XCTAssertTrue(ok.stdout.contains("schema: matches the migrations"), ok.stdout)

        _ = sqlite3(sandbox.databasePath, "DROP INDEX idx_vm_status")
        let bad = sandbox.maqet(["db", "check"])
        bad.assertExit(1)
        XCTAssertTrue(bad.stdout.contains("missing index idx_vm_status on vm_instances(status)"), bad.stdout)
        XCTAssertTrue(bad.stderr.contains("maqet: db check found 1 problem"), bad.stderr)

        let json = sandbox.maqet(["db", "check", "--format", "json"])
        json.assertExit(1)
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(report["ok"] as? Bool, false)
        XCTAssertEqual(report["schema_missing"] as? [String], ["index idx_vm_status on vm_instances(status)"])
    }

    func testCheckFindsAnExtraColumnAndForeignKeyViolations() {
        let sandbox = Sandbox()
        sandbox.maqet(["ls"]).assertExit(0)
        _ = sqlite3(sandbox.databasePath, """
            ALTER TABLE vm_instances ADD COLUMN surprise TEXT;
            INSERT INTO storage_registry (vm_name, storage_path, storage_type) VALUES ('ghost', '/x.qcow2', 'qcow2');
            """)
        let result = sandbox.maqet(["db", "check"])
        result.assertExit(1)
        XCTAssertTrue(result.stdout.contains("unexpected column vm_instances.surprise TEXT"), result.stdout)
        XCTAssertTrue(result.stdout.contains("foreign_key_check: storage_registry"), result.stdout)
    }

    func testCheckOnAnUnmigratedPythonDatabaseComparesWithItsVersion() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let sha = fileSHA(sandbox.databasePath)
        let result = sandbox.maqet(["db", "check"])
        result.assertExit(0)
        XCTAssertTrue(result.stdout.contains("pending"), result.stdout)
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha, "db check does not migrate")
    }

    func testStatusShowsPendingHistoryBackupsAndEditedScripts() throws {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let sha = fileSHA(sandbox.databasePath)
        let before = sandbox.maqet(["db", "status", "--format", "json"])
        before.assertExit(0)
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha, "db status does not migrate")
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(before.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(report["version"] as? Int, 1)
        XCTAssertEqual(report["latest_version"] as? Int, 7)
        XCTAssertEqual(report["layout"] as? String, "python-maqet")
        let pending = try XCTUnwrap(report["pending"] as? [[String: Any]])
        XCTAssertEqual(pending.map { $0["version"] as? Int }, [2, 3, 4, 5, 6, 7])
        XCTAssertEqual(pending.first?["description"] as? String, "Add runner_pid column for per-VM runner processes")
        let legacy = try XCTUnwrap(report["history"] as? [[String: Any]])
        XCTAssertEqual(legacy.map { $0["source"] as? String }, ["python-maqet"], "the Python rows are the history before conversion")

        let migrations = sandbox.migrationsCopy()
        sandbox.maqet(["--migrations-dir", migrations, "ls"]).assertExit(0)
        try! (try! String(contentsOfFile: migrations + "/0003_add_auth_secret.lua", encoding: .utf8) + "-- edited afterwards\n")
            .write(toFile: migrations + "/0003_add_auth_secret.lua", atomically: true, encoding: .utf8)
        let after = sandbox.maqet(["--migrations-dir", migrations, "db", "status", "--format", "json"])
        after.assertExit(0)
        let report2 = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(after.stdout.utf8)) as? [String: Any])
        let history = try XCTUnwrap(report2["history"] as? [[String: Any]])
        XCTAssertEqual(history.count, 7)
        XCTAssertEqual(history.filter { $0["edited"] as? Bool == true }.map { $0["version"] as? Int }, [3])
        XCTAssertTrue(history[0]["checksum"] is NSNull)
        XCTAssertEqual((report2["backups"] as? [Any])?.count, 1)
        XCTAssertEqual((report2["pending"] as? [Any])?.count, 0)

        let text = sandbox.maqet(["--migrations-dir", migrations, "db", "status"])
        text.assertExit(0)
        XCTAssertTrue(text.stdout.contains("EDITED"), text.stdout)
        XCTAssertTrue(text.stdout.contains("Schema version:  7 (latest 7)"), text.stdout)
        let check = sandbox.maqet(["--migrations-dir", migrations, "db", "check"])
        check.assertExit(0)
        XCTAssertTrue(check.stdout.contains("0003_add_auth_secret.lua was edited"), check.stdout)
    }

    func testMigrateDryRunWritesNothing() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let sha = fileSHA(sandbox.databasePath)
        let dry = sandbox.maqet(["db", "migrate", "--dry-run"])
        dry.assertExit(0)
        for name in ["0002_add_runner_pid.lua", "0003_add_auth_secret.lua", "0004_remove_auth_secret.lua", "0005_add_qmp_socket_path.lua", "0006_add_storage_registry.lua", "0007_add_vm_snapshots.lua"] {
            XCTAssertTrue(dry.stdout.contains(name), dry.stdout)
        }
        XCTAssertFalse(dry.stdout.contains("0001_initial_schema.lua"), dry.stdout)
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha)
        XCTAssertTrue(sandbox.automaticBackups.isEmpty)

        let migrate = sandbox.maqet(["db", "migrate"])
        migrate.assertExit(0)
        XCTAssertTrue(migrate.stdout.contains("from version 1 to 7"), migrate.stdout)
        XCTAssertEqual(migrate.stderr, "")
        XCTAssertEqual(sandbox.automaticBackups.count, 1)

        let fresh = Sandbox()
        let freshDry = fresh.maqet(["db", "migrate", "--dry-run"])
        freshDry.assertExit(0)
        XCTAssertTrue(freshDry.stdout.contains("0001_initial_schema.lua"), freshDry.stdout)
        XCTAssertFalse(FileManager.default.fileExists(atPath: fresh.dataDir), "dry run creates nothing")
    }

    func testHelpExplainsTheCommands() {
        let sandbox = Sandbox()
        let root = sandbox.maqet(["--help"], useDataDirOption: false)
        XCTAssertTrue(root.stdout.contains("ls") && root.stdout.contains("db"), root.stdout)
        let db = sandbox.maqet(["db", "--help"], useDataDirOption: false)
        db.assertExit(0)
        for sub in ["status", "migrate", "backup", "backups", "restore", "check"] {
            XCTAssertTrue(db.stdout.contains(sub), db.stdout)
        }
        let restore = sandbox.maqet(["db", "restore", "--help"], useDataDirOption: false)
        XCTAssertTrue(restore.stdout.contains("--force"), restore.stdout)
        sandbox.maqet(["db", "restore"]).assertExit(64)
    }
}
