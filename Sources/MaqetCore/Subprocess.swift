import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An OS error: the errno value and what was being done ("cannot run 'x': No such file or directory").
public struct SystemError: Error, CustomStringConvertible {
    public var errno: Int32
    public var message: String

    public init(errno: Int32, _ what: String) {
        self.errno = errno
        message = "\(what): \(String(cString: strerror(errno)))"
    }

    public var description: String { message }

    /// The symbolic errno name ("ENOENT"), or "E<number>" for an unusual one.
    public var codeName: String { errnoName(errno) }
}

/// The symbolic name of an errno value.
public func errnoName(_ value: Int32) -> String {
    let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO", E2BIG: "E2BIG",
        ENOEXEC: "ENOEXEC", EBADF: "EBADF", ECHILD: "ECHILD", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM",
        EACCES: "EACCES", EEXIST: "EEXIST", ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL",
        EMFILE: "EMFILE", ENFILE: "ENFILE", ETXTBSY: "ETXTBSY", EPIPE: "EPIPE", ELOOP: "ELOOP",
        ENAMETOOLONG: "ENAMETOOLONG", ETIMEDOUT: "ETIMEDOUT", ECONNREFUSED: "ECONNREFUSED",
    ]
    return names[value] ?? "E\(value)"
}

/// Retries `body` while it fails with EINTR. Returns its result (−1 with `errno` set on failure).
@inline(__always)
public func retryingEINTR<T: FixedWidthInteger>(_ body: () -> T) -> T {
    while true {
        let result = body()
        if result == -1 && errno == EINTR { continue }
        return result
    }
}

/// How a process ended: an exit code, or the signal that killed it.
public struct ExitInfo: Equatable, Sendable {
    public var code: Int32?
    public var signal: Int32?

    public init(code: Int32?, signal: Int32?) {
        self.code = code
        self.signal = signal
    }
}

/// A child process started with `posix_spawn`: no shell, optional pipes for stdin/stdout/stderr.
/// The class owns the pid: `close()` (and `deinit`) kills a still-running child with SIGKILL and
/// reaps it, so no process or zombie outlives its owner.
public final class Subprocess {
    public enum Output: Sendable {
        /// The parent's stdout/stderr.
        case inherit
        /// /dev/null.
        case discard
        /// A pipe the parent reads; the bytes land in `stdout`/`stderr`.
        case capture
    }

    public struct Options {
        public var arguments: [String]
        /// Working directory of the child (`posix_spawn_file_actions_addchdir_np`); nil = the parent's.
        public var directory: String?
        /// The child's whole environment; nil = the parent's.
        public var environment: [String: String]?
        /// Bytes written to the child's stdin, which is then closed; nil = /dev/null.
        public var input: [UInt8]?
        public var stdout: Output = .capture
        public var stderr: Output = .capture

        public init(arguments: [String]) { self.arguments = arguments }
    }

    public let pid: pid_t
    public private(set) var exit: ExitInfo?
    /// Bytes read so far from a captured stdout / stderr.
    public private(set) var stdout: [UInt8] = []
    public private(set) var stderr: [UInt8] = []

    private var stdinFD: Int32 = -1
    private var stdoutFD: Int32 = -1
    private var stderrFD: Int32 = -1
    /// Readable once the child has exited, so a wait wakes at once (-1 where pidfds are missing).
    private var exitFD: Int32 = -1
    private var pendingInput: [UInt8] = []
    private var inputOffset = 0

    public var isRunning: Bool {
        if exit == nil { reap(blocking: false) }
        return exit == nil
    }

