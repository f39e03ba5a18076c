import Foundation
import XCTest

/// One VM, one runner (issue 9): kill -9 of `maqet start` at spread points racing `ls` and a
/// second start; kill -9 of the runner and of QEMU; SIGSTOP of QEMU and of the runner; `starting`
/// and `running` rows whose pids are dead or belong to unrelated processes. Guestless QEMU
/// (`-machine none`). After each fault, once everything has settled, the row is either running
/// with live sockets (QMP answers) or recorded with nothing left, and there is never a second
/// QEMU for the VM. Trial counts from `Campaign.trials`.
final class RunnerRaceFaultTests: SandboxTestCase {
    override class var stopsLeftoversFirst: Bool { true }

    override func makeSandbox() -> Sandbox {
        let sandbox = super.makeSandbox()
        XCTAssertEqual(sandbox.maqet(["ls"]).code, 0)
        return sandbox
    }

    static let guestless = #"{"memory": "64M", "display": "none", "arguments": [{"machine": "none"}, {"accel": "kvm"}]}"#

    // MARK: - Helpers

    @discardableResult
    func insertVM(_ sandbox: Sandbox, _ name: String) -> String {
        let id = UUID().uuidString.lowercased()
        let sql = "INSERT INTO vm_instances (id, name, config_data, status) VALUES ('\(id)', '\(name)', '\(Self.guestless)', 'created')"
        XCTAssertEqual(runProcess("/usr/bin/sqlite3", [sandbox.databasePath, sql], environment: ProcessInfo.processInfo.environment).code, 0)
        return id
    }

    func column(_ sandbox: Sandbox, _ name: String, _ column: String) -> String {
        sqlite3(sandbox.databasePath, "SELECT \(column) FROM vm_instances WHERE name = '\(name)'")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func status(_ sandbox: Sandbox, _ name: String) -> [String: Any] {
        let result = sandbox.maqet(["status", name, "--format", "json"])
        return (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] ?? [:]
    }

    /// A `maqet` command of the sandbox started in the background (output discarded).
    func spawnMaqet(_ sandbox: Sandbox, _ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: maqetBinary)
        process.arguments = ["--maqet-data-dir", sandbox.dataDir] + arguments
        process.environment = testEnvironment(home: sandbox.home)
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// An unrelated process (a `sleep`) whose pid a stale row can name.
    func unrelatedProcess() throws -> Process {
        let other = Process()
        other.executableURL = URL(fileURLWithPath: "/bin/sleep")
        other.arguments = ["120"]
        try other.run()
        return other
    }

    /// A pid that no process has now (a child that has exited and been reaped).
    func deadPID() throws -> Int32 {
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        return gone.processIdentifier
    }

    /// Live QEMU processes of the VM named `name` in `sandbox` (their command line has `guest=NAME`
    /// and a socket in the sandbox).
    func qemus(of sandbox: Sandbox, named name: String) -> [pid_t] {
        processes(of: sandbox).filter {
            let line = commandLine($0)
            return line.contains("qemu-system") && line.contains("guest=\(name) ")
        }
    }

    /// The runtime directory of the VM with id `id`.
    func runtimeDir(_ sandbox: Sandbox, _ id: String) -> String {
        sandbox.home + "/xdg-runtime/maqet/" + id.prefix(12)
    }

    /// Waits until the row no longer says `starting` (each look reconciles it); returns the status.
    func settled(_ sandbox: Sandbox, _ name: String) -> String {
        var last = ""
        eventually(40) {
            last = self.status(sandbox, name)["status"] as? String ?? "?"
            return last != "starting"
        }
        return last
    }

    /// The row is either running with a QEMU that answers on the recorded socket, and only one
    /// QEMU, or recorded (not active) with no process, socket or runtime directory left.
    func assertTruthful(_ sandbox: Sandbox, _ name: String, _ id: String, trial: String, file: StaticString = #filePath, line: UInt = #line) {
        let now = settled(sandbox, name)
        let running = qemus(of: sandbox, named: name)
        XCTAssertLessThanOrEqual(running.count, 1, "\(trial): two QEMUs for one VM: \(running.map { commandLine($0) })", file: file, line: line)
        switch now {
        case "running", "paused":
            let qmp = sandbox.maqet(["qmp", name, "query-status"])
            XCTAssertEqual(qmp.code, 0, "\(trial): the row says \(now) but QMP does not answer: \(qmp.stderr)", file: file, line: line)
            XCTAssertEqual(running.count, 1, "\(trial): the row says \(now) but no QEMU runs", file: file, line: line)
            XCTAssertEqual(column(sandbox, name, "pid"), running.first.map { String($0) } ?? "-", "\(trial): the row names its QEMU", file: file, line: line)
        case "stopped", "crashed", "created":
            XCTAssertEqual(processes(of: sandbox), [], "\(trial): recorded \(now) but processes are left: \(processes(of: sandbox).map { commandLine($0) })", file: file, line: line)
            XCTAssertFalse(FileManager.default.fileExists(atPath: runtimeDir(sandbox, id)), "\(trial): recorded \(now) but its runtime directory is left", file: file, line: line)
            XCTAssertEqual(column(sandbox, name, "pid"), "", "\(trial)", file: file, line: line)
            XCTAssertEqual(column(sandbox, name, "runner_pid"), "", "\(trial)", file: file, line: line)
        default:
            XCTFail("\(trial): the row says '\(now)' after everything settled", file: file, line: line)
        }
    }

    /// Stops the VM (forced) and checks that nothing of it is left.
    func stopAndCheck(_ sandbox: Sandbox, _ name: String, _ id: String, trial: String, file: StaticString = #filePath, line: UInt = #line) {
        let stop = sandbox.maqet(["stop", name, "--force"])
        XCTAssertEqual(stop.code, 0, "\(trial): \(stop.stderr)", file: file, line: line)
        XCTAssertTrue(eventually { self.processes(of: sandbox).isEmpty }, "\(trial): left after stop: \(processes(of: sandbox).map { commandLine($0) })", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: runtimeDir(sandbox, id)), "\(trial): runtime directory left after stop", file: file, line: line)
        XCTAssertFalse(vmActive(sandbox, name), "\(trial)", file: file, line: line)
    }

