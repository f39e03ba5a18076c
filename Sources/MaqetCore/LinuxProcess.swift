import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What `/proc/PID/stat` and `/proc/PID/cmdline` say about a process.
public struct ProcessSnapshot: Equatable, Sendable {
    public var pid: pid_t
    /// One letter: "R" running, "S" sleeping, "D" disk wait, "Z" zombie, "T" stopped, …
    public var state: String
    public var parentPID: pid_t
    public var processGroupID: pid_t
    public var sessionID: pid_t
    /// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
    /// Together with the pid it names one process: a reused pid has a later start time.
    public var startTime: Int64
    /// The argument vector (empty for a zombie or a kernel thread).
    public var commandLine: [String]

    public var isZombie: Bool { state == "Z" || state == "X" }
}

/// Processes by pid, including processes that are not maqet's children: `/proc` for what they are,
/// pidfds (`pidfd_open` + `poll`) to wait for them, `kill` to signal them.
public enum LinuxProcess {
    /// Reads `/proc/PID/stat` and `/proc/PID/cmdline`. Throws `SystemError` (ESRCH for no such process).
    ///
    /// A process in the middle of `execve` has its new address space but not yet its argument
    /// vector, so its cmdline reads empty until the kernel has loaded the program (the vfork parent
    /// of `posix_spawn` is already running then, and on a busy machine the window can last
    /// milliseconds). Only zombies, exiting processes and kernel threads have no command line for
    /// good, so for anyone else an empty one is read again until the exec has finished, the
    /// process has exited, or `execWaitMs` has passed.
    public static func snapshot(_ pid: pid_t, execWaitMs: Int64 = 2000) throws -> ProcessSnapshot {
        guard pid > 0 else { throw noProcess(pid) }
        var stat = try readStat(pid)
        var commandLine = readCommandLine(pid)
        if commandLine.isEmpty, stat.mayBeInExec {
            let deadline = monotonicMs() + execWaitMs
            var pause: UInt32 = 100
            while commandLine.isEmpty, stat.mayBeInExec, monotonicMs() < deadline {
                usleep(pause)
                pause = min(pause * 2, 5000)
                guard let again = try? readStat(pid) else { break }
                stat = again
                commandLine = readCommandLine(pid)
            }
        }
        return ProcessSnapshot(
            pid: pid,
            state: stat.state,
            parentPID: stat.parentPID,
            processGroupID: stat.processGroupID,
            sessionID: stat.sessionID,
            startTime: stat.startTime,
            commandLine: commandLine
        )
    }

    /// The fields of `/proc/PID/stat` that `snapshot` uses.
    private struct StatFields {
        var state: String
        var parentPID: pid_t
        var processGroupID: pid_t
        var sessionID: pid_t
        var startTime: Int64
        /// PF_KTHREAD (0x00200000) in field 9.
        var kernelThread: Bool
        /// PF_EXITING (0x00000004) in field 9: on its way out, its address space may be gone.
        var exiting: Bool
        /// Fields 48 and 49, where the argument vector starts and ends. execve sets the start
        /// first and the end once the program is loaded, so until then the end is not behind the
        /// start (the kernel also shows both as 0 to a reader that may not trace the process).
        var argStart: UInt64
        var argEnd: UInt64

        /// An empty command line is only temporary: not a zombie, not a kernel thread, not
        /// exiting (a process stuck in exit must not stall its reader), and the kernel has not
        /// placed an argument vector yet.
        var mayBeInExec: Bool { !isZombie && !kernelThread && !exiting && argEnd <= argStart }

        var isZombie: Bool { state == "Z" || state == "X" }
    }

