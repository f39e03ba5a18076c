import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The per-VM runner (`maqet __runner --spec FILE`): starts QEMU, reports on the ready pipe once
/// QMP answers, keeps the database row truthful, and cleans up when QEMU ends.
///
/// Life cycle: spawn QEMU → wait for its runner monitor (polling QEMU's pidfd, so an early exit is
/// reported at once with QEMU's stderr) → `query-status` → row `running` (one UPDATE) → ready line →
/// event loop: `poll` on the pidfd, the QMP socket and a signalfd, no timeout → QEMU exited:
/// `waitpid`, row `stopped`/`crashed` (one UPDATE, only if the row is still this run's), a line in
/// `<data dir>/logs/<vm>.log`, sockets and runtime directory removed.
public final class VMRunner {
    let spec: RunnerSpec
    let pid: pid_t = getpid()
    private var readyFD: Int32
    private var signalFD: Int32 = -1
    private var qemuPID: pid_t = 0
    private var pidFD: Int32 = -1
    private var qmp: QMPClient?

    /// SHUTDOWN's `guest` and `reason`, when QEMU sent one.
    private var shutdown: (guest: Bool, reason: String)?
    /// The signal that asked the runner to stop QEMU.
    private var stopSignal: Int32?

    init(spec: RunnerSpec, readyFD: Int32) {
        self.spec = spec
        self.readyFD = readyFD
    }

