import Foundation
import XCTest

/// `maqet run`: exit codes, arguments, require, and the modules as scripts use them.
final class RunTests: XCTestCase {
    // MARK: The command

    func testExitCodes() {
        let sandbox = Sandbox()
        sandbox.runScript("print('hello')").assertExit(0)
        let shebang = sandbox.runScript("#!/usr/bin/env -S maqet run\nprint('from a shebang script')\nerror('line 3')")
        shebang.assertExit(1)
        XCTAssertEqual(shebang.stdout, "from a shebang script\n")
        assertContains(shebang.stderr, "script.lua:3: line 3")
        sandbox.runScript("error('no')").assertExit(1)
        let exit7 = sandbox.runScript("io.write('buffered, no newline') os.exit(7)")
        exit7.assertExit(7)
        XCTAssertEqual(exit7.stdout, "buffered, no newline")
        sandbox.runScript("os.exit(true)").assertExit(0)
        sandbox.runScript("os.exit(false)").assertExit(1)
        let missing = sandbox.maqet(["run", "does-not-exist.lua"], cwd: sandbox.home)
        missing.assertExit(5)
        assertContains(missing.stderr, "script not found: does-not-exist.lua")
        sandbox.runScript("while true do end", options: ["--timeout", "-1"]).assertExit(64)
    }

