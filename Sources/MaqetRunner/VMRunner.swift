import Foundation
#if canImport(Glibc)
import Glibc
#endif
import MaqetCore
import MaqetRuntime

/// The per-VM runner (`maqet __runner --spec FILE`): the mechanism that starts QEMU, reports on
/// the ready pipe once QMP answers, watches QEMU and cleans up when it ends. What QEMU's start,
/// events and exit mean for the row and the logs is policy, in Lua (`scripts/lifecycle/runner.lua`:
/// `on_ready`, `on_event`, `on_exit`, see `RunnerHooks`).
///
/// Life cycle: spawn QEMU → load the hooks (while QEMU starts) → wait for its runner monitor
/// (polling QEMU's pidfd, so an early exit is reported at once with QEMU's stderr) →
/// `query-status` → `on_ready` → ready line → event loop: `poll` on the pidfd, the QMP socket and
/// a signalfd, no timeout, `on_event` per QMP event → QEMU exited: `waitpid`, `on_exit`, sockets
/// and runtime directory removed. A hook that fails is logged and the runner writes the safe
/// default itself (running; stopped for a clean exit, else crashed).
public final class VMRunner {
    let spec: RunnerSpec
    let pid: pid_t = getpid()
    private var readyFD: Int32
    /// The VM's lock (`VMLock`), handed over by the start; kept open for the runner's life and
    /// passed on to QEMU. -1: the start took none.
    private let lockFD: Int32
    private var signalFD: Int32 = -1
    private var qemuPID: pid_t = 0
    private var pidFD: Int32 = -1
    private var qmp: QMPClient?

    /// The data of QEMU's SHUTDOWN event, when it sent one (for on_exit and the default write).
    private var shutdown: JSONValue?
    /// The signal that asked the runner to stop QEMU.
    private var stopSignal: Int32?
    /// The Lua hooks; nil when they failed to load (the defaults apply).
    private var hooks: RunnerHooks?

    init(spec: RunnerSpec, readyFD: Int32, lockFD: Int32) {
        self.spec = spec
        self.readyFD = readyFD
        self.lockFD = lockFD
    }

    /// Runs the runner for the spec at `specPath`; returns the process exit status.
    public static func main(specPath: String, readyFD: Int32?, lockFD: Int32? = nil, dataDir: String?) -> Int32 {
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
        let runner = VMRunner(spec: spec, readyFD: readyFD ?? -1, lockFD: lockFD ?? -1)
        return runner.run()
    }

