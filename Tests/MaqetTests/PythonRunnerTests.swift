import Foundation
import XCTest

/// §5 of issue 10: a row adopted from the published (Python) maqet while its VM runs under that
/// tool's runner. The row is the fixture's (python-maqet-v1.db, migrated by maqet), the QEMU is
/// real and started in their command-line shape (a QMP *client* of the runner's socket
/// `<runtime>/sockets/<id>.sock`), and the runner is a stand-in (`standInRunner` below): THE ONE
/// FAULT-INJECTION FAKE of these tests, a small Python program run as
/// `python3 -m maqet.vm_runner <id> <db>` (their command line) that does what their runner does
/// on the paths maqet meets: writes the row (running, pid, runner_pid, socket_path), and on
/// SIGTERM sends QMP quit to its QEMU and records the VM stopped.
final class PythonRunnerTests: SandboxTestCase {
    override class var stopsLeftoversFirst: Bool { true }

    static let alphaID = "e1c80f6e-6d4b-4166-8981-e1ec565e5501"

    static let standInRunner = #"""
        # Stand-in for the published maqet's runner (maqet/vm_runner.py), for maqet's tests only.
        import json, os, signal, socket, sqlite3, subprocess, sys, time

        vm_id, db_path = sys.argv[1], sys.argv[2]
        runtime = os.path.join(os.environ["XDG_RUNTIME_DIR"], "maqet")
        sockets = os.path.join(runtime, "sockets")
        os.makedirs(sockets, exist_ok=True)
        path = os.path.join(sockets, vm_id + ".sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        # Their QEMUMachine's shape: QEMU connects to the runner's socket (no server=on).
        qemu = subprocess.Popen(["qemu-system-x86_64", "-display", "none", "-vga", "none",
                                 "-chardev", "socket,id=mon,path=" + path, "-mon", "chardev=mon,mode=control",
                                 "-machine", "none", "-name", vm_id],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(os.path.join(runtime, vm_id + ".log"), "w"))
        server.settimeout(30)
        conn, _ = server.accept()
        stream = conn.makefile("rw")
        stream.readline()
        stream.write(json.dumps({"execute": "qmp_capabilities"}) + "\n")
        stream.flush()
        stream.readline()

        def record(status, pid=None, runner=None, sock=None):
            db = sqlite3.connect(db_path, timeout=30)
            db.execute("UPDATE vm_instances SET status=?, pid=?, runner_pid=?, socket_path=?, qmp_socket_path=? WHERE id=?",
                       (status, pid, runner, sock, sock, vm_id))
            db.commit()
            db.close()

        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        record("running", qemu.pid, os.getpid(), path)
        while not stopping and qemu.poll() is None:
            time.sleep(0.05)
        if qemu.poll() is None:
            stream.write(json.dumps({"execute": "quit"}) + "\n")
            stream.flush()
            qemu.wait(10)
        record("stopped")
        os.unlink(path)
        """#

    func column(_ sandbox: Sandbox, _ column: String) -> String {
        sqlite3(sandbox.databasePath, "SELECT \(column) FROM vm_instances WHERE id = '\(Self.alphaID)'")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func testAVMLeftRunningByThePythonMaqetIsShownStoppedThroughItsRunnerAndStartsAgain() throws {
        let sandbox = makeSandbox()
        sandbox.installFixture("python-maqet-v1.db")
        sandbox.maqet(["ls"]).assertExit(0) // adopts (migrates) their database
        sandbox.write("py/maqet/__init__.py", "")
        sandbox.write("py/maqet/vm_runner.py", Self.standInRunner)
        try FileManager.default.createDirectory(atPath: sandbox.home + "/xdg-runtime", withIntermediateDirectories: true)

        let runner = Process()
        runner.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        runner.arguments = ["-m", "maqet.vm_runner", Self.alphaID, sandbox.databasePath]
        runner.currentDirectoryURL = URL(fileURLWithPath: sandbox.root.file("py"))
        runner.environment = testEnvironment(home: sandbox.home)
        try runner.run()
        defer { if runner.isRunning { runner.terminate() }; runner.waitUntilExit() }
        XCTAssertTrue(eventually(30) { column(sandbox, "status") == "running" }, "the stand-in runner never recorded its VM")
        let qemu = pid_t(column(sandbox, "pid")) ?? -1
        XCTAssertEqual(column(sandbox, "runner_pid"), String(runner.processIdentifier))
        XCTAssertTrue(commandLine(qemu).contains("sockets/\(Self.alphaID).sock"), commandLine(qemu))

        let ls = sandbox.maqet(["ls"])
        ls.assertExit(0)
        XCTAssertTrue(ls.stdout.contains("running (under the Python maqet's runner)"), ls.stdout)
        let status = sandbox.maqet(["status", "alpha"])
        status.assertExit(0)
        XCTAssertTrue(status.stdout.contains("running (under the Python maqet's runner)"), status.stdout)
        XCTAssertFalse(status.stdout.contains("runner missing"), status.stdout)
        let json = sandbox.maqet(["status", "alpha", "--format", "json"])
        let object = (try? JSONSerialization.jsonObject(with: Data(json.stdout.utf8))) as? [String: Any] ?? [:]
        XCTAssertEqual(object["runner"] as? String, "python-maqet")
        XCTAssertEqual(object["alive"] as? Bool, true)
        let inspect = sandbox.maqet(["inspect", "alpha", "--format", "json"])
        XCTAssertTrue(inspect.stdout.contains(#""runner": "python-maqet""#), inspect.stdout)

        // A start is refused: it runs.
        sandbox.maqet(["start", "alpha"]).assertExit(1)

        let stop = sandbox.maqet(["stop", "alpha"])
        stop.assertExit(0)
        XCTAssertTrue(stop.stdout.contains("stopped by: python-maqet runner (quit)"), stop.stdout)
        XCTAssertTrue(isGone(qemu))
        runner.waitUntilExit()
        XCTAssertEqual(runner.terminationStatus, 0, "their runner ended its own way (it recorded the stop)")
        XCTAssertEqual(column(sandbox, "status"), "stopped")
        XCTAssertEqual(column(sandbox, "pid"), "")

        // maqet starts it now, with its own runner.
        sandbox.maqet(["start", "alpha"]).assertExit(0)
        let mine = sandbox.maqet(["status", "alpha", "--format", "json"])
        let again = (try? JSONSerialization.jsonObject(with: Data(mine.stdout.utf8))) as? [String: Any] ?? [:]
        XCTAssertEqual(again["runner"] as? String, "running")
        sandbox.maqet(["stop", "alpha", "--timeout", "1"]).assertExit(0)
    }
}