    func vmActive(_ sandbox: Sandbox, _ name: String) -> Bool {
        ["starting", "running", "paused", "stopping"].contains(column(sandbox, name, "status"))
    }

    // MARK: - kill -9 of start, racing ls and a second start

    func testKilledStartAtSpreadPointsRacingLsAndASecondStartLeavesOneTruth() throws {
        let sandbox = makeSandbox()
        let id = insertVM(sandbox, "race")
        // How long one whole start takes here: the kill points are spread over it.
        let began = Date()
        sandbox.maqet(["start", "race"]).assertExit(0)
        let startSeconds = Date().timeIntervalSince(began)
        stopAndCheck(sandbox, "race", id, trial: "warm-up")

        let trials = Campaign.trials(ci: 6, campaign: 40)
        var survived = 0
        for trial in 0..<trials {
            let label = "trial \(trial + 1)/\(trials)"
            let delay = startSeconds * (Double(trial / 2) + 0.5) / Double((trials + 1) / 2)
            let start = try spawnMaqet(sandbox, ["start", "race"])
            usleep(useconds_t(delay * 1_000_000))
            kill(start.processIdentifier, SIGKILL)
            start.waitUntilExit()
            // At once: an ls races whatever the killed start left; every other trial a second
            // start races it too.
            let ls = try spawnMaqet(sandbox, ["ls"])
            let again = trial % 2 == 1 ? try spawnMaqet(sandbox, ["start", "race"]) : nil
            if processes(of: sandbox).contains(where: { commandLine($0).contains("__runner") }) { survived += 1 }
            ls.waitUntilExit()
            XCTAssertEqual(ls.terminationStatus, 0, "\(label): ls")
            if let again {
                again.waitUntilExit()
                // The second start either started the VM or was refused (already running, busy).
                XCTAssertTrue([0, 1].contains(again.terminationStatus) && again.terminationReason == .exit,
                              "\(label): the second start ended by \(again.terminationReason == .exit ? "exit \(again.terminationStatus)" : "a signal")")
            }
            assertTruthful(sandbox, "race", id, trial: label)
            stopAndCheck(sandbox, "race", id, trial: label)
        }
        // Not an assertion (it depends on the machine's speed): how many kills hit a start
        // whose runner lived on, the case that used to go wrong.
        print("RunnerRaceFaultTests: \(survived) of \(trials) killed starts left a runner finishing the start")
    }

