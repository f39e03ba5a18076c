import Foundation
import MaqetCore
import MaqetRuntime
import XCTest

final class MigrationTests: XCTestCase {
    func testPythonV1FixtureMigratesKeepingEveryRowAndLegacyHistory() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let before = vmRows(sandbox.databasePath)
        XCTAssertEqual(before.split(separator: "\n").count, 4, before)

        let result = sandbox.maqet(["ls"])
        result.assertExit(0)
        XCTAssertEqual(vmRows(sandbox.databasePath), before, "VM rows changed by the migration")
        XCTAssertEqual(sandbox.schemaVersion(), "7")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM schema_version").trimmingCharacters(in: .whitespacesAndNewlines), "1")
        // The legacy row is kept as history; our migrations are recorded with their checksums.
        let history = sqlite3(sandbox.databasePath, "SELECT version, name, quote(checksum), source FROM schema_history ORDER BY version")
        let lines = history.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 7, history)
        XCTAssertEqual(lines.first, "1|Initial schema|NULL|python-maqet")
        let shipped = try! String(contentsOfFile: packageRoot + "/migrations/0002_add_runner_pid.lua", encoding: .utf8)
        XCTAssertTrue(lines[1].hasPrefix("2|0002_add_runner_pid|'\(SHA256.hex(shipped))'|"), lines[1])
        XCTAssertEqual(sandbox.automaticBackups.count, 1)
        // The one notice line on stderr names both versions and the backup.
        let notice = result.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertFalse(notice.contains("\n"), notice)
        XCTAssertTrue(notice.contains("from version 1 to 7") && notice.contains(sandbox.automaticBackups[0]), notice)
        // stdout is the plain listing.
        XCTAssertTrue(result.stdout.hasPrefix("VM Name"), result.stdout)
        // The backup is the database as it was: the Python layout at version 1 with the same rows.
        let backup = (sandbox.dataDir as NSString).appendingPathComponent(sandbox.automaticBackups[0])
        XCTAssertEqual(sqlite3(backup, "SELECT max(version) FROM schema_version").trimmingCharacters(in: .whitespacesAndNewlines), "1")
        XCTAssertEqual(vmRows(backup), before)
        XCTAssertEqual(sqlite3(backup, "PRAGMA integrity_check").trimmingCharacters(in: .whitespacesAndNewlines), "ok")
    }

    func testPythonLayoutAtVersion4MigratesToLatest() {
        let sandbox = Sandbox()
        sandbox.createDatabase(pythonSchema(version: 4))
        let before = vmRows(sandbox.databasePath, columns: pythonColumns(version: 4))
        sandbox.maqet(["ls"]).assertExit(0)
        XCTAssertEqual(vmRows(sandbox.databasePath, columns: pythonColumns(version: 4)), before)
        XCTAssertEqual(sandbox.schemaVersion(), "7")
        XCTAssertTrue(sqlite3(sandbox.databasePath, "PRAGMA table_info(vm_instances)").contains("qmp_socket_path"))
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT group_concat(version || ':' || coalesce(source, ''), ',') FROM schema_history")
            .trimmingCharacters(in: .whitespacesAndNewlines),
            "1:python-maqet,2:python-maqet,3:python-maqet,4:python-maqet,5:maqet 0.1.0,6:maqet 0.1.0,7:maqet 0.1.0")
        sandbox.maqet(["db", "check"]).assertExit(0)
    }

    func testPythonLayoutAtTheLatestVersionIsConvertedWithoutLosingStorageRows() {
        // The Python maqet's last version is 6: with a migration set whose latest is 6 too, the
        // database only has its version bookkeeping converted.
        let sandbox = Sandbox()
        let upTo6 = sandbox.migrationsCopy("up-to-6")
        try! FileManager.default.removeItem(atPath: upTo6 + "/0007_add_vm_snapshots.lua")
        sandbox.createDatabase(pythonSchema(version: 6))
        let before = vmRows(sandbox.databasePath, columns: pythonColumns(version: 6))
        let storage = sqlite3(sandbox.databasePath, "SELECT * FROM storage_registry")
        let result = sandbox.maqet(["--migrations-dir", upTo6, "ls"])
        result.assertExit(0)
        XCTAssertTrue(result.stderr.contains("Python maqet layout at version 6"), result.stderr)
        XCTAssertEqual(vmRows(sandbox.databasePath, columns: pythonColumns(version: 6)), before)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT * FROM storage_registry"), storage)
        XCTAssertEqual(sandbox.schemaVersion(), "6")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM schema_history WHERE source = 'python-maqet'").trimmingCharacters(in: .whitespacesAndNewlines), "6")
        XCTAssertEqual(sandbox.automaticBackups.count, 1)
        sandbox.maqet(["--migrations-dir", upTo6, "db", "check"]).assertExit(0)
    }

    func testPythonVersion6MigratesToVersion7WithTheSnapshotsTable() {
        let sandbox = Sandbox()
        sandbox.createDatabase(pythonSchema(version: 6))
        let before = vmRows(sandbox.databasePath, columns: pythonColumns(version: 6))
        let storage = sqlite3(sandbox.databasePath, "SELECT * FROM storage_registry")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM sqlite_master WHERE name = 'vm_snapshots'"), "0\n")
        let result = sandbox.maqet(["ls"])
        result.assertExit(0)
        XCTAssertTrue(result.stderr.contains("from version 6 to 7"), result.stderr)
        XCTAssertEqual(vmRows(sandbox.databasePath, columns: pythonColumns(version: 6)), before)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT * FROM storage_registry"), storage)
        XCTAssertEqual(sandbox.schemaVersion(), "7")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT group_concat(version || ':' || coalesce(source, ''), ',') FROM schema_history")
            .trimmingCharacters(in: .whitespacesAndNewlines),
            "1:python-maqet,2:python-maqet,3:python-maqet,4:python-maqet,5:python-maqet,6:python-maqet,7:maqet 0.1.0")
        let columns = sqlite3(sandbox.databasePath, "SELECT group_concat(name, ',') FROM pragma_table_info('vm_snapshots')")
        XCTAssertEqual(columns, "id,vm_id,name,live,disks,vm_state_size,created_at\n")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list('vm_snapshots')"),
                       "vm_instances|vm_id|id|CASCADE\n")
        sandbox.maqet(["db", "check"]).assertExit(0)
        // Running the migration again on a database that already has the table changes nothing.
        let sha = fileSHA(sandbox.databasePath)
        sandbox.maqet(["ls"]).assertExit(0)
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha)
    }

    func testMigration0007IsGuardedAgainstAnExistingTable() {
        // A database at version 6 that already has vm_snapshots (a hand-made table, say) keeps it.
        let sandbox = Sandbox()
        sandbox.maqet(["ls"]).assertExit(0)
        _ = sqlite3(sandbox.databasePath, """
            DROP TABLE vm_snapshots;
            CREATE TABLE vm_snapshots (id INTEGER PRIMARY KEY, vm_id TEXT, name TEXT, note TEXT);
            UPDATE schema_version SET value = 6; DELETE FROM schema_history WHERE version = 7;
            """)
        let dumpBefore = sqlite3(sandbox.databasePath, "SELECT sql FROM sqlite_master WHERE name = 'vm_snapshots'")
        let result = sandbox.maqet(["ls"])
        result.assertExit(0)
        XCTAssertTrue(result.stderr.contains("from version 6 to 7"), result.stderr)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT sql FROM sqlite_master WHERE name = 'vm_snapshots'"), dumpBefore)
        XCTAssertEqual(sandbox.schemaVersion(), "7")
    }

    func testFailingMigrationRollsBackAndNamesFileLineAndRestoreCommand() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let migrations = sandbox.migrationsCopy()
        // Line 6 raises after 0002/0003 ran and 0004 itself changed schema and data.
        try! """
            return {
                description = "Remove auth_secret column (edited to fail)",
                up = function(db)
                    db:exec("ALTER TABLE vm_instances DROP COLUMN auth_secret")
                    db:exec("UPDATE vm_instances SET status = 'half-migrated'")
                    error("disk on fire")
                end,
            }

            """.write(toFile: migrations + "/0004_remove_auth_secret.lua", atomically: true, encoding: .utf8)
        let dumpBefore = dump(sandbox.databasePath)
        let shaBefore = fileSHA(sandbox.databasePath)

        let result = sandbox.maqet(["--migrations-dir", migrations, "ls"])
        result.assertExit(4)
        XCTAssertEqual(result.stdout, "")
        XCTAssertTrue(result.stderr.contains("0004_remove_auth_secret.lua:6: disk on fire"), result.stderr)
        XCTAssertEqual(sandbox.automaticBackups.count, 1, "a backup is left behind")
        let backup = (sandbox.dataDir as NSString).appendingPathComponent(sandbox.automaticBackups.first ?? "?")
        XCTAssertTrue(result.stderr.contains("maqet db restore \(backup)"), result.stderr)
        XCTAssertTrue(result.stderr.contains("cp"), result.stderr)
        XCTAssertEqual(dump(sandbox.databasePath), dumpBefore)
        XCTAssertEqual(fileSHA(sandbox.databasePath), shaBefore)
        XCTAssertEqual(vmRows(backup), vmRows(sandbox.databasePath))
    }

    func testTransactionControlInsideAMigrationIsRefused() {
        let cases: [(String, String)] = [
            ("BEGIN", #"up = function(db) db:exec("BEGIN") end"#),
            ("COMMIT", #"up = function(db) db:exec("COMMIT") end"#),
            ("ATTACH", #"up = function(db) db:exec("ATTACH DATABASE ':memory:' AS other") end"#),
            ("VACUUM", #"up = function(db) db:exec("VACUUM") end"#),
            ("ROLLBACK", #"up = "CREATE TABLE scratch(x); ROLLBACK""#),
        ]
        for (keyword, body) in cases {
            let sandbox = Sandbox()
            sandbox.installFixture("python-maqet-v1.db")
            let migrations = sandbox.migrationsCopy()
            try! "return {\n    description = \"refused \(keyword)\",\n    \(body),\n}\n"
                .write(toFile: migrations + "/0003_add_auth_secret.lua", atomically: true, encoding: .utf8)
            let dumpBefore = dump(sandbox.databasePath)
            let result = sandbox.maqet(["--migrations-dir", migrations, "ls"])
            result.assertExit(4)
            XCTAssertTrue(result.stderr.contains("\(keyword) is not allowed in a migration"), "\(keyword): \(result.stderr)")
            XCTAssertTrue(result.stderr.contains("0003_add_auth_secret.lua"), result.stderr)
            XCTAssertEqual(dump(sandbox.databasePath), dumpBefore, keyword)
        }
    }

    func testSavepointsInsideAMigrationAreAllowed() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let migrations = sandbox.migrationsCopy()
        try! """
            return {
                description = "Add auth_secret column",
                up = function(db)
                    db:transaction(function(tx) tx:exec("ALTER TABLE vm_instances ADD COLUMN auth_secret TEXT") end)
                    db:exec("SAVEPOINT s1; CREATE TABLE scratch(x); ROLLBACK TO s1; RELEASE s1")
                end,
            }

            """.write(toFile: migrations + "/0003_add_auth_secret.lua", atomically: true, encoding: .utf8)
        sandbox.maqet(["--migrations-dir", migrations, "ls"]).assertExit(0)
        XCTAssertEqual(sandbox.schemaVersion(), "7")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM sqlite_master WHERE name = 'scratch'").trimmingCharacters(in: .whitespacesAndNewlines), "0")
    }

    func testEightConcurrentProcessesMigrateOnce() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let before = vmRows(sandbox.databasePath)
        var results = [CLIResult?](repeating: nil, count: 8)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            let result = sandbox.maqet(["ls", "--format", "plain"])
            lock.lock()
            results[i] = result
            lock.unlock()
        }
        for result in results { result!.assertExit(0) }
        for result in results { XCTAssertEqual(result!.stdout.split(separator: "\n").count, 4, result!.stdout) }
        XCTAssertEqual(sandbox.automaticBackups.count, 1, sandbox.automaticBackups.joined(separator: ", "))
        XCTAssertEqual(results.filter { $0!.stderr.contains("migrated instances.db") }.count, 1)
        XCTAssertEqual(sandbox.schemaVersion(), "7")
        XCTAssertEqual(vmRows(sandbox.databasePath), before)
    }

    func testRerunIsANoOp() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        sandbox.maqet(["ls"]).assertExit(0)
        let sha = fileSHA(sandbox.databasePath)
        let again = sandbox.maqet(["ls"])
        again.assertExit(0)
        XCTAssertEqual(again.stderr, "")
        XCTAssertEqual(sandbox.automaticBackups.count, 1)
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha)
        let migrate = sandbox.maqet(["db", "migrate"])
        migrate.assertExit(0)
        XCTAssertTrue(migrate.stdout.contains("nothing to do"), migrate.stdout)
        XCTAssertEqual(sandbox.automaticBackups.count, 1)
    }

    func testNewDatabaseIsCreatedSilentlyInWALModeWithoutBackup() {
        let sandbox = Sandbox()
        let result = sandbox.maqet(["ls"])
        result.assertExit(0)
        XCTAssertEqual(result.stderr, "")
        XCTAssertEqual(sandbox.schemaVersion(), "7")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "PRAGMA journal_mode").trimmingCharacters(in: .whitespacesAndNewlines), "wal")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM schema_history").trimmingCharacters(in: .whitespacesAndNewlines), "7")
        XCTAssertTrue(sandbox.automaticBackups.isEmpty)
    }

    func testFreshSchemaFingerprintEqualsMigratedFixture() throws {
        let fresh = Sandbox()
        fresh.maqet(["ls"]).assertExit(0)
        let migrated = Sandbox()
        migrated.installFixture("python-maqet-v1.db")
        migrated.maqet(["ls"]).assertExit(0)
        let a = try SchemaFingerprint.of(Database(path: fresh.databasePath, mode: .readOnly))
        let b = try SchemaFingerprint.of(Database(path: migrated.databasePath, mode: .readOnly))
        XCTAssertFalse(a.lines.isEmpty)
        XCTAssertTrue(a.lines.contains("index idx_vm_runner_pid on vm_instances(runner_pid)"), a.text)
        XCTAssertTrue(a.lines.contains("table vm_snapshots"), a.text)
        XCTAssertTrue(a.lines.contains("foreign-key vm_snapshots.vm_id -> vm_instances.id on update NO ACTION on delete CASCADE match NONE"), a.text)
        XCTAssertEqual(a, b, "fresh:\n\(a.text)\nmigrated:\n\(b.text)")
        // And the fingerprint notices a difference.
        _ = sqlite3(migrated.databasePath, "DROP INDEX idx_vm_pid")
        let c = try SchemaFingerprint.of(Database(path: migrated.databasePath, mode: .readOnly))
        XCTAssertNotEqual(a, c)
    }

    func testMalformedMigrationSetsAreRefusedNamingTheFile() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let sha = fileSHA(sandbox.databasePath)

        let gap = sandbox.migrationsCopy("gap")
        try! FileManager.default.removeItem(atPath: gap + "/0003_add_auth_secret.lua")
        var result = sandbox.maqet(["--migrations-dir", gap, "ls"])
        result.assertExit(1)
        XCTAssertTrue(result.stderr.contains("0003") && result.stderr.contains("0004_remove_auth_secret.lua"), result.stderr)

        let duplicate = sandbox.migrationsCopy("dup")
        try! FileManager.default.copyItem(atPath: duplicate + "/0002_add_runner_pid.lua", toPath: duplicate + "/0002_again.lua")
        result = sandbox.maqet(["--migrations-dir", duplicate, "ls"])
        result.assertExit(1)
        XCTAssertTrue(result.stderr.contains("0002_again.lua") && result.stderr.contains("0002_add_runner_pid.lua"), result.stderr)

        let badName = sandbox.migrationsCopy("badname")
        try! "return {}".write(toFile: badName + "/7_oops.lua", atomically: true, encoding: .utf8)
        result = sandbox.maqet(["--migrations-dir", badName, "ls"])
        result.assertExit(1)
        XCTAssertTrue(result.stderr.contains("7_oops.lua"), result.stderr)

        let notTable = sandbox.migrationsCopy("nottable")
        try! "return 42\n".write(toFile: notTable + "/0005_add_qmp_socket_path.lua", atomically: true, encoding: .utf8)
        result = sandbox.maqet(["--migrations-dir", notTable, "ls"])
        result.assertExit(4)
        XCTAssertTrue(result.stderr.contains("0005_add_qmp_socket_path.lua must return a table"), result.stderr)

        let syntax = sandbox.migrationsCopy("syntax")
        try! "return {\n  description = 'x'\n  up = 1 }\n".write(toFile: syntax + "/0005_add_qmp_socket_path.lua", atomically: true, encoding: .utf8)
        result = sandbox.maqet(["--migrations-dir", syntax, "ls"])
        result.assertExit(4)
        XCTAssertTrue(result.stderr.contains("0005_add_qmp_socket_path.lua:3:"), result.stderr)

        XCTAssertEqual(fileSHA(sandbox.databasePath), sha)
        XCTAssertTrue(sandbox.automaticBackups.isEmpty, "nothing is backed up before the scripts load")
    }

    func testSQLStringMigrationAndEnvironmentMigrationsDir() {
        let sandbox = Sandbox()
        let migrations = sandbox.migrationsCopy()
        try! "return { description = \"Add a notes table\", up = \"CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); CREATE INDEX idx_notes_body ON notes(body)\" }\n"
            .write(toFile: migrations + "/0008_add_notes.lua", atomically: true, encoding: .utf8)
        sandbox.extraEnvironment["MAQET_MIGRATIONS_DIR"] = migrations
        sandbox.maqet(["ls"]).assertExit(0)
        XCTAssertEqual(sandbox.schemaVersion(), "8")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT source FROM schema_history WHERE version = 8").trimmingCharacters(in: .whitespacesAndNewlines), URL(fileURLWithPath: migrations).standardizedFileURL.path)
        // The built-in set (latest 7) now refuses the newer database.
        sandbox.extraEnvironment["MAQET_MIGRATIONS_DIR"] = nil
        let refused = sandbox.maqet(["ls"])
        refused.assertExit(3)
        XCTAssertTrue(refused.stderr.contains("version 8") && refused.stderr.contains("latest 7"), refused.stderr)
    }

    func testNotEnoughFreeSpaceRefusesBeforeBackingUp() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let sha = fileSHA(sandbox.databasePath)
        // Testing hook: pretend the file system has 1000 bytes free.
        sandbox.extraEnvironment["MAQET_TEST_FREE_BYTES"] = "1000"
        let result = sandbox.maqet(["ls"])
        result.assertExit(1)
        XCTAssertTrue(result.stderr.contains("not enough free space"), result.stderr)
        XCTAssertEqual(fileSHA(sandbox.databasePath), sha)
        XCTAssertTrue(sandbox.automaticBackups.isEmpty)
        sandbox.extraEnvironment["MAQET_TEST_FREE_BYTES"] = nil
        sandbox.maqet(["ls"]).assertExit(0)
    }

    func testForeignKeyViolationFailsTheRunBeforeCommit() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let migrations = sandbox.migrationsCopy()
        try! "return { description = \"Orphan storage row\", up = \"INSERT INTO storage_registry (vm_name, storage_path, storage_type) VALUES ('ghost', '/x.img', 'raw')\" }\n"
            .write(toFile: migrations + "/0008_orphan.lua", atomically: true, encoding: .utf8)
        let dumpBefore = dump(sandbox.databasePath)
        let result = sandbox.maqet(["--migrations-dir", migrations, "ls"])
        result.assertExit(4)
        XCTAssertTrue(result.stderr.contains("foreign key") && result.stderr.contains("storage_registry"), result.stderr)
        XCTAssertTrue(result.stderr.contains("maqet db restore "), result.stderr)
        XCTAssertEqual(dump(sandbox.databasePath), dumpBefore)
        XCTAssertEqual(sandbox.automaticBackups.count, 1)
    }

    func testQuietSuppressesTheNoticeAndVerboseShowsTheTraceback() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let migrations = sandbox.migrationsCopy()
        try! "return { description = \"x\", up = function(db) local function inner() error('deep') end inner() end }\n"
            .write(toFile: migrations + "/0003_add_auth_secret.lua", atomically: true, encoding: .utf8)
        let verbose = sandbox.maqet(["-v", "--migrations-dir", migrations, "ls"])
        verbose.assertExit(4)
        XCTAssertTrue(verbose.stderr.contains("stack traceback"), verbose.stderr)
        let plain = sandbox.maqet(["--migrations-dir", migrations, "ls"])
        plain.assertExit(4)
        XCTAssertFalse(plain.stderr.contains("stack traceback"), plain.stderr)
        XCTAssertTrue(plain.stderr.contains("0003_add_auth_secret.lua:1: deep"), plain.stderr)
        let quiet = sandbox.maqet(["-q", "ls"])
        quiet.assertExit(0)
        XCTAssertEqual(quiet.stderr, "")
        XCTAssertEqual(sandbox.schemaVersion(), "7")
    }
}
