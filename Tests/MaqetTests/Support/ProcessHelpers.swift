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
}
