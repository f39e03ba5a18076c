import Foundation
import XCTest

/// The real test guest: Debian's cloud kernel and a busybox initramfs, built by Tests/guest/build.sh
/// (cached under .build/guest, or $MAQET_GUEST_CACHE). What the guest prints and which kernel
/// command-line switches it takes are described in Tests/guest/init.
struct GuestImage {
    let kernel: String
    let initrd: String

    /// The kernel command line every test guest gets; switches such as `maqet.poweroff_after=5`
    /// are appended to it.
    static let baseCmdline = "console=ttyS0 panic=-1 quiet"

    /// Markers the guest prints on its serial line.
    static let booted = "MAQET-GUEST-BOOTED"
    static let powerButton = "MAQET-GUEST-POWERBUTTON"
    static let powerButtonIgnored = "MAQET-GUEST-POWERBUTTON-IGNORED"
    static let selfPoweroff = "MAQET-GUEST-SELF-POWEROFF"
    static let bootCountPrefix = "MAQET-GUEST-BOOT-COUNT "
    static let prompt = "guest# "
    /// What the guest's httpd serves on port 80.
    static let httpdContent = "maqet-guest-httpd"

    struct BuildError: Error, CustomStringConvertible {
        let description: String
    }

    /// Built once per test process; a failed build is reported by every test that asks for it.
    private static let built: Result<GuestImage, BuildError> = {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("guest/build.sh").path
        let result = runProcess("/bin/bash", [script], environment: ProcessInfo.processInfo.environment)
        var kernel: String?, initrd: String?
        for line in result.stdout.split(separator: "\n") {
            if line.hasPrefix("kernel=") { kernel = String(line.dropFirst("kernel=".count)) }
            if line.hasPrefix("initrd=") { initrd = String(line.dropFirst("initrd=".count)) }
        }
        guard result.code == 0, let kernel, let initrd,
              FileManager.default.fileExists(atPath: kernel), FileManager.default.fileExists(atPath: initrd) else {
            return .failure(BuildError(description: "Tests/guest/build.sh failed (exit \(result.code)):\n\(result.stderr)\(result.stdout)"))
        }
        return .success(GuestImage(kernel: kernel, initrd: initrd))
    }()

    /// The guest's kernel and initrd, building them on first use. Throws (failing the test with
    /// the build script's output) when the build fails: the guest tests never skip.
    static func shared() throws -> GuestImage { try built.get() }
}

/// A maqet VM config (YAML) that boots the test guest under TCG.
struct GuestVM {
    var name: String
    var memory = "256M"
    /// Extra kernel command-line switches, e.g. ["maqet.ignore_powerbutton=1"].
    var cmdline: [String] = []
    /// A qcow2 virtio disk (/dev/vda in the guest) of this size, created by maqet on first start.
    var diskSize: String?
    /// Forward 127.0.0.1:hostPort on the host to the guest's port 80 (user networking, virtio-net).
    var hostPort: Int?
    /// `serial: file:<path>`: what the guest prints on ttyS0 lands in this file. nil: no -serial
    /// argument (maqet's own console decides).
    var serialLog: String?
    /// Further `arguments` items, as YAML flow values (e.g. `"device: pvpanic"`, `"no-reboot"`).
    var extraArguments: [String] = []

    init(name: String) { self.name = name }

    /// The disk image's path inside `dir`.
    func diskPath(in dir: String) -> String { (dir as NSString).appendingPathComponent("\(name).qcow2") }

    /// The YAML text; `dir` holds the disk image.
    func yaml(image: GuestImage, dir: String) -> String {
        let append = ([GuestImage.baseCmdline] + cmdline).joined(separator: " ")
        var arguments = [
            "machine: q35",
            "accel: tcg",
            "kernel: \(yamlQuoted(image.kernel))",
            "initrd: \(yamlQuoted(image.initrd))",
            "append: \(yamlQuoted(append))",
        ]
        if let serialLog { arguments.append("serial: \(yamlQuoted("file:" + serialLog))") }
        if let hostPort {
            arguments.append("netdev: {type: user, id: net0, hostfwd: \(yamlQuoted("tcp:127.0.0.1:\(hostPort)-:80"))}")
            arguments.append("device: {driver: virtio-net-pci, netdev: net0}")
        } else {
            arguments.append("nic: none")
        }
        arguments += extraArguments
        var text = """
            name: \(yamlQuoted(name))
            memory: \(memory)
            cpu: 1
            display: none
            arguments:

            """
        for item in arguments { text += "  - \(item)\n" }
        if let diskSize {
            text += """
                storage:
                  - {name: disk, type: qcow2, size: \(diskSize), file: \(yamlQuoted(diskPath(in: dir))), interface: virtio}

                """
        }
        return text
    }
}

/// A double-quoted YAML scalar.
func yamlQuoted(_ text: String) -> String {
    "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
}

extension Sandbox {
    /// Writes the guest VM's config into the sandbox and runs `maqet add` on it (failing the test
    /// when add fails). Returns the YAML file's path.
    @discardableResult
    func addGuest(_ vm: GuestVM, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        let image = try GuestImage.shared()
        let path = write("\(vm.name).yaml", vm.yaml(image: image, dir: root.path))
        maqet(["add", path]).assertExit(0, file: file, line: line)
        return path
    }

    /// A path in the sandbox for a guest's serial output.
    func serialLog(_ name: String) -> String { root.file("\(name).serial") }
}

/// What the guest has printed so far on a `file:` serial line ("" before it exists).
func serialText(_ path: String) -> String {
    FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) } ?? ""
}

/// The `MAQET-GUEST-BOOT-COUNT <n>` values in a serial log, in order.
func bootCounts(_ serial: String) -> [Int] {
    serial.split(whereSeparator: { $0 == "\n" || $0 == "\r" }).compactMap { line in
        guard let range = line.range(of: GuestImage.bootCountPrefix) else { return nil }
        return Int(line[range.upperBound...].prefix(while: { $0.isNumber }))
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick).
func freeLocalPort() -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    precondition(fd >= 0, "socket failed")
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    precondition(bound, "bind failed: \(errno)")
    return Int(UInt16(bigEndian: address.sin_port))
}

/// `GET /` over HTTP/1.0 on 127.0.0.1:port; the whole response (headers and body), nil when the
/// connection fails. Reads until the server closes (bounded by a 10 s receive timeout).
func httpGet(port: Int, path: String = "/") -> String? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 10, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let connected = withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
    }
    guard connected else { return nil }
    let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    guard request.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == request.count else { return nil }
    var response: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n <= 0 { break }
        response += buffer[0..<n]
    }
    return String(decoding: response, as: UTF8.self)
}

extension XCTestCase {
    /// Waits (up to `seconds`, a bound for slow TCG machines, not a timing assertion) until the
    /// serial log contains `text`; fails the test with the log when it does not.
    @discardableResult
    func waitForSerial(_ path: String, _ text: String, seconds: Double = 180,
                       file: StaticString = #filePath, line: UInt = #line) -> Bool {
        let found = eventually(seconds) { serialText(path).contains(text) }
        if !found {
            XCTFail("the guest never printed \(text); its serial output:\n\(serialText(path))", file: file, line: line)
        }
        return found
    }
}
