import Foundation
import XCTest

/// `maqet snapshot create|list|load|delete` and `maqet.vm.snapshot` against real qcow2 images
/// (checked independently with qemu-img and qemu-io) and a real, guestless QEMU (q35 held at -S
/// with virtio qcow2 disks) for the QMP job plumbing. Every test checks that it leaves no QEMU
/// or runner behind.
final class SnapshotTests: SandboxTestCase {
    override class var stopsLeftoversFirst: Bool { true }

    override func makeSandbox() -> Sandbox {
        let sandbox = super.makeSandbox()
        sandbox.maqet(["ls"]).assertExit(0)
        return sandbox
    }

    // MARK: - Helpers

    /// Adds VM `name` whose storage is `disks` (YAML list items) on a q35 held at -S (TCG).
    func addVM(_ sandbox: Sandbox, _ name: String, disks: String, arguments: [String] = []) {
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
            \(arguments.map { "  - " + $0 + "\n" }.joined())storage:
            \(disks)
            """)
        sandbox.maqet(["add", config]).assertExit(0)
    }

    func qcow2Item(_ sandbox: Sandbox, _ disk: String, file: String? = nil) -> String {
        "  - {name: \(disk), type: qcow2, file: \(file ?? sandbox.root.file(disk + ".qcow2")), size: 4M}"
    }

    /// Creates a qcow2 image with qemu-img (what a first start would do).
    func createImage(_ path: String, format: String = "qcow2") {
        run("/usr/bin/qemu-img", ["create", "-q", "-f", format, path, "4M"]).assertExit(0)
    }

    @discardableResult
    func run(_ program: String, _ arguments: [String]) -> CLIResult {
        runProcess(program, arguments, environment: ProcessInfo.processInfo.environment)
    }

    /// The snapshot tags in `file`, read by `qemu-img snapshot -l -U` (not by maqet).
    func tags(_ file: String) -> [String] {
        let result = run("/usr/bin/qemu-img", ["snapshot", "-l", "-U", file])
        XCTAssertEqual(result.code, 0, result.stderr)
        // "ID  TAG  VM SIZE  DATE  VM CLOCK  ICOUNT" after a "Snapshot list:" line.
        return result.stdout.split(separator: "\n").dropFirst(2).compactMap { line in
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            return words.count > 1 ? String(words[1]) : nil
        }
    }

    /// Writes a 4 KiB pattern at offset 0 of a (stopped) image with qemu-io.
    func writePattern(_ file: String, _ byte: String) {
        run("/usr/bin/qemu-io", ["-f", "qcow2", "-c", "write -P \(byte) 0 4k", file]).assertExit(0)
    }

    /// Whether offset 0 of the image holds the 4 KiB pattern (qemu-io exits 1 on a mismatch).
    func hasPattern(_ file: String, _ byte: String) -> Bool {
        run("/usr/bin/qemu-io", ["-f", "qcow2", "-U", "-r", "-c", "read -P \(byte) 0 4k", file]).code == 0
    }

    func records(_ sandbox: Sandbox, _ vm: String) -> String {
        sqlite3(sandbox.databasePath, """
            SELECT s.name || ':' || s.live FROM vm_snapshots s JOIN vm_instances v ON v.id = s.vm_id
            WHERE v.name = '\(vm)' ORDER BY s.id
            """)
    }

    func list(_ sandbox: Sandbox, _ vm: String, file: StaticString = #filePath, line: UInt = #line) -> [[String: Any]] {
        let result = sandbox.maqet(["snapshot", "list", vm, "--format", "json"])
        result.assertExit(0, file: file, line: line)
        let report = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any]
        return report?["snapshots"] as? [[String: Any]] ?? []
    }

    // MARK: - A stopped VM: qemu-img

    func testOfflineCreateListLoadDeleteOnAStoppedVM() {
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("hdd.qcow2")
        createImage(disk)
        addVM(sandbox, "web", disks: qcow2Item(sandbox, "hdd"))
        writePattern(disk, "0xaa")

        let created = sandbox.maqet(["snapshot", "create", "web", "clean"])
        created.assertExit(0)
        assertContains(created.stdout, "web: created snapshot clean (disks only, 1 disk)")
        XCTAssertEqual(tags(disk), ["clean"])
        XCTAssertEqual(records(sandbox, "web"), "clean:0\n")

        // The default name is a timestamp.
        let stamped = sandbox.maqet(["snapshot", "create", "web", "--format", "json"])
        stamped.assertExit(0)
        let auto = ((try? JSONSerialization.jsonObject(with: Data(stamped.stdout.utf8))) as? [String: Any])?["snapshot"] as? String ?? ""
        XCTAssertNotNil(auto.firstMatch(of: #/^snap-\d{8}-\d{6}(-\d+)?$/#), auto)
        XCTAssertEqual(tags(disk), ["clean", auto])

        let listed = list(sandbox, "web")
        XCTAssertEqual(listed.map { $0["name"] as? String }, ["clean", auto])
        XCTAssertEqual(listed.map { $0["state"] as? String }, ["ok", "ok"])
        XCTAssertEqual(listed.first?["live"] as? Bool, false)
        let text = sandbox.maqet(["snapshot", "list", "web"])
        text.assertExit(0)
        assertContains(text.stdout, "NAME")
        XCTAssertNotNil(text.stdout.firstMatch(of: #/clean\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+-\s+1/1\s+ok/#), text.stdout)

        // A name that exists: one line, nothing changed.
        let again = sandbox.maqet(["snapshot", "create", "web", "clean"])
        again.assertExit(1)
        assertContains(again.stderr, "already has a snapshot named 'clean'")
        XCTAssertEqual(again.stderr.split(separator: "\n").count, 1)
        XCTAssertEqual(tags(disk), ["clean", auto])

        // Write over the data, load the snapshot: the old data is back.
        writePattern(disk, "0xbb")
        XCTAssertTrue(hasPattern(disk, "0xbb"))
        let loaded = sandbox.maqet(["snapshot", "load", "web", "clean"])
        loaded.assertExit(0)
        assertContains(loaded.stdout, "web: loaded snapshot clean (disks rolled back)")
        XCTAssertTrue(hasPattern(disk, "0xaa"))
        XCTAssertEqual(tags(disk), ["clean", auto], "the load's safety snapshot is gone again")

        let deleted = sandbox.maqet(["snapshot", "delete", "web", "clean"])
        deleted.assertExit(0)
        assertContains(deleted.stdout, "web: deleted snapshot clean (1 disk)")
        XCTAssertEqual(tags(disk), [auto])
        XCTAssertEqual(records(sandbox, "web"), "\(auto):0\n")

        let gone = sandbox.maqet(["snapshot", "load", "web", "clean"])
        gone.assertExit(5)
        assertContains(gone.stderr, "has no snapshot named 'clean'")
        sandbox.maqet(["snapshot", "delete", "web", "clean"]).assertExit(5)
    }

    func testOfflineCreateAndLoadAreAllDisksOrNone() {
        let sandbox = makeSandbox()
        let first = sandbox.root.file("a.qcow2"), second = sandbox.root.file("b.qcow2")
        createImage(first)
        createImage(second)
        addVM(sandbox, "pair", disks: qcow2Item(sandbox, "a") + "\n" + qcow2Item(sandbox, "b"))
        sandbox.maqet(["snapshot", "create", "pair", "base"]).assertExit(0)
        XCTAssertEqual(tags(first), ["base"])
        XCTAssertEqual(tags(second), ["base"])
        writePattern(first, "0x11")

        // A running VM that uses the second image holds its write lock: qemu-img fails there.
        addVM(sandbox, "holder", disks: qcow2Item(sandbox, "b"))
        sandbox.maqet(["start", "holder"]).assertExit(0)

        let create = sandbox.maqet(["snapshot", "create", "pair", "next"])
        create.assertExit(1)
        assertContains(create.stderr, "cannot snapshot disk 'b'")
        assertContains(create.stderr, "nothing was changed")
        XCTAssertEqual(tags(first), ["base"], "the snapshot made on the first disk was deleted again")
        XCTAssertEqual(tags(second), ["base"])
        XCTAssertEqual(records(sandbox, "pair"), "base:0\n")

        let load = sandbox.maqet(["snapshot", "load", "pair", "base"])
        load.assertExit(1)
        assertContains(load.stderr, "disk 'b'")
        XCTAssertTrue(hasPattern(first, "0x11"), "the first disk was not rolled back")
        XCTAssertEqual(tags(first), ["base"])

        // A deletion cannot be undone, so it is checked on every disk before any is changed.
        let delete = sandbox.maqet(["snapshot", "delete", "pair", "base"])
        delete.assertExit(1)
        assertContains(delete.stderr, "disk 'b'")
        assertContains(delete.stderr, "nothing was changed")
        XCTAssertEqual(tags(first), ["base"])
        XCTAssertEqual(tags(second), ["base"])
        XCTAssertEqual(records(sandbox, "pair"), "base:0\n")

        sandbox.maqet(["stop", "holder", "--force"]).assertExit(0)
        sandbox.maqet(["snapshot", "load", "pair", "base"]).assertExit(0)
        XCTAssertFalse(hasPattern(first, "0x11"))
    }

    func testTwoCreatesOfOneNameAtOnceMakeOneSnapshot() {
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("hdd.qcow2")
        createImage(disk)
        addVM(sandbox, "web", disks: qcow2Item(sandbox, "hdd"))
        var codes = [Int32](repeating: -1, count: 4)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            let result = sandbox.maqet(["snapshot", "create", "web", "same"])
            lock.lock()
            codes[i] = result.code
            lock.unlock()
        }
        XCTAssertEqual(codes.sorted(), [0, 1, 1, 1])
        XCTAssertEqual(tags(disk), ["same"])
        XCTAssertEqual(records(sandbox, "web"), "same:0\n")
    }

    // MARK: - A running VM: QMP jobs

    func testLiveSaveLoadAndDeleteOnARunningQEMU() throws {
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("sys.qcow2"), data = sandbox.root.file("data.qcow2")
        addVM(sandbox, "live", disks: qcow2Item(sandbox, "sys") + "\n" + qcow2Item(sandbox, "data"))
        // Taken while stopped, before the first start created the disks: refused, nothing made.
        let early = sandbox.maqet(["snapshot", "create", "live", "early"])
        early.assertExit(3)
        assertContains(early.stderr, "does not exist yet")
        sandbox.maqet(["start", "live"]).assertExit(0)
        sandbox.maqet(["stop", "live", "--force"]).assertExit(0)
        sandbox.maqet(["snapshot", "create", "live", "cold"]).assertExit(0)
        sandbox.maqet(["start", "live"]).assertExit(0)

        let saved = sandbox.maqet(["snapshot", "create", "live", "warm", "--format", "json"])
        saved.assertExit(0)
        let result = try XCTUnwrap((try? JSONSerialization.jsonObject(with: Data(saved.stdout.utf8))) as? [String: Any])
        XCTAssertEqual(result["live"] as? Bool, true)
        XCTAssertGreaterThan(result["vm_state_size"] as? Int ?? 0, 0)
        XCTAssertEqual(tags(disk), ["cold", "warm"])
        XCTAssertEqual(tags(data), ["cold", "warm"])
        XCTAssertEqual(records(sandbox, "live"), "cold:0\nwarm:1\n")
        let listed = list(sandbox, "live")
        XCTAssertEqual(listed.map { $0["name"] as? String }, ["cold", "warm"])
        XCTAssertEqual(listed.map { $0["live"] as? Bool }, [false, true])
        XCTAssertEqual(listed.map { $0["state"] as? String }, ["ok", "ok"])

        let duplicate = sandbox.maqet(["snapshot", "create", "live", "warm"])
        duplicate.assertExit(1)
        assertContains(duplicate.stderr, "already has a snapshot named 'warm'")

        // A disk-only snapshot cannot be loaded into a running VM.
        let cold = sandbox.maqet(["snapshot", "load", "live", "cold"])
        cold.assertExit(3)
        assertContains(cold.stderr, "holds no VM state")

        let loaded = sandbox.maqet(["snapshot", "load", "live", "warm"])
        loaded.assertExit(0)
        assertContains(loaded.stdout, "live: loaded snapshot warm (the VM continues from it)")
        // QEMU is still there, answering, and no job is left over.
        let jobs = sandbox.maqet(["qmp", "live", "query-jobs"])
        jobs.assertExit(0)
        XCTAssertFalse(jobs.stdout.contains("snapshot"), jobs.stdout)
        // Started with -S, the VM is paused (QEMU's prelaunch state); the load keeps it so.
        let status = sandbox.maqet(["status", "live", "--format", "json"])
        status.assertExit(0)
        assertContains(status.stdout, "\"status\": \"paused\"")
        assertContains(status.stdout, "\"alive\": true")

        let deleted = sandbox.maqet(["snapshot", "delete", "live", "warm"])
        deleted.assertExit(0)
        XCTAssertEqual(tags(disk), ["cold"])
        XCTAssertEqual(tags(data), ["cold"])
        XCTAssertEqual(records(sandbox, "live"), "cold:0\n")
        sandbox.maqet(["snapshot", "delete", "live", "warm"]).assertExit(5)
        sandbox.maqet(["stop", "live", "--force"]).assertExit(0)
    }

    func testAFailedJobReportsQEMUsErrorAndLeavesNothing() {
        // An ivshmem device in peer mode blocks migration, and so QEMU's snapshot-save job.
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("sys.qcow2")
        addVM(sandbox, "blocked", disks: qcow2Item(sandbox, "sys"),
              arguments: ["\"object memory-backend-ram,id=hm,size=1M\"", "{device: {driver: ivshmem-plain, memdev: hm}}"])
        sandbox.maqet(["start", "blocked"]).assertExit(0)
        let failed = sandbox.maqet(["snapshot", "create", "blocked", "s1"])
        failed.assertExit(1)
        assertContains(failed.stderr, "QEMU could not save snapshot 's1': Migration is disabled")
        XCTAssertEqual(failed.stderr.split(separator: "\n").count, 1, failed.stderr)
        XCTAssertEqual(tags(disk), [])
        XCTAssertEqual(records(sandbox, "blocked"), "")
        let jobs = sandbox.maqet(["qmp", "blocked", "query-jobs"])
        jobs.assertExit(0)
        XCTAssertFalse(jobs.stdout.contains("snapshot"), "the failed job was dismissed: \(jobs.stdout)")
        sandbox.maqet(["stop", "blocked", "--force"]).assertExit(0)
    }

    /// QEMU runs snapshot-save in its main loop before it writes the command's reply, so the reply
    /// wait is bounded by --timeout (not by a fixed QMP reply timeout that a slow disk outlasts,
    /// which used to report a saved snapshot as failed and drop its record). A save of 64 MiB
    /// of RAM cannot be done within 1 ms: the create times out, and the record stays so `list`
    /// shows what QEMU did: `ok` when it went on and saved it, `missing` when it dropped the
    /// command (QEMU drops what it has not started when the client hangs up).
    func testALiveCreateThatOutlastsTimeoutIsATimeoutAndKeepsItsRecord() {
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("sys.qcow2")
        addVM(sandbox, "slow", disks: qcow2Item(sandbox, "sys"))
        sandbox.maqet(["start", "slow"]).assertExit(0)
        let late = sandbox.maqet(["snapshot", "create", "slow", "late", "--timeout", "0.001"])
        late.assertExit(124)
        assertContains(late.stderr, "snapshot-save did not finish within 0.001 s")
        assertContains(late.stderr, "maqet snapshot delete slow late")
        XCTAssertEqual(late.stderr.split(separator: "\n").count, 1, late.stderr)
        XCTAssertEqual(records(sandbox, "slow"), "late:1\n")
        var state: String?
        XCTAssertTrue(eventually(120) {
            state = self.list(sandbox, "slow").first?["state"] as? String
            return state == "ok" || state == "missing"
        }, "list says \(String(describing: state))")
        // The job maqet stopped waiting for is concluded in QEMU; the next job dismisses it. A
        // command QEMU dropped (state missing: a slower maqet, e.g. the ASan build, hung up
        // before QEMU started it) made no job at all.
        if state == "ok" {
            XCTAssertTrue(sandbox.maqet(["qmp", "slow", "query-jobs"]).stdout.contains("maqet-snapshot-save"))
        }
        sandbox.maqet(["snapshot", "delete", "slow", "late"]).assertExit(0)
        let jobs = sandbox.maqet(["qmp", "slow", "query-jobs"])
        jobs.assertExit(0)
        XCTAssertFalse(jobs.stdout.contains("maqet-snapshot"), jobs.stdout)
        XCTAssertEqual(tags(disk), [])
        XCTAssertEqual(records(sandbox, "slow"), "")

        // A load that outlasts --timeout is a timeout too, not "QEMU could not load it".
        sandbox.maqet(["snapshot", "create", "slow", "base"]).assertExit(0)
        let load = sandbox.maqet(["snapshot", "load", "slow", "base", "--timeout", "0.001"])
        load.assertExit(124)
        XCTAssertEqual(load.stderr, "maqet: VM 'slow': snapshot 'base': snapshot-load did not finish within 0.001 s; QEMU may still complete it (see 'maqet snapshot list slow')\n")
        XCTAssertTrue(eventually(120) { self.list(sandbox, "slow").first?["state"] as? String == "ok" })
        sandbox.maqet(["stop", "slow", "--force"]).assertExit(0)
    }

    // MARK: - Refusals and the truth

    /// A VM in transition is refused like pause/resume in the wrong state: exit 3, nothing changed.
    func testAVMThatIsStoppingIsRefusedWithExit3() {
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("sys.qcow2")
        addVM(sandbox, "busy", disks: qcow2Item(sandbox, "sys"))
        sandbox.maqet(["start", "busy"]).assertExit(0)
        // What a stop in progress looks like to another maqet: QEMU alive, the row `stopping`.
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'stopping' WHERE name = 'busy'")
        for arguments in [["snapshot", "create", "busy", "s1"], ["snapshot", "list", "busy"]] {
            let refused = sandbox.maqet(arguments)
            XCTAssertEqual(refused.code, 3, "\(arguments): \(refused.stderr)")
            XCTAssertEqual(refused.stderr, "maqet: VM 'busy' is stopping; try again when it is done\n")
        }
        XCTAssertEqual(tags(disk), [])
        XCTAssertEqual(records(sandbox, "busy"), "")
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'paused' WHERE name = 'busy'")
        sandbox.maqet(["stop", "busy", "--force"]).assertExit(0)
    }

    func testRawDiskAndVMWithoutQcow2AreRefused() {
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("ok.qcow2"), raw = sandbox.root.file("plain.img")
        createImage(disk)
        createImage(raw, format: "raw")
        addVM(sandbox, "mixed", disks: qcow2Item(sandbox, "ok") + "\n  - {name: plain, type: raw, file: \(raw), size: 4M}")
        let refused = sandbox.maqet(["snapshot", "create", "mixed", "s1"])
        refused.assertExit(3)
        assertContains(refused.stderr, "disk 'plain' (\(raw)) is a raw image")
        XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1)
        XCTAssertEqual(tags(disk), [], "nothing was changed")
        XCTAssertEqual(records(sandbox, "mixed"), "")

        // A read-only raw disk cannot change, so it does not stand in the way.
        addVM(sandbox, "ro", disks: qcow2Item(sandbox, "ok") + "\n  - {name: plain, type: raw, file: \(raw), readonly: true}")
        sandbox.maqet(["snapshot", "create", "ro", "s1"]).assertExit(0)
        XCTAssertEqual(tags(disk), ["s1"])

        addVM(sandbox, "rawonly", disks: "  - {name: plain, type: raw, file: \(raw)}")
        sandbox.maqet(["snapshot", "create", "rawonly", "s1"]).assertExit(3)
        let bare = sandbox.write("bare.yaml", "name: bare\nmemory: 64M\n")
        sandbox.maqet(["add", bare]).assertExit(0)
        let none = sandbox.maqet(["snapshot", "create", "bare", "s1"])
        none.assertExit(3)
        assertContains(none.stderr, "VM 'bare' has no writable qcow2 disk")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM vm_snapshots"), "1\n")
    }

    func testListFlagsWhatChangedBehindMaqetsBack() {
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("hdd.qcow2")
        createImage(disk)
        addVM(sandbox, "web", disks: qcow2Item(sandbox, "hdd"))
        sandbox.maqet(["snapshot", "create", "web", "kept"]).assertExit(0)
        sandbox.maqet(["snapshot", "create", "web", "lost"]).assertExit(0)
        run("/usr/bin/qemu-img", ["snapshot", "-d", "lost", disk]).assertExit(0)
        run("/usr/bin/qemu-img", ["snapshot", "-c", "stray", disk]).assertExit(0)

        let states = Dictionary(uniqueKeysWithValues: list(sandbox, "web").map { ($0["name"] as? String ?? "?", $0["state"] as? String ?? "?") })
        XCTAssertEqual(states, ["kept": "ok", "lost": "missing", "stray": "unrecorded"])
        let text = sandbox.maqet(["snapshot", "list", "web"])
        XCTAssertNotNil(text.stdout.firstMatch(of: #/lost\s.*0/1\s+missing/#), text.stdout)

        let load = sandbox.maqet(["snapshot", "load", "web", "lost"])
        load.assertExit(5)
        assertContains(load.stderr, "recorded but gone from its disks")
        // An unrecorded snapshot is still a snapshot: it can be loaded.
        sandbox.maqet(["snapshot", "load", "web", "stray"]).assertExit(0)
        // Deleting the lost one removes its record.
        let delete = sandbox.maqet(["snapshot", "delete", "web", "lost"])
        delete.assertExit(0)
        assertContains(delete.stdout, "deleted the record of snapshot lost")
        XCTAssertEqual(records(sandbox, "web"), "kept:0\n")
        XCTAssertEqual(tags(disk), ["kept", "stray"])
    }

    func testBadInputIsOneLineAndChangesNothing() {
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("hdd.qcow2")
        createImage(disk)
        addVM(sandbox, "web", disks: qcow2Item(sandbox, "hdd"))
        let cases: [([String], Int32, String)] = [
            (["snapshot", "create", "web", "1"], 64, "must start with a letter"),
            (["snapshot", "create", "web", "a b"], 64, "must start with a letter"),
            (["snapshot", "create", "web", "x;rm"], 64, "only letters, digits"),
            (["snapshot", "create", "web", String(repeating: "a", count: 65)], 64, "at most 64 characters"),
            (["snapshot", "create", "ghost", "s"], 5, "no VM named 'ghost'"),
            (["snapshot", "list", "ghost"], 5, "no VM named 'ghost'"),
            (["snapshot", "load", "web", "nope"], 5, "has no snapshot named 'nope'"),
            (["snapshot", "delete", "web", "nope"], 5, "has no snapshot named 'nope'"),
            (["snapshot", "create", "web", "s", "--timeout", "0"], 64, "--timeout"),
        ]
        for (arguments, code, message) in cases {
            let result = sandbox.maqet(arguments)
            XCTAssertEqual(result.code, code, "\(arguments): \(result.stderr)")
            assertContains(result.stderr, message)
            XCTAssertTrue(result.stderr.hasPrefix("maqet: ") || result.stderr.hasPrefix("Error: "), result.stderr)
        }
        XCTAssertEqual(tags(disk), [])
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM vm_snapshots"), "0\n")
    }

    func testRmTakesTheRecordsWithTheVM() {
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("hdd.qcow2")
        createImage(disk)
        addVM(sandbox, "web", disks: qcow2Item(sandbox, "hdd"))
        sandbox.maqet(["snapshot", "create", "web", "s1"]).assertExit(0)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM vm_snapshots"), "1\n")
        sandbox.maqet(["rm", "web"]).assertExit(0)
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM vm_snapshots"), "0\n")
        XCTAssertEqual(tags(disk), ["s1"], "an image maqet did not create is left as it is")
    }

    func testLuaScriptsUseMaqetVmSnapshot() {
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("hdd.qcow2")
        createImage(disk)
        addVM(sandbox, "web", disks: qcow2Item(sandbox, "hdd"))
        let result = sandbox.runScript("""
            local r = assert(maqet.vm.snapshot("web", "create", "from-lua"))
            print("created", r.snapshot, r.live, #r.disks)
            for _, s in ipairs(assert(maqet.vm.snapshot("web", "list")).snapshots) do print("listed", s.name, s.state) end
            print("missing", maqet.vm.snapshot("web", "load", "nope"))
            print("bad", maqet.vm.snapshot("web", "create", "9lives"))
            print("misuse", pcall(maqet.vm.snapshot, "web", "frobnicate"))
            assert(maqet.vm.snapshot("web", "delete", "from-lua"))
            print("after", #maqet.vm.snapshot("web", "list").snapshots)
            """)
        result.assertExit(0)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, 6, result.stdout)
        XCTAssertEqual(lines.first, "created\tfrom-lua\tfalse\t1")
        XCTAssertEqual(lines[safe: 1], "listed\tfrom-lua\tok")
        XCTAssertTrue(lines[safe: 2]?.hasSuffix("ENOSNAP") ?? false, result.stdout)
        XCTAssertTrue(lines[safe: 3]?.hasSuffix("EINVAL") ?? false, result.stdout)
        XCTAssertTrue((lines[safe: 4] ?? "").hasPrefix("misuse\tfalse\t") && (lines[safe: 4] ?? "").contains("action must be create, list, load or delete"), result.stdout)
        XCTAssertEqual(lines[safe: 5], "after\t0")
        XCTAssertEqual(tags(disk), [])
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
