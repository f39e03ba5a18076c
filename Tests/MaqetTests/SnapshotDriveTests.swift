import Foundation
import MaqetCore
import XCTest

/// The published maqet's snapshot form, `maqet snapshot NAME create|load|list DRIVE --name SNAP
/// [--live] [--overwrite]`, on real qcow2 images (checked with qemu-img and qemu-io, not maqet)
/// and a real QEMU (q35 held at -S) for --live.
final class SnapshotDriveTests: SandboxTestCase {
    override class var stopsLeftoversFirst: Bool { true }

    func run(_ program: String, _ arguments: [String]) -> CLIResult {
        runProcess(program, arguments, environment: ProcessInfo.processInfo.environment)
    }

    /// The snapshot tags in `file`, from `qemu-img snapshot -l -U`.
    func tags(_ file: String) -> [String] {
        let result = run("/usr/bin/qemu-img", ["snapshot", "-l", "-U", file])
        XCTAssertEqual(result.code, 0, result.stderr)
        return result.stdout.split(separator: "\n").dropFirst(2).compactMap { line in
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            return words.count > 1 ? String(words[1]) : nil
        }
    }

    /// VM `web` with qcow2 drives `a` and `b` (images created) and a raw drive `r`.
    func addVM(_ sandbox: Sandbox) -> (a: String, b: String) {
        let a = sandbox.root.file("a.qcow2"), b = sandbox.root.file("b.qcow2"), r = sandbox.root.file("r.img")
        for (path, format) in [(a, "qcow2"), (b, "qcow2"), (r, "raw")] {
            run("/usr/bin/qemu-img", ["create", "-q", "-f", format, path, "4M"]).assertExit(0)
        }
        let config = sandbox.write("web.yaml", """
            name: web
            memory: 64M
            cpu: 1
            display: none
            vga: none
            arguments:
              - machine: q35
              - accel: tcg
              - S
            storage:
              - {name: a, type: qcow2, file: \(a), size: 4M}
              - {name: b, type: qcow2, file: \(b), size: 4M}
              - {name: r, type: raw, file: \(r), size: 4M, readonly: true}
            """)
        sandbox.maqet(["add", config]).assertExit(0)
        return (a, b)
    }

    func testOneDriveOfflineCreateOverwriteLoadAndList() throws {
        let sandbox = makeSandbox()
        let (a, b) = addVM(sandbox)

        let created = sandbox.maqet(["snapshot", "web", "create", "a", "--name", "s1"])
        created.assertExit(0)
        XCTAssertEqual(created.stdout, "web: created snapshot s1 (drive a only)\n")
        XCTAssertEqual(tags(a), ["s1"])
        XCTAssertEqual(tags(b), [])

        // An existing name needs --overwrite (which replaces it: still one s1 on the drive).
        let again = sandbox.maqet(["snapshot", "web", "create", "a", "--name", "s1"])
        again.assertExit(1)
        XCTAssertEqual(again.stderr, "maqet: drive 'a' of VM 'web' already has a snapshot named 's1' (add --overwrite to replace it)\n")
        let replaced = sandbox.maqet(["snapshot", "web", "create", "a", "--name", "s1", "--overwrite"])
        replaced.assertExit(0)
        XCTAssertEqual(replaced.stdout, "web: created snapshot s1 (drive a only, replacing the old one)\n")
        XCTAssertEqual(tags(a), ["s1"])

        // The positional snapshot name (the README's form) on the other drive; one record, both disks.
        sandbox.maqet(["snapshot", "web", "create", "b", "s1"]).assertExit(0)
        XCTAssertEqual(tags(b), ["s1"])
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT name, disks FROM vm_snapshots"), "s1|[\"\(a)\",\"\(b)\"]\n")
        // A one-drive snapshot is complete on its one disk in maqet's own list.
        sandbox.maqet(["snapshot", "web", "create", "a", "--name", "only-a"]).assertExit(0)
        let list = try JSONValue.parse(sandbox.maqet(["snapshot", "list", "web", "--format", "json"]).stdout)
        guard case .array(let items)? = list["snapshots"] else { return XCTFail("no snapshots in the list") }
        let states = items.map { item -> String in
            guard case .string(let name)? = item["name"], case .string(let state)? = item["state"] else { return "?" }
            return name + "=" + state
        }
        XCTAssertEqual(states.sorted(), ["only-a=ok", "s1=ok"])
        let drive = sandbox.maqet(["snapshot", "web", "list", "a"])
        drive.assertExit(0)
        XCTAssertEqual(drive.stdout, "s1\nonly-a\n")

        // load rolls that drive back: data written after the snapshot is gone (read by qemu-io).
        run("/usr/bin/qemu-io", ["-c", "write -P 0x5a 0 4k", a]).assertExit(0)
        let loaded = sandbox.maqet(["snapshot", "web", "load", "a", "--name", "s1"])
        loaded.assertExit(0)
        XCTAssertEqual(loaded.stdout, "web: loaded snapshot s1 (drive a rolled back)\n")
        let read = run("/usr/bin/qemu-io", ["-c", "read -P 0 0 4k", a])
        read.assertExit(0)
        XCTAssertFalse(read.stdout.contains("Pattern verification failed"), read.stdout)
        // maqet's own load refuses a snapshot that is not on every disk.
        sandbox.maqet(["snapshot", "load", "web", "only-a"]).assertExit(5)
    }

