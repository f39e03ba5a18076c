import Foundation
import XCTest

/// A VM named by its UUID or a unique UUID prefix in every command (scripts/lib/vm.lua
/// `vm.resolve`), and the ids `add`, `start` and `stop` print for scripts; against a real,
/// guestless QEMU (`-machine none`) and real qcow2 images.
final class NamingTests: SandboxTestCase {
    override class var stopsLeftoversFirst: Bool { true }

    func object(_ text: String, file: StaticString = #filePath, line: UInt = #line) -> [String: Any] {
        guard let value = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
            XCTFail("not a JSON object: \(text)", file: file, line: line)
            return [:]
        }
        return value
    }

    func testUUIDAndUniquePrefixNameAVMInEveryCommand() throws {
        let sandbox = makeSandbox()
        let plain = sandbox.write("one.yaml", "memory: 64M\narguments:\n  - machine: none\n")
        let added = sandbox.maqet(["add", plain, "--name", "one", "-q"])
        added.assertExit(0)
        let generated = added.stdout.trimmingCharacters(in: .newlines)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT id FROM vm_instances WHERE name = 'one'"), generated + "\n")
        XCTAssertEqual(added.stdout, generated + "\n", "--quiet prints the bare id")

        let disk = sandbox.root.file("two.qcow2")
        runProcess("/usr/bin/qemu-img", ["create", "-q", "-f", "qcow2", disk, "4M"], environment: ProcessInfo.processInfo.environment).assertExit(0)
        let withDisk = sandbox.write("two.yaml", """
            memory: 64M
            arguments:
              - machine: none
            storage:
              - {name: hdd, type: qcow2, file: \(disk)}
            """)
        let json = sandbox.maqet(["add", withDisk, "--name", "two", "--format", "json"])
        json.assertExit(0)
        let two = object(json.stdout)
        XCTAssertEqual(two["name"] as? String, "two")
        XCTAssertEqual((two["config"] as? [String: Any])?["memory"] as? String, "64M", "the config is an object")

        // Two ids that share the prefix "abcd".
        let one = "abcd1111-0000-4000-8000-000000000001", second = "abcd2222-0000-4000-8000-000000000002"
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET id = '\(one)' WHERE name = 'one'; UPDATE vm_instances SET id = '\(second)' WHERE name = 'two';")

        for ident in [one, "abcd1", "ABCD1111", "abcd1111-0000"] {
            let status = sandbox.maqet(["status", ident, "--format", "json"])
            status.assertExit(0)
            XCTAssertEqual(object(status.stdout)["name"] as? String, "one", ident)
        }
        let ambiguous = sandbox.maqet(["status", "abcd"])
        ambiguous.assertExit(64)
        XCTAssertEqual(ambiguous.stderr, "maqet: 'abcd' is the start of 2 VM ids: one (\(one)), two (\(second)); type more of the id, or the name\n")
        // Shorter than 4 characters is never a prefix; nor is a prefix of nobody's id.
        sandbox.maqet(["status", "abc"]).assertExit(5)
        XCTAssertEqual(sandbox.maqet(["status", "abcd9"]).stderr, "maqet: no VM named 'abcd9' (see 'maqet ls')\n")
        for command in [["show-cmd", "abcd"], ["start", "abcd"], ["stop", "abcd"], ["rm", "abcd"], ["qmp", "abcd", "query-status"],
                        ["snapshot", "list", "abcd"], ["wait", "abcd", "--for", "stopped"], ["console", "abcd", "--log"], ["events", "abcd"],
                        ["apply", "abcd", "--cpu", "2"]] {
            let result = sandbox.maqet(command)
            result.assertExit(64)
            XCTAssertTrue(result.stderr.contains("is the start of 2 VM ids"), "\(command): \(result.stderr)")
        }
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM vm_instances"), "2\n", "the refusals changed nothing")

        assertContains(sandbox.maqet(["show-cmd", "abcd1"]).stdout, "-name guest=one ")
        let started = sandbox.maqet(["start", "abcd1", "-q"])
        started.assertExit(0)
        XCTAssertEqual(started.stdout, one + "\n")
        sandbox.maqet(["wait", "abcd1", "--for", "running", "--timeout", "30"]).assertExit(0)
        sandbox.maqet(["console", "abcd1", "--log"]).assertExit(0)
        let qmp = sandbox.maqet(["qmp", "ABCD1", "query-status", "--compact"])
        qmp.assertExit(0)
        assertContains(qmp.stdout, "\"running\":true")
        let stopped = sandbox.maqet(["stop", "abcd1", "--timeout", "1", "--format", "json"])
        stopped.assertExit(0)
        let stop = object(stopped.stdout)
        XCTAssertEqual(stop["id"] as? String, one)
        XCTAssertEqual(stop["name"] as? String, "one")
        XCTAssertEqual(sandbox.maqet(["stop", "abcd1", "-q"]).stdout, one + "\n")

        let snapshots = sandbox.maqet(["snapshot", "list", "abcd2", "--format", "json"])
        snapshots.assertExit(0)
        let applied = sandbox.maqet(["apply", "abcd2", "--cpu", "2", "-q"])
        applied.assertExit(0)
        XCTAssertEqual(applied.stdout, second + "\n")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT name, json_extract(config_data, '$.cpu') FROM vm_instances ORDER BY name"), "one|\ntwo|2\n",
                       "apply by prefix changed VM two and created no VM 'abcd2'")

        // A VM whose name is also a prefix of other VMs' ids: the name wins.
        sandbox.maqet(["add", "--empty", "--name", "abcd"]).assertExit(0)
        let named = sandbox.maqet(["status", "abcd", "--format", "json"])
        named.assertExit(0)
        XCTAssertEqual(object(named.stdout)["name"] as? String, "abcd")

        let removed = sandbox.maqet(["rm", "abcd2"])
        removed.assertExit(0)
        XCTAssertEqual(removed.stdout, "removed two\n")
        XCTAssertTrue(FileManager.default.fileExists(atPath: disk), "an image maqet did not create is never deleted")
    }

    /// `rm --clean-storage` is `--delete-storage`; `--keep-snapshots` keeps the images that hold
    /// internal snapshots (read by qemu-img) and deletes the others.
    func testKeepSnapshotsKeepsTheImagesThatHoldSnapshots() throws {
        let sandbox = makeSandbox()
        let a = sandbox.root.file("a.qcow2"), b = sandbox.root.file("b.qcow2")
        let config = sandbox.write("d.yaml", """
            memory: 64M
            display: none
            vga: none
            arguments:
              - machine: q35
              - accel: tcg
              - S
            storage:
              - {name: a, type: qcow2, file: \(a), size: 4M}
              - {name: b, type: qcow2, file: \(b), size: 4M}
            """)
        sandbox.maqet(["add", config, "--name", "d"]).assertExit(0)
        sandbox.maqet(["start", "d"]).assertExit(0) // creates both images and records them
        sandbox.maqet(["stop", "d", "--force"]).assertExit(0)
        runProcess("/usr/bin/qemu-img", ["snapshot", "-c", "keepme", a], environment: ProcessInfo.processInfo.environment).assertExit(0)

        let removed = sandbox.maqet(["rm", "d", "--clean-storage", "--keep-snapshots"])
        removed.assertExit(0)
        XCTAssertEqual(removed.stdout, "removed d\ndeleted \(b)\nkept \(a) (it holds snapshots: --keep-snapshots)\n")
        XCTAssertTrue(FileManager.default.fileExists(atPath: a))
        XCTAssertFalse(FileManager.default.fileExists(atPath: b))
    }
}