    func testOsExitClosesHandlesAndKillsChildren() {
        let sandbox = Sandbox()
        let marker = sandbox.root.file("closed")
        let result = sandbox.runScript("""
            local p = maqet.process.spawn({"sleep", "60"})
            print(p:pid())
            local guard <close> = setmetatable({}, {__close = function()
              local f = io.open(\(marker.debugDescription), "w") f:write("yes") f:close()
            end})
            os.exit(3)
            """)
        result.assertExit(3)
        XCTAssertEqual(try? String(contentsOfFile: marker, encoding: .utf8), "yes")
        let pid = Int32(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
        XCTAssertGreaterThan(pid, 0)
        XCTAssertNotEqual(kill(pid, 0), 0, "the spawned child outlived the script")
    }

    func testChildrenDoNotOutliveTheScript() {
        let sandbox = Sandbox()
        for (ending, status) in [("", Int32(0)), ("error('stop')", Int32(1))] {
            let result = sandbox.runScript("""
                local p = maqet.process.spawn({"sleep", "60"})
                print(p:pid())
                \(ending)
                """)
            result.assertExit(status)
            let pid = Int32(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            XCTAssertGreaterThan(pid, 0)
            XCTAssertNotEqual(kill(pid, 0), 0, "the spawned child outlived the script (\(ending))")
        }
    }

    func testArgumentsThatLookLikeOptionsReachTheScript() {
        let result = Sandbox().runScript("""
            print(arg[0], #arg, arg[-1])
            for i = 1, #arg do print(i, arg[i], maqet.args[i]) end
            print("varargs", select('#', ...), ...)
            """, args: ["-v", "--x", "--timeout", "3", "--", "--help", "a b"])
        result.assertExit(0)
        XCTAssertEqual(result.stdout, """
            script.lua\t7\trun
            1\t-v\t-v
            2\t--x\t--x
            3\t--timeout\t--timeout
            4\t3\t3
            5\t--\t--
            6\t--help\t--help
            7\ta b\ta b
            varargs\t7\t-v\t--x\t--timeout\t3\t--\t--help\ta b

            """)
        XCTAssertFalse(result.stderr.contains("info"), result.stderr) // -v went to the script, not maqet

        // Options maqet itself knows, right after the script, are the script's too.
        let sandbox = Sandbox()
        for first in ["--help", "-h", "--version", "--timeout=1", "-q"] {
            let passed = sandbox.runScript("print(...)", args: [first, "x"])
            passed.assertExit(0)
            XCTAssertEqual(passed.stdout, "\(first)\tx\n")
        }
    }

    func testScriptFromStdin() {
        let sandbox = Sandbox()
        let ok = sandbox.maqet(["run", "-", "a", "b"], stdin: "print(arg[0], ...)\n", cwd: sandbox.home)
        ok.assertExit(0)
        XCTAssertEqual(ok.stdout, "-\ta\tb\n")
        let failing = sandbox.maqet(["run", "-"], stdin: "\n\nerror('from stdin')\n", cwd: sandbox.home)
        failing.assertExit(1)
        assertContains(failing.stderr, "stdin:3: from stdin")
    }

    func testRequireFindsModulesNextToTheScript() {
        let sandbox = Sandbox()
        sandbox.write("lib/helper.lua", "return { greet = function(n) return 'hello ' .. n end }")
        sandbox.write("lib/pkg/init.lua", "return { name = 'pkg' }")
        sandbox.write("lib/main.lua", """
            local helper = require("helper")
            local pkg = require("pkg")
            print(helper.greet("vm"), pkg.name)
            """)
        // Run from a directory that is not the script's, with the path as given.
        let result = sandbox.maqet(["run", "lib/main.lua"], cwd: sandbox.home)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "hello vm\tpkg\n")
    }

    func testLogHonoursVerbosity() {
        let sandbox = Sandbox()
        let script = "maqet.log.debug('d') maqet.log.info('i') maqet.log.warn('w') maqet.log.error('e') maqet.log.warn(42)"
        let normal = sandbox.runScript(script)
        normal.assertExit(0)
        XCTAssertEqual(normal.stderr, "maqet: warning: w\nmaqet: error: e\nmaqet: warning: 42\n")
        let quiet = sandbox.runScript(script, options: ["-q"])
        XCTAssertEqual(quiet.stderr, "maqet: error: e\n")
        let verbose = sandbox.runScript(script, options: ["-v"])
        XCTAssertEqual(verbose.stderr, "maqet: info: i\nmaqet: warning: w\nmaqet: error: e\nmaqet: warning: 42\n")
        let debug = sandbox.runScript(script, options: ["-vv"])
        assertContains(debug.stderr, "maqet: debug: d\nmaqet: info: i\n")
    }

    func testNowAndSleep() {
        let result = Sandbox().runScript("""
            local t0 = maqet.now()
            assert(math.type(t0) == "float" and t0 > 1.6e9, tostring(t0))
            maqet.sleep(20)
            maqet.sleep(0)
            local t1 = maqet.now()
            assert(t1 >= t0 + 0.015, t1 - t0)
            print(maqet.version)
            """)
        result.assertExit(0)
        XCTAssertTrue(result.stdout.range(of: #"^\d+\.\d+\.\d+\n$"#, options: .regularExpression) != nil, result.stdout)
    }

    // MARK: maqet.db

    func testDatabaseRoundTripOfHostileStrings() {
        let sandbox = Sandbox()
        let result = sandbox.runScript(#"""
            local db = maqet.db
            db:exec("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
            local tables_before = db:scalar("SELECT group_concat(name) FROM (SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name)")
            local values = {
              "'); DROP TABLE notes; --",
              "'); DROP TABLE vm_instances; --",
              "a\0b\0\0c",
              "emoji 😀 and ünïcödé",
              [[quotes ' " `backtick` \ backslash]],
              "",
              string.rep("long ", 20000),
            }
            for i, v in ipairs(values) do
              assert(db:exec("INSERT INTO notes (id, body) VALUES (?, ?)", i, v) == 1)
            end
            for i, v in ipairs(values) do
              local got = db:scalar("SELECT body FROM notes WHERE id = ?", i)
              assert(got == v, ("value %d differs: %q"):format(i, tostring(got)))
              local row = db:query("SELECT body, length(CAST(body AS BLOB)) AS n FROM notes WHERE id = ?", i)[1]
              assert(row.body == v and row.n == #v, ("row %d: %d bytes stored, %d sent"):format(i, row.n, #v))
            end
            assert(db:has_table("notes"))
            local tables_after = db:scalar("SELECT group_concat(name) FROM (SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name)")
            assert(tables_after == tables_before, tables_after)
            assert(db:scalar("SELECT count(*) FROM notes") == #values)
            print("ok")
            """#)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "ok\n")
        XCTAssertEqual(sqlite3(sandbox.databasePath, "SELECT body FROM notes WHERE id = 1"), "'); DROP TABLE notes; --\n")
    }

    func testDatabaseTransactions() {
        let result = Sandbox().runScript("""
            local db = maqet.db
            db:exec("CREATE TABLE t (v TEXT)")
            db:transaction(function(tx) tx:exec("INSERT INTO t VALUES ('committed')") end)
            local ok, err = pcall(db.transaction, db, function(tx)
              tx:exec("INSERT INTO t VALUES ('rolled back')")
              error("abort")
            end)
            assert(not ok and err:find("abort"), err)
            db:transaction(function(tx)
              tx:exec("INSERT INTO t VALUES ('outer')")
              pcall(tx.transaction, tx, function(inner)
                inner:exec("INSERT INTO t VALUES ('inner rolled back')")
                error("inner abort")
              end)
              tx:transaction(function(inner) inner:exec("INSERT INTO t VALUES ('inner kept')") end)
            end)
            local names = {}
            for row in db:rows("SELECT v FROM t ORDER BY rowid") do names[#names + 1] = row.v end
            print(table.concat(names, ","))
            for row in db:rows("SELECT v FROM t") do break end -- closes the statement on break
            local r, msg, code = db:exec("INSERT INTO missing VALUES (1)")
            print(r, code, msg:find("no such table: missing", 1, true) ~= nil)
            print(#db:columns("t"), db:has_column("t", "v"), db:has_column("t", "w"), db:path() ~= nil)
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "committed,outer,inner kept\nnil\tSQLITE_ERROR\ttrue\n1\ttrue\tfalse\ttrue\n")
    }

    // MARK: maqet.process

    func testProcessRun() {
        let result = Sandbox().runScript("""
            local r = maqet.process.run({"/bin/echo", "hello", "world"})
            print(r.code, r.signal, r.stdout == "hello world\\n", r.stderr == "", r.timed_out)
            print(maqet.process.run({"sh", "-c", "echo err >&2; exit 3"}).code)
            print(maqet.process.run({"sh", "-c", "echo err >&2; exit 3"}).stderr)
            print(maqet.process.run({"cat"}, {stdin = "from stdin\\0with nul"}).stdout == "from stdin\\0with nul")
            local big = maqet.process.run({"sh", "-c", "head -c 3000000 /dev/zero; head -c 1500000 /dev/zero >&2"})
            print(#big.stdout, #big.stderr)
            local t = maqet.process.run({"sleep", "5"}, {timeout_ms = 100})
            print(t.timed_out, t.signal, t.signal_name, t.code)
            local k = maqet.process.run({"sh", "-c", "kill -TERM $$"})
            print(k.code, k.signal, k.signal_name)
            print(maqet.process.run({"no-such-program-maqet"}))
            print(maqet.process.run({"./nope"}))
            print(maqet.process.run({"pwd"}, {cwd = "/"}).stdout)
            print(maqet.process.run({"/usr/bin/env"}, {env = {ONLY = "this", N = 1}}).stdout)
            print(maqet.process.run({"/bin/echo"}, {cwd = "/no/such/dir"}))
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, """
            0\tnil\ttrue\ttrue\tnil
            3
            err

            true
            3000000\t1500000
            true\t9\tKILL\tnil
            nil\t15\tTERM
            nil\tcannot run 'no-such-program-maqet': No such file or directory\tENOENT
            nil\tcannot run './nope': No such file or directory\tENOENT
            /

            N=1
            ONLY=this

            nil\tcannot run '/bin/echo' in '/no/such/dir': No such file or directory\tENOENT

            """)
    }

    func testProcessRunPumpsLargeInputAndOutputTogether() {
        // 4 MiB in, 4 MiB back out while still writing: needs stdin and stdout pumped together.
        let result = Sandbox().runScript("""
            local input = string.rep("0123456789abcdef", 4 * 65536)
            local r = assert(maqet.process.run({"cat"}, {stdin = input}))
            print(r.code, #r.stdout, r.stdout == input)
            local ignored = maqet.process.run({"true"}, {stdin = input}) -- child never reads: EPIPE, no crash
            print(ignored.code)
            """)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, "0\t4194304\ttrue\n0\n")
    }

    func testProcessSpawnWaitKill() {
        let result = Sandbox().runScript("""
            local p = maqet.process.spawn({"sleep", "30"})
            print(math.type(p:pid()), p:is_running())
            print(p:wait(50))
            print(p:kill("SIGTERM"))
            local r = p:wait()
            print(r.code, r.signal, r.signal_name, p:is_running())
            print(p:kill("TERM")) -- already reaped: nothing to signal
            print(pcall(p.kill, p, "NOPE"))
            p:close()

            local q = maqet.process.spawn({"sh", "-c", "echo out; echo err >&2; exit 4"}, {stdout = "pipe", stderr = "pipe"})
            local qr = q:wait(10000)
            print(qr.code, qr.stdout, qr.stderr)
            q:close()

            local s = maqet.process.spawn({"sh", "-c", "exit 0"}, {stdout = "null"})
            print(s:wait().code, s:wait().code)
            print(maqet.process.spawn({"no-such-program-maqet"}))
            local u = maqet.process.spawn({"sleep", "30"})
            u:kill("KILL")
            print(u:wait().signal_name)
            """)
        result.assertExit(0)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        XCTAssertEqual(Array(lines.prefix(4)), ["integer\ttrue", "nil\ttimeout\tETIMEDOUT", "true", "nil\t15\tTERM\tfalse"])
        assertContains(result.stdout, "true\n")
        assertContains(result.stdout, "false\t")
        assertContains(result.stdout, "proc:kill: unknown signal 'NOPE'")
        assertContains(result.stdout, "4\tout\n\terr\n")
        assertContains(result.stdout, "0\t0\n")
        assertContains(result.stdout, "nil\tcannot run 'no-such-program-maqet': No such file or directory\tENOENT\n")
        XCTAssertTrue(result.stdout.hasSuffix("KILL\n"), result.stdout)
    }

    // MARK: maqet.json

    func testJSONRoundTripsAndErrors() {
        let result = Sandbox().runScript(#"""
            local json = maqet.json
            print(json.encode({b = 1, a = {1, 2, 3}, c = {x = true, y = false}, d = "q\"\\\n\t\1", e = 0.1, f = -0.0, g = 2^53, h = 1e300, i = 3.0}))
            print(json.encode({}), json.encode(json.array()), json.encode(json.array({})), json.encode({[1] = "a", [3] = "c"}))
            print(json.encode("😀 ünï"), json.encode(json.null), json.encode(nil), json.encode(math.maxinteger), json.encode(math.mininteger))
            local v = json.decode('{"s":"\\ud83d\\ude00\\u00e9\\n\\/","n":null,"a":[1,2.5,-3e2,true],"e":[],"o":{},"big":12345678901234567890}')
            print(v.s, v.n == json.null, math.type(v.a[1]), v.a[2], v.a[3], v.a[4], #v.e, next(v.o), math.type(v.big))
            print(json.encode(v.e), json.encode(v.o))
            for _, x in ipairs({0.1, 1/3, 1e-7, 123456.789, 2^-1074, -1.5e-300}) do
              assert(json.decode(json.encode(x)) == x, x)
              assert(math.type(json.decode(json.encode(x))) == "float")
            end
            print(json.encode({a = {b = {c = {1, {d = json.null}}}}}, {indent = 2}))
            for _, bad in ipairs({'{"a": 1,}', '[1 2]', '{"a" 1}', '"\\x"', '"abc', 'tru', '01', '[1,]', '{}x', '', '"\\ud800"', '"a\nb"'}) do
              print(json.decode(bad))
            end
            print(json.decode('[\n  1,\n  }'))
            local c = {} c[1] = c
            for _, v in ipairs({function() end, c, {[true] = 1}, 0/0, math.huge, {[1] = 1, ["1"] = 2}, "\xff", setmetatable({x = 1}, getmetatable(json.array()))}) do
              print((select(2, pcall(json.encode, v)):gsub("%-nan", "nan")))
            end
            """#)
        result.assertExit(0)
        XCTAssertEqual(result.stdout, #"""
            {"a":[1,2,3],"b":1,"c":{"x":true,"y":false},"d":"q\"\\\n\t\u0001","e":0.1,"f":-0.0,"g":9007199254740992.0,"h":1e+300,"i":3.0}
            {}	[]	[]	{"1":"a","3":"c"}
            "😀 ünï"	null	null	9223372036854775807	-9223372036854775808
            😀é
            /	true	integer	2.5	-300.0	true	0	nil	float
            []	{}
            {
              "a": {
                "b": {
                  "c": [
                    1,
                    {
                      "d": null
                    }
                  ]
                }
              }
            }
            nil	maqet.json.decode: unexpected '}' at line 1 column 9	EJSON
            nil	maqet.json.decode: unexpected '2' at line 1 column 4	EJSON
            nil	maqet.json.decode: unexpected '1' at line 1 column 6	EJSON
            nil	maqet.json.decode: invalid escape '\x' at line 1 column 2	EJSON
            nil	maqet.json.decode: unterminated string at line 1 column 5	EJSON
            nil	maqet.json.decode: unexpected end of input at line 1 column 4	EJSON
            nil	maqet.json.decode: leading zero in number at line 1 column 2	EJSON
            nil	maqet.json.decode: unexpected ']' at line 1 column 4	EJSON
            nil	maqet.json.decode: unexpected 'x' at line 1 column 3	EJSON
            nil	maqet.json.decode: unexpected end of input at line 1 column 1	EJSON
            nil	maqet.json.decode: unpaired surrogate \u escape at line 1 column 2	EJSON
            nil	maqet.json.decode: control character U+000A in string at line 1 column 3	EJSON
            nil	maqet.json.decode: unexpected '}' at line 3 column 3	EJSON
            maqet.json.encode: cannot encode a function value
            maqet.json.encode: cannot encode a table that contains itself (cycle)
            maqet.json.encode: object keys must be strings or numbers, got a boolean key
            maqet.json.encode: cannot encode nan (JSON has no NaN or infinity)
            maqet.json.encode: cannot encode inf (JSON has no NaN or infinity)
            maqet.json.encode: key "1" appears twice (as a string and as a number)
            maqet.json.encode: strings must be valid UTF-8
            maqet.json.encode: a table marked with maqet.json.array has keys other than 1..n

            """#)
    }
}
