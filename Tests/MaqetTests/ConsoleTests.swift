import Foundation
import XCTest

/// The serial console (`maqet console`, `maqet wait`, `maqet.vm.console`) on the real test guest
/// (Tests/guest), plus the refusals that need no guest. Every test stops what it started and
/// checks that no QEMU or runner of its sandbox is left.
final class ConsoleTests: SandboxTestCase {
    /// A bound for a guest to boot under TCG (a bound, not a timing assertion).
    static let bootBound = "180"

    func consoleLog(_ sandbox: Sandbox, _ name: String) -> String {
        (sandbox.dataDir as NSString).appendingPathComponent("logs/\(name).console.log")
    }

    /// Starts `maqet console NAME` with a stdin pipe the test keeps open.
    func attachThroughPipe(_ sandbox: Sandbox, _ name: String) throws -> (Process, Pipe, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: maqetBinary)
        process.arguments = ["--maqet-data-dir", sandbox.dataDir, "console", name]
        process.environment = testEnvironment(home: sandbox.home)
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        return (process, input, output)
    }

    // MARK: - On the real guest

    /// Boot → wait for the marker; a Lua script types on the console and expects the answer after
    /// the prompt; --log --lines shows it; timeouts exit 124 quoting the pattern; one attach at a
    /// time (a second attach and console:send are refused); a pipe types a line and ends at EOF.
    func testConsoleOfARealGuest() throws {
        let sandbox = makeSandbox()
        try sandbox.addGuest(GuestVM(name: "g"))
        sandbox.maqet(["start", "g"]).assertExit(0)
        defer { sandbox.maqet(["stop", "g", "--force"]) }

        let booted = sandbox.maqet(["wait", "g", "--console", GuestImage.booted, "--timeout", Self.bootBound])
        booted.assertExit(0)
        assertContains(booted.stdout, GuestImage.booted)

        let script = sandbox.runScript("""
            local c = assert(maqet.vm.console("g"))
            local prompt, after = assert(c:expect("guest# ", { timeout_ms = 60000 }))
            assert(prompt == "guest# ", prompt)
            local mark = c:mark()
            assert(mark >= after, "mark before the prompt")
            assert(c:send("echo hello-$((6*7))\\n"))
            -- The typed line is echoed as "hello-$((6*7))": only the shell's answer matches.
            local text, pos, start = assert(c:expect("hello-[0-9]+", { from = after, timeout_ms = 60000 }))
            print("answer " .. text .. " " .. tostring(pos > after) .. " " .. tostring(start >= after))
            -- Each expect reads from its own offset: the earlier prompt is still there to find.
            print("again " .. (c:expect("guest# ", { from = 0, timeout_ms = 1000 })))
            -- Lua patterns and plain text on request.
            print("lua " .. (c:expect("hello%-%d+", { from = after, syntax = "lua", timeout_ms = 1000 })))
            print("plain " .. (c:expect("$((6*7))", { from = after, syntax = "plain", timeout_ms = 1000 })))
            local none, message, code = c:expect("no-such-output", { from = pos, timeout_ms = 200 })
            print("timeout " .. tostring(none) .. " " .. code)
            print(message)
            """)
        script.assertExit(0)
        assertContains(script.stdout, "answer hello-42 true true")
        assertContains(script.stdout, "again guest# ")
        assertContains(script.stdout, "lua hello-42")
        assertContains(script.stdout, "plain $((6*7))")
        assertContains(script.stdout, "timeout nil ETIMEDOUT")
        assertContains(script.stdout, "/no-such-output/")

        let tail = sandbox.maqet(["console", "g", "--log", "--lines", "5"])
        tail.assertExit(0)
        assertContains(tail.stdout, "hello-42")
        XCTAssertFalse(tail.stdout.contains(GuestImage.booted), "--lines 5 printed more than 5 lines:\n\(tail.stdout)")
        XCTAssertLessThanOrEqual(tail.stdout.split(separator: "\n", omittingEmptySubsequences: false).count, 5)

        let timedOut = sandbox.maqet(["wait", "g", "--console", "no-such-output", "--timeout", "0.5"])
        timedOut.assertExit(124)
        assertContains(timedOut.stderr, "/no-such-output/")
        assertContains(timedOut.stderr, "hello-42") // the tail it saw
        sandbox.maqet(["wait", "g", "--for", "running", "--timeout", "30"]).assertExit(0)
        sandbox.maqet(["wait", "g", "--for", "stopped", "--timeout", "0.3"]).assertExit(124)

        // One attach at a time. The second is tried once the first holds the attach lock (tried
        // earlier, under load, the second could take the lock first and the first was refused).
        let (first, input, output) = try attachThroughPipe(sandbox, "g")
        XCTAssertTrue(eventually(30) {
            sandbox.runScript("print(maqet.vm.console('g'):attached())", name: "holder.lua").stdout
                == "\(first.processIdentifier)\n" || !first.isRunning
        }, "the first attach never took the lock")
        guard first.isRunning else {
            return XCTFail("the first attach ended: " + String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
        }
        XCTAssertTrue(eventually(30) {
            let second = sandbox.maqet(["console", "g"])
            return second.code == 1 && second.stderr.contains("already attached (pid \(first.processIdentifier))")
        }, "a second attach was not refused")
        let busy = sandbox.runScript("""
            print(maqet.vm.console("g"):send("echo refused\\n"))
            """, name: "busy.lua")
        busy.assertExit(0)
        assertContains(busy.stdout, "nil")
        assertContains(busy.stdout, "already attached (pid \(first.processIdentifier))")
        assertContains(busy.stdout, "EBUSY")
        // The first attach types through its pipe and ends at the pipe's end.
        input.fileHandleForWriting.write(Data("echo piped-$((2+3))\n".utf8))
        try input.fileHandleForWriting.close()
        first.waitUntilExit()
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(first.terminationStatus, 0, said)
        sandbox.maqet(["wait", "g", "--console", "piped-5", "--timeout", "60"]).assertExit(0)

        // A pipe given all at once (stdin not a terminal), ended by a Ctrl-] byte.
        let piped = sandbox.maqet(["console", "g"], stdin: "echo second-$((3+4))\n\u{1d}echo never-typed\n")
        piped.assertExit(0)
        sandbox.maqet(["wait", "g", "--console", "second-7", "--timeout", "60"]).assertExit(0)
        XCTAssertFalse(sandbox.maqet(["console", "g", "--log"]).stdout.contains("never-typed"))

        // On a terminal (a pty from script(1)): raw mode, typing reaches the guest, Ctrl-] detaches.
        let tty = Process()
        tty.executableURL = URL(fileURLWithPath: "/usr/bin/script")
        tty.arguments = ["-qec", "\(maqetBinary) --maqet-data-dir \(sandbox.dataDir) console g", "/dev/null"]
        tty.environment = testEnvironment(home: sandbox.home)
        let keys = Pipe(), screen = Pipe()
        tty.standardInput = keys
        tty.standardOutput = screen
        tty.standardError = screen
        try tty.run()
        // Asked without taking the lock (a probing second attach could take it first, under load).
        XCTAssertTrue(eventually(30) {
            sandbox.runScript("print(maqet.vm.console('g'):attached())", name: "holder.lua").stdout != "nil\n"
        }, "the terminal attach never took the lock")
        keys.fileHandleForWriting.write(Data("echo tty-$((5*5))\r".utf8))
        sandbox.maqet(["wait", "g", "--console", "tty-25", "--timeout", "60"]).assertExit(0)
        keys.fileHandleForWriting.write(Data([0x1d]))
        tty.waitUntilExit()
        let shown = String(decoding: screen.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        XCTAssertEqual(tty.terminationStatus, 0, shown)
        assertContains(shown, "Escape character is ^]")
        assertContains(shown, "Detached from the console of VM 'g'")
        try? keys.fileHandleForWriting.close()
        XCTAssertNil(sandbox.runScript("print(maqet.vm.console('g'):attached())", name: "free.lua").stdout.range(of: #"^\d"#, options: .regularExpression))

        var info = stat()
        XCTAssertEqual(stat(consoleLog(sandbox, "g"), &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o600)

        let stopped = sandbox.maqet(["stop", "g"])
        stopped.assertExit(0)
        assertContains(stopped.stdout, "stopped by: powerdown")
        sandbox.maqet(["wait", "g", "--for", "stopped", "--timeout", "30"]).assertExit(0)
        let notRunning = sandbox.maqet(["console", "g"])
        notRunning.assertExit(1)
        assertContains(notRunning.stderr, "is not running")
    }

    /// The console log survives a stop and a start (appended, rotated when over the cap before a
    /// start), and a wait after the second start does not match what the first boot printed.
    func testConsoleLogAcrossBoots() throws {
        let sandbox = makeSandbox()
        try sandbox.addGuest(GuestVM(name: "g"))
        sandbox.maqet(["start", "g"]).assertExit(0)
        defer { sandbox.maqet(["stop", "g", "--force"]) }
        sandbox.maqet(["wait", "g", "--console", GuestImage.booted, "--timeout", Self.bootBound]).assertExit(0)
        sandbox.runScript("""
            local c = assert(maqet.vm.console("g"))
            local _, after = assert(c:expect("guest# ", { timeout_ms = 60000 }))
            assert(c:send("echo first-$((1+1))-boot\\n"))
            assert(c:expect("first-2-boot", { from = after, timeout_ms = 60000 }))
            """).assertExit(0)
        // --follow prints what comes (the power button's marker during the stop) and ends with the VM.
        let follow = Process()
        follow.executableURL = URL(fileURLWithPath: maqetBinary)
        follow.arguments = ["--maqet-data-dir", sandbox.dataDir, "console", "g", "--log", "--follow"]
        follow.environment = testEnvironment(home: sandbox.home)
        let followed = Pipe()
        follow.standardOutput = followed
        follow.standardInput = FileHandle.nullDevice
        try follow.run()
        var followedText = Data()
        let reader = DispatchQueue(label: "follow")
        reader.async { followedText = followed.fileHandleForReading.readDataToEndOfFile() }
        sandbox.maqet(["stop", "g"]).assertExit(0)
        follow.waitUntilExit()
        reader.sync {}
        XCTAssertEqual(follow.terminationStatus, 0)
        let followedLog = String(decoding: followedText, as: UTF8.self)
        assertContains(followedLog, "first-2-boot")
        assertContains(followedLog, GuestImage.powerButton)
        // A stopped VM: its last boot's output is searched once, no waiting.
        sandbox.maqet(["wait", "g", "--console", "first-2-boot"]).assertExit(0)
        let gone = sandbox.maqet(["wait", "g", "--console", "never-printed"])
        gone.assertExit(1)
        assertContains(gone.stderr, "is not running")

        sandbox.maqet(["start", "g"]).assertExit(0)
        sandbox.maqet(["wait", "g", "--console", GuestImage.booted, "--timeout", Self.bootBound]).assertExit(0)
        sandbox.maqet(["wait", "g", "--console", "first-2-boot", "--timeout", "1"]).assertExit(124)
        let log = sandbox.maqet(["console", "g", "--log"]).stdout
        XCTAssertEqual(log.components(separatedBy: GuestImage.booted).count - 1, 2, "the log does not hold both boots:\n\(log)")
        assertContains(log, "first-2-boot")
        sandbox.maqet(["stop", "g"]).assertExit(0)

        // Over the cap (8 MiB): the next start moves the log to .1 and begins a new one.
        let path = consoleLog(sandbox, "g")
        let handle = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(repeating: UInt8(ascii: "x"), count: 8 * 1024 * 1024 + 1))
        try handle.close()
        sandbox.maqet(["start", "g"]).assertExit(0)
        sandbox.maqet(["wait", "g", "--console", GuestImage.booted, "--timeout", Self.bootBound]).assertExit(0)
        let rotated = try String(contentsOfFile: path + ".1", encoding: .utf8)
        assertContains(rotated, "first-2-boot")
        let fresh = try String(contentsOfFile: path, encoding: .utf8)
        assertContains(fresh, GuestImage.booted)
        XCTAssertFalse(fresh.contains("first-2-boot"))
        sandbox.maqet(["stop", "g"]).assertExit(0)
    }

    // MARK: - Refusals (no guest needed)

    func testRefusalsAndTheConsoleOnTheCommandLine() throws {
        let sandbox = makeSandbox()
        sandbox.write("plain.yaml", "name: plain\nmemory: 64M\narguments:\n  - machine: none\n")
        sandbox.write("own.yaml", "name: own\nmemory: 64M\narguments:\n  - machine: none\n  - serial: pty\n")
        sandbox.write("key.yaml", "name: key\nmemory: 64M\nserial: \"file:/dev/null\"\narguments:\n  - machine: none\n")
        for file in ["plain.yaml", "own.yaml", "key.yaml"] { sandbox.maqet(["add", sandbox.root.file(file)]).assertExit(0) }

        let plain = sandbox.maqet(["show-cmd", "plain"])
        plain.assertExit(0)
        assertContains(plain.stdout, "-chardev socket,id=maqet-console,path=")
        assertContains(plain.stdout, "logfile=\(sandbox.dataDir)/logs/plain.console.log,logappend=on")
        assertContains(plain.stdout, "-serial chardev:maqet-console")
        for name in ["own", "key"] {
            let own = sandbox.maqet(["show-cmd", name])
            own.assertExit(0)
            XCTAssertFalse(own.stdout.contains("maqet-console"), own.stdout)
            for command in [["console", name], ["console", name, "--log"], ["wait", name, "--console", "x"]] {
                let refused = sandbox.maqet(command)
                refused.assertExit(1)
                assertContains(refused.stderr, "has its own serial line")
                // One line that also says what to do.
                assertContains(refused.stderr, "or take it out of the config with 'maqet apply \(name)'")
                XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, refused.stderr)
            }
        }
        assertContains(sandbox.maqet(["show-cmd", "key"]).stdout, "-serial file:/dev/null")

        sandbox.maqet(["wait", "nope", "--for", "running"]).assertExit(5)
        sandbox.maqet(["wait", "nope", "--console", "x"]).assertExit(5)
        sandbox.maqet(["console", "nope"]).assertExit(5)
        let badRegex = sandbox.maqet(["wait", "plain", "--console", "(unclosed"])
        badRegex.assertExit(64)
        assertContains(badRegex.stderr, "invalid regular expression '(unclosed'")
        sandbox.maqet(["wait", "plain", "--for", "sleeping"]).assertExit(64)
        sandbox.maqet(["wait", "plain"]).assertExit(64)
        sandbox.maqet(["wait", "plain", "--for", "running", "--console", "x"]).assertExit(64)
        sandbox.maqet(["console", "plain", "--follow"]).assertExit(64)
        // Never started: not active, so "stopped" is reached at once; a console wait has nothing.
        sandbox.maqet(["wait", "plain", "--for", "stopped"]).assertExit(0)
        sandbox.maqet(["wait", "plain", "--for", "running", "--timeout", "0.2"]).assertExit(124)
        let notRunning = sandbox.maqet(["console", "plain"])
        notRunning.assertExit(1)
        assertContains(notRunning.stderr, "VM 'plain' is not running")
        let empty = sandbox.maqet(["console", "plain", "--log"])
        empty.assertExit(0)
        XCTAssertEqual(empty.stdout, "")

        // Misuse from Lua raises, naming the function; a regex handle is checked by its metatable.
        let misuse = sandbox.runScript("""
            print(pcall(maqet.vm.wait, "plain", {}))
            print(pcall(maqet.regex.compile("a").find, io.stdout, "a"))
            local re = assert(maqet.regex.compile("b+$"))
            print(re:find("abb\\nc"))
            print(re:find("a\\0bb", 3))
            print(maqet.regex.compile("[z-a]"))
            """)
        misuse.assertExit(0)
        assertContains(misuse.stdout, "maqet.vm.wait: opts must give either state or console")
        assertContains(misuse.stdout, "false\tre:find: expected a maqet.regex handle")
        assertContains(misuse.stdout, "2\t3\n")
        assertContains(misuse.stdout, "3\t4\n")
        assertContains(misuse.stdout, "EREGEX")
    }
}