    /// Starts `options.arguments` (argv[0] is searched in PATH when it has no slash).
    /// Throws `SystemError` when the program cannot be started, e.g. ENOENT.
    public init(_ options: Options) throws {
        precondition(!options.arguments.isEmpty, "Subprocess needs a program")
        let program = options.arguments[0]

        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        func closeAll(_ fds: [Int32]) { for fd in fds where fd >= 0 { _ = Glibc.close(fd) } }

        func makePipe() throws -> (read: Int32, write: Int32) {
            var fds: [Int32] = [-1, -1]
            // pipe2(O_CLOEXEC) is a GNU extension Swift does not see; maqet spawns from one thread.
            guard pipe(&fds) == 0 else {
                let e = errno
                closeAll(parentEnds + childEnds)
                throw SystemError(errno: e, "cannot run '\(program)': pipe")
            }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            return (fds[0], fds[1])
        }

        var stdinParent: Int32 = -1, stdoutParent: Int32 = -1, stderrParent: Int32 = -1
        let (child, rc) = try ProcessSpawn.spawn(options.arguments, searchPath: true, environment: options.environment) { actions in
            if options.input != nil {
                let p = try makePipe()
                stdinParent = p.write
                parentEnds.append(p.write); childEnds.append(p.read)
                posix_spawn_file_actions_adddup2(&actions, p.read, 0)
            } else {
                posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            }
            for (target, mode) in [(Int32(1), options.stdout), (Int32(2), options.stderr)] {
                switch mode {
                case .inherit: break
                case .discard: posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_WRONLY, 0)
                case .capture:
                    let p = try makePipe()
                    if target == 1 { stdoutParent = p.read } else { stderrParent = p.read }
                    parentEnds.append(p.read); childEnds.append(p.write)
                    posix_spawn_file_actions_adddup2(&actions, p.write, target)
                }
            }
            if let directory = options.directory {
                let rc = Syscalls.addChdir(&actions, directory)
                if rc != 0 {
                    closeAll(parentEnds + childEnds)
                    throw SystemError(errno: rc, "cannot run '\(program)' in '\(directory)'")
                }
            }
        }
        closeAll(childEnds)
        if rc != 0 {
            closeAll(parentEnds)
            // The child's chdir failing looks like the program failing; say which it was.
            if let directory = options.directory, access(directory, X_OK) != 0 {
                throw SystemError(errno: errno, "cannot run '\(program)' in '\(directory)'")
            }
            throw SystemError(errno: rc, "cannot run '\(program)'")
        }
        pid = child
        exitFD = (try? LinuxProcess.openPidfd(child)) ?? -1
        stdinFD = stdinParent
        stdoutFD = stdoutParent
        stderrFD = stderrParent
        pendingInput = options.input ?? []
        for fd in [stdinFD, stdoutFD, stderrFD] where fd >= 0 {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        if stdinFD >= 0 && pendingInput.isEmpty { closeFD(&stdinFD) }
    }

    deinit { close() }

    /// Kills a running child with SIGKILL, reaps it and closes the pipes. Idempotent.
    public func close() {
        if exit == nil {
            _ = Glibc.kill(pid, SIGKILL)
            reap(blocking: true)
        }
        closeFD(&stdinFD)
        closeFD(&stdoutFD)
        closeFD(&stderrFD)
        closeFD(&exitFD)
    }

    /// Sends `signal`. The corresponding C function is `kill`. Does nothing once the child is reaped
    /// (its pid may belong to another process by then).
    public func send(_ signal: Int32) throws {
        guard isRunning else { return }
        if Glibc.kill(pid, signal) != 0 {
            throw SystemError(errno: errno, "kill \(pid)")
        }
    }

    /// Pumps stdin/stdout/stderr and waits until the child has exited and its pipes are drained,
    /// `timeoutMs` passed (returns nil; nil timeout = no limit) or `shouldStop()` says so
    /// (checked every 50 ms; returns nil).
    public func wait(timeoutMs: Int64?, shouldStop: () -> Bool = { false }) -> ExitInfo? {
        let deadline = timeoutMs.map { deadlineMs(after: $0) }
        while true {
            if exit == nil { reap(blocking: false) }
            if let exit {
                drainAfterExit()
                return exit
            }
            if shouldStop() { return nil }
            var sliceMs: Int64 = 50
            if let deadline {
                let left = deadline - monotonicMs()
                if left <= 0 { return nil }
                sliceMs = min(sliceMs, left)
            }
            pump(timeoutMs: Int32(sliceMs))
        }
    }

    // MARK: Internals