    private static func readStat(_ pid: pid_t) throws -> StatFields {
        guard let stat = readSmallFile("/proc/\(pid)/stat") else {
            let e = errno
            if e == ENOENT || e == ESRCH { throw noProcess(pid) }
            throw SystemError(errno: e, "cannot read /proc/\(pid)/stat")
        }
        // "PID (comm) S PPID PGRP SESSION …": comm may contain spaces and parentheses; the fields
        // after it start behind the last ')'.
        guard let close = stat.lastIndex(of: UInt8(ascii: ")")) else {
            throw SystemError(errno: EIO, "/proc/\(pid)/stat is not readable")
        }
        let rest = stat[(close + 1)...].split(separator: UInt8(ascii: " "), omittingEmptySubsequences: true)
        // rest[0] is field 3 (state); field N is rest[N - 3].
        guard rest.count >= 20 else { throw SystemError(errno: EIO, "/proc/\(pid)/stat is truncated") }
        func field(_ n: Int) -> String { n - 3 < rest.count ? String(decoding: rest[n - 3], as: UTF8.self) : "" }
        let flags = UInt64(field(9)) ?? 0
        return StatFields(
            state: field(3),
            parentPID: pid_t(field(4)) ?? 0,
            processGroupID: pid_t(field(5)) ?? 0,
            sessionID: pid_t(field(6)) ?? 0,
            startTime: Int64(field(22)) ?? 0,
            kernelThread: flags & 0x0020_0000 != 0,
            exiting: flags & 0x0000_0004 != 0,
            argStart: UInt64(field(48)) ?? 0,
            argEnd: UInt64(field(49)) ?? 0
        )
    }

    private static func readCommandLine(_ pid: pid_t) -> [String] {
        guard let raw = readSmallFile("/proc/\(pid)/cmdline"), !raw.isEmpty else { return [] }
        var parts = raw.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        if parts.last == "" { parts.removeLast() }
        return parts
    }

    /// ESRCH with the message "no process PID".
    static func noProcess(_ pid: pid_t) -> SystemError {
        var error = SystemError(errno: ESRCH, "")
        error.message = "no process \(pid)"
        return error
    }

    /// True while `pid` names a process that has not exited (a zombie has exited).
    public static func isAlive(_ pid: pid_t) -> Bool {
        guard let stat = try? readStat(pid) else { return false }
        return !stat.isZombie
    }

    /// Sends `signal` to `pid`. The corresponding C function is `kill`. Refuses pid <= 0 (a
    /// process group or every process) with EINVAL.
    public static func send(_ signal: Int32, to pid: pid_t) throws {
        guard pid > 0 else { throw SystemError(errno: EINVAL, "kill \(pid)") }
        if Glibc.kill(pid, signal) != 0 {
            let e = errno
            if e == ESRCH { throw noProcess(pid) }
            throw SystemError(errno: e, "kill \(pid)")
        }
    }

    /// A pidfd for `pid`: readable once the process has exited (zombie or reaped).
    /// The corresponding C function is `pidfd_open` (Linux 5.3); the descriptor is close-on-exec.
    public static func openPidfd(_ pid: pid_t) throws -> Int32 {
        let fd = Syscalls.pidfdOpen(pid)
        if fd < 0 {
            let e = errno
            if e == ESRCH { throw noProcess(pid) }
            throw SystemError(errno: e, "pidfd_open \(pid)")
        }
        return fd
    }

    /// Waits until `pid` has exited; true when it has (or never existed / already gone), false
    /// after `timeoutMs` (nil = no limit) or as soon as `shouldStop()` says so (checked every 50 ms).
    /// Works for any process, not only children: it polls a pidfd. A zombie counts as exited.
    public static func waitForExit(_ pid: pid_t, timeoutMs: Int64?, shouldStop: () -> Bool = { false }) throws -> Bool {
        guard pid > 0 else { throw SystemError(errno: EINVAL, "wait for pid \(pid)") }
        let deadline = timeoutMs.map { deadlineMs(after: $0) }
        let fd: Int32
        do {
            fd = try openPidfd(pid)
        } catch let error as SystemError where error.errno == ESRCH {
            return true
        } catch let error as SystemError where error.errno == ENOSYS {
            return pollProc(pid, deadline: deadline, shouldStop: shouldStop)
        }
        defer { _ = Glibc.close(fd) }
        while true {
            if shouldStop() { return false }
            var slice: Int64 = 50
            if let deadline {
                let left = deadline - monotonicMs()
                if left <= 0 { return readable(fd, timeoutMs: 0) }
                slice = min(slice, left)
            }
            if readable(fd, timeoutMs: Int32(slice)) { return true }
        }
    }

