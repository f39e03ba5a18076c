import Foundation
import XCTest

/// What the tests ask /proc about the processes maqet starts, and the bounded wait they use.
extension XCTestCase {
    /// Polls `condition` every 20 ms for up to `seconds` (a bound, not a timing assertion);
    /// returns whether it became true.
    @discardableResult
    func eventually(_ seconds: Double = 10, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(20_000)
        }
        return condition()
    }

    /// /proc/PID/stat split after the command name: [0] = field 3 (state), [3] = field 6 (session).
    func statFields(_ pid: pid_t) -> [String]? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        return text[text.index(after: close)...].split(separator: " ").map(String.init)
    }

    /// True once `pid` has exited (gone, or a zombie).
    func isGone(_ pid: pid_t) -> Bool {
        guard let fields = statFields(pid) else { return true }
        return fields[0] == "Z"
    }

    /// Whether `pid` is a live process (not a zombie).
    func isAlive(_ pid: Int) -> Bool { !isGone(pid_t(pid)) }

    /// The command line of `pid` with spaces for NULs, "?" when it is gone.
    func commandLine(_ pid: pid_t) -> String {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return "?" }
        return String(decoding: data, as: UTF8.self).replacingOccurrences(of: "\0", with: " ")
    }

    /// Live (non-zombie) processes whose command line or environment names the sandbox's home:
    /// its QEMUs (sockets under <home>/xdg-runtime) and runners (started with its environment).
    func processes(of sandbox: Sandbox) -> [pid_t] {
        let me = getpid()
        var found: [pid_t] = []
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = pid_t(entry), pid != me else { continue }
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            let state = stat[stat.index(close, offsetBy: 2)]
            if state == "Z" { continue }
            let cmdline = (FileManager.default.contents(atPath: "/proc/\(pid)/cmdline")).map { String(decoding: $0, as: UTF8.self) } ?? ""
            let environ = (FileManager.default.contents(atPath: "/proc/\(pid)/environ")).map { String(decoding: $0, as: UTF8.self) } ?? ""
            // Our own test children (sqlite3, maqet commands still running) end before we look.
            if cmdline.contains(sandbox.home) || environ.contains("XDG_RUNTIME_DIR=\(sandbox.home)/") {
                found.append(pid)
            }
        }
        return found.sorted()
    }

    /// For tearDown: fails the test when any process of `sandbox` is still alive, after killing
    /// them (SIGKILL), so that a failing test leaves nothing behind either.
    func assertNothingLeft(of sandbox: Sandbox, file: StaticString = #filePath, line: UInt = #line) {
        let leftovers = processes(of: sandbox)
        for pid in leftovers { kill(pid, SIGKILL) }
        XCTAssertEqual(leftovers, [], "processes left running by the test: \(leftovers.map { commandLine($0) })", file: file, line: line)
    }
}

/// A test case whose sandboxes (`makeSandbox()`) are checked in tearDown: no QEMU or runner of
/// theirs may be left. With `stopsLeftoversFirst`, what a failed test left running is stopped
/// first (`stop --all --force`), so one failure does not cascade into the next test.
class SandboxTestCase: XCTestCase {
    private var sandboxes: [Sandbox] = []

    class var stopsLeftoversFirst: Bool { false }

    /// A new sandbox that tearDown checks.
    func makeSandbox() -> Sandbox {
        let sandbox = Sandbox()
        sandboxes.append(sandbox)
        return sandbox
    }

    override func tearDown() {
        for sandbox in sandboxes {
            if Self.stopsLeftoversFirst, !processes(of: sandbox).isEmpty { sandbox.maqet(["stop", "--all", "--force"]) }
            assertNothingLeft(of: sandbox)
        }
        sandboxes = []
        super.tearDown()
    }
}
