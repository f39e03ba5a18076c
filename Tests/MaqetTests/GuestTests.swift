import Foundation
import XCTest

/// maqet with a real Linux guest (Tests/guest: Debian's cloud kernel and a busybox initramfs) under
/// TCG: boot, a qcow2 disk maqet creates, a port forward, and stops that reach the guest's ACPI
/// power button handler. What the guest printed is read from its `file:` serial line. Each boot
/// takes seconds, so the tests are few; each kills what it started and checks nothing is left.
final class GuestTests: SandboxTestCase {
    override class var stopsLeftoversFirst: Bool { true }

    /// The row's status, as the state database has it.
    func status(_ sandbox: Sandbox, _ name: String) -> String {
        sqlite3(sandbox.databasePath, "SELECT status FROM vm_instances WHERE name = '\(name)'")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func testGuestBootsServesItsPortAndStopsByPowerdownKeepingItsDisk() throws {
        let sandbox = makeSandbox()
        var vm = GuestVM(name: "g")
        vm.diskSize = "64M"
        vm.hostPort = freeLocalPort()
        vm.serialLog = sandbox.serialLog("g")
        let serial = try XCTUnwrap(vm.serialLog)
        try sandbox.addGuest(vm)

        sandbox.maqet(["start", "g"]).assertExit(0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: vm.diskPath(in: sandbox.root.path)), "maqet did not create the disk")
        guard waitForSerial(serial, GuestImage.booted) else { return }
        XCTAssertEqual(bootCounts(serialText(serial)), [1], serialText(serial))
        let page = httpGet(port: try XCTUnwrap(vm.hostPort))
        XCTAssertTrue(page?.contains(GuestImage.httpdContent) == true, "the forwarded port answered: \(page ?? "nothing")")

        let stopped = sandbox.maqet(["stop", "g", "--timeout", "120"])
        stopped.assertExit(0)
        XCTAssertEqual(stopped.stdout, "g: stopped (stopped by: powerdown)\n")
        XCTAssertTrue(serialText(serial).contains(GuestImage.powerButton), serialText(serial))
        XCTAssertEqual(status(sandbox, "g"), "stopped")

        // The disk kept what the first boot wrote: the guest counts its second boot.
        sandbox.maqet(["start", "g"]).assertExit(0)
        guard waitForSerial(serial, GuestImage.booted) else { return }
        XCTAssertEqual(bootCounts(serialText(serial)).last, 2, serialText(serial))
        let again = sandbox.maqet(["stop", "g", "--timeout", "120"])
        again.assertExit(0)
        XCTAssertEqual(again.stdout, "g: stopped (stopped by: powerdown)\n")
    }

    /// `maqet start g && maqet stop g`: the stop reaches a guest that is still booting (the
    /// powerdown is repeated until the guest's handler takes it), not QEMU's quit.
    func testStopRightAfterStartReachesTheBootingGuest() throws {
        let sandbox = makeSandbox()
        var vm = GuestVM(name: "quick")
        vm.serialLog = sandbox.serialLog("quick")
        let serial = try XCTUnwrap(vm.serialLog)
        try sandbox.addGuest(vm)

        sandbox.maqet(["start", "quick"]).assertExit(0)
        let stopped = sandbox.maqet(["stop", "quick", "--timeout", "180"])
        stopped.assertExit(0)
        XCTAssertEqual(stopped.stdout, "quick: stopped (stopped by: powerdown)\n", serialText(serial))
        XCTAssertTrue(serialText(serial).contains(GuestImage.powerButton), serialText(serial))
        XCTAssertEqual(status(sandbox, "quick"), "stopped")

        // Still `starting` (--no-wait): the stop waits for the start, then reaches the guest.
        sandbox.maqet(["start", "quick", "--no-wait"]).assertExit(0)
        let whileStarting = sandbox.maqet(["stop", "quick", "--timeout", "180"])
        whileStarting.assertExit(0)
        XCTAssertEqual(whileStarting.stdout, "quick: stopped (stopped by: powerdown)\n", serialText(serial))
        XCTAssertTrue(serialText(serial).contains(GuestImage.powerButton), serialText(serial))
        XCTAssertEqual(status(sandbox, "quick"), "stopped")
    }

    /// `maqet start a; maqet start b; maqet stop --all`: both booting guests are reached, together.
    func testStopAllReachesEveryBootingGuest() throws {
        let sandbox = makeSandbox()
        var serials: [String: String] = [:]
        for name in ["one", "two"] {
            var vm = GuestVM(name: name)
            vm.serialLog = sandbox.serialLog(name)
            serials[name] = vm.serialLog
            try sandbox.addGuest(vm)
            sandbox.maqet(["start", name]).assertExit(0)
        }
        let stopped = sandbox.maqet(["stop", "--all", "--timeout", "180"])
        stopped.assertExit(0)
        XCTAssertEqual(stopped.stdout, "one: stopped (stopped by: powerdown)\ntwo: stopped (stopped by: powerdown)\n",
                       serials.values.map(serialText).joined(separator: "\n---\n"))
        for (name, serial) in serials {
            XCTAssertTrue(serialText(serial).contains(GuestImage.powerButton), "\(name): \(serialText(serial))")
            XCTAssertEqual(status(sandbox, name), "stopped")
        }
    }

    /// A guest that ignores the power button: the ladder moves on to quit when --timeout passes.
    func testGuestIgnoringThePowerButtonIsEndedByQuit() throws {
        let sandbox = makeSandbox()
        var vm = GuestVM(name: "stubborn")
        vm.cmdline = ["maqet.ignore_powerbutton=1"]
        vm.serialLog = sandbox.serialLog("stubborn")
        let serial = try XCTUnwrap(vm.serialLog)
        try sandbox.addGuest(vm)

        sandbox.maqet(["start", "stubborn"]).assertExit(0)
        guard waitForSerial(serial, GuestImage.booted) else { return }
        let stopped = sandbox.maqet(["stop", "stubborn", "--timeout", "6", "--powerdown-interval", "1"])
        stopped.assertExit(0)
        XCTAssertEqual(stopped.stdout, "stubborn: stopped (stopped by: quit)\n")
        // The button was pressed again and again while the timeout ran (at 0, 1, 2, ... s).
        XCTAssertGreaterThanOrEqual(serialText(serial).components(separatedBy: GuestImage.powerButtonIgnored).count - 1, 2,
                                    serialText(serial))
        // Every press the guest saw was ignored ("…-POWERBUTTON" never printed on its own).
        let text = serialText(serial)
        XCTAssertEqual(text.components(separatedBy: GuestImage.powerButton).count,
                       text.components(separatedBy: GuestImage.powerButtonIgnored).count, text)
    }
}
