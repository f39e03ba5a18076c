import Foundation
import MaqetCore
import XCTest

/// A short-named temporary directory directly under /tmp (Unix socket paths are limited to 107 bytes).
final class ShortTempDir {
    let path: String

    init() {
        var template = Array("/tmp/mq.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { fatalError("mkdtemp failed in /tmp") }
        path = String(cString: made)
    }

    func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A guestless QEMU (`-machine none`) with two independent QMP monitors, `m1.sock` and `m2.sock`.
/// `stop()` kills it (SIGKILL) and reaps it; call it from tearDown so no QEMU outlives a test.
final class GuestlessQEMU {
    let dir = ShortTempDir()
    let process: Subprocess
    var monitor1: String { dir.file("m1.sock") }
    var monitor2: String { dir.file("m2.sock") }

    init() throws {
        var arguments = ["qemu-system-x86_64", "-machine", "none", "-display", "none", "-nodefaults", "-name", "qmptest"]
        for id in ["m1", "m2"] {
            arguments += ["-chardev", "socket,id=\(id),path=\(dir.file("\(id).sock")),server=on,wait=off",
                          "-mon", "chardev=\(id),mode=control"]
        }
        var options = Subprocess.Options(arguments: arguments)
        options.stdout = .discard
        options.stderr = .discard
        process = try Subprocess(options)
        // QEMU creates the listening sockets before its main loop; wait for both files.
        let deadline = monotonicMs() + 10_000
        while !(FileManager.default.fileExists(atPath: monitor1) && FileManager.default.fileExists(atPath: monitor2)) {
            guard process.isRunning, monotonicMs() < deadline else {
                process.close()
                throw SystemError(errno: ETIMEDOUT, "QEMU did not create its monitor sockets")
            }
            usleep(10_000)
        }
    }

    func stop() { process.close() }

    deinit { process.close() }
}

/// A listening Unix socket that plays a (misbehaving) QMP peer; `serve` runs on its own thread
/// with the accepted connection.
final class FakeQMPPeer {
    let dir = ShortTempDir()
    let path: String
    let listener: Int32
    private let done = DispatchSemaphore(value: 0)
    private var serving = false

    init() {
        path = dir.file("fake.sock")
        listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        precondition(listener >= 0, "socket failed")
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let rc = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        precondition(rc == 0, "bind failed: \(errno)")
        precondition(listen(listener, 4) == 0, "listen failed")
    }

    /// Accepts one connection on a background thread and runs `body` with it; the connection is
    /// closed when `body` returns.
    func serve(_ body: @escaping @Sendable (Int32) -> Void) {
        serving = true
        let listener = self.listener
        let done = self.done
        Thread.detachNewThread {
            let fd = accept(listener, nil, nil)
            if fd >= 0 {
                body(fd)
                close(fd)
            }
            done.signal()
        }
    }

    /// Writes `text` fully (the fake peer's side; SIGPIPE-free).
    static func write(_ fd: Int32, _ text: String) {
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Reads one line (up to "\n"), or nil at EOF.
    static func readLine(_ fd: Int32) -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1 {
            if byte == 0x0A { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
        return nil
    }

    /// The "id" of a command line the client sent.
    static func id(of line: String) -> String {
        guard case .object(let fields)? = try? JSONValue.parse(line),
              let id = fields.first(where: { $0.key == "id" })?.value,
              let text = try? id.serialized() else { return "null" }
        return text
    }

    static let greeting = #"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": []}}"# + "\r\n"

    /// Waits for the serving thread (after the client has gone), then closes the listener.
    func finish() {
        if serving {
            shutdown(listener, Int32(SHUT_RDWR))
            _ = done.wait(timeout: .now() + 5)
            serving = false
        }
        close(listener)
    }
}