    func testPublishedFormRefusalsUseMaqetsExitCodes() {
        let sandbox = makeSandbox()
        let (a, _) = addVM(sandbox)
        let drive = sandbox.maqet(["snapshot", "web", "create", "nodrive", "--name", "s"])
        drive.assertExit(5)
        XCTAssertEqual(drive.stderr, "maqet: VM 'web' has no drive named 'nodrive' (a drive is a storage entry's name; its drives: a, b, r)\n")
        let missing = sandbox.maqet(["snapshot", "web", "load", "a", "--name", "nope"])
        missing.assertExit(5)
        XCTAssertEqual(missing.stderr, "maqet: drive 'a' of VM 'web' has no snapshot named 'nope' (it has none)\n")
        sandbox.maqet(["snapshot", "web", "load", "a"]).assertExit(64)             // no snapshot named
        sandbox.maqet(["snapshot", "web", "remove", "a", "--name", "s"]).assertExit(64) // not an action
        sandbox.maqet(["snapshot", "web", "create", "r", "--name", "s"]).assertExit(3)  // raw drive
        let live = sandbox.maqet(["snapshot", "web", "create", "a", "--name", "s", "--live"])
        live.assertExit(3)                                                          // --live on a stopped VM
        sandbox.maqet(["snapshot", "nosuchvm", "create", "a", "--name", "s"]).assertExit(5)
        XCTAssertEqual(tags(a), [])
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM vm_snapshots"), "0\n")
    }

    func testRunningVMNeedsLiveWhichCoversEveryDisk() {
        let sandbox = makeSandbox()
        let (a, b) = addVM(sandbox)
        sandbox.maqet(["start", "web"]).assertExit(0)
        let offline = sandbox.maqet(["snapshot", "web", "create", "a", "--name", "s"])
        offline.assertExit(3)
        assertContains(offline.stderr, "--live saves the VM's state and all its disks")
        let live = sandbox.maqet(["snapshot", "web", "create", "a", "--name", "s", "--live"])
        live.assertExit(0)
        XCTAssertEqual(live.stdout, "web: created snapshot s (with the VM's state, all its disks)\n")
        XCTAssertEqual(tags(a), ["s"])
        XCTAssertEqual(tags(b), ["s"])
        // --overwrite with --live replaces it; list reads the drive of the running VM.
        sandbox.maqet(["snapshot", "web", "create", "a", "--name", "s", "--live", "--overwrite"]).assertExit(0)
        XCTAssertEqual(tags(a), ["s"])
        XCTAssertEqual(sandbox.maqet(["snapshot", "web", "list", "b"]).stdout, "s\n")
        sandbox.maqet(["snapshot", "web", "load", "a", "--name", "s", "--live"]).assertExit(0)
        sandbox.maqet(["stop", "web", "--force"]).assertExit(0)
    }
}
