import Foundation
import XCTest

/// `maqet stop` of a VM whose start is still in progress, without a guest (the guest's side of
/// stop is in GuestTests).
final class StopTests: XCTestCase {
    /// A start that fails while a stop waits for it: the stop reports that nothing is running
    /// (exit 0), and no process of the VM is left.
    func testStopWaitsForAStartThatFails() throws {
        let sandbox = Sandbox()
        // A "QEMU" that takes a moment and then refuses, so the stop finds the row `starting`.
        let fake = sandbox.write("fake-qemu", "#!/bin/sh\nsleep 1\necho 'fake-qemu: not today' >&2\nexit 1\n")
        XCTAssertEqual(chmod(fake, 0o755), 0)
        // A wrapper that is knowingly not QEMU: binary_is_qemu: false takes it as it is.
        let config = sandbox.write("f.yaml", "name: f\nbinary: \(yamlQuoted(fake))\nbinary_is_qemu: false\n")
        sandbox.maqet(["add", config]).assertExit(0)

        let started = sandbox.maqet(["start", "f", "--no-wait"])
        started.assertExit(0)
        XCTAssertTrue(started.stdout.hasPrefix("f: starting"), started.stdout)
        let stopped = sandbox.maqet(["stop", "f", "--timeout", "60"])
        stopped.assertExit(0)
        XCTAssertTrue(stopped.stdout.hasPrefix("f: not running (its start failed; status "), stopped.stdout)
        let status = sqlite3(sandbox.databasePath, "SELECT status FROM vm_instances WHERE name = 'f'")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertNotEqual(status, "starting")
        XCTAssertNotEqual(status, "running")
        XCTAssertEqual(processes(of: sandbox), [])
    }

    func testPowerdownIntervalMustBePositive() {
        let sandbox = Sandbox()
        for bad in ["0", "-1", "nan", "soon"] {
            let result = sandbox.maqet(["stop", "--all", "--powerdown-interval", bad])
            result.assertExit(64)
            XCTAssertEqual(result.stdout, "")
            XCTAssertTrue(result.stderr.contains("--powerdown-interval"), result.stderr)
        }
    }
}
