import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The per-VM lock: an exclusive `flock` on one lock file per VM (its path is named by the Lua
/// workflows, `qemu.paths(row).lock`). Whoever holds it owns the VM's processes: `maqet start`
/// takes it before claiming the row and hands the same open file description to the runner, the
/// runner to QEMU, so the lock is held exactly as long as one of them lives. A process that can
/// take it knows that no start, runner or QEMU of the VM is alive — a fact that no pid reuse or
/// race can fake, because the kernel drops the lock when the last holder's descriptor closes.
///
/// The locks this process holds are kept here, by path (one descriptor each, close-on-exec, so
/// only an explicit hand-over passes them on). The corresponding C function is `flock`.
public enum VMLock {
    /// What `state(of:)` found.
    public enum State: String, Sendable {
        /// Nobody holds it (or the file does not exist yet).
        case free
        /// Another process holds it.
        case held
        /// This process holds it (`acquire`).
        case mine
    }

    nonisolated(unsafe) private static var held: [String: Int32] = [:]

    /// How often `acquire` retries a lock it finds held, 5 ms apart: `state(of:)` in another
    /// process takes the lock for an instant to test it, which must not refuse a start.
    static let attempts = 10

    /// Takes the lock at `path` without blocking: true when this process now holds it (also when
    /// it already did), false when another process holds it. The file is created 0600 and its
    /// folder 0700 (refused when it belongs to someone else). Throws SystemError otherwise.
    public static func acquire(_ path: String) throws -> Bool {
        if held[path] != nil { return true }
        let folder = (path as NSString).deletingLastPathComponent
        try RuntimeDirectory.makePrivateDirectory(folder, intermediate: true)
        let opened = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard opened >= 0 else { throw SystemError(errno: errno, "cannot open the lock file \(path)") }
        // Above the descriptors a hand-over renumbers (the runner's 3 and 4), so it never clashes.
        let fd = fcntl(opened, F_DUPFD_CLOEXEC, 10)
        _ = Glibc.close(opened)
        guard fd >= 0 else { throw SystemError(errno: errno, "cannot open the lock file \(path)") }
        _ = fchmod(fd, 0o600)
        for attempt in 1...attempts {
            if retryingEINTR({ flock(fd, LOCK_EX | LOCK_NB) }) == 0 {
                held[path] = fd
                return true
            }
            let e = errno
            guard e == EWOULDBLOCK else {
                _ = Glibc.close(fd)
                throw SystemError(errno: e, "cannot lock \(path)")
            }
            if attempt < attempts {
                var slice = timespec(tv_sec: 0, tv_nsec: 5_000_000)
                _ = nanosleep(&slice, nil)
            }
        }
        _ = Glibc.close(fd)
        return false
    }

    /// Lets go of a lock this process holds (a runner it was handed to keeps holding it).
    /// Returns whether it held one.
    @discardableResult
    public static func release(_ path: String) -> Bool {
        guard let fd = held.removeValue(forKey: path) else { return false }
        _ = Glibc.close(fd)
        return true
    }

    /// The descriptor of a lock this process holds (for handing it to a child), or nil.
    public static func descriptor(_ path: String) -> Int32? { held[path] }

    /// Whether the lock at `path` is free, held by another process, or held by this one. Testing
    /// takes and drops the lock at once; it never creates the file.
    public static func state(of path: String) throws -> State {
        if held[path] != nil { return .mine }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        if fd < 0 {
            if errno == ENOENT { return .free }
            throw SystemError(errno: errno, "cannot open the lock file \(path)")
        }
        defer { _ = Glibc.close(fd) }
        if retryingEINTR({ flock(fd, LOCK_EX | LOCK_NB) }) == 0 {
            _ = flock(fd, LOCK_UN)
            return .free
        }
        let e = errno
        guard e == EWOULDBLOCK else { throw SystemError(errno: e, "cannot test the lock \(path)") }
        return .held
    }

    /// For a process that was handed the lock as descriptor `fd`: checks that it holds the lock
    /// (flock on the same open file description succeeds at once) and keeps it close-on-exec.
    public static func adopt(_ fd: Int32) throws {
        guard fd >= 0, fcntl(fd, F_GETFD) >= 0 else { throw SystemError(errno: EBADF, "the lock descriptor \(fd) is not open") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        guard retryingEINTR({ flock(fd, LOCK_EX | LOCK_NB) }) == 0 else {
            throw SystemError(errno: errno, "the lock descriptor \(fd) does not hold the VM's lock")
        }
    }
}
