import Foundation
import XCTest

/// pause/resume/reset, the runner's Lua hooks (scripts/lifecycle/runner.lua) and the events log,
/// with a real guestless QEMU (q35 without a disk runs no guest, but STOP, RESUME and RESET still
/// happen). Every test checks that no QEMU or runner of its sandbox is left.
final class PauseResumeTests: XCTestCase {
    var sandbox: Sandbox!

    override func setUp() {
        sandbox = Sandbox()
        XCTAssertEqual(sandbox.maqet(["ls"]).code, 0) // creates and migrates instances.db
    }

    override func tearDown() {
        assertNothingLeft(of: sandbox)
        sandbox = nil
        super.tearDown()
    }

    static let q35 = #"{"memory": "64M", "cpu": 1, "display": "none", "vga": "none", "arguments": [{"machine": "q35"}, {"accel": "kvm"}]}"#

    @discardableResult
    func insertVM(_ name: String, _ config: String = q35) -> String {
        let id = UUID().uuidString.lowercased()
        _ = sqlite3(sandbox.databasePath, "INSERT INTO vm_instances (id, name, config_data, status) VALUES ('\(id)', '\(name)', '\(config)', 'created')")
        return id
    }

    func column(_ name: String, _ column: String) -> String {
        sqlite3(sandbox.databasePath, "SELECT \(column) FROM vm_instances WHERE name = '\(name)'").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func history(_ name: String) -> String {
        (try? String(contentsOfFile: sandbox.dataDir + "/logs/\(name).log", encoding: .utf8)) ?? ""
    }

    /// The events log of `name`, each line parsed (a line that is not a JSON object fails the test).
    func events(_ name: String, file: StaticString = #filePath, line: UInt = #line) -> [[String: Any]] {
        let text = (try? String(contentsOfFile: sandbox.dataDir + "/logs/\(name).events.jsonl", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map { entry in
            let object = (try? JSONSerialization.jsonObject(with: Data(entry.utf8))) as? [String: Any]
            XCTAssertNotNil(object, "not a JSON object: \(entry)", file: file, line: line)
            return object ?? [:]
        }
    }

    // MARK: - Tests

    func testPauseResumeResetKeepTheRowTrueAndStopEndsAPausedVM() throws {
        let id = insertVM("g")
        sandbox.maqet(["start", "g"]).assertExit(0)

        let paused = sandbox.maqet(["pause", "g"])
        paused.assertExit(0)
        XCTAssertEqual(paused.stdout, "g: paused (status paused)\n")
        XCTAssertEqual(column("g", "status"), "paused")
        XCTAssertEqual(sandbox.maqet(["ls", "--format", "plain"]).stdout.split(separator: " ").prefix(2).joined(separator: " "), "g paused")
        let qmpStatus = sandbox.maqet(["qmp", "g", "query-status", "--compact"])
        qmpStatus.assertExit(0)
        assertContains(qmpStatus.stdout, #""status":"paused""#)

        // Wrong state: one clear line, exit 3, nothing changed.
        let again = sandbox.maqet(["pause", "g"])
        again.assertExit(3)
        XCTAssertEqual(again.stderr, "maqet: VM 'g' is already paused; resume it with 'maqet resume g'\n")
        XCTAssertEqual(column("g", "status"), "paused")

        let resumed = sandbox.maqet(["resume", "g", "--format", "json"])
        resumed.assertExit(0)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(resumed.stdout.utf8)) as? [String: Any])
        XCTAssertEqual(object["status"] as? String, "running")
        XCTAssertEqual(column("g", "status"), "running")
        let notPaused = sandbox.maqet(["resume", "g"])
        notPaused.assertExit(3)
        XCTAssertEqual(notPaused.stderr, "maqet: cannot resume VM 'g': it is not paused (status running)\n")

        let reset = sandbox.maqet(["reset", "g"])
        reset.assertExit(0)
        XCTAssertEqual(reset.stdout, "g: hard reset (status running)\n")
        XCTAssertTrue(eventually { self.history("g").contains("reset (by the host, reason host-qmp-system-reset)") }, history("g"))

        // The events log: one JSON object per line, time first, the VM, every event and state.
        let log = events("g")
        XCTAssertTrue(log.allSatisfy { $0["vm"] as? String == "g" && $0["id"] as? String == id && ($0["time"] as? String)?.hasSuffix("Z") == true })
        let names = log.map { $0["event"] as? String ?? "?" }
        for name in ["STOP", "RESUME", "RESET", "state"] { XCTAssertTrue(names.contains(name), "\(name) missing from \(names)") }
        XCTAssertTrue(log.contains { $0["event"] as? String == "state" && $0["status"] as? String == "paused" && $0["reason"] as? String == "STOP" })
        let mode = try FileManager.default.attributesOfItem(atPath: sandbox.dataDir + "/logs/g.events.jsonl")[.posixPermissions] as? Int
        XCTAssertEqual(mode, 0o600)

        // A paused guest cannot act on ACPI: stop ends it with quit at once.
        sandbox.maqet(["pause", "g"]).assertExit(0)
        let stop = sandbox.maqet(["stop", "g"])
        stop.assertExit(0)
        XCTAssertEqual(stop.stdout, "g: stopped (stopped by: quit)\n")
        XCTAssertEqual(column("g", "status"), "stopped")

        let stopped = sandbox.maqet(["pause", "g"])
        stopped.assertExit(3)
        XCTAssertEqual(stopped.stderr, "maqet: cannot pause VM 'g': it is not running (status stopped); start it with 'maqet start g'\n")
        sandbox.maqet(["reset", "g"]).assertExit(3)
        let missing = sandbox.maqet(["resume", "nope"])
        missing.assertExit(5)
        XCTAssertEqual(missing.stderr, "maqet: no VM named 'nope' (see 'maqet ls')\n")
    }

    func testEventsFromOutsideAndAStartWithDashSAreRecorded() {
        insertVM("outside")
        sandbox.maqet(["start", "outside"]).assertExit(0)
        // QMP stop/cont sent by someone else: the runner's STOP/RESUME hooks keep the row true.
        sandbox.maqet(["qmp", "outside", "stop"]).assertExit(0)
        XCTAssertTrue(eventually { self.column("outside", "status") == "paused" })
        sandbox.maqet(["qmp", "outside", "cont"]).assertExit(0)
        XCTAssertTrue(eventually { self.column("outside", "status") == "running" })
        sandbox.maqet(["stop", "outside", "--force"]).assertExit(0)

        // QEMU started with -S has not started its CPUs: the row says paused from the start.
        insertVM("frozen", #"{"memory": "64M", "display": "none", "vga": "none", "arguments": [{"machine": "q35"}, {"accel": "kvm"}, "S"]}"#)
        sandbox.maqet(["start", "frozen"]).assertExit(0)
        XCTAssertEqual(column("frozen", "status"), "paused")
        assertContains(history("frozen"), "(paused: QEMU status prelaunch)")
        sandbox.maqet(["resume", "frozen"]).assertExit(0)
        XCTAssertEqual(column("frozen", "status"), "running")
        sandbox.maqet(["stop", "frozen", "--force"]).assertExit(0)
    }

    func testTheLuaAPIPausesResumesAndResets() {
        insertVM("api")
        let result = sandbox.runScript("""
            assert(maqet.vm.start("api"))
            local r = assert(maqet.vm.pause("api"))
            print(r.status, maqet.vm.get("api").status)
            print(select(3, maqet.vm.pause("api")))
            print(assert(maqet.vm.resume("api")).status)
            print(select(3, maqet.vm.resume("api")))
            print(assert(maqet.vm.reset("api")).status)
            assert(maqet.vm.stop("api", {force = true}))
            print(select(3, maqet.vm.reset("api")))
            print(select(3, maqet.vm.pause("nope")))
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "paused\tpaused\nEPAUSED\nrunning\nENOTPAUSED\nrunning\nENOTRUNNING\nENOVM\n")
    }

    func testTheLuaEventIteratorReadsPauseAndResume() {
        insertVM("it")
        let result = sandbox.runScript("""
            assert(maqet.vm.start("it"))
            -- From the end: only what the pause and resume below write.
            local next_event = assert(maqet.vm.events({"it"}, {timeout_ms = 20000}))
            assert(maqet.vm.pause("it"))
            assert(maqet.vm.resume("it"))
            local seen = {}
            for e, line in next_event do
                assert(type(line) == "string" and maqet.json.decode(line).event == e.event)
                if e.vm == "it" and (e.event == "STOP" or e.event == "RESUME") then
                    seen[#seen + 1] = e.event
                elseif e.vm == "it" and e.event == "state" then
                    seen[#seen + 1] = e.status .. " (" .. e.reason .. ")"
                end
                if #seen == 4 then break end
            end
            print(table.concat(seen, ", "))
            assert(maqet.vm.stop("it", {force = true}))
            -- From the start, with a timeout of 0: the whole log once, then the loop ends.
            local count, first = 0, nil
            for e in assert(maqet.vm.events(nil, {from = "start", timeout_ms = 0})) do
                count = count + 1
                first = first or e
            end
            print(count, first.event, first.status, first.reason)
            print(select(3, maqet.vm.events({"nope"})))
            print(pcall(maqet.vm.events, {"it"}, {from = "middle"}))
            """)
        result.assertExit(0)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(lines.first, "STOP, paused (STOP), RESUME, running (RESUME)", result.stdout + result.stderr)
        // Every line of the log (the start, pause, resume and the stop), the first being the start.
        let log = events("it")
        XCTAssertGreaterThanOrEqual(log.count, 6)
        XCTAssertEqual(lines.count > 1 ? lines[1] : "", "\(log.count)\tstate\trunning\tstarted")
        XCTAssertEqual(lines.count > 2 ? lines[2] : "", "ENOVM")
        assertContains(lines.count > 3 ? lines[3] : "", "false")
        assertContains(result.stdout, "opts.from must be \"end\" or \"start\", got middle")
    }

    /// maqet.history.rotate is the one rotation of the VM logs (events log, console log).
    func testHistoryRotateSaysWhatItDid() throws {
        let dir = sandbox.home + "/logs"
        try FileManager.default.createDirectory(atPath: dir + "/blocked.log.1", withIntermediateDirectories: true)
        try "x".write(toFile: dir + "/blocked.log.1/keep", atomically: true, encoding: .utf8)
        let result = sandbox.runScript("""
            local dir = ...
            for _, name in ipairs({"small.log", "big.log", "blocked.log"}) do
                local f = assert(io.open(dir .. "/" .. name, "wb"))
                f:write(name == "small.log" and "12345" or "1234567890")
                f:close()
            end
            print(maqet.history.rotate(dir .. "/small.log", 8))
            print(maqet.history.rotate(dir .. "/big.log", 8))
            print(maqet.history.rotate(dir .. "/missing.log", 8))
            local ok, err, code = maqet.history.rotate(dir .. "/blocked.log", 8)
            print(ok, code, err)
            """, args: [dir])
        result.assertExit(0)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(Array(lines.prefix(3)), ["false", "true", "false"], result.stdout + result.stderr)
        XCTAssertEqual(try String(contentsOfFile: dir + "/big.log.1", encoding: .utf8), "1234567890")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/big.log"))
        XCTAssertEqual(try String(contentsOfFile: dir + "/small.log", encoding: .utf8), "12345")
        XCTAssertTrue((lines.count > 3 ? lines[3] : "").hasPrefix("nil\tEIO\tmaqet.history.rotate: cannot rename \(dir)/blocked.log to \(dir)/blocked.log.1: "), result.stdout)
        XCTAssertEqual(try String(contentsOfFile: dir + "/blocked.log", encoding: .utf8), "1234567890") // unchanged
    }

    func testAFailingRunnerHookFallsBackToTheDefaultsAndIsLogged() throws {
        let scripts = sandbox.home + "/scripts"
        try FileManager.default.createDirectory(atPath: scripts + "/lifecycle", withIntermediateDirectories: true)
        try """
            return {
                on_ready = function() error("on_ready is broken") end,
                on_event = function() error("on_event is broken") end,
                on_exit = function() error("on_exit is broken") end,
            }
            """.write(toFile: scripts + "/lifecycle/runner.lua", atomically: true, encoding: .utf8)
        insertVM("hooked")
        sandbox.maqet(["--scripts-dir", scripts, "start", "hooked"]).assertExit(0)
        XCTAssertEqual(column("hooked", "status"), "running")
        sandbox.maqet(["qmp", "hooked", "quit"]).assertExit(0)
        XCTAssertTrue(eventually { self.column("hooked", "status") == "stopped" && self.history("hooked").contains("stopped: ") })
        let text = history("hooked")
        assertContains(text, "runner hook on_ready failed: ")
        assertContains(text, "runner.lua:2: on_ready is broken")
        assertContains(text, "runner hook on_event failed on SHUTDOWN: ")
        assertContains(text, "runner hook on_exit failed: ")
        assertContains(text, "stopped: QEMU exited with code 0 after SHUTDOWN (reason host-qmp-quit, by the host)")

        // A runner.lua that does not even load: the defaults record everything.
        try "return {".write(toFile: scripts + "/lifecycle/runner.lua", atomically: true, encoding: .utf8)
        sandbox.maqet(["--scripts-dir", scripts, "start", "hooked"]).assertExit(0)
        XCTAssertEqual(column("hooked", "status"), "running")
        sandbox.maqet(["stop", "hooked", "--force"]).assertExit(0)
        XCTAssertEqual(column("hooked", "status"), "stopped")
        assertContains(history("hooked"), "runner hooks not loaded (")
    }

    func testAnEditedRunnerLuaDecidesAndCanEndQEMU() throws {
        // A site policy in the user's config directory: a VM that gets paused is ended.
        let scripts = sandbox.home + "/xdg-config/maqet/scripts/lifecycle"
        try FileManager.default.createDirectory(atPath: scripts, withIntermediateDirectories: true)
        try """
            return {
                on_ready = function(ctx)
                    maqet.db:exec("UPDATE vm_instances SET status = 'running', pid = ?, runner_pid = ?, qmp_socket_path = ? WHERE id = ?",
                        ctx.qemu_pid, ctx.runner_pid, ctx.paths.client_qmp, ctx.vm_id)
                    maqet.history.append(ctx.paths.history_log, "custom start of " .. ctx.vm_name .. " (" .. ctx.qemu_status .. ")")
                    return true
                end,
                on_event = function(ctx, event)
                    if event.name == "STOP" then return "quit" end
                end,
                on_exit = function(ctx, exit)
                    maqet.db:exec("UPDATE vm_instances SET status = 'stopped', pid = NULL, runner_pid = NULL, qmp_socket_path = NULL WHERE id = ? AND runner_pid = ?",
                        ctx.vm_id, ctx.runner_pid)
                    maqet.history.append(ctx.paths.history_log, "custom end: QEMU " .. exit.description)
                end,
            }
            """.write(toFile: scripts + "/runner.lua", atomically: true, encoding: .utf8)
        insertVM("site")
        sandbox.maqet(["start", "site"]).assertExit(0)
        XCTAssertEqual(column("site", "status"), "running")
        assertContains(history("site"), "custom start of site (running)")
        sandbox.maqet(["qmp", "site", "stop"]).assertExit(0)
        XCTAssertTrue(eventually { self.column("site", "status") == "stopped" && self.history("site").contains("custom end:") }, history("site"))
        assertContains(history("site"), "custom end: QEMU exited with code 0")
        XCTAssertEqual(column("site", "pid"), "")
    }

    func testTheEventsLogIsRotatedWhenARunnerStarts() throws {
        insertVM("big")
        let logs = sandbox.dataDir + "/logs"
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        let old = String(repeating: "{\"event\":\"old\"}\n", count: 70_000) // over 1 MiB
        try old.write(toFile: logs + "/big.events.jsonl", atomically: true, encoding: .utf8)
        sandbox.maqet(["start", "big"]).assertExit(0)
        sandbox.maqet(["stop", "big", "--force"]).assertExit(0)
        XCTAssertEqual(try String(contentsOfFile: logs + "/big.events.jsonl.1", encoding: .utf8), old)
        let fresh = events("big")
        XCTAssertEqual(fresh.first?["event"] as? String, "state")
        XCTAssertEqual(fresh.first?["status"] as? String, "running")
        XCTAssertEqual(fresh.last?["status"] as? String, "stopped")
    }

    func testThePanicDeviceAndActionOnTheCommandLine() {
        func command(_ name: String, _ config: String) -> String {
            insertVM(name, config)
            let result = sandbox.maqet(["show-cmd", name])
            result.assertExit(0)
            return result.stdout
        }
        let q35 = command("q", #"{"arguments": [{"machine": "q35"}]}"#)
        assertContains(q35, " -device pvpanic -action panic=shutdown ")
        let pause = command("p", #"{"on_panic": "pause", "arguments": [{"machine": "pc-q35-7.2"}]}"#)
        assertContains(pause, " -device pvpanic -action panic=pause ")
        XCTAssertFalse(command("n", #"{"arguments": [{"machine": "none"}]}"#).contains("pvpanic"))
        XCTAssertFalse(command("m", #"{"arguments": [{"machine": "microvm"}]}"#).contains("pvpanic"))
        XCTAssertFalse(command("off", #"{"panic_device": false, "arguments": [{"machine": "q35"}]}"#).contains("pvpanic"))
        let own = command("own", #"{"arguments": [{"machine": "q35"}, {"device": "pvpanic,ioport=1285"}]}"#)
        XCTAssertEqual(own.components(separatedBy: "pvpanic").count, 2, own) // only the user's device
        assertContains(own, " -action panic=shutdown ")

        // Bad values: one line naming the file and key, exit 64, nothing added.
        let bad = sandbox.write("bad.yaml", "name: bad\non_panic: reboot\n")
        let refused = sandbox.maqet(["add", bad])
        refused.assertExit(64)
        XCTAssertEqual(refused.stderr, "maqet: \(bad): on_panic: 'reboot' is not one of shutdown, pause, exit-failure, none\n")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM vm_instances WHERE name = 'bad'").trimmingCharacters(in: .whitespacesAndNewlines), "0")
        let device = sandbox.write("dev.yaml", "name: dev\npanic_device: yes\n")
        let refusedDevice = sandbox.maqet(["add", device])
        refusedDevice.assertExit(64)
        assertContains(refusedDevice.stderr, "panic_device: must be true or false")
    }

    func testEventsFollowsTheLogsOfRunningAndLaterVMs() throws {
        insertVM("first")
        sandbox.maqet(["start", "first"]).assertExit(0)
        sandbox.maqet(["stop", "first", "--force"]).assertExit(0) // an old entry events must not print

        // `maqet events --format json` in the background, like a user in another terminal.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: maqetBinary)
        process.arguments = ["events", "--format", "json", "--maqet-data-dir", sandbox.dataDir]
        process.environment = testEnvironment(home: sandbox.home)
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate() }; process.waitUntilExit() }
        let lines = LineCollector(out.fileHandleForReading)

        // A known VM: events starts at the end of its log, so what happens after it has looked
        // is printed; pause and resume until it is (it may still be starting up at first).
        sandbox.maqet(["start", "first"]).assertExit(0)
        XCTAssertTrue(eventually(20) {
            self.sandbox.maqet(["pause", "first"]).assertExit(0)
            self.sandbox.maqet(["resume", "first"]).assertExit(0)
            return lines.all.contains { $0.contains("\"vm\":\"first\"") && $0.contains("\"status\":\"paused\"") }
        }, lines.all.joined(separator: "\n"))
        // A VM added later: followed from the beginning of its log.
        insertVM("later")
        sandbox.maqet(["start", "later"]).assertExit(0)
        sandbox.maqet(["pause", "later"]).assertExit(0)
        XCTAssertTrue(eventually(20) { lines.all.contains { $0.contains("\"vm\":\"later\"") && $0.contains("\"status\":\"paused\"") } }, lines.all.joined(separator: "\n"))
        XCTAssertTrue(lines.all.contains { $0.contains("\"vm\":\"later\"") && $0.contains("\"reason\":\"started\"") }, lines.all.joined(separator: "\n"))
        let objects = lines.all.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
        XCTAssertEqual(objects.count, lines.all.count, "every line is a JSON object")
        // From the end: the first run's entries (its "stopped by: SIGKILL") are not repeated.
        XCTAssertFalse(lines.all.contains { $0.contains("stopped by: SIGKILL") }, lines.all.joined(separator: "\n"))
        sandbox.maqet(["stop", "--all", "--force"]).assertExit(0)

        let text = sandbox.maqet(["events", "nope"])
        text.assertExit(5)
        XCTAssertEqual(text.stderr, "maqet: no VM named 'nope' (see 'maqet ls')\n")
    }
}

/// Collects the lines a child writes on a pipe, on a background thread.
final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    private var partial = ""

    init(_ handle: FileHandle) {
        handle.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self else { return }
            if data.isEmpty { handle.readabilityHandler = nil; return }
            self.lock.lock()
            self.partial += String(decoding: data, as: UTF8.self)
            while let newline = self.partial.firstIndex(of: "\n") {
                self.lines.append(String(self.partial[..<newline]))
                self.partial = String(self.partial[self.partial.index(after: newline)...])
            }
            self.lock.unlock()
        }
    }

    var all: [String] {
        lock.lock()
        defer { lock.unlock() }
        return lines
    }
}
