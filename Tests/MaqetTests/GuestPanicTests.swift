import Foundation
import XCTest

/// A real guest that panics (Tests/guest: `maqet.panic_after=N` makes its kernel panic N s after
/// boot): maqet's default pvpanic device reports GUEST_PANICKED, and the runner's hooks record the
/// truth. Under TCG; the waits are bounds for slow machines, not timing assertions.
final class GuestPanicTests: XCTestCase {
    var sandbox: Sandbox!

    override func setUp() {
        sandbox = Sandbox()
    }

    override func tearDown() {
        assertNothingLeft(of: sandbox)
        sandbox = nil
        super.tearDown()
    }

    func column(_ name: String, _ column: String) -> String {
        sqlite3(sandbox.databasePath, "SELECT \(column) FROM vm_instances WHERE name = '\(name)'").trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func history(_ name: String) -> String {
        (try? String(contentsOfFile: sandbox.dataDir + "/logs/\(name).log", encoding: .utf8)) ?? ""
    }

    func eventsLog(_ name: String) -> [[String: Any]] {
        let text = (try? String(contentsOfFile: sandbox.dataDir + "/logs/\(name).events.jsonl", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] }
    }

    /// Adds the guest with `extra` appended to its YAML (top-level keys).
    func addGuest(_ vm: GuestVM, extra: String = "") throws {
        let image = try GuestImage.shared()
        let path = sandbox.write("\(vm.name).yaml", vm.yaml(image: image, dir: sandbox.root.path) + extra)
        sandbox.maqet(["add", path]).assertExit(0)
    }

    func testAGuestPanicIsRecordedCrashedWithItsReason() throws {
        var vm = GuestVM(name: "panicky")
        vm.cmdline = ["maqet.panic_after=3"]
        vm.serialLog = sandbox.serialLog("panicky")
        try addGuest(vm)
        let start = sandbox.maqet(["start", "panicky"])
        start.assertExit(0)
        assertContains(sandbox.maqet(["show-cmd", "panicky"]).stdout, " -device pvpanic -action panic=shutdown ")
        waitForSerial(vm.serialLog!, GuestImage.booted)
        // QEMU powers off on the panic (on_panic: shutdown, the default); the runner records why.
        XCTAssertTrue(eventually(180) { self.column("panicky", "status") == "crashed" }, "status \(column("panicky", "status")); \(history("panicky"))")
        XCTAssertTrue(eventually(10) { self.history("panicky").contains("crashed: guest-panic: ") })
        let log = history("panicky")
        assertContains(log, "guest panicked")
        assertContains(log, "crashed: guest-panic: QEMU ")
        XCTAssertEqual(column("panicky", "pid"), "")
        let events = eventsLog("panicky")
        XCTAssertTrue(events.contains { $0["event"] as? String == "GUEST_PANICKED" }, "\(events)")
        XCTAssertTrue(events.contains { $0["event"] as? String == "state" && $0["status"] as? String == "crashed" && $0["reason"] as? String == "guest-panic" }, "\(events)")
        let status = sandbox.maqet(["status", "panicky"])
        status.assertExit(0)
        assertContains(status.stdout, "crashed")
    }

    func testOnPanicPauseKeepsThePanickedGuestForDebuggingUntilStopped() throws {
        var vm = GuestVM(name: "debugme")
        vm.cmdline = ["maqet.panic_after=3"]
        vm.serialLog = sandbox.serialLog("debugme")
        try addGuest(vm, extra: "on_panic: pause\n")
        sandbox.maqet(["start", "debugme"]).assertExit(0)
        waitForSerial(vm.serialLog!, GuestImage.booted)
        XCTAssertTrue(eventually(180) { self.column("debugme", "status") == "paused" }, "status \(column("debugme", "status")); \(history("debugme"))")
        assertContains(history("debugme"), "QEMU keeps it paused for debugging (on_panic: pause)")
        let qmp = sandbox.maqet(["qmp", "debugme", "query-status", "--compact"])
        qmp.assertExit(0)
        assertContains(qmp.stdout, #""status":"guest-panicked""#)
        XCTAssertTrue(eventsLog("debugme").contains { $0["event"] as? String == "state" && $0["status"] as? String == "paused" && $0["reason"] as? String == "guest-panic" })

        // QEMU itself would `cont` the panicked guest (its kernel goes on panicking while the row
        // said running): maqet refuses, and nothing changes.
        let resume = sandbox.maqet(["resume", "debugme"])
        resume.assertExit(3)
        assertContains(resume.stderr, "cannot resume VM 'debugme': its guest panicked")
        XCTAssertEqual(resume.stderr.split(separator: "\n").count, 1, resume.stderr)
        XCTAssertEqual(column("debugme", "status"), "paused")
        assertContains(sandbox.maqet(["qmp", "debugme", "query-status", "--compact"]).stdout, #""status":"guest-panicked""#)

        let stop = sandbox.maqet(["stop", "debugme"])
        stop.assertExit(0)
        XCTAssertEqual(stop.stdout, "debugme: stopped (stopped by: quit)\n")
        assertContains(history("debugme"), "crashed: guest-panic: QEMU exited with code 0 after SHUTDOWN (reason host-qmp-quit")
    }
}