    /// Runs the runner for the spec at `specPath`; returns the process exit status.
    public static func main(specPath: String, readyFD: Int32?, dataDir: String?) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        umask(0o077)
        var spec: RunnerSpec
        do {
            spec = try RunnerSpec.load(specPath)
        } catch {
            let message = "cannot read the runner spec \(specPath): \(error)"
            fputs("maqet __runner: \(message)\n", stderr)
            if let readyFD { writeReport(readyFD, RunnerReport(ok: false, error: message, code: "EINVAL")) }
            return 1
        }
        if let dataDir, !dataDir.isEmpty { spec.dataDir = dataDir }
        let runner = VMRunner(spec: spec, readyFD: readyFD ?? -1)
        return runner.run()
    }

    func run() -> Int32 {
        log("runner \(pid) for \(spec.vmName) (\(spec.vmID))")
        do {
            try blockSignals()
            try startQEMU()
            try waitUntilReady()
            try recordRunning()
        } catch let failure as RunnerLaunchError {
            abortStart(failure)
            return 1
        } catch {
            abortStart(RunnerLaunchError(String(describing: error), code: (error as? SystemError)?.codeName ?? "EIO"))
            return 1
        }
        report(RunnerReport(ok: true, pid: qemuPID, runnerPID: pid))
        let startTime = (try? LinuxProcess.snapshot(qemuPID, execWaitMs: 0).startTime).map { " (start time \($0))" } ?? ""
        appendHistory("started: QEMU pid \(qemuPID)\(startTime), runner pid \(pid)")
        let exit = eventLoop()
        finish(exit)
        return 0
    }

    // MARK: Start

    /// SIGTERM/SIGINT/SIGHUP (stop gracefully) and SIGUSR1 (kill QEMU now) arrive on a signalfd,
    /// so the event loop sees them like any other descriptor.
    private func blockSignals() throws {
        var mask = sigset_t()
        sigemptyset(&mask)
        for s in [SIGTERM, SIGINT, SIGHUP, SIGUSR1] { sigaddset(&mask, s) }
        pthread_sigmask(SIG_BLOCK, &mask, nil)
        signalFD = Syscalls.signalfd(&mask)
        if signalFD < 0 { throw SystemError(errno: errno, "signalfd") }
    }

    private func startQEMU() throws {
        guard !spec.argv.isEmpty else { throw RunnerLaunchError("the spec has an empty argv", code: "EINVAL") }
        // QEMU unlinks a stale socket before binding, but until it does a stale file would look ready.
        _ = unlink(spec.runnerQMP)
        _ = unlink(spec.clientQMP)
        let logFD = open(spec.qemuLogPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard logFD >= 0 else { throw SystemError(errno: errno, "cannot create \(spec.qemuLogPath)") }
        defer { _ = Glibc.close(logFD) }

        let (child, rc) = ProcessSpawn.spawn(spec.argv, searchPath: true) { actions in
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, logFD, 1)
            posix_spawn_file_actions_adddup2(&actions, logFD, 2)
            Syscalls.addClosefrom(&actions, from: 3)
        }
        guard rc == 0 else {
            let error = SystemError(errno: rc, "cannot run '\(spec.argv[0])'")
            throw RunnerLaunchError(error.message, code: error.codeName)
        }
        qemuPID = child
        log("QEMU pid \(child): \(spec.argv.joined(separator: " "))")
        do {
            pidFD = try LinuxProcess.openPidfd(child)
        } catch {
            throw RunnerLaunchError("cannot watch QEMU (pid \(child)): \(error)", code: "ENOSYS")
        }
    }

    /// Connects to the runner monitor once it accepts connections; fails at once when QEMU exits
    /// or a stop signal arrives, and after `timeoutMs`.
    private func waitUntilReady() throws {
        let deadline = monotonicMs() + Int64(max(spec.timeoutMs, 0))
        let interrupted = { [pidFD, signalFD] in
            LinuxProcess.readable(pidFD, timeoutMs: 0) || LinuxProcess.readable(signalFD, timeoutMs: 0)
        }
        // Until QEMU's socket accepts, the wait re-checks every millisecond for the first 250 ms
        // (a guestless QEMU answers after about 25), then every 10 ms; QEMU's exit and stop
        // signals still wake it at once. An inotify watch on the socket's folder was tried and
        // dropped: waking on the socket's creation connects between QEMU's bind and listen, and
        // in about half the starts QEMU then reached its main loop 10-20 ms later
        // (Tools/bench --vm; docs/performance.md).
        var socketSeen = false
        let started = monotonicMs()
        while true {
            if LinuxProcess.readable(pidFD, timeoutMs: 0) {
                let exit = reapQEMU()
                let text = RunnerLauncher.tail(ofFile: spec.qemuLogPath)
                throw RunnerLaunchError(text.isEmpty ? "QEMU \(describe(exit))" : text, code: "EQEMU")
            }
            if let signal = takeSignal() {
                throw RunnerLaunchError("start cancelled by SIG\(signalName(signal))", code: "ECANCELED")
            }
            let left = deadline - monotonicMs()
            if left <= 0 {
                if !socketSeen {
                    throw RunnerLaunchError("QEMU did not create its QMP socket \(spec.runnerQMP) within \(spec.timeoutMs) ms (is a -chardev socket with that path in its arguments?)", code: "ETIMEDOUT")
                }
                throw RunnerLaunchError("QEMU did not answer on its QMP monitor within \(spec.timeoutMs) ms", code: "ETIMEDOUT")
            }
            var info = stat()
            if lstat(spec.runnerQMP, &info) == 0 && (info.st_mode & S_IFMT) == S_IFSOCK {
                socketSeen = true
                do {
                    let client = try QMPClient(path: spec.runnerQMP, timeoutMs: Int(left), shouldStop: interrupted)
                    _ = try client.execute("query-status", timeoutMs: Int(max(deadline - monotonicMs(), 1)))
                    qmp = client
                    for path in [spec.runnerQMP, spec.clientQMP] { _ = chmod(path, 0o600) }
                    return
                } catch let error as QMPError {
                    // Not listening yet, or QEMU went away (seen above on the next round).
                    log("QMP not ready yet: \(error)")
                }
            }
            var fds = [pollfd(fd: pidFD, events: Int16(POLLIN), revents: 0), pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0)]
            let slice: Int64 = monotonicMs() - started < 250 ? 1 : 10
            _ = poll(&fds, nfds_t(fds.count), Int32(clamping: min(left, slice)))
        }
    }

    /// One UPDATE: the row says running, with QEMU's pid, this runner and the client monitor.
    private func recordRunning() throws {
        let changed: Int
        do {
            changed = try withDatabase { db in
                try db.run("""
                    UPDATE vm_instances SET status = 'running', pid = ?, runner_pid = ?, qmp_socket_path = ?,
                           updated_at = CURRENT_TIMESTAMP
                     WHERE id = ?
                    """, [.integer(Int64(qemuPID)), .integer(Int64(pid)), .text(spec.clientQMP), .text(spec.vmID)])
            }
        } catch {
            throw RunnerLaunchError("cannot record \(spec.vmName) as running: \(error)", code: "EIO")
        }
        guard changed > 0 else {
            throw RunnerLaunchError("no VM with id \(spec.vmID) in \(databasePath)", code: "ENOENT")
        }
    }

    /// A failed start: QEMU stopped, the reason on the ready pipe and in the VM's history, the
    /// runtime directory removed. The row is left as it was.
    private func abortStart(_ failure: RunnerLaunchError) {
        log("start failed: \(failure.message)")
        if qemuPID > 0, pidFD >= 0, !LinuxProcess.readable(pidFD, timeoutMs: 0) {
            _ = Glibc.kill(qemuPID, SIGKILL)
        }
        if qemuPID > 0 { _ = reapQEMU() }
        qmp?.close()
        report(RunnerReport(ok: false, error: failure.message, code: failure.code))
        appendHistory("failed to start: \(failure.message)")
        RuntimeDirectory.removeVMDirectory(spec.dir, extraFiles: [spec.runnerQMP, spec.clientQMP])
    }

    // MARK: Running

    /// Waits, without any timeout, for QEMU's exit, QMP events and stop signals.
    private func eventLoop() -> ExitInfo {
        var killDeadline: Int64?
        while true {
            var fds = [pollfd(fd: pidFD, events: Int16(POLLIN), revents: 0), pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0)]
            if let qmp, !qmp.isClosed { fds.append(pollfd(fd: qmp.fileDescriptor, events: Int16(POLLIN), revents: 0)) }
            let timeout = killDeadline.map { Int32(clamping: max($0 - monotonicMs(), 0)) } ?? -1
            let n = poll(&fds, nfds_t(fds.count), timeout)
            if n < 0 && errno != EINTR {
                log("poll: \(String(cString: strerror(errno)))")
                _ = Glibc.kill(qemuPID, SIGKILL)
                return reapQEMU()
            }
            if fds[0].revents != 0 { return reapQEMU() }
            if fds.count > 2 && fds[2].revents != 0 { readEvents() }
            if fds[1].revents != 0, let signal = takeSignal() {
                if signal == SIGUSR1 {
                    // A forced stop: no quit, no grace period; still a stop that was asked for.
                    if stopSignal == nil { stopSignal = signal }
                    log("SIGUSR1: killing QEMU")
                    _ = Glibc.kill(qemuPID, SIGKILL)
                } else if stopSignal == nil {
                    stopSignal = signal
                    log("SIG\(signalName(signal)): stopping QEMU (quit)")
                    requestQuit()
                    killDeadline = monotonicMs() + 5000
                } else {
                    log("SIG\(signalName(signal)) again: killing QEMU")
                    _ = Glibc.kill(qemuPID, SIGKILL)
                }
            }
            if let deadline = killDeadline, monotonicMs() >= deadline {
                log("QEMU did not exit after quit: SIGKILL")
                _ = Glibc.kill(qemuPID, SIGKILL)
                killDeadline = nil
            }
        }
    }

    private func readEvents() {
        guard let qmp else { return }
        do {
            for event in try qmp.drainEvents() {
                log("event \(event.name) \((try? event.data.serialized()) ?? "")")
                if event.name == "SHUTDOWN" {
                    var guest = false
                    var reason = "unknown"
                    if case .object(let members) = event.data {
                        for (key, value) in members {
                            if key == "guest", case .bool(let b) = value { guest = b }
                            if key == "reason", case .string(let s) = value { reason = s }
                        }
                    }
                    shutdown = (guest, reason)
                }
            }
        } catch {
            // EOF: QEMU is exiting; the pidfd says when it is gone.
            qmp.close()
        }
    }

    /// QMP `quit` on the runner's monitor; SIGTERM when the monitor is gone.
    private func requestQuit() {
        if let qmp, !qmp.isClosed {
            do {
                _ = try qmp.execute("quit", timeoutMs: 2000)
                return
            } catch {
                log("quit failed: \(error)")
            }
        }
        _ = Glibc.kill(qemuPID, SIGTERM)
    }

    // MARK: The end

    private func finish(_ exit: ExitInfo) {
        // A SHUTDOWN event may still sit unread in the socket when the pidfd fires first.
        if let qmp, qmp.fileDescriptor >= 0 { readEvents() }
        qmp?.close()
        let clean = exit.code == 0 || shutdown != nil || stopSignal != nil
        let status = clean ? "stopped" : "crashed"
        var how = "QEMU \(describe(exit))"
        if let shutdown { how += " after SHUTDOWN (reason \(shutdown.reason), \(shutdown.guest ? "by the guest" : "by the host"))" }
        if let stopSignal { how += " after the runner got SIG\(signalName(stopSignal))" }
        if !clean {
            let text = RunnerLauncher.tail(ofFile: spec.qemuLogPath, maximumBytes: 500)
            if !text.isEmpty { how += "; stderr: \(text)" }
        }
        log("\(status): \(how)")
        do {
            let changed = try withDatabase { db in
                try db.run("""
                    UPDATE vm_instances SET status = ?, pid = NULL, runner_pid = NULL, qmp_socket_path = NULL,
                           updated_at = CURRENT_TIMESTAMP
                     WHERE id = ? AND runner_pid = ?
                    """, [.text(status), .text(spec.vmID), .integer(Int64(pid))])
            }
            if changed == 0 { log("the row of \(spec.vmName) no longer belongs to this runner; left as it is") }
        } catch {
            log("cannot record \(spec.vmName) as \(status): \(error)")
            appendHistory("runner could not update the database: \(error)")
        }
        appendHistory("\(status): \(how)")
        RuntimeDirectory.removeVMDirectory(spec.dir, extraFiles: [spec.runnerQMP, spec.clientQMP])
    }

    // MARK: Helpers

    private var databasePath: String { (spec.dataDir as NSString).appendingPathComponent("instances.db") }

    /// Opens the database for one statement (busy timeout 10 s) and closes it again: the runner
    /// never holds a connection, let alone a transaction, while waiting on QEMU.
    private func withDatabase<T>(_ body: (Database) throws -> T) throws -> T {
        let db = try Database(path: databasePath, mode: .readWrite, busyTimeoutMs: 10_000)
        defer { db.close() }
        return try body(db)
    }

    /// Reaps QEMU (blocking: called once the pidfd said it exited, or after SIGKILL).
    private func reapQEMU() -> ExitInfo {
        var status: Int32 = 0
        let rc = retryingEINTR { waitpid(qemuPID, &status, 0) }
        guard rc == qemuPID else { return ExitInfo(code: nil, signal: nil) }
        let signal = status & 0x7f
        return signal == 0 ? ExitInfo(code: (status >> 8) & 0xff, signal: nil) : ExitInfo(code: nil, signal: signal)
    }

    /// The next pending stop signal from the signalfd, if any.
    private func takeSignal() -> Int32? {
        // struct signalfd_siginfo is 128 bytes; ssi_signo is its first field (uint32).
        var info = [UInt8](repeating: 0, count: 128)
        let n = info.withUnsafeMutableBytes { raw in Glibc.read(signalFD, raw.baseAddress, raw.count) }
        guard n == 128 else { return nil }
        return info.withUnsafeBytes { Int32(bitPattern: $0.load(as: UInt32.self)) }
    }

    private func describe(_ exit: ExitInfo) -> String {
        if let signal = exit.signal { return "was killed by signal \(signal) (SIG\(signalName(signal)))" }
        if let code = exit.code { return "exited with code \(code)" }
        return "exited (status unknown)"
    }

    private func report(_ report: RunnerReport) {
        guard readyFD >= 0 else { return }
        Self.writeReport(readyFD, report)
        readyFD = -1
    }

    /// Writes one JSON line on the ready pipe and closes it (EPIPE: nobody waits, fine).
    static func writeReport(_ fd: Int32, _ report: RunnerReport) {
        var bytes = Array(((try? report.json.serialized()) ?? #"{"ok":false}"#).utf8)
        bytes.append(UInt8(ascii: "\n"))
        _ = bytes.withUnsafeBytes { raw in retryingEINTR { Glibc.write(fd, raw.baseAddress, raw.count) } }
        _ = Glibc.close(fd)
    }

    /// A line on stderr (runner.log while the VM runs).
    private func log(_ message: String) {
        fputs("\(Self.timestamp()) \(message)\n", stderr)
    }

    /// Appends "<timestamp> <message>" to `<data dir>/logs/<vm name>.log`.
    private func appendHistory(_ message: String) {
        VMHistory.append(dataDir: spec.dataDir, vmName: spec.vmName, vmID: spec.vmID, message)
    }

    /// "2026-11-25T09:12:03.456Z" (UTC). `gmtime_r` + `strftime`: no ICU to load in the runner.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        let n = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S", &parts)
        let millis = Int(now.tv_nsec / 1_000_000)
        let fraction = String(millis)
        return String(cString: Array(buffer[0..<n]) + [0]) + "." + String(repeating: "0", count: 3 - fraction.count) + fraction + "Z"
    }
}

/// The persistent per-VM history in the data directory: `<data dir>/logs/<vm name>.log`, one line
/// per start, failed start and end ("2026-01-02T03:04:05.678Z crashed: QEMU was killed by signal 9 (SIGKILL)").
public enum VMHistory {
    /// The log file of a VM (names that are not safe file names use the VM id).
    public static func path(dataDir: String, vmName: String, vmID: String) -> String {
        let safe = !vmName.isEmpty && !vmName.hasPrefix(".") && vmName.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }
        return ((dataDir as NSString).appendingPathComponent("logs") as NSString).appendingPathComponent("\(safe ? vmName : vmID).log")
    }

    public static func append(dataDir: String, vmName: String, vmID: String, _ message: String) {
        let logs = (dataDir as NSString).appendingPathComponent("logs")
        _ = mkdir(logs, 0o700)
        let file = path(dataDir: dataDir, vmName: vmName, vmID: vmID)
        let fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return }
        defer { _ = Glibc.close(fd) }
        let line = Array("\(VMRunner.timestamp()) \(message.replacingOccurrences(of: "\n", with: "; "))\n".utf8)
        _ = line.withUnsafeBytes { raw in Glibc.write(fd, raw.baseAddress, raw.count) }
    }
}