    /// Without pidfds (Linux < 5.3): looks at /proc every 10 ms.
    private static func pollProc(_ pid: pid_t, deadline: Int64?, shouldStop: () -> Bool) -> Bool {
        while true {
            if !isAlive(pid) { return true }
            if shouldStop() { return false }
            if let deadline, monotonicMs() >= deadline { return false }
            var slice = timespec(tv_sec: 0, tv_nsec: 10_000_000)
            _ = nanosleep(&slice, nil)
        }
    }

    /// One `poll` for POLLIN on `fd`.
    public static func readable(_ fd: Int32, timeoutMs: Int32) -> Bool {
        var entry = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let n = poll(&entry, 1, timeoutMs)
        return n > 0 && entry.revents != 0
    }

    /// Reads a /proc file whole (they report size 0, so read until EOF). nil with errno set on failure.
    static func readSmallFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = Glibc.close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = buffer.withUnsafeMutableBytes { raw in retryingEINTR { Glibc.read(fd, raw.baseAddress, raw.count) } }
            if n < 0 { return nil }
            if n == 0 { return out }
            out.append(contentsOf: buffer[0..<n])
        }
    }
}

/// Linux calls Swift's Glibc module does not show (they need _GNU_SOURCE or are newer than its
/// headers), looked up at run time like `posix_spawn_file_actions_addchdir_np` in Subprocess.
public enum Syscalls {
    private typealias PidfdOpenFunction = @convention(c) (pid_t, UInt32) -> Int32
    private typealias SyscallFunction = @convention(c) (Int, Int, Int) -> Int
    private typealias SignalfdFunction = @convention(c) (Int32, UnsafePointer<sigset_t>, Int32) -> Int32
    private typealias AddClosefromFunction = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private typealias AddChdirFunction = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32

    private static let libc = dlopen(nil, RTLD_NOW)
    private static let pidfdOpenFunction: PidfdOpenFunction? = dlsym(libc, "pidfd_open").map { unsafeBitCast($0, to: PidfdOpenFunction.self) }
    private static let syscallFunction: SyscallFunction? = dlsym(libc, "syscall").map { unsafeBitCast($0, to: SyscallFunction.self) }
    private static let signalfdFunction: SignalfdFunction? = dlsym(libc, "signalfd").map { unsafeBitCast($0, to: SignalfdFunction.self) }
    private static let addClosefromFunction: AddClosefromFunction? = dlsym(libc, "posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: AddClosefromFunction.self) }
    private static let addChdirFunction: AddChdirFunction? = dlsym(libc, "posix_spawn_file_actions_addchdir_np").map { unsafeBitCast($0, to: AddChdirFunction.self) }

    /// `SYS_pidfd_open`: the same number on every architecture (the unified syscall table).
    private static let pidfdOpenNumber = 434

    /// `pidfd_open(pid, 0)`; −1 with errno on failure (ENOSYS when the kernel lacks it).
    static func pidfdOpen(_ pid: pid_t) -> Int32 {
        if let function = pidfdOpenFunction { return function(pid, 0) }
        if let function = syscallFunction { return Int32(truncatingIfNeeded: function(pidfdOpenNumber, Int(pid), 0)) }
        errno = ENOSYS
        return -1
    }

    /// `signalfd(-1, mask, SFD_CLOEXEC | SFD_NONBLOCK)`.
    public static func signalfd(_ mask: inout sigset_t) -> Int32 {
        guard let function = signalfdFunction else { errno = ENOSYS; return -1 }
        return function(-1, &mask, Int32(O_CLOEXEC | O_NONBLOCK))
    }

    /// `posix_spawn_file_actions_addclosefrom_np(actions, from)` (glibc 2.34); false when missing.
    @discardableResult
    public static func addClosefrom(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, from: Int32) -> Bool {
        guard let function = addClosefromFunction else { return false }
        return function(actions, from) == 0
    }

    /// `posix_spawn_file_actions_addchdir_np(actions, directory)` (glibc 2.29); an errno, 0 on success.
    static func addChdir(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ directory: String) -> Int32 {
        guard let function = addChdirFunction else { return ENOSYS }
        return function(actions, directory)
    }

    /// `POSIX_SPAWN_SETSID` (glibc 2.26): the child starts a new session.
    static let spawnSetsid: Int32 = 0x80
}
