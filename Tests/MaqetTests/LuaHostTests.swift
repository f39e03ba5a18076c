import Foundation
import XCTest

/// The Lua host cannot be crashed by a script (issue 9): handles are checked by their metatable,
/// a rows handle keeps its database alive, host-owned handles are lent, host objects do not live
/// in globals, and `maqet run --max-memory` bounds a runaway script. Real `maqet run` processes.
final class LuaHostTests: XCTestCase {
    /// The reproducer: a SIGSEGV before; now one Lua error naming what was passed.
    func testCloseOfAForeignUserdataIsALuaError() {
        let sandbox = Sandbox()
        let result = sandbox.runScript("maqet.db.close(io.stdout)\n")
        result.assertExit(1)
        XCTAssertTrue(result.stderr.hasPrefix("maqet: script.lua:1: close: expected a maqet.database handle, got FILE*\n"), result.stderr)
    }

    /// Every shared method and metamethod of every handle type refuses a foreign userdata, a
    /// handle of another maqet type and a userdata given the type's metatable by debug.setmetatable.
    func testSharedMethodsAcceptOnlyTheirOwnType() {
        let sandbox = Sandbox()
        let result = sandbox.runScript("""
            local registry = debug.getregistry()
            local db = maqet.db_open("x.db")
            local _, rows = db:rows("SELECT 1")
            local proc = maqet.process.spawn({"/bin/true"})
            proc:wait(10000)
            local re = maqet.regex.compile("a")
            local handles = {["maqet.database"] = db, ["maqet.rows"] = rows, ["maqet.process"] = proc, ["maqet.regex"] = re}
            local names = {}
            for name in pairs(handles) do names[#names + 1] = name end
            table.sort(names)
            for _, name in ipairs(names) do
              local mt = registry[name]
              local forged = debug.setmetatable(io.tmpfile(), mt)
              for _, field in ipairs({"close", "__close", "__gc", "__tostring"}) do
                local f = field == "close" and mt.__index.close or mt[field]
                for _, other in ipairs(names) do
                  if other ~= name then
                    local ok, err = pcall(f, handles[other])
                    assert(not ok and err:find("expected a " .. name .. " handle, got " .. other, 1, true), name .. " " .. field .. ": " .. tostring(err))
                  end
                end
                local ok, err = pcall(f, io.stdout)
                assert(not ok and err:find("got FILE*", 1, true), name .. " " .. field .. ": " .. tostring(err))
                ok, err = pcall(f, forged)
                assert(not ok and err:find("that maqet did not make", 1, true), name .. " " .. field .. " forged: " .. tostring(err))
              end
            end
            -- The handles themselves still work: nothing above touched them.
            assert(db:scalar("SELECT 42") == 42)
            assert(re:find("xa"))
            print("ok")
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "ok\n")
    }

    /// A host function whose function pointer a script replaced refuses to run.
    func testAHostFunctionAlteredByDebugSetupvalueRefusesToRun() {
        let sandbox = Sandbox()
        let result = sandbox.runScript("""
            debug.setupvalue(maqet.now, 1, 42)
            print(pcall(maqet.now))
            debug.setupvalue(maqet.fs.cwd, 1, maqet.json.null)
            print(pcall(maqet.fs.cwd))
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, """
            false\tmaqet: this host function was altered (debug.setupvalue) and cannot run
            false\tmaqet: this host function was altered (debug.setupvalue) and cannot run

            """)
    }