    func run() -> Int32 {
        log("runner \(pid) for \(spec.vmName) (\(spec.vmID))")
        do {
            try blockSignals()
            if lockFD >= 0 {
                do { try VMLock.adopt(lockFD) } catch { throw RunnerLaunchError("\(error)", code: "ENOLCK") }
            }
            try startQEMU()
            try recordSpawned()
            loadHooks()
            let qemuStatus = try waitUntilReady()
            try recordReady(qemuStatus: qemuStatus)
        } catch let failure as RunnerLaunchError {
            abortStart(failure)
            return 1
        } catch {
            abortStart(RunnerLaunchError(String(describing: error), code: (error as? SystemError)?.codeName ?? "EIO"))
            return 1
        }
        report(RunnerReport(ok: true, pid: qemuPID, runnerPID: pid))
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

        // QEMU inherits the VM's lock as fd 3 (it never touches it): the lock then means "a
        // process that owns this VM's disks lives", and a runner SIGKILLed while QEMU runs (even
        // before the row names QEMU) still keeps every other start of the VM out.
        let lockFD = self.lockFD
        let (child, rc) = ProcessSpawn.spawn(spec.argv, searchPath: true) { actions in
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, logFD, 1)
            posix_spawn_file_actions_adddup2(&actions, logFD, 2)
            if lockFD >= 0 { posix_spawn_file_actions_adddup2(&actions, lockFD, 3) }
            Syscalls.addClosefrom(&actions, from: lockFD >= 0 ? 4 : 3)
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

    /// With a claim (`spec.claimPID`): the row names QEMU and this runner at once, while QEMU is
    /// still starting (status stays `starting`), compare-and-set on the claim (or on this runner's
    /// pid, which `maqet start --no-wait` writes over its claim as soon as it knows it). A runner killed
    /// from here on leaves a row that names its QEMU, so reconciliation finds it. When the row no
    /// longer carries the claim (a reconciliation or another start took it over), nobody owns
    /// this QEMU: the start fails and QEMU is killed.
    private func recordSpawned() throws {
        guard let claim = spec.claimPID else { return }
        let changed: Int
        do {
            changed = try withDatabase { db in
                try db.run("""
                    UPDATE vm_instances SET pid = ?, runner_pid = ?, updated_at = CURRENT_TIMESTAMP
                     WHERE id = ? AND status = 'starting' AND pid IS NULL AND runner_pid IN (?, ?)
                    """, [.integer(Int64(qemuPID)), .integer(Int64(pid)), .text(spec.vmID), .integer(Int64(claim)), .integer(Int64(pid))])
            }
        } catch {
            throw RunnerLaunchError("cannot record QEMU's pid for \(spec.vmName): \(error)", code: "EIO")
        }
        guard changed > 0 else {
            throw RunnerLaunchError("the row of \(spec.vmName) no longer carries this start's claim (runner_pid \(claim)); another maqet took it over, so this QEMU is stopped", code: "ECLAIM")
        }
    }

    /// Builds the Lua state and loads `lifecycle/runner.lua` (QEMU is starting meanwhile, so this
    /// costs the start nothing while QEMU takes longer). A failure is logged; the defaults apply.
    private func loadHooks() {
        var paths: [(key: String, value: JSONValue)] = [
            ("dir", .string(spec.dir)), ("runner_qmp", .string(spec.runnerQMP)), ("client_qmp", .string(spec.clientQMP)),
            ("qemu_log", .string(spec.qemuLog)), ("runner_log", .string(spec.runnerLog)), ("spec", .string(spec.specPath)),
        ]
        if let historyLog = spec.historyLog { paths.append(("history_log", .string(historyLog))) }
        if let eventsLog = spec.eventsLog { paths.append(("events_log", .string(eventsLog))) }
        if let lockPath = spec.lockPath { paths.append(("lock", .string(lockPath))) }
        var members: [(key: String, value: JSONValue)] = [
            ("vm_name", .string(spec.vmName)), ("vm_id", .string(spec.vmID)),
            ("runner_pid", .integer(Int64(pid))), ("qemu_pid", .integer(Int64(qemuPID))),
            ("paths", .object(paths)),
        ]
        if let claim = spec.claimPID { members.append(("claim_pid", .integer(Int64(claim)))) }
        let context: JSONValue = .object(members)
        do {
            hooks = try RunnerHooks(spec: spec, context: context)
        } catch {
            log("cannot load the runner hooks (\(RunnerHooks.script)): \(error); using the built-in defaults")
            appendHistory("runner hooks not loaded (\(error)); recording with the built-in defaults")
        }
    }

    /// Connects to the runner monitor once it accepts connections and returns QEMU's run state
    /// (`query-status`: "running", "prelaunch" with -S, …); fails at once when QEMU exits or a stop
    /// signal arrives, and after `timeoutMs`.
    private func waitUntilReady() throws -> String {
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
                    let state = try client.execute("query-status", timeoutMs: Int(max(deadline - monotonicMs(), 1)))
                    qmp = client
                    for path in [spec.runnerQMP, spec.clientQMP] { _ = chmod(path, 0o600) }
                    if case .string(let status)? = state["status"] { return status }
                    return "running"
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

    /// The row says running (or paused): `on_ready`, else the default UPDATE and history line.
    private func recordReady(qemuStatus: String) throws {
        let startTime = try? LinuxProcess.snapshot(qemuPID, execWaitMs: 0).startTime
        if let hooks {
            hooks.setContext("qemu_status", .string(qemuStatus))
            if let startTime { hooks.setContext("qemu_start_time", .integer(Int64(startTime))) }
            do {
                if let results = try hooks.call("on_ready") {
                    if results[0].isTruthy { return }
                    let message: String
                    if case .string(let text) = results[1] { message = text } else { message = "on_ready refused the start" }
                    let code: String
                    if case .string(let text) = results[2] { code = text } else { code = "EIO" }
                    throw RunnerLaunchError(message, code: code)
                }
            } catch let error as RunnerLaunchError {
                throw error
            } catch {
                log("on_ready failed: \(error); recording running with the built-in default")
                appendHistory("runner hook on_ready failed: \(error)")
            }
        }
        try defaultRecordRunning()
        appendHistory("started: QEMU pid \(qemuPID)\(startTime.map { " (start time \($0))" } ?? ""), runner pid \(pid)")
    }

    /// The default when no hook recorded the start: one UPDATE, the row says running with QEMU's
    /// pid, this runner and the client monitor (compare-and-set on this run when it has a claim).
    private func defaultRecordRunning() throws {
        let changed: Int
        let claimed = spec.claimPID != nil
        do {
            changed = try withDatabase { db in
                try db.run("""
                    UPDATE vm_instances SET status = 'running', pid = ?, runner_pid = ?, qmp_socket_path = ?,
                           updated_at = CURRENT_TIMESTAMP
                     WHERE id = ?\(claimed ? " AND status = 'starting' AND runner_pid = ?" : "")
                    """, [.integer(Int64(qemuPID)), .integer(Int64(pid)), .text(spec.clientQMP), .text(spec.vmID)]
                        + (claimed ? [.integer(Int64(pid))] : []))
            }
        } catch {
            throw RunnerLaunchError("cannot record \(spec.vmName) as running: \(error)", code: "EIO")
        }
        guard changed > 0 else {
            if claimed {
                throw RunnerLaunchError("the row of \(spec.vmName) no longer belongs to this start; another maqet took it over, so this QEMU is stopped", code: "ECLAIM")
            }
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
            if fds.count > 2 && fds[2].revents != 0, readEvents(), stopSignal == nil, killDeadline == nil {
                log("on_event asked to end QEMU: quit")
                requestQuit()
                killDeadline = monotonicMs() + 5000
            }
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

    /// Reads the pending QMP events and hands each to `on_event`; returns true when a hook asked
    /// for QEMU to be ended ("quit").
    @discardableResult
    private func readEvents() -> Bool {
        guard let qmp else { return false }
        var quit = false
        do {
            for event in try qmp.drainEvents() {
                log("event \(event.name) \((try? event.data.serialized()) ?? "")")
                if event.name == "SHUTDOWN" { shutdown = event.data }
                guard let hooks else { continue }
                let value: JSONValue = .object([("name", .string(event.name)), ("data", event.data), ("timestamp", .double(event.timestamp))])
                do {
                    if let results = try hooks.call("on_event", [value]), results[0] == .string("quit") { quit = true }
                } catch {
                    log("on_event \(event.name) failed: \(error)")
                    appendHistory("runner hook on_event failed on \(event.name): \(error)")
                }
            }
        } catch {
            // EOF: QEMU is exiting; the pidfd says when it is gone.
            qmp.close()
        }
        return quit
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
        var recorded = false
        if let hooks {
            var members: [(key: String, value: JSONValue)] = [("description", .string(describe(exit)))]
            if let code = exit.code { members.append(("code", .integer(Int64(code)))) }
            if let signal = exit.signal {
                members.append(("signal", .integer(Int64(signal))))
                members.append(("signal_name", .string(signalName(signal))))
            }
            if let stopSignal { members.append(("stop_signal", .string(signalName(stopSignal)))) }
            if let shutdown { members.append(("shutdown", shutdown)) }
            do {
                recorded = try hooks.call("on_exit", [.object(members)]) != nil
            } catch {
                log("on_exit failed: \(error); recording with the built-in default")
                appendHistory("runner hook on_exit failed: \(error)")
            }
        }
        if !recorded { defaultRecordExit(exit) }
        RuntimeDirectory.removeVMDirectory(spec.dir, extraFiles: [spec.runnerQMP, spec.clientQMP])
    }

    /// The default when no hook recorded the end: stopped for a clean end (exit code 0, a
    /// SHUTDOWN event, or a stop the runner was asked for), else crashed; one UPDATE that only
    /// touches this run's row, and a history line.
    private func defaultRecordExit(_ exit: ExitInfo) {
        let clean = exit.code == 0 || shutdown != nil || stopSignal != nil
        let status = clean ? "stopped" : "crashed"
        var how = "QEMU \(describe(exit))"
        if let shutdown {
            var guest = false
            if case .bool(let b)? = shutdown["guest"] { guest = b }
            how += " after SHUTDOWN (reason \(shutdown["reason"].flatMap { if case .string(let s) = $0 { return s } else { return nil } } ?? "unknown"), \(guest ? "by the guest" : "by the host"))"
        }
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
        fputs("\(utcTimestamp()) \(message)\n", stderr)
    }

    /// Appends a line to the VM's history log (when the spec names one), through the one writer.
    private func appendHistory(_ message: String) {
        guard let path = spec.historyLog else { return }
        History.append(path, message)
    }
}