    // MARK: - kill -9 of the runner, of QEMU

    func testKilledRunnerLeavesARunningVMThatNoSecondStartDuplicates() throws {
        let sandbox = makeSandbox()
        let id = insertVM(sandbox, "orphan")
        for trial in 0..<Campaign.trials(ci: 2, campaign: 30) {
            let label = "trial \(trial + 1)"
            sandbox.maqet(["start", "orphan"]).assertExit(0)
            let row = status(sandbox, "orphan")
            let qemu = try XCTUnwrap(row["pid"] as? Int)
            let runner = try XCTUnwrap(row["runner_pid"] as? Int)
            kill(pid_t(runner), SIGKILL)
            XCTAssertTrue(eventually { !self.isAlive(runner) })
            XCTAssertEqual(status(sandbox, "orphan")["runner"] as? String, "missing", label)
            // QEMU still holds the VM's lock: a second start is refused even when the row has
            // lost track of QEMU (as a runner killed between spawning QEMU and recording it would).
            XCTAssertNotEqual(sandbox.maqet(["start", "orphan"]).code, 0, label)
            _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'crashed', pid = NULL, runner_pid = NULL WHERE name = 'orphan'")
            let refused = sandbox.maqet(["start", "orphan"])
            XCTAssertNotEqual(refused.code, 0, "\(label): a second QEMU was started beside the orphan")
            assertContains(refused.stderr, "lock")
            XCTAssertEqual(qemus(of: sandbox, named: "orphan"), [pid_t(qemu)], label)
            // Given its pid back, the orphan is found and stopped.
            _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'running', pid = \(qemu) WHERE name = 'orphan'")
            sandbox.maqet(["stop", "orphan", "--timeout", "1"]).assertExit(0)
            XCTAssertEqual(column(sandbox, "orphan", "status"), "stopped", label)
            XCTAssertEqual(processes(of: sandbox), [], label)
            XCTAssertFalse(FileManager.default.fileExists(atPath: runtimeDir(sandbox, id)), label)
        }
    }

    func testKilledQEMUIsRecordedCrashedWithNothingLeft() throws {
        let sandbox = makeSandbox()
        let id = insertVM(sandbox, "victim")
        for trial in 0..<Campaign.trials(ci: 2, campaign: 30) {
            let label = "trial \(trial + 1)"
            sandbox.maqet(["start", "victim"]).assertExit(0)
            let qemu = try XCTUnwrap(status(sandbox, "victim")["pid"] as? Int)
            kill(pid_t(qemu), SIGKILL)
            XCTAssertTrue(eventually { self.column(sandbox, "victim", "status") == "crashed" }, label)
            XCTAssertTrue(eventually { self.processes(of: sandbox).isEmpty }, label)
            XCTAssertEqual(sandbox.maqet(["ls", "--format", "plain"]).stdout.split(separator: " ").prefix(2), ["victim", "crashed"], label)
            XCTAssertFalse(FileManager.default.fileExists(atPath: runtimeDir(sandbox, id)), label)
        }
    }

    // MARK: - SIGSTOP of QEMU, of the runner

    func testStoppedQEMUIsEndedByStopEscalating() throws {
        let sandbox = makeSandbox()
        let id = insertVM(sandbox, "frozen")
        for trial in 0..<Campaign.trials(ci: 1, campaign: 30) {
            let label = "trial \(trial + 1)"
            sandbox.maqet(["start", "frozen"]).assertExit(0)
            let qemu = try XCTUnwrap(status(sandbox, "frozen")["pid"] as? Int)
            kill(pid_t(qemu), SIGSTOP)
            let ls = sandbox.maqet(["ls", "--format", "plain"])
            ls.assertExit(0)
            XCTAssertTrue(ls.stdout.hasPrefix("frozen running \(qemu) "), "\(label): \(ls.stdout)")
            let stop = sandbox.maqet(["stop", "frozen", "--timeout", "1"])
            stop.assertExit(0)
            XCTAssertTrue(stop.stdout.contains("SIGTERM") || stop.stdout.contains("SIGKILL"), "\(label): \(stop.stdout)")
            XCTAssertFalse(isAlive(qemu), label)
            XCTAssertEqual(column(sandbox, "frozen", "status"), "stopped", label)
            XCTAssertTrue(eventually { self.processes(of: sandbox).isEmpty }, label)
            XCTAssertFalse(FileManager.default.fileExists(atPath: runtimeDir(sandbox, id)), label)
        }
    }