    /// A rows handle keeps its database alive when the script drops the database handle, and
    /// one used after its database was closed is an error, not a read of a closed connection.
    func testRowsOutliveTheirDatabase() {
        let sandbox = Sandbox()
        let result = sandbox.runScript("""
            local db = maqet.db_open("x.db")
            db:exec("CREATE TABLE t(a)")
            db:exec("INSERT INTO t VALUES (1), (2), (3)")
            local next_row, rows = db:rows("SELECT a FROM t ORDER BY a")
            db = nil
            collectgarbage(); collectgarbage()
            print(next_row(rows).a, next_row(rows).a, next_row(rows).a, next_row(rows))

            local db2 = maqet.db_open("x.db")
            local next2, rows2 = db2:rows("SELECT a FROM t ORDER BY a")
            print(next2(rows2).a)
            db2:close()
            print(pcall(next2, rows2))
            print(rows2)
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, """
            1\t2\t3
            1
            false\tdb:rows iterator: its maqet.database handle was closed during the loop
            maqet.rows (closed)

            """)
    }

    /// `maqet.db` in `maqet run` is lent: closing it is a clear error, and it stays usable.
    func testTheStateDatabaseIsLentToRunScripts() {
        let sandbox = Sandbox()
        let result = sandbox.runScript("""
            print(pcall(maqet.db.close, maqet.db))
            do
              local ok, err = pcall(function() local db <close> = maqet.db end)
              print(ok, err)
            end
            print(maqet.db:scalar("SELECT count(*) FROM vm_instances"))
            """)
        result.assertExit(0)
        let refusal = "close: maqet.db is owned by maqet, which closes it when the command ends; a script may not close it (open its own with maqet.db_open)"
        XCTAssertEqual(result.stdout, "false\t\(refusal)\nfalse\tscript.lua:3: \(refusal)\n0\n")
    }

    /// An edited workflow (here `ls`'s reconcile.lua via --scripts-dir) that closes `maqet.db`
    /// and replaces the `maqet` global breaks only itself: the host's database stays open and
    /// `ls` lists every row.
    func testAWorkflowCannotCloseTheHostsDatabaseOrReplaceItsObjects() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let before = sandbox.maqet(["ls", "--format", "plain"])
        before.assertExit(0)
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'running', pid = 999999 WHERE name = 'charlie'")
        let overrides = sandbox.root.file("override")
        sandbox.write("override/lifecycle/reconcile.lua", """
            return {
              description = "hostile",
              run = function()
                local ok, err = pcall(function() maqet.db:close() end)
                assert(not ok and err:find("owned by maqet", 1, true), tostring(err))
                maqet.db = 42
                maqet = nil
                return {}
              end,
            }
            """)
        let after = sandbox.maqet(["--scripts-dir", overrides, "ls", "--format", "plain"])
        after.assertExit(0)
        XCTAssertEqual(after.stderr, "")
        let expected = before.stdout.split(separator: "\n").map { line -> String in
            guard line.hasPrefix("charlie ") else { return String(line) }
            let fields = line.split(separator: " ")
            return (["charlie", "running", "999999"] + fields[3...].map(String.init)).joined(separator: " ")
        }
        XCTAssertEqual(after.stdout.split(separator: "\n").map(String.init), expected)
        XCTAssertEqual(expected.filter { $0.hasPrefix("charlie running") }.count, 1)
    }

    /// A migration's `db` is lent too: closing it fails the migration (rolled back, exit 4), the
    /// database is left as it was, not committed half-way by a host that lost its connection.
    func testAMigrationCannotCloseItsDatabase() {
        let sandbox = Sandbox()
        sandbox.installFixture("python-maqet-v1.db")
        let migrations = sandbox.migrationsCopy()
        try! """
            return {
                description = "Add auth_secret column (edited to close its db)",
                up = function(db)
                    db:exec("UPDATE vm_instances SET status = 'half-migrated'")
                    db:close()
                end,
            }

            """.write(toFile: migrations + "/0003_add_auth_secret.lua", atomically: true, encoding: .utf8)
        let dumpBefore = dump(sandbox.databasePath)
        let result = sandbox.maqet(["--migrations-dir", migrations, "ls"])
        result.assertExit(4)
        assertContains(result.stderr, "close: the migration's database is owned by maqet, which commits or rolls back the migration; a migration may not close it")
        assertContains(result.stderr, "0003_add_auth_secret.lua")
        XCTAssertEqual(dump(sandbox.databasePath), dumpBefore)
    }

    /// A script that replaces `maqet` (or `maqet.db`) breaks only its own later uses; what it
    /// kept still works, and the host's own reads do not go through the global.
    func testReplacingTheMaqetGlobalBreaksOnlyTheScript() {
        let sandbox = Sandbox()
        let result = sandbox.runScript("""
            local m = maqet
            maqet = nil
            print(m.db:scalar("SELECT 7"))
            m.db = 42
            print(pcall(m.vm.list))
            maqet = 42
            print(pcall(m.data_dir) and "data_dir ok")
            """)
        result.assertExit(0)
        let lines = result.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.first, "7")
        XCTAssertEqual(lines.last, "data_dir ok")
        XCTAssertTrue(lines.count == 3 && lines[1].hasPrefix("false\t"), result.stdout)
    }

    /// Lua does not verify precompiled chunks (a crafted one crashes the VM): load, loadfile and
    /// dofile take text only; text keeps working, with and without an env.
    func testBinaryChunksAreRefused() {
        let sandbox = Sandbox()
        let result = sandbox.runScript("""
            local dumped = string.dump(function() return 1 end)
            print(load(dumped))
            print(load(dumped, "dumped", "b"))
            local f = assert(io.open("chunk.luac", "wb")) f:write(dumped) f:close()
            print(loadfile("chunk.luac"))
            print(pcall(dofile, "chunk.luac"))
            print(load("return 1 + 1")(), load("return x", "env", "t", {x = 5})(), load("return 3", "c", "bt", nil)())
            local g = assert(io.open("text.lua", "w")) g:write("return ...") g:close()
            print(dofile("text.lua"), loadfile("text.lua")(7))
            local m = assert(io.open("binmod.lua", "wb")) m:write(dumped) m:close()
            print(pcall(require, "binmod"))
            print(require("text"))
            print((select(2, pcall(require, "nosuchmodule")):match("no file '[^']*nosuchmodule.lua'") ~= nil))
            """)
        result.assertExit(0)
        let refusal = "attempt to load a binary chunk (mode is 't')"
        XCTAssertEqual(result.stdout, """
            nil\t\(refusal)
            nil\t\(refusal)
            nil\t\(refusal)
            false\t\(refusal)
            2\t5\t3
            nil\t7
            false\terror loading module 'binmod' from file './binmod.lua':
            \t\(refusal)
            text\t./text.lua
            true

            """)
    }

    /// A path with a NUL byte is refused: C would cut it there and act on another file.
    func testPathsWithANulByteAreRefused() {
        let sandbox = Sandbox()
        sandbox.write("a", "")
        let result = sandbox.runScript("""
            local p = "a\\0b"
            for _, call in ipairs({
              {"maqet.db_open", function() return maqet.db_open(p) end},
              {"maqet.fs.stat", function() return maqet.fs.stat(p) end},
              {"maqet.fs.realpath", function() return maqet.fs.realpath(p) end},
              {"maqet.fs.which", function() return maqet.fs.which(p) end},
              {"maqet.yaml.load_file", function() return maqet.yaml.load_file(p) end},
              {"maqet.console.holder", function() return maqet.console.holder(p) end},
              {"maqet.console.send", function() return maqet.console.send("/nonexistent", "x", {lock = p}) end},
            }) do
              local ok, err = pcall(call[2])
              print(call[1], ok, (tostring(err):gsub("^[^:]*:%d+: ", "")))
            end
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, """
            maqet.db_open\tfalse\tmaqet.db_open: path must not contain a NUL byte
            maqet.fs.stat\tfalse\tmaqet.fs.stat: path must not contain a NUL byte
            maqet.fs.realpath\tfalse\tmaqet.fs.realpath: path must not contain a NUL byte
            maqet.fs.which\tfalse\tmaqet.fs.which: name must not contain a NUL byte
            maqet.yaml.load_file\tfalse\tmaqet.yaml.load_file: path must not contain a NUL byte
            maqet.console.holder\tfalse\tmaqet.console.holder: lock must not contain a NUL byte
            maqet.console.send\tfalse\tmaqet.console.send: opts.lock must not contain a NUL byte

            """)
        // The file the cut path would name was not touched (db_open would have made it a database).
        XCTAssertEqual(FileManager.default.contents(atPath: sandbox.root.file("a")), Data())
    }

