import Foundation
import MaqetCore
import XCTest

/// `maqet storage verify|orphaned|attach` against real images (made and checked with qemu-img)
/// and the real rm --delete-storage; the VM that creates its own disk runs on a q35 held at -S.
final class StorageCommandTests: SandboxTestCase {
    override class var stopsLeftoversFirst: Bool { true }

    @discardableResult
    func run(_ program: String, _ arguments: [String]) -> CLIResult {
        runProcess(program, arguments, environment: ProcessInfo.processInfo.environment)
    }

    func image(_ path: String, format: String = "qcow2") {
        try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        run("/usr/bin/qemu-img", ["create", "-q", "-f", format, path, "4M"]).assertExit(0)
    }

    func addVM(_ sandbox: Sandbox, _ name: String, storage: [String]) {
        let config = sandbox.write("\(name).yaml", """
            name: \(name)
            memory: 64M
            cpu: 1
            display: none
            vga: none
            arguments:
              - machine: q35
              - accel: tcg
              - S
            storage:
            \(storage.map { "  - " + $0 }.joined(separator: "\n"))

            """)
        sandbox.maqet(["add", config]).assertExit(0)
    }

    func exists(_ path: String) -> Bool { FileManager.default.fileExists(atPath: path) }

    func testAttachedImageIsBootedFromAndNeverDeletedByRm() throws {
        let sandbox = makeSandbox()
        let made = sandbox.root.file("made.qcow2")
        addVM(sandbox, "web", storage: ["{name: sys, type: qcow2, file: \(made), size: 4M}"])
        // The first start creates (and records) the VM's own disk.
        sandbox.maqet(["start", "web"]).assertExit(0)
        // A running VM's config is not changed.
        image(sandbox.root.file("work/brought.qcow2"))
        let running = sandbox.maqet(["storage", "attach", "web", "brought.qcow2"], cwd: sandbox.root.file("work"))
        running.assertExit(3)
        sandbox.maqet(["stop", "web", "--force"]).assertExit(0)

        // A relative PATH is the caller's; the entry is in the config, so the VM boots from it.
        let attached = sandbox.maqet(["storage", "attach", "web", "brought.qcow2", "--format", "json"], cwd: sandbox.root.file("work"))
        attached.assertExit(0)
        let brought = sandbox.root.file("work/brought.qcow2")
        let result = try JSONValue.parse(attached.stdout)
        XCTAssertEqual(result["drive"], .string("brought"))
        XCTAssertEqual(result["file"], .string(brought))
        XCTAssertEqual(result["format"], .string("qcow2"))
        assertContains(sandbox.maqet(["show-cmd", "web"]).stdout, "-drive file=\(brought),if=virtio,format=qcow2")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT storage_path, storage_type FROM storage_registry ORDER BY id"),
                       "\(made)|qcow2\n\(brought)|attached\n")
        // Twice is refused; so is the published form's third argument (a config file).
        sandbox.maqet(["storage", "attach", "web", brought, "--drive", "other"]).assertExit(1)
        let published = sandbox.maqet(["storage", "attach", "web", brought, "web.yaml"])
        published.assertExit(64)
        assertContains(published.stderr, "maqet add web.yaml --name web")
        // Not an image: a usage error, nothing changed.
        let text = sandbox.write("notes.txt", "hello")
        sandbox.maqet(["storage", "attach", "web", text]).assertExit(64)

        let verify = try JSONValue.parse(sandbox.maqet(["storage", "verify", "web", "--format", "json"]).stdout)
        XCTAssertEqual(verify["ok"], .bool(true))

        // rm --delete-storage deletes the image maqet made, never the attached one.
        let removed = sandbox.maqet(["rm", "web", "--delete-storage"])
        removed.assertExit(0)
        XCTAssertFalse(exists(made), removed.stdout)
        XCTAssertTrue(exists(brought), removed.stdout)
        XCTAssertFalse(removed.stdout.contains(brought), removed.stdout)
    }

    func testVerifyNamesEachProblemAndExits1() throws {
        let sandbox = makeSandbox()
        let good = sandbox.root.file("good.qcow2"), raw = sandbox.root.file("really-raw.qcow2")
        image(good)
        image(raw, format: "raw")
        addVM(sandbox, "v", storage: [
            "{name: good, type: qcow2, file: \(good)}",
            "{name: liar, type: qcow2, file: \(raw)}",
            "{name: later, type: qcow2, file: \(sandbox.root.file("later.qcow2")), size: 4M}",
        ])
        let result = sandbox.maqet(["storage", "verify", "v", "--format", "json"])
        result.assertExit(1)
        let report = try JSONValue.parse(result.stdout)
        XCTAssertEqual(report["ok"], .bool(false))
        guard case .array(let disks)? = report["disks"] else { return XCTFail(result.stdout) }
        let states = disks.map { disk -> String in
            guard case .string(let name)? = disk["name"], case .string(let state)? = disk["state"] else { return "?" }
            return name + "=" + state
        }
        XCTAssertEqual(states, ["good=ok", "liar=wrong_format", "later=not_created"])
        XCTAssertEqual(disks[0]["check"]?["ok"], .bool(true))
        XCTAssertEqual(disks[1]["format"], .string("raw"))

        // Once the lying entry's image really is qcow2, everything is ok.
        try FileManager.default.removeItem(atPath: raw)
        image(raw)
        sandbox.maqet(["storage", "verify", "v"]).assertExit(0)
        sandbox.maqet(["storage", "verify", "nosuchvm"]).assertExit(5)
    }

    func testOrphanedListsOnlyImagesNoVMUsesUnderTheDataDir() throws {
        let sandbox = makeSandbox()
        sandbox.maqet(["ls"]).assertExit(0)
        let data = sandbox.dataDir
        let used = data + "/disks/used.qcow2", recorded = data + "/images/recorded.img"
        let orphan1 = data + "/disks/old.img", orphan2 = data + "/snapshots/deep/x.qcow2"
        for path in [used, recorded, orphan1, orphan2] { image(path) }
        sandbox.write("data/disks/readme.txt", "not an image")
        addVM(sandbox, "u", storage: ["{name: d, type: qcow2, file: \(used)}"])
        sandbox.runScript("""
            assert(maqet.db:exec("INSERT INTO storage_registry (vm_name, storage_path, storage_type) VALUES ('u', ?, 'disk')", ...))
            """, name: "reg.lua", args: [recorded]).assertExit(0)

        let result = sandbox.maqet(["storage", "orphaned", "--format", "json"])
        result.assertExit(0)
        let report = try JSONValue.parse(result.stdout)
        guard case .array(let images)? = report["images"] else { return XCTFail(result.stdout) }
        XCTAssertEqual(images.map { $0["path"] }, [.string(orphan1), .string(orphan2)])
        let sizes = try [orphan1, orphan2].map { Int64(try FileManager.default.attributesOfItem(atPath: $0)[.size] as! Int) }
        XCTAssertEqual(images.map { $0["size_bytes"] }, sizes.map { .integer($0) })
        XCTAssertEqual(report["total_bytes"], .integer(sizes.reduce(0, +)))
        // Nothing was deleted.
        XCTAssertTrue(exists(orphan1) && exists(orphan2))
    }
}