    func testStoppedRunnerKeepsLsTruthfulAndStopEndsEverything() throws {
        let sandbox = makeSandbox()
        let id = insertVM(sandbox, "sleepy")
        for trial in 0..<Campaign.trials(ci: 1, campaign: 30) {
            let label = "trial \(trial + 1)"
            sandbox.maqet(["start", "sleepy"]).assertExit(0)
            let row = status(sandbox, "sleepy")
            let qemu = try XCTUnwrap(row["pid"] as? Int)
            let runner = try XCTUnwrap(row["runner_pid"] as? Int)
            kill(pid_t(runner), SIGSTOP)
            let ls = sandbox.maqet(["ls", "--format", "plain"])
            ls.assertExit(0)
            XCTAssertTrue(ls.stdout.hasPrefix("sleepy running \(qemu) "), "\(label): \(ls.stdout)")
            sandbox.maqet(["qmp", "sleepy", "query-status"]).assertExit(0)
            XCTAssertNotEqual(sandbox.maqet(["start", "sleepy"]).code, 0, "\(label): a second start of a running VM")
            sandbox.maqet(["stop", "sleepy", "--timeout", "2"]).assertExit(0)
            XCTAssertFalse(isAlive(qemu), label)
            XCTAssertTrue(eventually { !self.isAlive(runner) }, "\(label): the stopped runner is ended too")
            XCTAssertEqual(column(sandbox, "sleepy", "status"), "stopped", label)
            XCTAssertTrue(eventually { self.processes(of: sandbox).isEmpty }, label)
            XCTAssertFalse(FileManager.default.fileExists(atPath: runtimeDir(sandbox, id)), label)
            // The VM starts again: the lock went with its processes.
            sandbox.maqet(["start", "sleepy"]).assertExit(0)
            stopAndCheck(sandbox, "sleepy", id, trial: label)
        }
    }

    // MARK: - Stale rows: dead pids, reused pids

