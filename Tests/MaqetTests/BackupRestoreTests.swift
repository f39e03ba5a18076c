import Foundation
import XCTest

final class BackupRestoreTests: XCTestCase {
    func testKeepsFiveAutomaticBackupsAndNeverDeletesManualOnes() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let fake = ["instances.db.backup-20200101-000000", "instances.db.backup-20200102-000000", "instances.db.backup-20200103-000000",
                    "instances.db.backup-20200104-000000", "instances.db.backup-20200104-000000-2", "instances.db.backup-20200105-000000"]
        let manual = ["instances.db.manual-20190101-000000", "instances.db.manual-20200101-000000"]
        for name in fake + manual {
            FileManager.default.createFile(atPath: (sandbox.dataDir as NSString).appendingPathComponent(name), contents: Data("x".utf8))
        }
        sandbox.maqet(["ls"]).assertExit(0)
        let automatic = sandbox.automaticBackups
        XCTAssertEqual(automatic.count, 5, automatic.joined(separator: "\n"))
        XCTAssertFalse(automatic.contains("instances.db.backup-20200101-000000"))
        XCTAssertFalse(automatic.contains("instances.db.backup-20200102-000000"))
        XCTAssertTrue(automatic.contains("instances.db.backup-20200104-000000-2"))
        XCTAssertEqual(sandbox.manualBackups, manual)
    }

    func testKeepBackupsEnvironment() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        for name in ["instances.db.backup-20200101-000000", "instances.db.backup-20200102-000000"] {
            FileManager.default.createFile(atPath: (sandbox.dataDir as NSString).appendingPathComponent(name), contents: Data("x".utf8))
        }
        sandbox.extraEnvironment["MAQET_KEEP_BACKUPS"] = "1"
        sandbox.maqet(["ls"]).assertExit(0)
        XCTAssertEqual(sandbox.automaticBackups.count, 1)
        XCTAssertFalse(sandbox.automaticBackups[0].hasPrefix("instances.db.backup-2020"))
    }

    func testManualBackupIsVerifiedListedAndRestorable() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        sandbox.maqet(["ls"]).assertExit(0)
        let backup = sandbox.maqet(["db", "backup"])
        backup.assertExit(0)
        let path = backup.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(path.hasPrefix(sandbox.dataDir + "/instances.db.manual-"), path)
        XCTAssertEqual(sqlite3(path, "PRAGMA integrity_check").trimmingCharacters(in: .whitespacesAndNewlines), "ok")
        XCTAssertEqual(vmRows(path), vmRows(sandbox.databasePath))

        let explicit = sandbox.root.file("elsewhere.db")
        sandbox.maqet(["db", "backup", explicit]).assertExit(0)
        XCTAssertEqual(vmRows(explicit), vmRows(sandbox.databasePath))
        // Never overwrites.
        sandbox.maqet(["db", "backup", explicit]).assertExit(1)

        let list = sandbox.maqet(["db", "backups", "--format", "json"])
        list.assertExit(0)
        let items = try! JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as! [[String: Any]]
        XCTAssertEqual(items.count, 2)
        let kinds = Set(items.map { $0["kind"] as! String })
        XCTAssertEqual(kinds, ["manual", "automatic"])
        for item in items {
            XCTAssertEqual(item["schema_version"] as? Int, (item["kind"] as! String) == "manual" ? 7 : 1)
            XCTAssertGreaterThan(item["size"] as! Int, 0)
        }
        let text = sandbox.maqet(["db", "backups"])
        text.assertExit(0)
        XCTAssertTrue(text.stdout.contains("manual") && text.stdout.contains("automatic"), text.stdout)
    }

    func testRestoreRoundTrip() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let original = vmRows(sandbox.databasePath)
        sandbox.maqet(["ls"]).assertExit(0)
        let automatic = sandbox.automaticBackups[0]
        _ = sqlite3(sandbox.databasePath, "DELETE FROM vm_instances WHERE name = 'alpha'")
        let afterDelete = vmRows(sandbox.databasePath)
        XCTAssertNotEqual(afterDelete, original)

        let restore = sandbox.maqet(["db", "restore", automatic])
        restore.assertExit(0)
        XCTAssertTrue(restore.stdout.contains("schema version 1"), restore.stdout)
        XCTAssertEqual(vmRows(sandbox.databasePath), original)
        // The database as it was before the restore was backed up too.
        XCTAssertEqual(sandbox.automaticBackups.count, 2)
        let previous = (sandbox.dataDir as NSString).appendingPathComponent(sandbox.automaticBackups.last!)
        XCTAssertEqual(vmRows(previous), afterDelete)
        // The older backup is migrated again by the next command.
        let ls = sandbox.maqet(["ls", "--format", "plain"])
        ls.assertExit(0)
        XCTAssertEqual(ls.stdout.split(separator: "\n").count, 4)
        XCTAssertEqual(sandbox.schemaVersion(), "7")
        XCTAssertEqual(vmRows(sandbox.databasePath), original)
    }

    func testRestoreRefusesWhileAVMRunsUnlessForced() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        sandbox.maqet(["ls"]).assertExit(0)
        let backup = sandbox.maqet(["db", "backup"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'running', pid = 1234 WHERE name = 'bravo'")
        let dumpBefore = dump(sandbox.databasePath)
        let refused = sandbox.maqet(["db", "restore", backup])
        refused.assertExit(1)
        XCTAssertTrue(refused.stderr.contains("running") && refused.stderr.contains("bravo") && refused.stderr.contains("--force"), refused.stderr)
        XCTAssertEqual(dump(sandbox.databasePath), dumpBefore)
        sandbox.maqet(["db", "restore", "--force", backup]).assertExit(0)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT status FROM vm_instances WHERE name = 'bravo'").trimmingCharacters(in: .whitespacesAndNewlines), "stopped")
    }

    func testRestoreRefusesMissingAndBrokenBackups() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        sandbox.maqet(["ls"]).assertExit(0)
        sandbox.maqet(["db", "restore", "no-such-backup"]).assertExit(5)
        let junk = sandbox.write("junk.db", String(repeating: "junk", count: 2000))
        let dumpBefore = dump(sandbox.databasePath)
        sandbox.maqet(["db", "restore", junk]).assertExit(3)
        XCTAssertEqual(dump(sandbox.databasePath), dumpBefore)
    }

    func testRestoreIsTheWayOutOfANewerDatabase() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        sandbox.maqet(["ls"]).assertExit(0)
        let backup = (sandbox.dataDir as NSString).appendingPathComponent(sandbox.automaticBackups[0])
        _ = sqlite3(sandbox.databasePath, "UPDATE schema_version SET value = 99")
        sandbox.maqet(["ls"]).assertExit(3)
        sandbox.maqet(["db", "restore", backup]).assertExit(0)
        sandbox.maqet(["ls"]).assertExit(0)
        XCTAssertEqual(sandbox.schemaVersion(), "7")
    }

    func testRestoreReplacesADamagedDatabaseKeepingItAside() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let original = vmRows(sandbox.databasePath)
        sandbox.maqet(["ls"]).assertExit(0)
        let backup = sandbox.maqet(["db", "backup"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let garbage = String(repeating: "garbage ", count: 1000)
        try! garbage.write(toFile: sandbox.databasePath, atomically: true, encoding: .utf8)
        sandbox.maqet(["ls"]).assertExit(3)

        let restore = sandbox.maqet(["db", "restore", backup])
        restore.assertExit(0)
        let moved = sandbox.dataFiles("instances.db.damaged-")
        XCTAssertEqual(moved.count, 1, restore.stdout)
        XCTAssertEqual(try? String(contentsOfFile: (sandbox.dataDir as NSString).appendingPathComponent(moved[0]), encoding: .utf8), garbage)
        XCTAssertTrue(restore.stdout.contains(moved[0]), restore.stdout)
        sandbox.maqet(["ls"]).assertExit(0)
        XCTAssertEqual(vmRows(sandbox.databasePath), original)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "PRAGMA journal_mode").trimmingCharacters(in: .whitespacesAndNewlines), "wal")
    }
}
