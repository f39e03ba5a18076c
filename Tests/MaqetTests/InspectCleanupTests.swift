import Foundation
import XCTest

/// `maqet info`, `inspect`, `cleanup` and `doctor` with the real binary, real SQLite files and a
/// real guestless QEMU (`-machine none`). What cleanup may end is checked by process identity, so
/// the tests also plant processes and files it must leave alone.
final class InspectCleanupTests: SandboxTestCase {
    override class var stopsLeftoversFirst: Bool { true }

    override func makeSandbox() -> Sandbox {
        let sandbox = super.makeSandbox()
        sandbox.maqet(["ls"]).assertExit(0) // creates and migrates instances.db
        return sandbox
    }

    static let guestless = "memory: 64M\narguments:\n  - machine: none\n"

    func json(_ result: CLIResult, file: StaticString = #filePath, line: UInt = #line) -> [String: Any] {
        result.assertExit(0, file: file, line: line)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(result.stdout.utf8))) as? [String: Any] else {
            XCTFail("not a JSON object: \(result.stdout)", file: file, line: line)
            return [:]
        }
        return object
    }

    func column(_ sandbox: Sandbox, _ name: String, _ column: String) -> String {
        sqlite3(sandbox.databasePath, "SELECT \(column) FROM vm_instances WHERE name = '\(name)'")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func runtimeRoot(_ sandbox: Sandbox) -> String { "\(sandbox.home)/xdg-runtime/maqet" }

    // MARK: - info and inspect

    func testInfoAndInspectOfAStoppedVMCarryTheConfigAsAnObjectAndThePublishedSummary() throws {
        let sandbox = makeSandbox()
        let config = sandbox.write("web.yaml", """
            name: web
            memory: 128M
            cpu: 2
            storage:
              - name: hdd
                type: qcow2
                size: 16M
                file: web.qcow2
            arguments:
              - machine: q35
            """)
        sandbox.maqet(["add", config]).assertExit(0)
        let id = column(sandbox, "web", "id")

        let info = json(sandbox.maqet(["info", "web", "--format", "json"]))
        XCTAssertEqual(info["vm_id"] as? String, id)
        XCTAssertEqual(info["name"] as? String, "web")
        XCTAssertEqual(info["config_path"] as? String, column(sandbox, "web", "config_path"))
        let stored = (info["config"] as? [String: Any]) ?? [:]
        XCTAssertEqual(stored["memory"] as? String, "128M", "the config is an object, not an escaped string")
        XCTAssertEqual((info["config_data"] as? [String: Any])?["cpu"] as? Int, 2, "config_data: the published maqet's name")
        let summary = (info["configuration"] as? [String: Any]) ?? [:]
        XCTAssertEqual(summary["binary"] as? String, "qemu-system-x86_64")
        XCTAssertEqual(summary["memory"] as? String, "128M")
        XCTAssertEqual(summary["cpu"] as? Int, 2)
        XCTAssertEqual(summary["display"] as? String, "none")
        XCTAssertEqual(summary["storage_count"] as? Int, 1)
        let disks = (summary["storage_devices"] as? [[String: Any]]) ?? []
        XCTAssertEqual(disks.first?["name"] as? String, "hdd")
        XCTAssertEqual(disks.first?["type"] as? String, "qcow2")
        XCTAssertEqual(disks.first?["size"] as? String, "16M")

        let text = sandbox.maqet(["info", "web"])
        text.assertExit(0)
        XCTAssertTrue(text.stdout.contains("Memory:      128M"), text.stdout)
        XCTAssertTrue(text.stdout.contains("hdd  qcow2  16M"), text.stdout)

        let inspect = json(sandbox.maqet(["inspect", "web", "--format", "json"]))
        XCTAssertEqual(inspect["status"] as? String, "created")
        XCTAssertEqual(inspect["is_running"] as? Bool, false)
        XCTAssertTrue(inspect["process"] is NSNull, "no QEMU, no process")
        XCTAssertEqual(inspect["vm_id"] as? String, id)
        XCTAssertNotNil(inspect["created_at"] as? String)

        let missing = sandbox.maqet(["info", "nosuch"])
        missing.assertExit(5)
        XCTAssertTrue(missing.stderr.contains("no VM named 'nosuch'"), missing.stderr)
        sandbox.maqet(["inspect", "nosuch"]).assertExit(5)
    }

    func testInspectOfARunningVMReadsItsQEMUProcessFromProc() throws {
        let sandbox = makeSandbox()
        sandbox.maqet(["add", sandbox.write("g.yaml", "name: g\n" + Self.guestless)]).assertExit(0)
        sandbox.maqet(["start", "g"]).assertExit(0)
        let pid = Int(column(sandbox, "g", "pid")) ?? -1

        let inspect = json(sandbox.maqet(["inspect", "g", "--format", "json"]))
        XCTAssertEqual(inspect["status"] as? String, "running")
        XCTAssertEqual(inspect["is_running"] as? Bool, true)
        XCTAssertEqual(inspect["runner"] as? String, "running", "maqet's own runner, in status's words")
        let process = (inspect["process"] as? [String: Any]) ?? [:]
        XCTAssertEqual(process["pid"] as? Int, pid)
        let cmdline = (process["cmdline"] as? [String]) ?? []
        XCTAssertEqual(cmdline.joined(separator: " "), commandLine(pid_t(pid)).trimmingCharacters(in: .whitespaces))
        XCTAssertTrue(cmdline.contains { $0.contains(inspect["qmp_socket_path"] as? String ?? "?") }, "\(cmdline)")
        XCTAssertGreaterThan(process["rss_bytes"] as? Int ?? 0, 0)
        XCTAssertNotNil(process["cpu_percent"] as? Double)
        let started = process["start_time"] as? String ?? ""
        XCTAssertNotNil(started.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"#, options: .regularExpression), started)

        let text = sandbox.maqet(["inspect", "g"])
        text.assertExit(0)
        XCTAssertTrue(text.stdout.contains("Command:"), text.stdout)
        XCTAssertTrue(text.stdout.contains("% over its life"), text.stdout)
        sandbox.maqet(["stop", "g", "--force"]).assertExit(0)
    }

    // MARK: - cleanup

    func testCleanupEndsOnlyAVerifiedOrphanAndRemovesOnlyStaleFiles() throws {
        let sandbox = makeSandbox()
        sandbox.maqet(["add", sandbox.write("g.yaml", "name: g\n" + Self.guestless)]).assertExit(0)
        sandbox.maqet(["add", sandbox.write("decoy.yaml", "name: decoy\n" + Self.guestless)]).assertExit(0)
        sandbox.maqet(["start", "g"]).assertExit(0)
        let qemu = pid_t(column(sandbox, "g", "pid")) ?? -1
        let runner = pid_t(column(sandbox, "g", "runner_pid")) ?? -1
        kill(runner, SIGKILL) // the orphan: QEMU runs on without its runner
        XCTAssertTrue(eventually { isGone(runner) })

        // Stale files: a runtime dir of no VM, a lock of a removed VM, the Python maqet's leftovers.
        let root = runtimeRoot(sandbox)
        let removedID = UUID().uuidString.lowercased()
        let staleDir = "\(root)/\(removedID.prefix(12))"
        try FileManager.default.createDirectory(atPath: staleDir, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: staleDir + "/qemu.log", contents: Data("old\n".utf8))
        let removedLock = "\(root)/locks/\(removedID).lock" // maqet's: never removed (architecture.md)
        FileManager.default.createFile(atPath: removedLock, contents: Data())
        let staleLock = "\(root)/locks/oldvm.lock" // the published maqet's start lock, by name
        FileManager.default.createFile(atPath: staleLock, contents: Data())
        let gLock = "\(root)/locks/\(column(sandbox, "g", "id")).lock"
        XCTAssertTrue(FileManager.default.fileExists(atPath: gLock))
        try FileManager.default.createDirectory(atPath: "\(root)/sockets", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(root)/pids", withIntermediateDirectories: true)
        let pythonSocket = "\(root)/sockets/\(removedID).sock", pythonPid = "\(root)/pids/\(removedID).pid"
        FileManager.default.createFile(atPath: pythonSocket, contents: Data())
        FileManager.default.createFile(atPath: pythonPid, contents: Data("1\n".utf8))
        let notOurs = "\(root)/notes.txt"
        FileManager.default.createFile(atPath: notOurs, contents: Data("mine\n".utf8))

        // No terminal and no --force: refused, nothing ended or removed.
        let refused = sandbox.maqet(["cleanup"])
        refused.assertExit(3)
        XCTAssertTrue(refused.stderr.contains("--force"), refused.stderr)
        XCTAssertFalse(isGone(qemu))
        XCTAssertTrue(FileManager.default.fileExists(atPath: staleDir))

        // (After the refusal, which records the truth of the rows as `ls` would.)
        // An unrelated process whose pid a row claims: it must never be signalled.
        let unrelated = Process()
        unrelated.executableURL = URL(fileURLWithPath: "/bin/sleep")
        unrelated.arguments = ["300"]
        try unrelated.run()
        defer { unrelated.terminate(); unrelated.waitUntilExit() }
        _ = sqlite3(sandbox.databasePath, "UPDATE vm_instances SET status = 'running', pid = \(unrelated.processIdentifier) WHERE name = 'decoy'")

        let dry = json(sandbox.maqet(["cleanup", "--dry-run", "--format", "json"]))
        XCTAssertEqual(dry["dry_run"] as? Bool, true)
        XCTAssertEqual(((dry["orphans"] as? [[String: Any]]) ?? []).map { $0["pid"] as? Int }, [Int(qemu)])
        XCTAssertEqual(((dry["runtime_dirs"] as? [[String: Any]]) ?? []).map { $0["path"] as? String }, [staleDir])
        XCTAssertEqual(((dry["lock_files"] as? [[String: Any]]) ?? []).map { $0["path"] as? String }, [staleLock])
        XCTAssertEqual(Set(((dry["python_files"] as? [[String: Any]]) ?? []).compactMap { $0["path"] as? String }), [pythonSocket, pythonPid])
        XCTAssertEqual(((dry["reconciled"] as? [[String: Any]]) ?? []).map { $0["name"] as? String }, ["decoy"],
                       "the decoy's pid runs no QEMU of it: recorded as it is")
        XCTAssertFalse(isGone(qemu), "--dry-run ends nothing")
        XCTAssertTrue(FileManager.default.fileExists(atPath: staleLock))

        let done = json(sandbox.maqet(["cleanup", "--force", "--format", "json"]))
        XCTAssertEqual(done["cleaned"] as? Int, 5)
        XCTAssertTrue(eventually { isGone(qemu) })
        XCTAssertEqual(((done["orphans"] as? [[String: Any]]) ?? []).first?["ended_by"] as? String, "quit")
        XCTAssertEqual(column(sandbox, "g", "status"), "stopped")
        for path in [staleDir, staleLock, pythonSocket, pythonPid] {
            XCTAssertFalse(FileManager.default.fileExists(atPath: path), path)
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: gLock), "the lock of an existing VM is never removed")
        XCTAssertTrue(FileManager.default.fileExists(atPath: removedLock), "nor a maqet lock of a VM it does not know")
        XCTAssertTrue(FileManager.default.fileExists(atPath: notOurs), "a file maqet did not make is left alone")
        XCTAssertTrue(unrelated.isRunning, "the unrelated process was never signalled")
        XCTAssertEqual(column(sandbox, "decoy", "status"), "crashed")

        let again = sandbox.maqet(["cleanup", "--force"])
        again.assertExit(0)
        XCTAssertTrue(again.stdout.contains("Nothing to clean up."), again.stdout)
    }

    func testCleanupEndsAQEMUWhoseRowWasRemovedButNeverAnotherDataDirectorysVM() throws {
        let sandbox = makeSandbox()
        let other = sandbox.root.file("other-data") // a second data directory, same runtime directory
        func inOther(_ arguments: [String]) -> CLIResult {
            sandbox.maqet(["--maqet-data-dir", other] + arguments, useDataDirOption: false)
        }
        inOther(["add", sandbox.write("b.yaml", "name: b\n" + Self.guestless)]).assertExit(0)
        inOther(["start", "b"]).assertExit(0)
        let otherQEMU = pid_t(sqlite3(other + "/instances.db", "SELECT pid FROM vm_instances WHERE name = 'b'")
            .trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        let otherID = sqlite3(other + "/instances.db", "SELECT id FROM vm_instances WHERE name = 'b'")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let otherDir = "\(runtimeRoot(sandbox))/\(otherID.prefix(12))"

        sandbox.maqet(["add", sandbox.write("h.yaml", "name: h\n" + Self.guestless)]).assertExit(0)
        sandbox.maqet(["start", "h"]).assertExit(0)
        let qemu = pid_t(column(sandbox, "h", "pid")) ?? -1
        _ = sqlite3(sandbox.databasePath, "DELETE FROM vm_instances WHERE name = 'h'") // removed behind maqet's back

        let dry = json(sandbox.maqet(["cleanup", "--dry-run", "--format", "json"]))
        let orphans = (dry["orphans"] as? [[String: Any]]) ?? []
        XCTAssertEqual(orphans.map { $0["pid"] as? Int }, [Int(qemu)], "only this data directory's QEMU: \(orphans)")
        XCTAssertTrue(orphans.first?["name"] is NSNull)

        sandbox.maqet(["cleanup", "--force"]).assertExit(0)
        XCTAssertTrue(eventually { isGone(qemu) })
        XCTAssertFalse(isGone(otherQEMU), "another data directory's VM is not an orphan")
        XCTAssertTrue(FileManager.default.fileExists(atPath: otherDir), "nor is its runtime directory stale")
        XCTAssertEqual(sqlite3(other + "/instances.db", "SELECT status FROM vm_instances WHERE name = 'b'")
            .trimmingCharacters(in: .whitespacesAndNewlines), "running")
        inOther(["stop", "b", "--force"]).assertExit(0)
        XCTAssertTrue(eventually { self.processes(of: sandbox).isEmpty }, "h's runner ends once its QEMU has")
    }

    func testCleanupAsksOnATerminalAndDoesNothingOnNo() throws {
        let sandbox = makeSandbox()
        let stale = "\(runtimeRoot(sandbox))/\(UUID().uuidString.lowercased().prefix(12))"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: stale + "/qemu.log", contents: Data("old\n".utf8))
        func cleanup(answer: String) -> CLIResult {
            let command = "'\(maqetBinary)' --maqet-data-dir '\(sandbox.dataDir)' cleanup"
            return runProcess("/usr/bin/script", ["-qec", command, "/dev/null"],
                              environment: testEnvironment(home: sandbox.home), stdin: answer + "\n")
        }
        let no = cleanup(answer: "n")
        no.assertExit(3)
        XCTAssertTrue(no.stdout.contains("remove runtime directory \(stale)"), no.stdout)
        XCTAssertTrue(no.stdout.contains("Clean up 1 thing? [y/N]"), no.stdout)
        XCTAssertTrue(no.stdout.contains("maqet: nothing cleaned up"), no.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: stale))
        let yes = cleanup(answer: "y")
        yes.assertExit(0)
        XCTAssertTrue(yes.stdout.contains("cleaned up 1"), yes.stdout)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
    }

    // MARK: - doctor

    func testDoctorWarnsAboutStaleFilesFixesThemAndFailsWithoutQEMU() throws {
        let sandbox = makeSandbox()
        let root = runtimeRoot(sandbox)
        let stale = "\(root)/\(UUID().uuidString.lowercased().prefix(12))"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: stale + "/runner.json", contents: Data("{}".utf8))

        func check(_ report: [String: Any], _ name: String) -> [String: Any] {
            ((report["checks"] as? [[String: Any]]) ?? []).first { $0["name"] as? String == name } ?? [:]
        }
        let before = json(sandbox.maqet(["doctor", "--format", "json"]))
        XCTAssertEqual(before["healthy"] as? Bool, true, "stale files are a warning, not an error")
        XCTAssertEqual(check(before, "runtime_files")["ok"] as? Bool, false)
        XCTAssertEqual(check(before, "runtime_files")["severity"] as? String, "warning")
        XCTAssertEqual(check(before, "database")["ok"] as? Bool, true)
        XCTAssertEqual(check(before, "qemu")["ok"] as? Bool, true)
        XCTAssertEqual(check(before, "qemu_img")["ok"] as? Bool, true)
        XCTAssertNotNil(check(before, "kvm")["ok"] as? Bool, "reported either way")
        XCTAssertEqual(check(before, "runtime_dir")["ok"] as? Bool, true)
        XCTAssertTrue(FileManager.default.fileExists(atPath: stale), "doctor without --fix changes no file")

        let fixed = json(sandbox.maqet(["doctor", "--fix", "--format", "json"]))
        XCTAssertEqual(fixed["fixed"] as? Int, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
        XCTAssertEqual(check(json(sandbox.maqet(["doctor", "--format", "json"])), "runtime_files")["ok"] as? Bool, true)

        // Without QEMU on PATH: an error, exit 1, and the report still printed.
        sandbox.extraEnvironment["PATH"] = sandbox.root.file("empty-bin")
        let broken = sandbox.maqet(["doctor", "--format", "json"])
        XCTAssertEqual(broken.code, 1, broken.stderr)
        let report = (try? JSONSerialization.jsonObject(with: Data(broken.stdout.utf8))) as? [String: Any] ?? [:]
        XCTAssertEqual(report["healthy"] as? Bool, false)
        XCTAssertEqual(check(report, "qemu")["ok"] as? Bool, false)
        XCTAssertTrue((report["errors"] as? [String] ?? []).contains { $0.hasPrefix("qemu:") }, "\(report)")
        let text = sandbox.maqet(["doctor"])
        XCTAssertEqual(text.code, 1)
        XCTAssertTrue(text.stdout.contains("FAIL  qemu"), text.stdout)
    }
}
