import Foundation
import XCTest

/// Snapshots of the real test guest (Tests/guest, booted under TCG): a file written after a live
/// snapshot is gone once the snapshot is loaded, and the guest's shell runs on. The test talks to
/// the guest's shell itself, over a serial line on a Unix socket that the VM's config defines.
final class SnapshotGuestTests: XCTestCase {
    var sandboxes: [Sandbox] = []

    override func tearDown() {
        for sandbox in sandboxes {
            _ = sandbox.maqet(["stop", "--all", "--force"])
            let leftovers = processes(of: sandbox)
            for pid in leftovers { kill(pid, SIGKILL) }
            XCTAssertEqual(leftovers, [], "processes left running: \(leftovers.map { commandLine($0) })")
        }
        sandboxes = []
        super.tearDown()
    }

    func testLiveSnapshotOfARealGuestRollsBackItsFilesAndTheGuestRunsOn() throws {
        let sandbox = Sandbox()
        sandboxes.append(sandbox)
        var guest = GuestVM(name: "g")
        guest.diskSize = "32M"
        let socket = sandbox.root.file("g.sock")
        guest.extraArguments = ["serial: \(yamlQuoted("unix:\(socket),server=on,wait=off"))"]
        try sandbox.addGuest(guest)
        let disk = guest.diskPath(in: sandbox.root.path)

        sandbox.maqet(["start", "g"]).assertExit(0)
        let shell = try SerialLine(path: socket)
        defer { shell.close() }
        // Each command ends by printing a marker computed by the shell ($((…))), so the marker
        // appears only in the shell's output, never in the echo of what was typed.
        XCTAssertTrue(shell.run("echo ready-$((40+2))", until: "ready-42", seconds: 180, retry: true), shell.text)
        XCTAssertTrue(shell.run("echo body-$((10+1)) > /mnt/disk/first; sync; echo wrote-$((0+1))", until: "wrote-1"), shell.text)

        let created = sandbox.maqet(["snapshot", "create", "g", "before"])
        created.assertExit(0)
        assertContains(created.stdout, "with the VM's state")

        XCTAssertTrue(shell.run("echo two > /mnt/disk/second; sync; echo wrote-$((0+2))", until: "wrote-2"), shell.text)
        XCTAssertTrue(shell.run("test -e /mnt/disk/second && echo has-$((1+1))", until: "has-2"), shell.text)

        let loaded = sandbox.maqet(["snapshot", "load", "g", "before"])
        loaded.assertExit(0)
        assertContains(loaded.stdout, "the VM continues from it")

        // The guest is back at the moment of the snapshot: the first file is there, the second
        // gone, and its shell still answers.
        let probe = "if test -e /mnt/disk/second; then echo still-$((3+3)); else echo gone-$((3+4)); fi; cat /mnt/disk/first; echo done-$((4+4))"
        XCTAssertTrue(shell.run(probe, until: "done-8"), shell.text)
        // (The markers are computed by the shell, so they can only be its output.)
        let answer = shell.text
        XCTAssertTrue(answer.contains("gone-7"), answer)
        XCTAssertFalse(answer.contains("still-6"), answer)
        XCTAssertTrue(answer.contains("body-11"), answer)

        sandbox.maqet(["snapshot", "delete", "g", "before"]).assertExit(0)
        let listed = run("/usr/bin/qemu-img", ["snapshot", "-l", "-U", disk])
        XCTAssertFalse(listed.stdout.contains("before"), listed.stdout)

        // Stopped, the guest's disk takes an offline snapshot.
        sandbox.maqet(["stop", "g"]).assertExit(0)
        sandbox.maqet(["snapshot", "create", "g", "cold"]).assertExit(0)
        XCTAssertTrue(run("/usr/bin/qemu-img", ["snapshot", "-l", disk]).stdout.contains("cold"))
    }

    @discardableResult
    func run(_ program: String, _ arguments: [String]) -> CLIResult {
        runProcess(program, arguments, environment: ProcessInfo.processInfo.environment)
    }
}

/// A client of a QEMU serial line on a Unix socket (`-serial unix:PATH,server=on,wait=off`):
/// everything read is kept, commands are typed as lines.
final class SerialLine {
    private var fd: Int32 = -1
    private var received: [UInt8] = []

    init(path: String) throws {
        // QEMU creates the socket before the VM starts; connect as soon as it accepts.
        let deadline = Date().addingTimeInterval(30)
        while true {
            let candidate = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in
                raw.copyBytes(from: bytes)
                raw[bytes.count] = 0
            }
            let connected = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(candidate, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0 }
            }
            if connected {
                fd = candidate
                return
            }
            Foundation.close(candidate)
            if Date() > deadline { throw SystemErrorText(description: "cannot connect to the serial socket \(path): errno \(errno)") }
            usleep(20_000)
        }
    }

    struct SystemErrorText: Error, CustomStringConvertible { let description: String }

    var text: String { String(decoding: received, as: UTF8.self) }

    func type(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Reads what arrives for up to `ms`.
    private func pump(_ ms: Int32) {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&pfd, 1, ms) > 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        if n > 0 { received += buffer[0..<n] }
    }

    /// Types `command` and waits (a bound, not a timing assertion) until `marker` appears after
    /// it. With `retry`, types it again every 5 s (for a shell that is not up yet).
    func run(_ command: String, until marker: String, seconds: Double = 60, retry: Bool = false) -> Bool {
        let start = received.count
        type(command)
        var lastSent = Date()
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            pump(100)
            if String(decoding: received[start...], as: UTF8.self).contains(marker) { return true }
            if retry && Date().timeIntervalSince(lastSent) > 5 {
                type(command)
                lastSent = Date()
            }
        }
        return false
    }

    func close() {
        if fd >= 0 { Foundation.close(fd) }
        fd = -1
    }

    deinit { close() }
}
