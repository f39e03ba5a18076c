import Foundation
import Glibc

/// A VM's serial console: QEMU's `-chardev socket,…,server=on` in the VM's runtime directory, plus
/// an attach lock beside it. Only mechanism: which VM, and whether it has a console at all, is
/// decided by the Lua policy (scripts/lib/console.lua) that hands over the paths.
///
/// The lock is an `flock` on a small file (`console.lock`) holding the pid of its holder, so a
/// second `maqet console` or a script's `:send` can say who is attached. QEMU's socket chardev
/// serves one client at a time; the lock turns "a second client hangs" into a clear refusal.
public enum SerialConsole {
    public enum Failure: Error, CustomStringConvertible {
        /// Someone holds the attach lock (pid when it wrote one).
        case busy(pid: Int32?)
        case system(SystemError)
        /// QEMU did not take the input within the time given.
        case timeout(String)

        public var description: String {
            switch self {
            case .busy(let pid):
                // A holder that has the lock but wrote no pid yet is reported as 0: not a pid to show.
                guard let pid, pid > 0 else { return "the console is already attached (by a maqet that is just attaching)" }
                return "the console is already attached (pid \(pid))"
            case .system(let error): return error.message
            case .timeout(let what): return what
            }
        }

        public var codeName: String {
            switch self {
            case .busy: return "EBUSY"
            case .system(let error): return error.codeName
            case .timeout: return "ETIMEDOUT"
            }
        }
    }

    // MARK: The attach lock

    /// Takes the attach lock at `path` without waiting and writes this process's pid into it.
    /// Returns the open descriptor: the lock lasts until it is closed (or the process ends).
    /// The corresponding C functions are `open` and `flock`.
    public static func lock(_ path: String) throws -> Int32 {
        let fd = retryingEINTR { open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600) }
        guard fd >= 0 else { throw Failure.system(SystemError(errno: errno, "console lock \(path)")) }
        if retryingEINTR({ flock(fd, LOCK_EX | LOCK_NB) }) != 0 {
            let code = errno
            _ = close(fd)
            if code == EWOULDBLOCK { throw Failure.busy(pid: holder(path)) }
            throw Failure.system(SystemError(errno: code, "console lock \(path)"))
        }
        let text = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = text.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        return fd
    }

    /// The pid of whoever holds the attach lock at `path`; nil when nobody does (or no such file).
    /// A holder that wrote no pid yet is reported as 0.
    public static func holder(_ path: String) -> Int32? {
        let fd = retryingEINTR { open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) }
        guard fd >= 0 else { return nil }
        defer { _ = close(fd) }
        if retryingEINTR({ flock(fd, LOCK_SH | LOCK_NB) }) == 0 {
            _ = flock(fd, LOCK_UN)
            return nil
        }
        var buffer = [UInt8](repeating: 0, count: 32)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        let text = String(decoding: buffer.prefix(max(0, n)), as: UTF8.self)
        return Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    // MARK: The socket

    /// Connects to QEMU's console socket at `path` (blocking descriptor, close-on-exec).
    /// The corresponding C functions are `socket` and `connect`.
    public static func connect(_ path: String) throws -> Int32 {
        let address: UnixSocketAddress
        do { address = try UnixSocketAddress(path: path) } catch let error as SystemError {
            throw Failure.system(SystemError(errno: error.errno, "console socket \(path)"))
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw Failure.system(SystemError(errno: errno, "console socket \(path)")) }
        let rc = address.connect(fd)
        guard rc == 0 else {
            let code = errno
            _ = close(fd)
            throw Failure.system(SystemError(errno: code, "connect to the console socket \(path)"))
        }
        return fd
    }

    /// Writes all of `bytes` to `fd` (a blocking descriptor). False when the peer is gone.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = retryingEINTR { Glibc.send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n <= 0 {
                // Not a socket (a terminal, a pipe): plain write.
                if n < 0 && errno == ENOTSOCK {
                    let w = retryingEINTR { write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
                    if w <= 0 { return false }
                    offset += w
                    continue
                }
                return false
            }
            offset += n
        }
        return true
    }

    /// Types `bytes` into the guest: takes the attach lock at `lockPath` (refused with `.busy` when
    /// someone is attached), connects to `socketPath`, writes, half-closes, and waits until QEMU has
    /// read everything and closed its end (so the input is in the guest's serial line, not in a
    /// socket buffer) or `timeoutMs` passes. What the guest prints meanwhile is discarded here: it
    /// is in the console log.
    public static func send(socketPath: String, lockPath: String, bytes: [UInt8], timeoutMs: Int,
                            shouldStop: () -> Bool = { false }) throws {
        let lockFD = try lock(lockPath)
        defer { _ = close(lockFD) }
        let fd = try connect(socketPath)
        defer { _ = close(fd) }
        let ok = bytes.withUnsafeBytes { writeAll(fd, $0) }
        guard ok else { throw Failure.system(SystemError(errno: EPIPE, "write to the console socket \(socketPath)")) }
        _ = shutdown(fd, Int32(SHUT_WR))
        let deadline = monotonicMs() + Int64(max(timeoutMs, 0))
        var scratch = [UInt8](repeating: 0, count: 4096)
        while true {
            let left = deadline - monotonicMs()
            if left <= 0 || shouldStop() {
                throw Failure.timeout("QEMU did not take the console input within \(timeoutMs) ms (is the guest reading its serial line?)")
            }
            var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, Int32(min(left, 50)))
            if ready < 0 && errno != EINTR { throw Failure.system(SystemError(errno: errno, "poll")) }
            if ready <= 0 { continue }
            let n = scratch.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return } // QEMU read to the end and closed
            if n < 0 && errno != EINTR && errno != EAGAIN {
                if errno == ECONNRESET { return }
                throw Failure.system(SystemError(errno: errno, "read from the console socket \(socketPath)"))
            }
        }
    }

    // MARK: Signals while attached

    /// Blocks `signals` and returns a signalfd that reports them (close-on-exec, non-blocking),
    /// plus the signal mask to restore afterwards. The corresponding C functions are
    /// `pthread_sigmask` and `signalfd`.
    public static func signalDescriptor(_ signals: [Int32]) -> (fd: Int32, previousMask: sigset_t) {
        var mask = sigset_t()
        sigemptyset(&mask)
        for signal in signals { sigaddset(&mask, signal) }
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &mask, &previous)
        return (Syscalls.signalfd(&mask), previous)
    }

    /// The number of the signal waiting on a signalfd (0 when none could be read).
    public static func readSignal(_ fd: Int32) -> Int32 {
        // struct signalfd_siginfo is 128 bytes; ssi_signo (uint32) comes first.
        var info = [UInt8](repeating: 0, count: 128)
        let n = info.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n >= 4 else { return 0 }
        return info.withUnsafeBytes { Int32(bitPattern: $0.load(as: UInt32.self)) }
    }
}
