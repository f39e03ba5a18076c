import Foundation
import MaqetCore
import XCTest

/// `maqet.qmp` and `maqet qmp` against a real, guestless QEMU with two monitors.
final class QMPTests: XCTestCase {
    var qemu: GuestlessQEMU!
    var sandbox: Sandbox!

    override func setUpWithError() throws {
        qemu = try GuestlessQEMU()
        sandbox = Sandbox()
    }

    override func tearDown() {
        qemu?.stop()
        qemu = nil
        sandbox = nil
    }

    /// Runs a Lua script with the QEMU's two monitor sockets as arguments.
    func lua(_ source: String) -> CLIResult {
        sandbox.runScript("local M1, M2 = ...\n" + source, args: [qemu.monitor1, qemu.monitor2])
    }

    func testConnectGreetingAndQueryStatus() {
        let result = lua("""
            local conn <close> = assert(maqet.qmp.connect(M1, {timeout_ms = 5000}))
            local g = conn:greeting()
            print(math.type(g.version.qemu.major), type(g.version.package), type(g.capabilities))
            local status = assert(conn:execute("query-status"))
            print(status.status, status.running)
            print(assert(conn:execute("query-name")).name)
            print(tostring(conn))
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "integer\tstring\ttable\nrunning\ttrue\nqmptest\nmaqet.qmp\n")
    }

    func testQMPErrorsReturnDescriptionAndClass() {
        let result = lua("""
            local conn <close> = assert(maqet.qmp.connect(M1))
            print(conn:execute("no-such-command"))
            print(conn:execute("device_del", {id = "missing0"}))
            print(conn:execute("query-status", {bogus = 1}))
            -- The connection is still usable after errors.
            print(assert(conn:execute("query-status")).status)
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, """
            nil\tThe command no-such-command has not been found\tCommandNotFound
            nil\tDevice 'missing0' not found\tDeviceNotFound
            nil\tParameter 'bogus' is unexpected\tGenericError
            running

            """)
    }

    func testLargeSchemaReplyThroughLuaAndCLI() throws {
        let result = lua("""
            local conn <close> = assert(maqet.qmp.connect(M1))
            local schema = assert(conn:execute("query-qmp-schema"))
            local text = maqet.json.encode(schema)
            print(#schema > 500, #text > 65536)
            -- A command after the big reply still gets its own reply.
            print(assert(conn:execute("query-status")).status)
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "true\ttrue\nrunning\n")

        insertVM("web", socket: qemu.monitor2)
        let cli = sandbox.maqet(["qmp", "web", "query-qmp-schema"])
        cli.assertExit(0)
        XCTAssertGreaterThan(cli.stdout.utf8.count, 65536)
        guard case .array(let items) = try JSONValue.parse(cli.stdout) else { return XCTFail("not an array") }
        XCTAssertGreaterThan(items.count, 500)
        let compact = sandbox.maqet(["qmp", "--compact", "web", "query-qmp-schema"])
        compact.assertExit(0)
        XCTAssertEqual(compact.stdout.filter { $0 == "\n" }.count, 1)
        XCTAssertEqual(try JSONValue.parse(compact.stdout), .array(items))
    }

    func testEventsBetweenRepliesAreKeptInOrder() {
        let result = lua("""
            local conn <close> = assert(maqet.qmp.connect(M1))
            assert(conn:execute("stop"))
            assert(conn:execute("cont"))
            assert(conn:execute("query-status"))
            assert(conn:execute("query-qmp-schema"))
            local a = assert(conn:next_event(0))
            local b = assert(conn:next_event(0))
            print(a.event, b.event, next(a.data) == nil, math.type(a.timestamp))
            print(a.timestamp > 1e9, b.timestamp >= a.timestamp)
            print(conn:next_event(100))
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "STOP\tRESUME\ttrue\tfloat\ntrue\ttrue\nnil\tQMP: no event within 100 ms\tETIMEDOUT\n")
    }