    /// One poll() round over the open pipes and the child's pidfd, so the child's exit wakes it.
    /// Without a pidfd and with no pipes left, a short sleep between waitpid(WNOHANG) checks.
    private func pump(timeoutMs: Int32) {
        var fds: [pollfd] = []
        if stdinFD >= 0 { fds.append(pollfd(fd: stdinFD, events: Int16(POLLOUT), revents: 0)) }
        if stdoutFD >= 0 { fds.append(pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)) }
        if stderrFD >= 0 { fds.append(pollfd(fd: stderrFD, events: Int16(POLLIN), revents: 0)) }
        let slice = fds.isEmpty && exitFD < 0 ? min(timeoutMs, 10) : timeoutMs
        if exitFD >= 0 { fds.append(pollfd(fd: exitFD, events: Int16(POLLIN), revents: 0)) }
        let n = poll(&fds, nfds_t(fds.count), slice)
        guard n > 0 else { return }
        for entry in fds where entry.revents != 0 && entry.fd != exitFD {
            if entry.fd == stdinFD { writeInput() } else { readAvailable(entry.fd) }
        }
    }

    private func writeInput() {
        // A child that exits without reading makes write() fail with EPIPE and raise SIGPIPE,
        // which would kill maqet. Block SIGPIPE for the write and consume one it caused, instead of
        // ignoring it process-wide (which would change how `maqet run s.lua | head` ends).
        var block = sigset_t()
        sigemptyset(&block)
        sigaddset(&block, SIGPIPE)
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &block, &previous)
        defer {
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGPIPE) == 1 && sigismember(&previous, SIGPIPE) == 0 {
                var zero = timespec()
                _ = sigtimedwait(&block, nil, &zero)
            }
            pthread_sigmask(SIG_SETMASK, &previous, nil)
        }
        while inputOffset < pendingInput.count {
            let written = pendingInput.withUnsafeBytes { buffer in
                retryingEINTR { Glibc.write(stdinFD, buffer.baseAddress! + inputOffset, buffer.count - inputOffset) }
            }
            if written > 0 {
                inputOffset += written
            } else {
                if errno == EAGAIN { return }
                break // EPIPE: the child does not read its input
            }
        }
        pendingInput = []
        closeFD(&stdinFD)
    }

    /// Reads what is available on `fd`; closes it at end of file.
    private func readAvailable(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { raw in retryingEINTR { Glibc.read(fd, raw.baseAddress, raw.count) } }
            if n > 0 {
                if fd == stdoutFD { stdout.append(contentsOf: buffer[0..<n]) } else { stderr.append(contentsOf: buffer[0..<n]) }
                continue
            }
            if n < 0 && errno == EAGAIN { return }
            if fd == stdoutFD { closeFD(&stdoutFD) } else { closeFD(&stderrFD) }
            return
        }
    }

    /// After exit the child's output is in the pipe buffers: read it until EOF, or until nothing
    /// more is ready (a grandchild that inherited the pipe may keep it open forever).
    private func drainAfterExit() {
        closeFD(&stdinFD)
        while stdoutFD >= 0 || stderrFD >= 0 {
            var fds: [pollfd] = []
            if stdoutFD >= 0 { fds.append(pollfd(fd: stdoutFD, events: Int16(POLLIN), revents: 0)) }
            if stderrFD >= 0 { fds.append(pollfd(fd: stderrFD, events: Int16(POLLIN), revents: 0)) }
            let n = poll(&fds, nfds_t(fds.count), 0)
            if n <= 0 {
                if n < 0 && errno == EINTR { continue }
                break
            }
            for entry in fds where entry.revents != 0 { readAvailable(entry.fd) }
        }
        closeFD(&stdoutFD)
        closeFD(&stderrFD)
    }

    /// The corresponding C function is `waitpid`.
    private func reap(blocking: Bool) {
        guard exit == nil else { return }
        var status: Int32 = 0
        let rc = retryingEINTR { waitpid(pid, &status, blocking ? 0 : WNOHANG) }
        if rc == pid {
            // WIFEXITED / WIFSIGNALED are macros Swift cannot import.
            let signal = status & 0x7f
            if signal == 0 {
                exit = ExitInfo(code: (status >> 8) & 0xff, signal: nil)
            } else if signal != 0x7f {
                exit = ExitInfo(code: nil, signal: signal)
            }
        } else if rc == -1 && errno == ECHILD {
            exit = ExitInfo(code: nil, signal: nil) // reaped elsewhere; nothing more to learn
        }
    }

    private func closeFD(_ fd: inout Int32) {
        if fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
    }
}

