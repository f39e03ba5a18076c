import Foundation
import XCTest

/// The example scripts in docs/examples that Tools/demo runs, against the real test guest.
final class ExamplesTests: XCTestCase {
    var sandboxes: [Sandbox] = []

    override func tearDown() {
        for sandbox in sandboxes {
            let leftovers = processes(of: sandbox)
            for pid in leftovers { kill(pid, SIGKILL) }
            XCTAssertEqual(leftovers, [], "processes left running by the test: \(leftovers.map { commandLine($0) })")
        }
        sandboxes = []
        super.tearDown()
    }

    static func example(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/examples/\(name)").path
    }

    /// guest-command.lua types a command line on the guest's console and prints exactly what the
    /// command printed (not the echoed line, not the prompt), also for a line longer than the
    /// terminal is wide, and exits with the command's exit status. Its failures are one line.
    func testGuestCommandRunsACommandOnTheConsole() throws {
        let sandbox = Sandbox()
        sandboxes.append(sandbox)
        let script = Self.example("guest-command.lua")
        try sandbox.addGuest(GuestVM(name: "g"))
        sandbox.maqet(["start", "g"]).assertExit(0)
        defer { sandbox.maqet(["stop", "g", "--force"]) }
        sandbox.maqet(["wait", "g", "--console", GuestImage.booted, "--timeout", "180"]).assertExit(0)

        let two = sandbox.maqet(["run", script, "g", "echo one; echo $((1+1))"])
        two.assertExit(0)
        XCTAssertEqual(two.stdout, "one\n2\n")

        // 120 characters of output from a command line wider than 80 columns.
        let long = String(repeating: "0123456789", count: 12)
        let wide = sandbox.maqet(["run", script, "g", "echo \(long)"])
        wide.assertExit(0)
        XCTAssertEqual(wide.stdout, long + "\n")

        let failed = sandbox.maqet(["run", script, "g", "echo partial; sh -c 'exit 3'"])
        failed.assertExit(3)
        XCTAssertEqual(failed.stdout, "partial\n")

        let nothing = sandbox.maqet(["run", script, "g", "true"])
        nothing.assertExit(0)
        XCTAssertEqual(nothing.stdout, "")

        let noVM = sandbox.maqet(["run", script, "nope", "true"])
        noVM.assertExit(5)
        XCTAssertEqual(noVM.stderr, "maqet: no VM named 'nope' (see 'maqet ls')\n")

        let usage = sandbox.maqet(["run", script, "g"])
        usage.assertExit(64)
        assertContains(usage.stderr, "usage: maqet run guest-command.lua NAME 'COMMAND' [PROMPT]")

        sandbox.maqet(["stop", "g"]).assertExit(0)
        let stopped = sandbox.maqet(["run", script, "g", "true"])
        stopped.assertExit(1)
        XCTAssertEqual(stopped.stderr, "maqet: VM 'g' is stopped, not running (start it with 'maqet start g')\n")
    }
}