    func testQuitReturnsSuccessAndQEMUExits() {
        let result = lua("""
            local conn <close> = assert(maqet.qmp.connect(M1))
            local r = assert(conn:execute("quit"))
            print(type(r), next(r))
            local ev = assert(conn:next_event(2000))
            print(ev.event, ev.data.reason)
            print(select(3, conn:next_event(2000)))
            print(select(3, conn:execute("query-status")))
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "table\tnil\nSHUTDOWN\thost-qmp-quit\nEPIPE\nEPIPE\n")
        let exit = qemu.process.wait(timeoutMs: 5000)
        XCTAssertEqual(exit, ExitInfo(code: 0, signal: nil))
    }

    func testConnectFailures() {
        let long = "/tmp/" + String(repeating: "x", count: 120) + ".sock"
        let script = sandbox.runScript("""
            local missing, long = ...
            print(maqet.qmp.connect(missing))
            local conn, msg, code = maqet.qmp.connect(long)
            print(conn, code, msg:find("longer than 107 bytes", 1, true) ~= nil)
            """, args: [qemu.dir.file("missing.sock"), long])
        script.assertExit(0)
        XCTAssertEqual(script.stdout, """
            nil\tconnect \(qemu.dir.file("missing.sock")): No such file or directory\tENOENT
            nil\tENAMETOOLONG\ttrue

            """)
    }

    func testGreetingTimeoutAgainstSilentPeer() {
        // A listening socket that accepts nothing and never sends a greeting: something QEMU
        // does not do on demand, so a plain socket plays it.
        let peer = FakeQMPPeer()
        defer { peer.finish() }
        let result = sandbox.runScript("""
            local conn, msg, code = maqet.qmp.connect(..., {timeout_ms = 300})
            print(conn, msg, code)
            """, args: [peer.path])
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "nil\tQMP: timed out waiting for the greeting\tETIMEDOUT\n")
    }

    func testTwoConnectionsOnTwoMonitors() {
        let result = lua("""
            local a <close> = assert(maqet.qmp.connect(M1))
            local b <close> = assert(maqet.qmp.connect(M2))
            print(assert(a:execute("query-status")).status, assert(b:execute("query-status")).status)
            assert(a:execute("stop"))
            print(assert(b:execute("query-status")).status)
            -- Events go to every monitor.
            print(assert(a:next_event(2000)).event, assert(b:next_event(2000)).event)
            assert(b:execute("cont"))
            print(assert(a:execute("query-status")).status, assert(a:next_event(2000)).event)
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "running\trunning\npaused\nSTOP\tSTOP\nrunning\tRESUME\n")
    }

    func testScriptTimeoutStopsAWaitForEvents() {
        let result = sandbox.runScript("""
            local conn <close> = assert(maqet.qmp.connect(...))
            conn:next_event() -- no event comes: waits until --timeout stops the script
            print("not reached")
            """, options: ["--timeout", "0.5"], args: [qemu.monitor1])
        result.assertExit(124)
        XCTAssertEqual(result.stdout, "")
        // The monitor is still usable by others.
        let after = lua("print(assert(assert(maqet.qmp.connect(M1)):execute('query-status')).status)")
        XCTAssertEqual(after.stdout, "running\n")
    }

