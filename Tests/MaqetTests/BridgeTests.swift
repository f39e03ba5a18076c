import CLuaShim
import Foundation
@testable import MaqetCore
@testable import MaqetRuntime
import XCTest

/// The Lua/Swift boundary: error positions and tracebacks, misuse errors, handles after close,
/// --timeout and Ctrl-C that scripts cannot swallow, no leaks when a Swift function raises.
final class BridgeTests: XCTestCase {
    func testLuaErrorPointsAtScriptLineWithTraceback() {
        let result = Sandbox().runScript("""
            local function inner()
              error("something broke")
            end
            inner()
            """)
        result.assertExit(1)
        assertContains(result.stderr, "script.lua:2: something broke")
        assertContains(result.stderr, "stack traceback:")
        assertContains(result.stderr, "script.lua:4: in main chunk")
    }

    func testSyntaxErrorExitsOneWithPosition() {
        let result = Sandbox().runScript("local x = = 1\n")
        result.assertExit(1)
        assertContains(result.stderr, "script.lua:1:")
    }

    func testMisuseErrorNamesFunctionAndScriptLine() {
        let sandbox = Sandbox()
        let spawn = sandbox.runScript("""
            local x = 1
            maqet.process.spawn("ls")
            """)
        spawn.assertExit(1)
        assertContains(spawn.stderr, "script.lua:2: maqet.process.spawn: argv must be a non-empty table of strings, got string")

        let checks = sandbox.runScript("""
            local function msg(f, ...) local ok, e = pcall(f, ...) assert(not ok) return e end
            print(select(2, pcall(function() maqet.process.run({}) end)))
            print(select(2, pcall(function() maqet.process.run({"echo", 1}) end)))
            print(select(2, pcall(function() maqet.process.run({"echo"}, {timeout_ms = "x"}) end)))
            print(msg(maqet.json.encode, function() end))
            print(msg(maqet.json.decode, 42))
            print(msg(maqet.log.info, {}))
            print(msg(maqet.sleep, "soon"))
            print(select(2, pcall(function() maqet.db.exec("select 1") end)))
            """, name: "checks.lua")
        checks.assertExit(0)
        assertContains(checks.stdout, "checks.lua:2: maqet.process.run: argv must be a non-empty table of strings, got an empty table")
        assertContains(checks.stdout, "checks.lua:3: maqet.process.run: argv must be a non-empty table of strings, item 2 is a number")
        assertContains(checks.stdout, "checks.lua:4: maqet.process.run: field 'timeout_ms' must be an integer, got string")
        assertContains(checks.stdout, "maqet.json.encode: cannot encode a function value")
        assertContains(checks.stdout, "maqet.json.decode: text must be a string, got number")
        assertContains(checks.stdout, "maqet.log.info: message must be a string or a number, got table")
        assertContains(checks.stdout, "maqet.sleep: ms must be a number >= 0, got string")
        assertContains(checks.stdout, "checks.lua:9: db:exec: expected a maqet.database handle as self, got string (use ':' to call methods)")
    }

    func testSwiftErrorsInALoopDoNotLeakOrCrash() {
        let result = Sandbox().runScript("""
            local db = maqet.db
            for i = 1, 10000 do
              local ok, err = pcall(maqet.json.encode, function() end)
              assert(not ok and err:find("cannot encode a function", 1, true))
              local r, msg, code = db:exec("bad sql")
              assert(r == nil and code == "SQLITE_ERROR", tostring(msg))
              local ok2 = pcall(db.exec, db, 42)
              assert(not ok2)
              local ok3 = pcall(maqet.process.spawn, {})
              assert(not ok3)
            end
            collectgarbage()
            assert(db:scalar("select 40 + 2") == 42)
            print("still fine")
            """)
        result.assertExit(0)
        assertContains(result.stdout, "still fine")
    }

    func testHandlesAfterCloseGiveClearErrors() {
        let result = Sandbox().runScript("""
            local db = maqet.db_open("closed.db") -- maqet.db itself is lent: a script cannot close it
            db:close()
            local ok, err = pcall(db.exec, db, "select 1")
            print(err)
            local proc = maqet.process.spawn({"sleep", "30"})
            proc:close()
            print(select(2, pcall(proc.pid, proc)))
            print(select(2, pcall(proc.wait, proc)))
            print(tostring(proc))
            proc:close() -- closing twice is fine
            local pid
            do
              local p <close> = maqet.process.spawn({"sleep", "30"})
              pid = p:pid()
              held = p
            end
            print("closed by <close>:", tostring(held))
            print(select(2, pcall(held.is_running, held)))
            local r = maqet.process.run({"sh", "-c", "kill -0 " .. pid .. " 2>/dev/null && echo alive || echo gone"})
            print("child:", r.stdout)
            """)
        result.assertExit(0)
        assertContains(result.stdout, "db:exec: the maqet.database handle is closed")
        assertContains(result.stdout, "proc:pid: the maqet.process handle is closed")
        assertContains(result.stdout, "proc:wait: the maqet.process handle is closed")
        assertContains(result.stdout, "maqet.process (closed)")
        assertContains(result.stdout, "proc:is_running: the maqet.process handle is closed")
        assertContains(result.stdout, "child:\tgone")
    }

