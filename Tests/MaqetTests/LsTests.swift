import Foundation
import XCTest

final class LsTests: XCTestCase {
    func testTableFormat() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let result = sandbox.maqet(["ls"])
        result.assertExit(0)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(lines, [
            "VM Name       Status    PID   Created",
            "-----------   -------   ---   -------------------",
            "alpha         stopped   -     2026-11-25 07:28:37",
            "bravo         stopped   -     2026-11-25 07:28:37",
            "charlie       created   -     2026-11-25 07:28:37",
            "delta-empty   created   -     2026-11-25 07:28:32",
            "",
        ])
    }

    func testPlainFormatAndStatusFilter() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        sandbox.maqet(["ls"]).assertExit(0)
        // A status that is not active (scripts/lib/status.lua) is not checked against processes
        // (active rows are reconciled first: see testAPausedRowWithADeadQEMUIsReconciled), so the
        // row is listed as stored.
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'crashed', pid = 4321 WHERE name = 'charlie'")
        let plain = sandbox.maqet(["ls", "--format", "plain"])
        plain.assertExit(0)
        XCTAssertEqual(plain.stdout, """
            alpha stopped - 2026-11-25 07:28:37
            bravo stopped - 2026-11-25 07:28:37
            charlie crashed 4321 2026-11-25 07:28:37
            delta-empty created - 2026-11-25 07:28:32

            """)
        let crashed = sandbox.maqet(["ls", "--status", "crashed", "--format", "plain"])
        crashed.assertExit(0)
        XCTAssertEqual(crashed.stdout, "charlie crashed 4321 2026-11-25 07:28:37\n")
        let stopped = sandbox.maqet(["ls", "--status", "stopped"])
        stopped.assertExit(0)
        XCTAssertEqual(stopped.stdout.split(separator: "\n").count, 4, stopped.stdout)
        XCTAssertTrue(stopped.stdout.contains("alpha") && !stopped.stdout.contains("charlie"))
        let none = sandbox.maqet(["ls", "--status", "paused"])
        none.assertExit(0)
        XCTAssertTrue(none.stdout.contains("No VMs with status 'paused'"), none.stdout)
    }

    /// A status that scripts/lib/status.lua does not define is a usage error naming the ones it
    /// does (a typo used to list nothing, exit 0, as if no VM had it), and nothing is opened.
    func testAnUnknownStatusFilterIsAUsageError() {
        let sandbox = Sandbox()
        let typo = sandbox.maqet(["ls", "--status", "runing"])
        typo.assertExit(64)
        XCTAssertEqual(typo.stderr, "maqet: --status 'runing' is not a VM status; use one of created, starting, running, paused, stopping, stopped, crashed\n")
        XCTAssertEqual(typo.stdout, "")
        XCTAssertFalse(FileManager.default.fileExists(atPath: sandbox.databasePath), "ls created the state database")
    }

    func testJSONFormatHasEveryColumnAndParsedConfig() throws {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let result = sandbox.maqet(["ls", "--format", "json"])
        result.assertExit(0)
        let items = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [[String: Any]])
        XCTAssertEqual(items.map { $0["name"] as? String }, ["alpha", "bravo", "charlie", "delta-empty"])
        let columns = sqlite3(sandbox.databasePath, "SELECT name FROM pragma_table_info('vm_instances')").split(separator: "\n").map(String.init)
        for item in items {
            XCTAssertEqual(Set(item.keys), Set(columns + ["config"]))
        }
        let bravo = items[1]
        let raw = sqlite3(sandbox.databasePath, "SELECT config_data FROM vm_instances WHERE name = 'bravo'").trimmingCharacters(in: .newlines)
        XCTAssertEqual(bravo["config_data"] as? String, raw, "config_data stays the stored string")
        let config = try XCTUnwrap(bravo["config"] as? [String: Any])
        XCTAssertEqual(config["memory"] as? String, "64M")
        XCTAssertEqual((config["storage"] as? [[String: Any]])?.first?["type"] as? String, "qcow2")
        XCTAssertTrue(bravo["pid"] is NSNull)
        XCTAssertTrue(items[3]["config_path"] is NSNull)

        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET pid = 99, config_data = 'not json \"quoted\"' WHERE name = 'alpha'")
        let again = sandbox.maqet(["ls", "--format", "json", "--status", "stopped"])
        let alpha = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(again.stdout.utf8)) as? [[String: Any]])?.first)
        XCTAssertEqual(alpha["pid"] as? Int, 99)
        XCTAssertEqual(alpha["config_data"] as? String, "not json \"quoted\"")
        XCTAssertTrue(alpha["config"] is NSNull)
    }

    func testEmptyListInEveryFormat() {
        let sandbox = Sandbox()
        let table = sandbox.maqet(["ls"])
        table.assertExit(0)
        XCTAssertEqual(table.stdout, "No VMs. Add one with 'maqet add CONFIG.yaml'.\n")
        let json = sandbox.maqet(["ls", "--format", "json"])
        json.assertExit(0)
        XCTAssertEqual(json.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "[]")
        let plain = sandbox.maqet(["ls", "--format", "plain"])
        plain.assertExit(0)
        XCTAssertEqual(plain.stdout, "")
        let yaml = sandbox.maqet(["ls", "--format", "yaml"])
        yaml.assertExit(0)
        XCTAssertEqual(yaml.stdout, "[]\n")
        sandbox.maqet(["ls", "--format", "xml"]).assertExit(64)
    }

    func testManyRowsAreListed() {
        let sandbox = Sandbox()
        sandbox.maqet(["ls"]).assertExit(0)
        _ = sqlite3(sandbox.databasePath, """
            WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 10000)
            INSERT INTO vm_instances (id, name, config_data, status) SELECT 'id' || i, printf('vm-%05d', i), '{}', 'stopped' FROM c
            """)
        let result = sandbox.maqet(["ls", "--format", "plain"])
        result.assertExit(0)
        let lines = result.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 10000)
        XCTAssertEqual(lines.last, "vm-10000 stopped - " + sqlite3(sandbox.databasePath, "SELECT created_at FROM vm_instances WHERE name = 'vm-10000'").trimmingCharacters(in: .newlines))
    }

    func testDataDirectoryResolution() throws {
        // Option before the subcommand (the Sandbox default) and after it.
        let sandbox = Sandbox()
        sandbox.maqet(["ls"]).assertExit(0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: sandbox.databasePath))
        let after = sandbox.root.file("after")
        sandbox.maqet(["ls", "--maqet-data-dir", after], useDataDirOption: false).assertExit(0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: after + "/instances.db"))
        let dbAfter = sandbox.root.file("db-after")
        sandbox.maqet(["db", "migrate", "--maqet-data-dir", dbAfter], useDataDirOption: false).assertExit(0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dbAfter + "/instances.db"))
        let dbBefore = sandbox.root.file("db-before")
        sandbox.maqet(["--maqet-data-dir", dbBefore, "db", "migrate"], useDataDirOption: false).assertExit(0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dbBefore + "/instances.db"))
        // A mistyped subcommand after the option is what the usage error names, not the option.
        let typo = sandbox.maqet(["--maqet-data-dir", dbBefore, "lss"], useDataDirOption: false)
        typo.assertExit(64)
        assertContains(typo.stderr, "'lss'")
        XCTAssertFalse(typo.stderr.contains("--maqet-data-dir"), typo.stderr)

        // $MAQET_DATA_DIR, and the option wins over it.
        let fromEnv = sandbox.root.file("from-env")
        sandbox.extraEnvironment["MAQET_DATA_DIR"] = fromEnv
        sandbox.maqet(["ls"], useDataDirOption: false).assertExit(0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: fromEnv + "/instances.db"))
        let status = sandbox.maqet(["db", "status", "--format", "json", "--maqet-data-dir", after], useDataDirOption: false)
        let report = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(report["data_dir"] as? String, after)

        // $XDG_DATA_HOME/maqet, created 0700.
        sandbox.extraEnvironment["MAQET_DATA_DIR"] = nil
        sandbox.maqet(["ls"], useDataDirOption: false).assertExit(0)
        let xdg = sandbox.home + "/xdg-data/maqet"
        XCTAssertTrue(FileManager.default.fileExists(atPath: xdg + "/instances.db"))
        let mode = try FileManager.default.attributesOfItem(atPath: xdg)[.posixPermissions] as? NSNumber
        XCTAssertEqual(mode?.intValue, 0o700)
        let optionMode = try FileManager.default.attributesOfItem(atPath: after)[.posixPermissions] as? NSNumber
        XCTAssertEqual(optionMode?.intValue, 0o700)

        // ~/.local/share/maqet without XDG_DATA_HOME.
        sandbox.extraEnvironment["XDG_DATA_HOME"] = ""
        sandbox.maqet(["ls"], useDataDirOption: false).assertExit(0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: sandbox.home + "/.local/share/maqet/instances.db"))
    }

    /// `paused` is an active status (scripts/lib/status.lua): ls checks such a row against the
    /// real process and records a dead one crashed, like a `running` row.
    func testAPausedRowWithADeadQEMUIsReconciled() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        sandbox.maqet(["ls"]).assertExit(0)
        // A pid that is certainly not a QEMU of this sandbox: a child that has exited.
        let child = runProcess("/bin/sh", ["-c", "echo $$"], environment: [:])
        let pid = child.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'paused', pid = \(pid) WHERE name = 'charlie'")
        let plain = sandbox.maqet(["ls", "--format", "plain", "--status", "crashed"])
        plain.assertExit(0)
        XCTAssertEqual(plain.stdout, "charlie crashed - 2026-11-25 07:28:37\n")
        let log = (try? String(contentsOfFile: sandbox.dataDir + "/logs/charlie.log", encoding: .utf8)) ?? ""
        XCTAssertTrue(log.contains("recorded crashed: QEMU (pid \(pid)) is gone"), log)
    }
}