    func testMisuseRaisesNamingTheFunction() {
        let result = lua("""
            local conn = assert(maqet.qmp.connect(M1))
            local function err(f, ...) local ok, e = pcall(f, ...); print((e:gsub("^[^:]*:%d+: ", ""))) end
            err(conn.execute, conn, 42)
            err(conn.execute, conn, "query-status", "x")
            err(conn.execute, conn, "query-status", {1, 2})
            err(conn.execute, conn, "query-status", nil, {timeout_ms = "soon"})
            err(conn.next_event, conn, -1)
            err(maqet.qmp.connect, nil)
            err(maqet.qmp.connect, M1, "fast")
            do local c <close> = assert(maqet.qmp.connect(M2)) end
            conn:close(); conn:close()
            print(tostring(conn))
            err(conn.execute, conn, "query-status")
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, """
            conn:execute: command must be a string, got number
            conn:execute: args must be a table, got string
            conn:execute: args must be a table of named arguments (a JSON object), got an array
            conn:execute: field 'timeout_ms' must be an integer, got string
            conn:next_event: timeout_ms must be between 0 and 2147483647
            maqet.qmp.connect: path must be a string, got nil
            maqet.qmp.connect: opts must be a table, got string
            maqet.qmp (closed)
            conn:execute: the maqet.qmp handle is closed

            """)
    }

    // MARK: maqet qmp

    /// Adds a VM row whose QMP socket is `socket` (nil = NULL) through `maqet run`. A row with
    /// the guestless QEMU's socket gets its pid too, so `maqet qmp` (which reconciles the row
    /// first) finds the VM's QEMU alive.
    func insertVM(_ name: String, socket: String?, status: String = "running") {
        let pid = socket == qemu.monitor2 ? String(qemu.process.pid) : "0"
        let result = sandbox.runScript("""
            local name, status, pid, socket = ...
            pid = tonumber(pid); if pid == 0 then pid = nil end
            assert(maqet.db:exec("INSERT INTO vm_instances (id, name, config_data, status, qmp_socket_path, pid) VALUES (?, ?, '{}', ?, ?, ?)",
              "id-" .. name, name, status, socket, pid))
            """, name: "insert.lua", args: [name, status, pid] + (socket.map { [$0] } ?? []))
        result.assertExit(0)
    }

    func testQmpCommandPrintsTheReturnValue() throws {
        insertVM("web", socket: qemu.monitor2)
        let status = sandbox.maqet(["qmp", "web", "query-status"])
        status.assertExit(0)
        XCTAssertEqual(status.stdout, "{\n  \"status\": \"running\",\n  \"singlestep\": false,\n  \"running\": true\n}\n")
        let compact = sandbox.maqet(["qmp", "web", "query-status", "--compact"])
        XCTAssertEqual(compact.stdout, #"{"status":"running","singlestep":false,"running":true}"# + "\n")
        let block = sandbox.maqet(["qmp", "web", "query-block"])
        block.assertExit(0)
        XCTAssertEqual(block.stdout, "[]\n")
        let powerdown = sandbox.maqet(["qmp", "web", "system_powerdown"])
        powerdown.assertExit(0)
        XCTAssertEqual(powerdown.stdout, "{}\n")
    }

    func testQmpJSONAndKeyValueArguments() throws {
        insertVM("web", socket: qemu.monitor2)
        // One JSON object.
        let json = sandbox.maqet(["qmp", "web", "qom-get", #"{"path": "/machine", "property": "type"}"#])
        json.assertExit(0)
        XCTAssertEqual(json.stdout, "\"none-machine\"\n")
        // key=value: plain strings...
        let strings = sandbox.maqet(["qmp", "web", "qom-get", "path=/machine", "property=type"])
        strings.assertExit(0)
        XCTAssertEqual(strings.stdout, "\"none-machine\"\n")
        // ...numbers (a string "500" would be refused: expects uint64)...
        sandbox.maqet(["qmp", "web", "migrate-set-parameters", "downtime-limit=500"]).assertExit(0)
        // ...and arrays of objects with booleans.
        sandbox.maqet(["qmp", "web", "migrate-set-capabilities", #"capabilities=[{"capability": "events", "state": true}]"#]).assertExit(0)
        let parameters = sandbox.maqet(["qmp", "web", "query-migrate-parameters", "--compact"])
        assertContains(parameters.stdout, #""downtime-limit":500"#)
        let capabilities = sandbox.maqet(["qmp", "web", "query-migrate-capabilities", "--compact"])
        guard case .array(let items) = try JSONValue.parse(capabilities.stdout) else { return XCTFail(capabilities.stdout) }
        let events = items.first { item in
            if case .object(let fields) = item { return fields.contains { $0.key == "capability" && $0.value == .string("events") } }
            return false
        }
        guard case .object(let fields)? = events else { return XCTFail(capabilities.stdout) }
        XCTAssertEqual(fields.first { $0.key == "state" }?.value, .bool(true))
        // A quoted JSON string stays a string; a value with spaces is a string too.
        let hmp = sandbox.maqet(["qmp", "web", "human-monitor-command", "command-line=info name"])
        hmp.assertExit(0)
        XCTAssertEqual(hmp.stdout, "\"qmptest\\r\\n\"\n")
        let quoted = sandbox.maqet(["qmp", "web", "human-monitor-command", #"command-line="info name""#])
        XCTAssertEqual(quoted.stdout, hmp.stdout)
    }

    func testQmpUnknownVMExits5() {
        insertVM("web", socket: qemu.monitor2)
        let result = sandbox.maqet(["qmp", "nope", "query-status"])
        result.assertExit(5)
        XCTAssertEqual(result.stderr, "maqet: no VM named 'nope' (see 'maqet ls')\n")
        XCTAssertEqual(result.stdout, "")
    }

    func testQmpVMThatIsNotRunningExits1() {
        insertVM("off", socket: nil, status: "stopped")
        insertVM("stale", socket: qemu.dir.file("gone.sock"))
        let off = sandbox.maqet(["qmp", "off", "query-status"])
        off.assertExit(1)
        XCTAssertEqual(off.stderr, "maqet: VM 'off' is not running\n")
        let stale = sandbox.maqet(["qmp", "stale", "query-status"])
        stale.assertExit(1)
        XCTAssertEqual(stale.stderr, "maqet: VM 'stale' is not running\n")
        // The row said running without a live QEMU: the truth was recorded first.
        let verbose = sandbox.maqet(["qmp", "-v", "stale", "query-status"])
        verbose.assertExit(1)
        assertContains(verbose.stderr, "VM 'stale': its status is crashed")
    }

    func testQmpErrorExits1() {
        insertVM("web", socket: qemu.monitor2)
        let generic = sandbox.maqet(["qmp", "web", "query-status", "bogus=1"])
        generic.assertExit(1)
        XCTAssertEqual(generic.stderr, "maqet: QMP error GenericError: Parameter 'bogus' is unexpected\n")
        XCTAssertEqual(generic.stdout, "")
        let unknown = sandbox.maqet(["qmp", "web", "no-such-command"])
        unknown.assertExit(1)
        XCTAssertEqual(unknown.stderr, "maqet: QMP error CommandNotFound: The command no-such-command has not been found\n")
    }

    func testQmpBadArgumentsAreUsageErrors() {
        insertVM("web", socket: qemu.monitor2)
        for arguments in [["x"], ["{not json"], ["[1]"], ["a=1", "a=2"], ["=1"]] {
            let result = sandbox.maqet(["qmp", "web", "query-status"] + arguments)
            result.assertExit(64)
        }
        sandbox.maqet(["qmp", "--timeout", "0", "web", "query-status"]).assertExit(64)
    }
}

/// `QMPClient` used directly, as the per-VM runner does.
final class QMPClientTests: XCTestCase {
    var qemu: GuestlessQEMU!

    override func setUpWithError() throws {
        qemu = try GuestlessQEMU()
    }

    override func tearDown() {
        qemu?.stop()
        qemu = nil
    }

    func testPollAndDrainEventsSentToAnotherMonitor() throws {
        let watcher = try QMPClient(path: qemu.monitor1, timeoutMs: 20_000)
        let actor = try QMPClient(path: qemu.monitor2, timeoutMs: 20_000)
        XCTAssertEqual(try watcher.drainEvents().count, 0)
        _ = try actor.execute("stop")
        _ = try actor.execute("cont")
        var names: [String] = []
        let deadline = monotonicMs() + 5000
        while names.count < 2 && monotonicMs() < deadline {
            var entry = pollfd(fd: watcher.fileDescriptor, events: Int16(POLLIN), revents: 0)
            guard poll(&entry, 1, 1000) > 0 else { continue }
            names += try watcher.drainEvents().map(\.name)
        }
        XCTAssertEqual(names, ["STOP", "RESUME"])
        XCTAssertNil(try watcher.nextEvent(timeoutMs: 0))
    }

    func testQuitThenEOF() throws {
        let client = try QMPClient(path: qemu.monitor1, timeoutMs: 20_000)
        XCTAssertEqual(try client.execute("quit"), .object([]))
        XCTAssertEqual(qemu.process.wait(timeoutMs: 5000), ExitInfo(code: 0, signal: nil))
        let event = try client.nextEvent(timeoutMs: 1000)
        XCTAssertEqual(event?.name, "SHUTDOWN")
        XCTAssertThrowsError(try client.drainEvents()) { error in
            XCTAssertEqual((error as? QMPError)?.codeName, "EPIPE")
        }
        XCTAssertTrue(client.isClosed)
        XCTAssertThrowsError(try client.execute("query-status")) { error in
            XCTAssertEqual((error as? QMPError)?.codeName, "EPIPE")
        }
    }

    func testCommandFailedCarriesTheClass() throws {
        let client = try QMPClient(path: qemu.monitor1, timeoutMs: 20_000)
        XCTAssertThrowsError(try client.execute("device_del", arguments: .object([("id", .string("x"))]))) { error in
            guard case let .commandFailed(command, errorClass, description)? = error as? QMPError else { return XCTFail("\(error)") }
            XCTAssertEqual(command, "device_del")
            XCTAssertEqual(errorClass, "DeviceNotFound")
            XCTAssertEqual(description, "Device 'x' not found")
            XCTAssertEqual((error as? QMPError)?.codeName, "DeviceNotFound")
        }
        client.close()
        XCTAssertTrue(client.isClosed)
        XCTAssertEqual(client.fileDescriptor, -1)
    }

    func testSocketPathTooLong() {
        let path = "/tmp/" + String(repeating: "y", count: 103) // 108 bytes
        XCTAssertThrowsError(try QMPClient(path: path)) { error in
            XCTAssertEqual((error as? QMPError)?.codeName, "ENAMETOOLONG")
        }
    }

    // MARK: A fake peer for faults QEMU does not produce on demand

    func testFramingAcrossPartialReadsAndSeveralMessagesPerRead() throws {
        let peer = FakeQMPPeer()
        defer { peer.finish() }
        peer.serve { fd in
            // The greeting in three pieces.
            let greeting = Array(FakeQMPPeer.greeting)
            FakeQMPPeer.write(fd, String(greeting[0..<10]))
            usleep(20_000)
            FakeQMPPeer.write(fd, String(greeting[10..<40]))
            usleep(20_000)
            FakeQMPPeer.write(fd, String(greeting[40...]))
            guard let capabilities = FakeQMPPeer.readLine(fd) else { return }
            FakeQMPPeer.write(fd, "{\"return\": {}, \"id\": \(FakeQMPPeer.id(of: capabilities))}\r\n")
            guard let command = FakeQMPPeer.readLine(fd) else { return }
            let id = FakeQMPPeer.id(of: command)
            // A stale reply, two events and the reply in one write, the reply split in the middle.
            let big = String(repeating: "z", count: 300_000)
            let text = "{\"return\": 1, \"id\": \"old\"}\r\n"
                + "{\"event\": \"A\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 500000}}\r\n"
                + "{\"event\": \"B\", \"data\": {\"n\": 2}, \"timestamp\": {\"seconds\": 2, \"microseconds\": 0}}\r\n"
                + "{\"return\": {\"big\": \"\(big)\"}, \"id\": \(id)}\r\n"
            let bytes = Array(text.utf8)
            let middle = bytes.count - 150_000
            FakeQMPPeer.write(fd, String(decoding: bytes[..<middle], as: UTF8.self))
            usleep(50_000)
            FakeQMPPeer.write(fd, String(decoding: bytes[middle...], as: UTF8.self))
            _ = FakeQMPPeer.readLine(fd) // until the client closes
        }
        let client = try QMPClient(path: peer.path, timeoutMs: 5000)
        XCTAssertEqual(client.greeting, try JSONValue.parse(#"{"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": []}"#))
        let reply = try client.execute("anything")
        XCTAssertEqual(reply, .object([("big", .string(String(repeating: "z", count: 300_000)))]))
        let events = try client.drainEvents()
        XCTAssertEqual(events.map(\.name), ["A", "B"])
        XCTAssertEqual(events.map(\.timestamp), [1.5, 2.0])
        XCTAssertEqual(events.map(\.data), [.object([]), .object([("n", .integer(2))])])
        client.close()
    }

    func testEventsReadTogetherWithTheHangUpAreNotLost() throws {
        let peer = FakeQMPPeer()
        defer { peer.finish() }
        peer.serve { fd in
            FakeQMPPeer.write(fd, FakeQMPPeer.greeting)
            guard let capabilities = FakeQMPPeer.readLine(fd) else { return }
            FakeQMPPeer.write(fd, "{\"return\": {}, \"id\": \(FakeQMPPeer.id(of: capabilities))}\r\n")
            usleep(100_000)
            // Exactly 64 KiB (the client's read size), so the EOF is seen in the same read loop.
            func line(_ name: String, _ pad: Int) -> String {
                "{\"event\": \"\(name)\", \"data\": {\"pad\": \"\(String(repeating: "x", count: pad))\"}}\r\n"
            }
            let first = line("A", 100)
            let second = line("B", 65536 - first.utf8.count - line("B", 0).utf8.count)
            precondition(first.utf8.count + second.utf8.count == 65536)
            FakeQMPPeer.write(fd, first + second)
        } // hangs up right after the events
        let client = try QMPClient(path: peer.path, timeoutMs: 2000)
        usleep(400_000) // the events and the EOF are all waiting now
        XCTAssertEqual(try client.nextEvent(timeoutMs: 1000)?.name, "A")
        XCTAssertEqual(try client.nextEvent(timeoutMs: 1000)?.name, "B")
        XCTAssertThrowsError(try client.nextEvent(timeoutMs: 1000)) { error in
            XCTAssertEqual((error as? QMPError)?.codeName, "EPIPE", "\(error)")
        }
        XCTAssertTrue(client.isClosed)
    }

    func testMalformedGreetingIsAProtocolError() {
        let peer = FakeQMPPeer()
        defer { peer.finish() }
        peer.serve { fd in FakeQMPPeer.write(fd, "this is not QMP\r\n") }
        XCTAssertThrowsError(try QMPClient(path: peer.path, timeoutMs: 2000)) { error in
            XCTAssertEqual((error as? QMPError)?.codeName, "EPROTO", "\(error)")
        }
    }

    func testReplyTimeout() throws {
        let peer = FakeQMPPeer()
        defer { peer.finish() }
        peer.serve { fd in
            FakeQMPPeer.write(fd, FakeQMPPeer.greeting)
            guard let capabilities = FakeQMPPeer.readLine(fd) else { return }
            FakeQMPPeer.write(fd, "{\"return\": {}, \"id\": \(FakeQMPPeer.id(of: capabilities))}\r\n")
            while FakeQMPPeer.readLine(fd) != nil {} // never answers
        }
        let client = try QMPClient(path: peer.path, timeoutMs: 2000)
        XCTAssertThrowsError(try client.execute("slow", timeoutMs: 200)) { error in
            XCTAssertEqual((error as? QMPError)?.codeName, "ETIMEDOUT")
            XCTAssertEqual((error as? QMPError)?.description, "QMP: timed out waiting for the reply to slow")
        }
        XCTAssertNil(try client.nextEvent(timeoutMs: 50))
        client.close()
    }

    func testSendingToAPeerThatHasGoneIsEPIPENotSIGPIPE() throws {
        let peer = FakeQMPPeer()
        defer { peer.finish() }
        peer.serve { fd in
            FakeQMPPeer.write(fd, FakeQMPPeer.greeting)
            guard let capabilities = FakeQMPPeer.readLine(fd) else { return }
            FakeQMPPeer.write(fd, "{\"return\": {}, \"id\": \(FakeQMPPeer.id(of: capabilities))}\r\n")
        } // the connection is closed here
        let client = try QMPClient(path: peer.path, timeoutMs: 2000)
        usleep(200_000)
        // send() to the closed peer fails with EPIPE; without MSG_NOSIGNAL SIGPIPE would end this run.
        XCTAssertThrowsError(try client.execute("anything")) { error in
            XCTAssertEqual((error as? QMPError)?.codeName, "EPIPE", "\(error)")
        }
        XCTAssertThrowsError(try client.nextEvent(timeoutMs: 100)) { error in
            XCTAssertEqual((error as? QMPError)?.codeName, "EPIPE", "\(error)")
        }
    }
}