    /// Makes the row say `status` with its pids set to `pid` (and a stale runtime directory).
    func makeStale(_ sandbox: Sandbox, _ name: String, _ id: String, status: String, pid: Int32) throws {
        let dir = runtimeDir(sandbox, id)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: dir + "/qmp.sock", contents: Data("stale".utf8))
        let qemuPID = status == "starting" ? "NULL" : String(pid)
        _ = sqlite3(sandbox.databasePath, """
            UPDATE vm_instances SET status = '\(status)', pid = \(qemuPID), runner_pid = \(pid),
              qmp_socket_path = \(status == "starting" ? "NULL" : "'\(dir)/qmp.sock'") WHERE name = '\(name)'
            """)
    }

    func testStartingRowWithADeadOrReusedPidIsReconciledAndTheOtherProcessIsNeverSignalled() throws {
        let sandbox = makeSandbox()
        let id = insertVM(sandbox, "stale")
        let other = try unrelatedProcess()
        defer { other.terminate(); other.waitUntilExit() }

        // A dead runner pid: the first look records it.
        try makeStale(sandbox, "stale", id, status: "starting", pid: try deadPID())
        sandbox.maqet(["ls"]).assertExit(0)
        XCTAssertEqual(column(sandbox, "stale", "status"), "crashed")
        XCTAssertFalse(FileManager.default.fileExists(atPath: runtimeDir(sandbox, id)))

        // A pid that now belongs to an unrelated process, as `starting` and as `running`: every
        // command that used to refuse "still starting (by pid N)" works, and the process lives.
        let commands: [[String]] = [["stop", "stale"], ["stop", "stale", "--force"], ["status", "stale"], ["start", "stale"]]
        for status in ["starting", "running"] {
            for command in commands {
                let label = "\(status) + \(command.joined(separator: " "))"
                try makeStale(sandbox, "stale", id, status: status, pid: other.processIdentifier)
                let result = sandbox.maqet(command)
                XCTAssertEqual(result.code, 0, "\(label): \(result.stderr)")
                XCTAssertTrue(other.isRunning, "\(label): the unrelated process was signalled")
                XCTAssertFalse(statFields(other.processIdentifier)?.first == "T", "\(label): the unrelated process was stopped")
                if command[0] == "start" {
                    XCTAssertEqual(column(sandbox, "stale", "status"), "running", label)
                    stopAndCheck(sandbox, "stale", id, trial: label)
                } else {
                    XCTAssertEqual(column(sandbox, "stale", "status"), "crashed", label)
                    XCTAssertFalse(FileManager.default.fileExists(atPath: runtimeDir(sandbox, id)), label)
                }
            }
        }
        try makeStale(sandbox, "stale", id, status: "starting", pid: other.processIdentifier)
        sandbox.maqet(["rm", "stale", "--force"]).assertExit(0)
        XCTAssertEqual(column(sandbox, "stale", "status"), "")
        XCTAssertTrue(other.isRunning, "rm --force signalled the unrelated process")
    }

    // MARK: - The lock itself

    func testTheLockIsHeldExactlyWhileTheVMsProcessesLive() throws {
        let sandbox = makeSandbox()
        let id = insertVM(sandbox, "locked")
        let script = """
            local row = maqet.db:query("SELECT * FROM vm_instances WHERE name = 'locked'")[1]
            local paths = require("maqet.lib.qemu").paths(row)
            print(maqet.runner.lock_state(paths.lock))
            """
        func state() -> String {
            sandbox.runScript(script, name: "lock.lua").stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        XCTAssertEqual(state(), "free")
        sandbox.maqet(["start", "locked"]).assertExit(0)
        XCTAssertEqual(state(), "held")
        let lock = sandbox.home + "/xdg-runtime/maqet/locks/\(id).lock"
        var info = stat()
        XCTAssertEqual(lstat(lock, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o600)
        XCTAssertEqual(lstat((lock as NSString).deletingLastPathComponent, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o700)
        sandbox.maqet(["stop", "locked", "--force"]).assertExit(0)
        XCTAssertEqual(state(), "free")

        // Misuse raises, naming the function; taking it twice in one process is fine.
        let misuse = sandbox.runScript("""
            print(pcall(maqet.runner.lock, "relative.lock"))
            print(pcall(maqet.runner.lock_state, 42))
            local p = os.getenv("XDG_RUNTIME_DIR") .. "/maqet/locks/mine.lock"
            print(maqet.runner.lock(p), maqet.runner.lock(p), maqet.runner.lock_state(p), maqet.runner.unlock(p), maqet.runner.unlock(p))
            """, name: "misuse.lua")
        assertContains(misuse.stdout, "maqet.runner.lock: path must be an absolute file path")
        assertContains(misuse.stdout, "maqet.runner.lock_state")
        assertContains(misuse.stdout, "true\ttrue\tmine\ttrue\tfalse")
    }

    /// The window the lock alone cannot close: `maqet start` and its runner both SIGKILLed after
    /// QEMU was spawned and before anyone recorded it. QEMU holds the lock; the row says `starting`
    /// with no QEMU pid and a dead claimer. (The state is made from a real start whose runner is
    /// killed, then the row set back to what it said in that instant: no test can aim a kill at a
    /// window of microseconds.) The next command finds the QEMU by its sockets and records it.
    func testAStartingRowWhoseStartAndRunnerDiedBeforeRecordingQEMUIsFoundAndStopped() throws {
        let sandbox = makeSandbox()
        let id = insertVM(sandbox, "window")
        for trial in 0..<Campaign.trials(ci: 1, campaign: 10) {
            let label = "trial \(trial + 1)"
            sandbox.maqet(["start", "window"]).assertExit(0)
            let row = status(sandbox, "window")
            let qemu = try XCTUnwrap(row["pid"] as? Int)
            let runner = try XCTUnwrap(row["runner_pid"] as? Int)
            kill(pid_t(runner), SIGKILL)
            XCTAssertTrue(eventually { !self.isAlive(runner) })
            let claimer = try deadPID()
            _ = sqlite3(sandbox.databasePath, """
                UPDATE vm_instances SET status = 'starting', pid = NULL, runner_pid = \(claimer), qmp_socket_path = NULL
                WHERE name = 'window'
                """)
            let ls = sandbox.maqet(["ls", "--format", "json"])
            ls.assertExit(0)
            XCTAssertEqual(column(sandbox, "window", "status"), "running", "\(label): \(ls.stdout)")
            XCTAssertEqual(column(sandbox, "window", "pid"), String(qemu), label)
            XCTAssertEqual(status(sandbox, "window")["runner"] as? String, "missing", label)
            XCTAssertEqual(sandbox.maqet(["qmp", "window", "query-status"]).code, 0, label)
            XCTAssertNotEqual(sandbox.maqet(["start", "window"]).code, 0, "\(label): a second QEMU was started")
            XCTAssertEqual(qemus(of: sandbox, named: "window"), [pid_t(qemu)], label)
            assertContains(try String(contentsOfFile: sandbox.dataDir + "/logs/window.log", encoding: .utf8),
                           "its start and runner died before recording QEMU (pid \(qemu))")
            stopAndCheck(sandbox, "window", id, trial: label)
        }
    }

    // MARK: - Compare-and-set on the claim

    func testARunnerWhoseClaimIsGoneWritesNothingAndStopsQEMU() throws {
        let sandbox = makeSandbox()
        let id = insertVM(sandbox, "taken")
        // The row was claimed by pid 1 (not this start): the runner's first write finds the claim
        // gone, so it kills QEMU and reports ECLAIM; the row is left exactly as it was.
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'starting', runner_pid = 1 WHERE name = 'taken'")
        let before = vmRows(sandbox.databasePath, columns: ["status", "pid", "runner_pid", "qmp_socket_path"])
        let result = sandbox.runScript("""
            local qemu = require("maqet.lib.qemu")
            local row = maqet.db:query("SELECT * FROM vm_instances WHERE name = 'taken'")[1]
            local paths = qemu.paths(row)
            assert(maqet.runner.lock(paths.lock))
            local r, err, code = maqet.runner.launch{vm_name = row.name, vm_id = row.id, argv = qemu.argv(row, paths),
              dir = paths.dir, runner_qmp = paths.runner_qmp, client_qmp = paths.client_qmp,
              lock = paths.lock, claim_pid = tonumber(io.open("/proc/self/stat"):read("a"):match("^(%d+)"))}
            print(r, code, err)
            """, name: "claim.lua")
        assertContains(result.stdout + result.stderr, "nil\tECLAIM\t")
        assertContains(result.stdout, "no longer carries this start's claim")
        XCTAssertEqual(vmRows(sandbox.databasePath, columns: ["status", "pid", "runner_pid", "qmp_socket_path"]), before)
        XCTAssertEqual(qemus(of: sandbox, named: "taken"), [])
        XCTAssertFalse(FileManager.default.fileExists(atPath: runtimeDir(sandbox, id)))
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'stopped', runner_pid = NULL WHERE name = 'taken'")
    }

    func testARunnerWhoseRowWasTakenOverEndsItsQEMUAndLeavesTheRowAlone() throws {
        let sandbox = makeSandbox()
        insertVM(sandbox, "hijacked")
        sandbox.maqet(["start", "hijacked"]).assertExit(0)
        let row = status(sandbox, "hijacked")
        let qemu = try XCTUnwrap(row["pid"] as? Int)
        let runner = try XCTUnwrap(row["runner_pid"] as? Int)
        // Someone else took the row over (it names another runner): the runner's next event
        // write finds it is no longer its row, writes nothing and ends QEMU, which nobody owns.
        let other = try unrelatedProcess()
        defer { other.terminate(); other.waitUntilExit() }
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET runner_pid = \(other.processIdentifier) WHERE name = 'hijacked'")
        sandbox.maqet(["qmp", "hijacked", "stop"]).assertExit(0) // a STOP event for the runner
        XCTAssertTrue(eventually { !self.isAlive(qemu) && !self.isAlive(runner) }, "QEMU and its runner end")
        XCTAssertEqual(column(sandbox, "hijacked", "runner_pid"), String(other.processIdentifier), "the runner wrote nothing")
        XCTAssertEqual(column(sandbox, "hijacked", "status"), "running", "the runner wrote nothing")
        XCTAssertTrue(other.isRunning)
        // The next look records it (nothing of the VM lives: the lock is free).
        sandbox.maqet(["ls"]).assertExit(0)
        XCTAssertEqual(column(sandbox, "hijacked", "status"), "crashed")
        XCTAssertTrue(other.isRunning, "the process named by the row is never signalled")
        XCTAssertEqual(processes(of: sandbox), [])
    }
}