/// posix_spawn as maqet uses it for every child (scripts' processes, the runner, QEMU).
public enum ProcessSpawn {
    /// Starts `arguments` with the file actions `fileActions` adds. The child gets default signal
    /// dispositions and an empty signal mask, whatever maqet ignores or blocks. `searchPath` looks
    /// a slash-less argv[0] up in PATH; `environment` nil passes maqet's own; `newSession` makes
    /// the child a session leader. Returns the child's pid, or the error number (0 on success) the
    /// caller words for its context.
    public static func spawn(
        _ arguments: [String], searchPath: Bool, environment: [String: String]? = nil, newSession: Bool = false,
        fileActions: (inout posix_spawn_file_actions_t) throws -> Void
    ) rethrows -> (pid: pid_t, errno: Int32) {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        let flags = Int32(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK) | (newSession ? Syscalls.spawnSetsid : 0)
        posix_spawnattr_setflags(&attributes, Int16(flags))
        try fileActions(&actions)

        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        let envp: [UnsafeMutablePointer<CChar>?]? = environment.map { env in
            env.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        }
        defer { envp?.forEach { free($0) } }
        var child: pid_t = 0
        func call(_ env: UnsafePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
            searchPath
                ? posix_spawnp(&child, arguments[0], &actions, &attributes, &argv, env)
                : posix_spawn(&child, arguments[0], &actions, &attributes, &argv, env)
        }
        let rc = envp.map { $0.withUnsafeBufferPointer { call($0.baseAddress) } } ?? call(environ)
        return (rc == 0 ? child : -1, rc)
    }
}

/// Milliseconds on the monotonic clock.
public func monotonicMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

/// The `monotonicMs()` deadline `ms` from now (negative counts as 0). Saturates instead of
/// overflowing, so a script's `proc:wait(math.maxinteger)` means "no deadline", not a trap.
public func deadlineMs(after ms: Int64) -> Int64 {
    let (sum, overflow) = monotonicMs().addingReportingOverflow(max(ms, 0))
    return overflow ? .max : sum
}

/// Signal names scripts use ("TERM", "SIGTERM", "KILL", ...) and their numbers.
public func signalNumber(named name: String) -> Int32? {
    var key = name.uppercased()
    if key.hasPrefix("SIG") { key.removeFirst(3) }
    let table: [String: Int32] = [
        "HUP": SIGHUP, "INT": SIGINT, "QUIT": SIGQUIT, "KILL": SIGKILL, "TERM": SIGTERM,
        "USR1": SIGUSR1, "USR2": SIGUSR2, "STOP": SIGSTOP, "CONT": SIGCONT, "ALRM": SIGALRM,
        "PIPE": SIGPIPE, "CHLD": SIGCHLD, "WINCH": SIGWINCH,
    ]
    return table[key]
}

/// The name of a signal number without the SIG prefix ("KILL"), or the number as text.
public func signalName(_ number: Int32) -> String {
    let table: [Int32: String] = [
        SIGHUP: "HUP", SIGINT: "INT", SIGQUIT: "QUIT", SIGKILL: "KILL", SIGTERM: "TERM", SIGUSR1: "USR1",
        SIGUSR2: "USR2", SIGSTOP: "STOP", SIGCONT: "CONT", SIGALRM: "ALRM", SIGPIPE: "PIPE", SIGCHLD: "CHLD",
        SIGSEGV: "SEGV", SIGABRT: "ABRT", SIGWINCH: "WINCH",
    ]
    return table[number] ?? String(number)
}
