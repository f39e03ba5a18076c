import Foundation
import XCTest

/// start/stop/status/rm/show-cmd and maqet.vm with a real QEMU (guestless: `-machine none` or q35
/// without a disk, `-display none`, `-accel kvm -accel tcg`). Every test kills what it started and
/// checks that no QEMU or runner of its sandbox is left.
final class LifecycleTests: SandboxTestCase {
    override func makeSandbox() -> Sandbox {
        let sandbox = super.makeSandbox()
        XCTAssertEqual(sandbox.maqet(["ls"]).code, 0) // creates and migrates instances.db
        return sandbox
    }

    // MARK: - Helpers

    static let guestless = #"{"memory": "64M", "display": "none", "arguments": [{"machine": "none"}, {"accel": "kvm"}]}"#
    static let q35 = #"{"memory": "64M", "cpu": 1, "display": "none", "vga": "none", "arguments": [{"machine": "q35"}, {"accel": "kvm"}]}"#

    /// Inserts a VM row (as `maqet add` would) with config_data `config`.
    @discardableResult
    func insertVM(_ sandbox: Sandbox, _ name: String, _ config: String = guestless) -> String {
        let id = UUID().uuidString.lowercased()
        let sql = "INSERT INTO vm_instances (id, name, config_data, status) VALUES ('\(id)', '\(name)', '\(config.replacingOccurrences(of: "'", with: "''"))', 'created')"
        let result = runProcess("/usr/bin/sqlite3", [sandbox.databasePath, sql], environment: ProcessInfo.processInfo.environment)
        XCTAssertEqual(result.code, 0, result.stderr)
        return id
    }

    /// `maqet status NAME --format json` parsed.
    func status(_ sandbox: Sandbox, _ name: String, file: StaticString = #filePath, line: UInt = #line) -> [String: Any] {
        let result = sandbox.maqet(["status", name, "--format", "json"])
        result.assertExit(0, file: file, line: line)
        return (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] ?? [:]
    }

    func column(_ sandbox: Sandbox, _ name: String, _ column: String) -> String {
        sqlite3(sandbox.databasePath, "SELECT \(column) FROM vm_instances WHERE name = '\(name)'")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func start(_ sandbox: Sandbox, _ name: String, file: StaticString = #filePath, line: UInt = #line) {
        let result = sandbox.maqet(["start", name])
        result.assertExit(0, file: file, line: line)
    }

    // MARK: - Tests

    func testStartStatusQmpAndStopThatFallsThroughToQuit() throws {
        let sandbox = makeSandbox()
        let config = sandbox.write("web.yaml", """
            name: web
            memory: 64M
            cpu: 1
            display: none
            vga: none
            arguments:
              - machine: q35
              - accel: kvm
            """)
        sandbox.maqet(["add", config]).assertExit(0)
        let started = sandbox.maqet(["start", "web"])
        started.assertExit(0)
        assertContains(started.stdout, "web: running")

        let running = status(sandbox, "web")
        XCTAssertEqual(running["status"] as? String, "running")
        let pid = try XCTUnwrap(running["pid"] as? Int)
        XCTAssertTrue(isAlive(pid))
        XCTAssertNotNil(running["runner_pid"] as? Int)
        let socket = try XCTUnwrap(running["qmp_socket_path"] as? String)
        XCTAssertTrue(FileManager.default.fileExists(atPath: socket))
        XCTAssertEqual((running["config"] as? [String: Any])?["memory"] as? String, "64M")

        let text = sandbox.maqet(["status", "web"])
        text.assertExit(0)
        assertContains(text.stdout, "Status:        running")
        assertContains(text.stdout, "PID:           \(pid)")

        let qmp = sandbox.maqet(["qmp", "web", "query-status"])
        qmp.assertExit(0)
        assertContains(qmp.stdout, "\"running\": true")

        let again = sandbox.maqet(["start", "web"])
        again.assertExit(1)
        assertContains(again.stderr, "already running")

        // q35 without a guest OS ignores ACPI powerdown: after --timeout 1 the stop escalates to quit.
        let stopped = sandbox.maqet(["stop", "web", "--timeout", "1"])
        stopped.assertExit(0)
        XCTAssertEqual(stopped.stdout, "web: stopped (stopped by: quit)\n")
        XCTAssertFalse(isAlive(pid))
        XCTAssertFalse(FileManager.default.fileExists(atPath: socket))

        let after = status(sandbox, "web")
        XCTAssertEqual(after["status"] as? String, "stopped")
        XCTAssertTrue(after["pid"] is NSNull)
        XCTAssertTrue(after["qmp_socket_path"] is NSNull)
        XCTAssertEqual(column(sandbox, "web", "status"), "stopped")

        let notRunning = sandbox.maqet(["stop", "web"])
        notRunning.assertExit(0)
        XCTAssertEqual(notRunning.stdout, "web: not running (status stopped)\n")
    }

    func testStopForceKillsAtOnce() throws {
        let sandbox = makeSandbox()
        insertVM(sandbox, "f")
        start(sandbox, "f")
        let pid = try XCTUnwrap(status(sandbox, "f")["pid"] as? Int)
        let stopped = sandbox.maqet(["stop", "f", "--force"])
        stopped.assertExit(0)
        XCTAssertEqual(stopped.stdout, "f: stopped (stopped by: SIGKILL)\n")
        XCTAssertFalse(isAlive(pid))
        XCTAssertEqual(column(sandbox, "f", "status"), "stopped")
        XCTAssertEqual(column(sandbox, "f", "pid"), "")
    }

    func testKilledQEMUIsRecordedAndListedAsDead() throws {
        let sandbox = makeSandbox()
        insertVM(sandbox, "victim")
        start(sandbox, "victim")
        let pid = try XCTUnwrap(status(sandbox, "victim")["pid"] as? Int)
        kill(pid_t(pid), SIGKILL)
        XCTAssertTrue(eventually { !self.isAlive(pid) })
        let ls = sandbox.maqet(["ls", "--format", "plain"])
        ls.assertExit(0)
        let fields = ls.stdout.split(separator: " ")
        XCTAssertEqual(fields.first, "victim")
        XCTAssertTrue(["stopped", "crashed"].contains(String(fields[1])), ls.stdout)
        XCTAssertEqual(fields[2], "-", ls.stdout)
        XCTAssertEqual(column(sandbox, "victim", "pid"), "")
        XCTAssertEqual(column(sandbox, "victim", "qmp_socket_path"), "")
    }

    func testKilledRunnerTellsTheTruthAndStopCleansUp() throws {
        let sandbox = makeSandbox()
        insertVM(sandbox, "orphan")
        start(sandbox, "orphan")
        let before = status(sandbox, "orphan")
        let pid = try XCTUnwrap(before["pid"] as? Int)
        let runner = try XCTUnwrap(before["runner_pid"] as? Int)
        let socket = try XCTUnwrap(before["qmp_socket_path"] as? String)
        kill(pid_t(runner), SIGKILL)
        XCTAssertTrue(eventually { !self.isAlive(runner) })
        // Its pid now belongs to an unrelated process (pid reuse): never taken for the runner.
        let other = Process()
        other.executableURL = URL(fileURLWithPath: "/bin/sleep")
        other.arguments = ["60"]
        try other.run()
        defer { other.terminate(); other.waitUntilExit() }
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET runner_pid = \(other.processIdentifier) WHERE name = 'orphan'")

        // QEMU still runs: the truth is "running, runner missing".
        let ls = sandbox.maqet(["ls", "--format", "plain"])
        ls.assertExit(0)
        XCTAssertTrue(ls.stdout.hasPrefix("orphan running \(pid) "), ls.stdout)
        let text = sandbox.maqet(["status", "orphan"])
        assertContains(text.stdout, "runner missing")
        XCTAssertEqual(status(sandbox, "orphan")["runner"] as? String, "missing")

        let stopped = sandbox.maqet(["stop", "orphan", "--timeout", "1"])
        stopped.assertExit(0)
        XCTAssertFalse(isAlive(pid))
        XCTAssertTrue(other.isRunning, "the process that merely has the runner's old pid is left alone")
        XCTAssertEqual(column(sandbox, "orphan", "status"), "stopped")
        XCTAssertFalse(FileManager.default.fileExists(atPath: socket))
        XCTAssertFalse(FileManager.default.fileExists(atPath: (socket as NSString).deletingLastPathComponent))
        XCTAssertEqual(processes(of: sandbox), [])
    }

    func testARowNamingAReusedPidIsRecordedCrashedAndTheProcessIsLeftAlone() throws {
        let sandbox = makeSandbox()
        let id = insertVM(sandbox, "stale")
        // Another program now has the pid the row names (as after a reboot or pid reuse).
        let other = Process()
        other.executableURL = URL(fileURLWithPath: "/bin/sleep")
        other.arguments = ["60"]
        try other.run()
        defer { other.terminate(); other.waitUntilExit() }
        let dir = sandbox.home + "/xdg-runtime/maqet/" + id.prefix(12)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        sandbox.write("xdg-runtime/maqet/\(id.prefix(12))/qmp.sock", "stale")
        _ = sqlite3(sandbox.databasePath, """
            UPDATE vm_instances SET status = 'running', pid = \(other.processIdentifier), runner_pid = \(other.processIdentifier),
              qmp_socket_path = '\(dir)/qmp.sock' WHERE name = 'stale'
            """)

        let stop = sandbox.maqet(["stop", "stale", "--force"])
        stop.assertExit(0)
        XCTAssertEqual(stop.stdout, "stale: not running (status crashed)\n")
        XCTAssertTrue(other.isRunning, "a process that merely has the recorded pid is never signalled")
        XCTAssertEqual(column(sandbox, "stale", "status"), "crashed")
        XCTAssertEqual(column(sandbox, "stale", "pid"), "")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir), "the dead VM's runtime directory is removed")
        let log = try String(contentsOfFile: sandbox.dataDir + "/logs/stale.log", encoding: .utf8)
        assertContains(log, "recorded crashed: QEMU (pid \(other.processIdentifier)) is gone")
        XCTAssertEqual(sandbox.maqet(["ls", "--format", "plain"]).stdout.split(separator: " ").prefix(3), ["stale", "crashed", "-"])
    }

    func testAWedgedQEMUNeverStallsLsAndStopEscalatesToSignals() throws {
        let sandbox = makeSandbox()
        insertVM(sandbox, "wedged")
        start(sandbox, "wedged")
        let pid = try XCTUnwrap(status(sandbox, "wedged")["pid"] as? Int)
        kill(pid_t(pid), SIGSTOP) // QEMU stops answering its monitors
        defer { kill(pid_t(pid), SIGCONT) }
        let ls = sandbox.maqet(["ls", "--format", "plain"])
        ls.assertExit(0)
        XCTAssertTrue(ls.stdout.hasPrefix("wedged running \(pid) "), ls.stdout)
        XCTAssertEqual(status(sandbox, "wedged")["status"] as? String, "running")
        let qmp = sandbox.maqet(["qmp", "wedged", "query-status", "--timeout", "1"])
        XCTAssertEqual(qmp.code, 1, qmp.stderr)

        let stopped = sandbox.maqet(["stop", "wedged", "--timeout", "1"])
        stopped.assertExit(0)
        XCTAssertEqual(stopped.stdout, "wedged: stopped (stopped by: SIGTERM)\n")
        XCTAssertFalse(isAlive(pid))
        XCTAssertEqual(column(sandbox, "wedged", "status"), "stopped")
    }

    func testQuitFromOutsideIsRecordedStopped() throws {
        let sandbox = makeSandbox()
        insertVM(sandbox, "outside")
        start(sandbox, "outside")
        let pid = try XCTUnwrap(status(sandbox, "outside")["pid"] as? Int)
        XCTAssertGreaterThan(try XCTUnwrap(status(sandbox, "outside")["uptime_s"] as? Int), -1)
        sandbox.maqet(["qmp", "outside", "quit"]).assertExit(0)
        XCTAssertTrue(eventually { self.column(sandbox, "outside", "status") == "stopped" })
        XCTAssertFalse(isAlive(pid))
        let after = status(sandbox, "outside")
        XCTAssertEqual(after["status"] as? String, "stopped")
        XCTAssertNotNil(after["last_log"] as? String)
    }

    func testRmAllAsksOnATerminal() {
        let sandbox = makeSandbox()
        insertVM(sandbox, "one")
        insertVM(sandbox, "two")
        func rmAll(answer: String) -> CLIResult {
            let command = "'\(maqetBinary)' --maqet-data-dir '\(sandbox.dataDir)' rm --all"
            return runProcess("/usr/bin/script", ["-qec", command, "/dev/null"],
                              environment: testEnvironment(home: sandbox.home), stdin: answer + "\n")
        }
        let no = rmAll(answer: "n")
        no.assertExit(3)
        assertContains(no.stdout, "Remove 2 VMs? [y/N]")
        assertContains(no.stdout, "maqet: nothing removed")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM vm_instances"), "2\n")
        let yes = rmAll(answer: "y")
        yes.assertExit(0)
        assertContains(yes.stdout, "removed one")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM vm_instances"), "0\n")
    }

    func testTenVMsStartedAtOnceAllRunAndAllStop() throws {
        let sandbox = makeSandbox()
        let names = (0..<10).map { "vm\($0)" }
        for name in names { insertVM(sandbox, name) }
        var results = [CLIResult?](repeating: nil, count: names.count)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: names.count) { i in
            let result = sandbox.maqet(["start", names[i]])
            lock.lock(); results[i] = result; lock.unlock()
        }
        for result in results { result?.assertExit(0) }
        let ls = sandbox.maqet(["ls", "--status", "running", "--format", "plain"])
        XCTAssertEqual(ls.stdout.split(separator: "\n").map { String($0.split(separator: " ")[0]) }, names)
        var pids: [Int] = []
        for name in names {
            let s = status(sandbox, name)
            XCTAssertEqual(s["status"] as? String, "running", name)
            if let pid = s["pid"] as? Int { pids.append(pid); XCTAssertTrue(isAlive(pid)) }
        }
        XCTAssertEqual(Set(pids).count, 10)
        let refused = sandbox.maqet(["rm", "--all", "--yes"])
        refused.assertExit(3)
        XCTAssertEqual(refused.stderr, "maqet: VMs " + names.map { "'\($0)'" }.joined(separator: ", ")
                       + " are running; stop them first (maqet stop --all) or use --force\n")

        let stopped = sandbox.maqet(["stop", "--all", "--timeout", "1"])
        stopped.assertExit(0)
        XCTAssertEqual(stopped.stdout.split(separator: "\n").count, 10, stopped.stdout)
        for pid in pids { XCTAssertFalse(isAlive(pid)) }
        XCTAssertEqual(sandbox.maqet(["ls", "--status", "stopped", "--format", "plain"]).stdout.split(separator: "\n").count, 10)
        XCTAssertEqual(sandbox.maqet(["stop", "--all"]).stdout, "No running VMs.\n")
    }

    func testTwoStartsOfOneVMAtOnceStartItOnce() throws {
        let sandbox = makeSandbox()
        insertVM(sandbox, "twice")
        var results = [CLIResult?](repeating: nil, count: 2)
        let lock = NSLock()
        DispatchQueue.concurrentPerform(iterations: 2) { i in
            let result = sandbox.maqet(["start", "twice"])
            lock.lock(); results[i] = result; lock.unlock()
        }
        let codes = results.map { $0?.code ?? -1 }.sorted()
        XCTAssertEqual(codes, [0, 1], results.map { $0?.stderr ?? "" }.joined())
        let loser = try XCTUnwrap(results.first { $0?.code == 1 } ?? nil)
        XCTAssertTrue(loser.stderr.contains("already") || loser.stderr.contains("being started"), loser.stderr)
        XCTAssertEqual(column(sandbox, "twice", "status"), "running")
        let qemus = processes(of: sandbox).filter { commandLine($0).hasPrefix("qemu-system") }
        XCTAssertEqual(qemus.count, 1, "\(qemus.map { commandLine($0) })")
        sandbox.maqet(["stop", "twice", "--force"]).assertExit(0)
    }

    func testStartNoWaitReturnsAtOnceAndTheVMBecomesRunning() {
        let sandbox = makeSandbox()
        insertVM(sandbox, "quick")
        let result = sandbox.maqet(["start", "quick", "--no-wait", "--format", "json"])
        result.assertExit(0)
        assertContains(result.stdout, "\"runner_pid\"")
        XCTAssertTrue(eventually { self.column(sandbox, "quick", "status") == "running" })
        XCTAssertEqual(status(sandbox, "quick")["status"] as? String, "running")
        sandbox.maqet(["stop", "quick", "--timeout", "1"]).assertExit(0)
        XCTAssertEqual(column(sandbox, "quick", "status"), "stopped")
    }

    func testQEMUThatRejectsItsArgumentsFailsWithItsMessage() {
        let sandbox = makeSandbox()
        insertVM(sandbox, "bad", #"{"display": "none", "arguments": [{"machine": "nonsense"}]}"#)
        let result = sandbox.maqet(["start", "bad"])
        result.assertExit(1)
        assertContains(result.stderr, "maqet: VM 'bad' did not start: ")
        assertContains(result.stderr, "qemu-system-x86_64: unsupported machine type")
        XCTAssertEqual(result.stderr.split(separator: "\n").count, 1, result.stderr)
        XCTAssertEqual(column(sandbox, "bad", "status"), "created", "a failed start leaves the row as it was")
        XCTAssertEqual(column(sandbox, "bad", "pid"), "")
        XCTAssertEqual(column(sandbox, "bad", "runner_pid"), "")
    }

    func testMissingBinaryFails() {
        let sandbox = makeSandbox()
        insertVM(sandbox, "nobin", #"{"binary": "/nonexistent/qemu-system-x86_64", "display": "none"}"#)
        let result = sandbox.maqet(["start", "nobin"])
        result.assertExit(1)
        assertContains(result.stderr, "/nonexistent/qemu-system-x86_64")
        XCTAssertEqual(column(sandbox, "nobin", "status"), "created")
    }

    func testUnknownVM() {
        let sandbox = makeSandbox()
        for command in [["start", "ghost"], ["stop", "ghost"], ["status", "ghost"], ["rm", "ghost"], ["show-cmd", "ghost"]] {
            let result = sandbox.maqet(command)
            result.assertExit(5)
            XCTAssertEqual(result.stderr, "maqet: no VM named 'ghost' (see 'maqet ls')\n", "\(command)")
        }
        sandbox.maqet(["stop"]).assertExit(64)
        sandbox.maqet(["rm", "x", "--all"]).assertExit(64)
    }

    func testLuaScriptDrivesTwoVMs() {
        let sandbox = makeSandbox()
        insertVM(sandbox, "a")
        insertVM(sandbox, "b")
        let result = sandbox.runScript("""
            for _, name in ipairs({"a", "b"}) do
              local r = assert(maqet.vm.start(name))
              print(name, r.status)
            end
            for _, vm in ipairs(maqet.vm.list()) do print(vm.name, vm.status, vm.alive) end
            for _, name in ipairs({"a", "b"}) do
              print(name, assert(maqet.vm.qmp(name, "query-status")).status)
            end
            local got = maqet.vm.get("a")
            print("a uptime known", got.uptime_s ~= nil, got.config.memory)
            print(maqet.vm.qmp("nope", "query-status"))
            for _, name in ipairs({"a", "b"}) do
              local r = assert(maqet.vm.stop(name, {timeout_s = 1}))
              print(name, r.status, r.stopped_by)
            end
            print(maqet.vm.get("a").status, maqet.vm.get("b").status)
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, """
            a\trunning
            b\trunning
            a\trunning\ttrue
            b\trunning\ttrue
            a\trunning
            b\trunning
            a uptime known\ttrue\t64M
            nil\tno VM named 'nope' (see 'maqet ls')\tENOVM
            a\tstopped\tquit
            b\tstopped\tquit
            stopped\tstopped

            """)
    }

    func testShowCmdPrintsTheExactCommandLine() {
        let sandbox = makeSandbox()
        let id = insertVM(sandbox, "shown", #"""
            {"binary": "/usr/bin/qemu-system-x86_64", "memory": "2G", "cpu": 2, "display": "none", "vga": "std",
             "arguments": [{"machine": "q35"}, {"accel": "kvm"}, {"boot": {"order": "n", "menu": "off"}}, "nographic"],
             "storage": [{"name": "hdd", "type": "qcow2", "file": "/srv/my disk.qcow2", "interface": "virtio"},
                         {"name": "share", "type": "virtfs", "path": "/srv/share", "mount_tag": "host"}]}
            """#)
        let dir = sandbox.home + "/xdg-runtime/maqet/" + id.prefix(12)
        let result = sandbox.maqet(["show-cmd", "shown"])
        result.assertExit(0)
        XCTAssertEqual(result.stdout, """
            /usr/bin/qemu-system-x86_64 -name guest=shown -m 2G -smp 2 -display none -vga std -machine q35 \
            -accel kvm -boot order=n,menu=off -nographic -accel tcg -device pvpanic -action panic=shutdown \
            -drive 'file=/srv/my disk.qcow2,if=virtio,format=qcow2' \
            -virtfs local,path=/srv/share,mount_tag=host,security_model=mapped-xattr,id=share \
            -chardev socket,id=maqet-console,path=\(dir)/console.sock,server=on,wait=off,\
            logfile=\(sandbox.dataDir)/logs/shown.console.log,logappend=on -serial chardev:maqet-console \
            -chardev socket,id=maqet-runner,path=\(dir)/runner.qmp,server=on,wait=off -mon chardev=maqet-runner,mode=control \
            -chardev socket,id=maqet-client,path=\(dir)/qmp.sock,server=on,wait=off -mon chardev=maqet-client,mode=control

            """)
        let json = sandbox.maqet(["show-cmd", "shown", "--format", "json"])
        json.assertExit(0)
        assertContains(json.stdout, "\"file=/srv/my disk.qcow2,if=virtio,format=qcow2\"")
    }

    func testRmRefusesRunningAndDeleteStorageDeletesCreatedDisks() throws {
        let sandbox = makeSandbox()
        let disk = sandbox.root.file("vms/disks/hdd.qcow2")
        let mine = sandbox.write("vms/mine.raw", "not maqet's")
        let config = sandbox.write("vms/disky.yaml", """
            memory: 64M
            display: none
            arguments:
              - machine: q35
              - accel: kvm
            storage:
              - name: hdd
                type: qcow2
                size: 16M
                file: disks/hdd.qcow2
              - name: mine
                type: raw
                file: mine.raw
            """)
        sandbox.maqet(["add", config, "--name", "disky"]).assertExit(0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: disk), "created on first start, not by add")
        insertVM(sandbox, "other")
        start(sandbox, "disky")
        XCTAssertTrue(FileManager.default.fileExists(atPath: disk))
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT vm_name, storage_path, storage_type, size_bytes FROM storage_registry"),
                       "disky|\(disk)|qcow2|16777216\n")

        let refused = sandbox.maqet(["rm", "disky"])
        refused.assertExit(3)
        XCTAssertEqual(refused.stderr, "maqet: VM 'disky' is running; stop it first (maqet stop disky) or use --force\n")
        let refusedAll = sandbox.maqet(["rm", "--all", "--yes"])
        refusedAll.assertExit(3)
        let noTerminal = sandbox.maqet(["rm", "--all", "--force"])
        noTerminal.assertExit(3)
        assertContains(noTerminal.stderr, "Remove 2 VMs: refused without a terminal to ask on; add --yes")
        XCTAssertEqual(column(sandbox, "disky", "status"), "running")

        let backupsBefore = sandbox.automaticBackups
        let removed = sandbox.maqet(["rm", "disky", "--force", "--delete-storage"])
        removed.assertExit(0)
        let backups = sandbox.automaticBackups.filter { !backupsBefore.contains($0) }
        XCTAssertEqual(backups.count, 1, "rm takes an automatic backup first: \(sandbox.automaticBackups)")
        XCTAssertEqual(removed.stdout, "removed disky\ndeleted \(disk)\n")
        XCTAssertFalse(FileManager.default.fileExists(atPath: disk))
        XCTAssertTrue(FileManager.default.fileExists(atPath: mine), "an image maqet did not create is never deleted")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM storage_registry"), "0\n")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT name FROM vm_instances"), "other\n")

        let all = sandbox.maqet(["rm", "--all", "--yes"])
        all.assertExit(0)
        XCTAssertEqual(all.stdout, "removed other\n")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM vm_instances"), "0\n")

        // The backup rm took undoes the removal.
        if let backup = backups.first {
            sandbox.maqet(["db", "restore", (sandbox.dataDir as NSString).appendingPathComponent(backup)]).assertExit(0)
            XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT name, status FROM vm_instances ORDER BY name"), "disky|stopped\nother|created\n")
        }
    }

    /// The VM's logs are named after it (<data dir>/logs/NAME.*): rm deletes them, so a VM added
    /// later under the same name does not show the removed one's history, events or console
    /// output (`wait --console` used to find a removed VM's text on a new VM never started).
    func testRmDeletesTheLogsSoANewVMOfTheNameStartsClean() throws {
        let sandbox = makeSandbox()
        insertVM(sandbox, "again", Self.q35)
        start(sandbox, "again")
        sandbox.maqet(["stop", "again", "--force"]).assertExit(0)
        let logs = (sandbox.dataDir as NSString).appendingPathComponent("logs")
        let console = (logs as NSString).appendingPathComponent("again.console.log")
        // What the removed VM's guest printed (a guestless QEMU prints nothing itself).
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: console), "the start made no console log")
        handle.seekToEndOfFile()
        handle.write(Data("OLD-VM-LOGIN: ".utf8))
        handle.closeFile()
        let rotated = sandbox.write("data/logs/again.log.1", "an old rotated history\n")
        XCTAssertTrue(rotated.hasPrefix(logs), "\(rotated) is not in \(logs)")
        sandbox.maqet(["wait", "again", "--console", "OLD-VM-LOGIN"]).assertExit(0)
        let before = try FileManager.default.contentsOfDirectory(atPath: logs).filter { $0.hasPrefix("again.") }
        XCTAssertTrue(before.contains("again.log") && before.contains("again.events.jsonl"), "\(before)")

        sandbox.maqet(["rm", "again"]).assertExit(0)
        let after = try FileManager.default.contentsOfDirectory(atPath: logs).filter { $0.hasPrefix("again.") }
        XCTAssertEqual(after, [])

        insertVM(sandbox, "again", Self.q35)
        let fresh = sandbox.maqet(["wait", "again", "--console", "OLD-VM-LOGIN"])
        fresh.assertExit(1)
        assertContains(fresh.stderr, "it printed nothing")
        let last = status(sandbox, "again")["last_log"]
        XCTAssertTrue(last is NSNull, "the new VM's last log line: \(String(describing: last))")
    }

    func testQemuImgFailureIsReported() {
        let sandbox = makeSandbox()
        insertVM(sandbox, "badsize", #"{"display": "none", "storage": [{"name": "d", "type": "qcow2", "size": "lots", "file": "/tmp/maqet-never-\#(getpid()).qcow2"}]}"#)
        let result = sandbox.maqet(["start", "badsize"])
        result.assertExit(1)
        assertContains(result.stderr, "maqet: VM 'badsize': qemu-img could not create disk /tmp/maqet-never-")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM storage_registry"), "0\n")
        XCTAssertEqual(column(sandbox, "badsize", "status"), "created", "a failed start leaves the row as it was")
        XCTAssertEqual(column(sandbox, "badsize", "runner_pid"), "")
    }

    func testScriptsListShowsLifecycleScriptsAndAnOverrideOfStartIsUsed() {
        let sandbox = makeSandbox()
        let list = sandbox.maqet(["scripts", "list"])
        list.assertExit(0)
        for name in ["lifecycle/start.lua", "lifecycle/stop.lua", "lifecycle/status.lua", "lifecycle/rm.lua",
                     "lifecycle/reconcile.lua", "lifecycle/show_cmd.lua", "lib/qemu.lua", "lib/storage.lua", "lib/vm.lua"] {
            XCTAssertTrue(list.stdout.split(separator: "\n").contains { $0.hasPrefix(name + " ") && $0.hasSuffix("   built-in") },
                          "\(name) in \(list.stdout)")
        }

        // An edited copy of start.lua that starts the VM paused (-S) and says so.
        let builtIn = sandbox.maqet(["scripts", "show", "--built-in", "lifecycle/start.lua"])
        builtIn.assertExit(0)
        let edited = """
            io.stderr:write("edited start.lua\\n")
            local qemu = require("maqet.lib.qemu")
            local argv = qemu.argv
            qemu.argv = function(...) local a = argv(...); a[#a + 1] = "-S"; return a end

            """ + builtIn.stdout
        let path = sandbox.write("xdg-config/maqet/scripts/lifecycle/start.lua", edited)
        let listed = sandbox.maqet(["scripts", "list"])
        XCTAssertTrue(listed.stdout.split(separator: "\n").contains { $0.hasPrefix("lifecycle/start.lua") && $0.hasSuffix("user: \(path)") }, listed.stdout)

        insertVM(sandbox, "paused")
        let started = sandbox.maqet(["start", "paused"])
        started.assertExit(0)
        XCTAssertTrue(started.stderr.contains("edited start.lua"), started.stderr)
        let qmp = sandbox.maqet(["qmp", "paused", "query-status", "--compact"])
        qmp.assertExit(0)
        assertContains(qmp.stdout, "\"status\":\"prelaunch\"")
        sandbox.maqet(["stop", "paused", "--force"]).assertExit(0)
    }
}