    // MARK: --max-memory

    /// A runaway script stops with one line naming the limit and exit 1; the transaction it had
    /// open is rolled back (nothing half-written).
    func testARunawayScriptStopsAtMaxMemoryAndWritesNothing() {
        let sandbox = Sandbox()
        sandbox.maqet(["run", "-"], stdin: "maqet.db:exec('CREATE TABLE notes(n)')").assertExit(0)
        let result = sandbox.runScript("""
            maqet.db:transaction(function(db)
              db:exec("INSERT INTO notes VALUES (1)")
              local t = {}
              for i = 1, math.maxinteger do t[i] = string.rep("x", 64) .. i end
            end)
            """, options: ["--max-memory", "16"])
        result.assertExit(1)
        XCTAssertEqual(result.stderr, "maqet: script.lua: out of memory (limit 16 MiB; raise --max-memory)\n")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT count(*) FROM notes"), "0\n")
    }

    /// A host function whose result would take the script past the limit (Swift allocates it)
    /// is stopped when it returns, with the same message; pcall can catch it and go on.
    func testAHostFunctionThatAllocatesPastTheLimitStopsTheScript() {
        let sandbox = Sandbox()
        let big = sandbox.runScript("""
            local s = string.rep("x", 1024 * 1024)
            local parts = {}
            for i = 1, 64 do parts[i] = maqet.json.encode({s, i}) end
            """, options: ["--max-memory", "16"])
        big.assertExit(1)
        XCTAssertEqual(big.stderr, "maqet: script.lua: out of memory (limit 16 MiB; raise --max-memory)\n")

        let caught = sandbox.runScript("""
            local ok, err = pcall(function()
              local t = {}
              for i = 1, math.maxinteger do t[i] = {i} end
            end)
            collectgarbage()
            print(ok, err)
            print(#maqet.json.encode({1, 2, 3}))
            """, options: ["--max-memory", "16"])
        caught.assertExit(0)
        XCTAssertEqual(caught.stdout, "false\tnot enough memory\n7\n")
    }

    func testMaxMemoryRejectsBadValues() {
        let sandbox = Sandbox()
        sandbox.write("ok.lua", "print('ran')\n")
        for bad in ["0", "-5", "abc", "1.5"] {
            let result = sandbox.maqet(["run", "--max-memory", bad, "ok.lua"], cwd: sandbox.home)
            result.assertExit(64)
            XCTAssertEqual(result.stdout, "", "--max-memory \(bad) must not run the script")
            XCTAssertTrue(result.stderr.contains("--max-memory"), result.stderr)
        }
        let fine = sandbox.maqet(["run", "--max-memory", "64", "ok.lua"], cwd: sandbox.home)
        fine.assertExit(0)
        XCTAssertEqual(fine.stdout, "ran\n")
    }
}