    func testTimeoutStopsBusyLoop() {
        let result = Sandbox().runScript("while true do end", options: ["--timeout", "1"])
        result.assertExit(124)
        assertContains(result.stderr, "maqet: script stopped: --timeout of 1 s expired")
    }

    func testPcallCannotSwallowTimeout() {
        let result = Sandbox().runScript("""
            while true do
              pcall(function() while true do end end)
            end
            """, options: ["--timeout", "0.5"])
        result.assertExit(124)
    }

    func testPcallInCoroutineCannotSwallowTimeout() {
        let result = Sandbox().runScript("""
            local co = coroutine.wrap(function()
              while true do pcall(function() while true do end end) end
            end)
            while true do pcall(co) end
            """, options: ["--timeout", "0.5"])
        result.assertExit(124)
    }

    func testTimeoutInterruptsSleepAndProcessWait() {
        let sandbox = Sandbox()
        sandbox.runScript("maqet.sleep(600000)", options: ["--timeout", "0.5"]).assertExit(124)
        sandbox.runScript("maqet.process.run({'sleep', '600'})", options: ["--timeout", "0.5"]).assertExit(124)
        sandbox.runScript("local p = maqet.process.spawn({'sleep', '600'}) p:wait()", options: ["--timeout", "0.5"]).assertExit(124)
    }

    func testSigintStopsBusyLoopWithExit130() throws {
        let sandbox = Sandbox()
        let ready = sandbox.root.file("ready")
        sandbox.write("busy.lua", """
            local f = assert(io.open(\(ready.debugDescription), "w")) f:write("x") f:close()
            while true do pcall(function() while true do end end) end
            """)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: maqetBinary)
        process.arguments = ["run", "--maqet-data-dir", sandbox.dataDir, "busy.lua"]
        process.currentDirectoryURL = URL(fileURLWithPath: sandbox.home)
        process.environment = testEnvironment(home: sandbox.home)
        let err = Pipe()
        process.standardError = err
        try process.run()
        var waited = 0
        while !FileManager.default.fileExists(atPath: ready) && waited < 300 && process.isRunning {
            usleep(50_000)
            waited += 1
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: ready), "script never started")
        kill(process.processIdentifier, SIGINT)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationReason, .exit, stderr)
        XCTAssertEqual(process.terminationStatus, 130, stderr)
        assertContains(stderr, "interrupted")
    }

    // MARK: In-process: deinit runs when a Swift function raises

    final class Tracked {
        static var live = 0
        init() { Tracked.live += 1 }
        deinit { Tracked.live -= 1 }
    }

    static let raisingFunction: LuaFunction = { L in
        Lua.call(L) { lua in
            let tracked = Tracked()
            let text = String(repeating: "x", count: 100) // a heap-allocated Swift value
            withExtendedLifetime(tracked) {}
            throw LuaUsageError("test.raise: failed with \(text.count) and \(Tracked.live) live")
        }
    }

    func testDeinitRunsWhenSwiftFunctionRaises() throws {
        let state = LuaState()
        defer { withExtendedLifetime(state) {} } // keep the lua_State open until the end
        let lua = state.lua
        lua.push(Self.raisingFunction)
        lua_setglobal(lua.L, "raise")
        Tracked.live = 0
        try lua.load("""
            local last
            for i = 1, 1000 do
              local ok, err = pcall(raise)
              assert(not ok)
              last = err
            end
            return last
            """, chunkName: "=test")
        try lua.protectedCall(nargs: 0, nresults: 1)
        XCTAssertEqual(lua.string(at: -1), "test.raise: failed with 100 and 1 live")
        lua.pop()
        XCTAssertEqual(Tracked.live, 0, "a Swift object outlived the function that raised")

        // Raised without pcall: the error reaches protectedCall with the caller's position.
        try lua.load("\nraise()", chunkName: "@inline.lua")
        XCTAssertThrowsError(try lua.protectedCall(nargs: 0, nresults: 0)) { error in
            XCTAssertTrue("\(error)".hasPrefix("inline.lua:2: test.raise: failed"), "\(error)")
            XCTAssertTrue("\(error)".contains("stack traceback"), "\(error)")
        }
        XCTAssertEqual(Tracked.live, 0)
    }
}
