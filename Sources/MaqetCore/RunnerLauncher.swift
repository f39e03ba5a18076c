import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// What the runner of one VM needs to know, written as JSON (0600) to `<dir>/runner.json`. Every
/// path the runner touches is in it (named by the Lua workflow, `scripts/lib/qemu.lua`'s
/// `qemu.paths`): the runner computes none.
public struct RunnerSpec: Equatable, Sendable {
    public var vmName: String
    public var vmID: String
    /// QEMU's whole argv, binary first (searched in PATH when it has no slash).
    public var argv: [String]
    /// The VM's runtime directory (0700): sockets, qemu.log, runner.log, runner.json.
    public var dir: String
    /// The runner's own QMP monitor.
    public var runnerQMP: String
    /// The monitor for the CLI, scripts and other tools (recorded as `qmp_socket_path`).
    public var clientQMP: String
    /// How long QEMU may take until its QMP monitor answers.
    public var timeoutMs: Int
    /// The data directory holding instances.db.
    public var dataDir: String
    /// QEMU's stdout and stderr (default `<dir>/qemu.log`).
    public var qemuLog: String
    /// The runner's own stderr (default `<dir>/runner.log`).
    public var runnerLog: String
    /// The VM's history log (`<data dir>/logs/<name>.log`); nil: none is written.
    public var historyLog: String?
    /// The VM's events log (`<data dir>/logs/<name>.events.jsonl`); nil: none is written.
    public var eventsLog: String?
    /// `--scripts-dir` of the command that started the VM, so the runner's hooks are the same
    /// edited copies.
    public var scriptsDir: String?
    /// The VM's lock file (`VMLock`), held by the launching process and handed to the runner; nil:
    /// the start takes no lock (a script's own launch).
    public var lockPath: String?
    /// The claim the row carries: the `runner_pid` the start wrote with status `starting`. The
    /// runner's writes are compare-and-set on it (then on its own pid); nil: unconditional.
    public var claimPID: Int?

    public init(vmName: String, vmID: String, argv: [String], dir: String, runnerQMP: String, clientQMP: String, timeoutMs: Int, dataDir: String,
                qemuLog: String? = nil, runnerLog: String? = nil, historyLog: String? = nil, eventsLog: String? = nil, scriptsDir: String? = nil,
                lockPath: String? = nil, claimPID: Int? = nil) {
        self.vmName = vmName
        self.vmID = vmID
        self.argv = argv
        self.dir = dir
        self.runnerQMP = runnerQMP
        self.clientQMP = clientQMP
        self.timeoutMs = timeoutMs
        self.dataDir = dataDir
        self.qemuLog = qemuLog ?? (dir as NSString).appendingPathComponent("qemu.log")
        self.runnerLog = runnerLog ?? (dir as NSString).appendingPathComponent("runner.log")
        self.historyLog = historyLog
        self.eventsLog = eventsLog
        self.scriptsDir = scriptsDir
        self.lockPath = lockPath
        self.claimPID = claimPID
    }

    public var specPath: String { (dir as NSString).appendingPathComponent("runner.json") }
    public var runnerLogPath: String { runnerLog }
    public var qemuLogPath: String { qemuLog }

    // The spec and the report are JSON through JSONValue, not Codable: both sit on the start's
    // critical path, and Codable's first use instantiates generic metadata (about 0.5 ms per
    // process in the CLI and again in the runner).

    /// The spec as the JSON object written to `runner.json`.
    public var json: JSONValue {
        var members: [(key: String, value: JSONValue)] = [
            ("vm_name", .string(vmName)), ("vm_id", .string(vmID)), ("argv", .array(argv.map { .string($0) })),
            ("dir", .string(dir)), ("runner_qmp", .string(runnerQMP)), ("client_qmp", .string(clientQMP)),
            ("timeout_ms", .integer(Int64(timeoutMs))), ("data_dir", .string(dataDir)),
            ("qemu_log", .string(qemuLog)), ("runner_log", .string(runnerLog)),
        ]
        if let historyLog { members.append(("history_log", .string(historyLog))) }
        if let eventsLog { members.append(("events_log", .string(eventsLog))) }
        if let scriptsDir { members.append(("scripts_dir", .string(scriptsDir))) }
        if let lockPath { members.append(("lock", .string(lockPath))) }
        if let claimPID { members.append(("claim_pid", .integer(Int64(claimPID)))) }
        return .object(members)
    }

    /// Reads a spec back; a missing or mistyped field is an error naming it.
    public init(json: JSONValue) throws {
        let fields = try JSONFields(json, what: "the runner spec")
        self.init(vmName: try fields.string("vm_name"), vmID: try fields.string("vm_id"),
                  argv: try fields.strings("argv"), dir: try fields.string("dir"),
                  runnerQMP: try fields.string("runner_qmp"), clientQMP: try fields.string("client_qmp"),
                  timeoutMs: try fields.int("timeout_ms"), dataDir: try fields.string("data_dir"),
                  qemuLog: try fields.optionalString("qemu_log"), runnerLog: try fields.optionalString("runner_log"),
                  historyLog: try fields.optionalString("history_log"), eventsLog: try fields.optionalString("events_log"),
                  scriptsDir: try fields.optionalString("scripts_dir"),
                  lockPath: try fields.optionalString("lock"), claimPID: try fields.optionalInt("claim_pid"))
    }

    public static func load(_ path: String) throws -> RunnerSpec {
        guard let bytes = LinuxProcess.readSmallFile(path) else { throw SystemError(errno: errno, "cannot read \(path)") }
        return try RunnerSpec(json: JSONValue.parse(bytes: bytes))
    }
}

/// Typed access to the members of a JSON object, for the runner's spec and report.
struct JSONFields {
    let object: JSONValue
    let what: String

    init(_ value: JSONValue, what: String) throws {
        guard case .object = value else { throw JSONFieldError("\(what) is not a JSON object") }
        object = value
        self.what = what
    }

    /// The member `key`; null counts as missing.
    func value(_ key: String) -> JSONValue? {
        guard let value = object[key], value != .null else { return nil }
        return value
    }

    func string(_ key: String) throws -> String {
        guard let s = try optionalString(key) else { throw JSONFieldError("\(what) has no \"\(key)\"") }
        return s
    }

    func optionalString(_ key: String) throws -> String? {
        switch value(key) {
        case nil: return nil
        case .string(let s)?: return s
        default: throw JSONFieldError("\"\(key)\" in \(what) must be a string")
        }
    }

    func strings(_ key: String) throws -> [String] {
        guard case .array(let items)? = value(key) else { throw JSONFieldError("\"\(key)\" in \(what) must be an array of strings") }
        return try items.map {
            guard case .string(let s) = $0 else { throw JSONFieldError("\"\(key)\" in \(what) must be an array of strings") }
            return s
        }
    }

    func int(_ key: String) throws -> Int {
        guard let i = try optionalInt(key) else { throw JSONFieldError("\(what) has no \"\(key)\"") }
        return i
    }

    func optionalInt(_ key: String) throws -> Int? {
        switch value(key) {
        case nil: return nil
        case .integer(let i)? where Int(exactly: i) != nil: return Int(i)
        default: throw JSONFieldError("\"\(key)\" in \(what) must be an integer")
        }
    }

    func bool(_ key: String) throws -> Bool {
        guard case .bool(let b)? = value(key) else { throw JSONFieldError("\"\(key)\" in \(what) must be true or false") }
        return b
    }
}

struct JSONFieldError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The one line the runner writes on its ready pipe.
public struct RunnerReport: Sendable {
    public var ok: Bool
    public var pid: Int32?
    public var runnerPID: Int32?
    public var error: String?
    /// Why it failed: "EQEMU" (QEMU exited), "ETIMEDOUT", "ENOENT" (no such binary / no row), …
    public var code: String?

    public init(ok: Bool, pid: Int32? = nil, runnerPID: Int32? = nil, error: String? = nil, code: String? = nil) {
        self.ok = ok
        self.pid = pid
        self.runnerPID = runnerPID
        self.error = error
        self.code = code
    }

    /// The report as the one-line JSON object written on the ready pipe (nil members left out).
    public var json: JSONValue {
        var members: [(key: String, value: JSONValue)] = [("ok", .bool(ok))]
        if let pid { members.append(("pid", .integer(Int64(pid)))) }
        if let runnerPID { members.append(("runner_pid", .integer(Int64(runnerPID)))) }
        if let error { members.append(("error", .string(error))) }
        if let code { members.append(("code", .string(code))) }
        return .object(members)
    }

    public init(json: JSONValue) throws {
        let fields = try JSONFields(json, what: "the runner's report")
        func pid(_ key: String) throws -> Int32? {
            guard let i = try fields.optionalInt(key) else { return nil }
            guard let p = Int32(exactly: i) else { throw JSONFieldError("\"\(key)\" in the runner's report is not a pid") }
            return p
        }
        self.init(ok: try fields.bool("ok"), pid: try pid("pid"), runnerPID: try pid("runner_pid"),
                  error: try fields.optionalString("error"), code: try fields.optionalString("code"))
    }
}

/// What `launch` achieved.
public struct RunnerLaunch: Sendable {
    /// QEMU's pid (nil with `noWait`: not known yet).
    public var pid: pid_t?
    public var runnerPID: pid_t
    /// "running", or "starting" with `noWait`.
    public var status: String
}

/// Why `launch` failed. `code` is what scripts see as the third result.
public struct RunnerLaunchError: Error, CustomStringConvertible {
    public var message: String
    public var code: String
    public var description: String { message }
    public init(_ message: String, code: String) {
        self.message = message
        self.code = code
    }
}

/// Starts a detached per-VM runner (`maqet __runner --spec FILE`) and waits for its ready line.
public enum RunnerLauncher {
    /// The fd number the ready pipe has in the runner.
    public static let readyFD: Int32 = 3
    /// The fd number the VM's lock (`spec.lockPath`, held by the launching process) has in the runner.
    public static let lockFD: Int32 = 4
    /// Extra time the launcher grants past `timeoutMs` (the runner enforces the timeout itself and
    /// reports it; this only catches a runner that hangs).
    static let graceMs: Int64 = 5000

    /// Runners this process started and has not reaped yet.
    nonisolated(unsafe) private static var launched: Set<pid_t> = []

    /// Reaps runners started by this process that have exited, so none stays a zombie.
    public static func reapExited() {
        for pid in launched {
            var status: Int32 = 0
            let rc = waitpid(pid, &status, WNOHANG)
            if rc == pid || (rc == -1 && errno == ECHILD) { launched.remove(pid) }
        }
    }

    /// This program's own executable (`/proc/self/exe` resolved).
    public static func currentExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard n > 0 else { return CommandLine.arguments.first ?? "maqet" }
        buffer[n] = 0
        return String(cString: buffer)
    }

    /// Writes the spec, spawns the runner in a new session and (unless `noWait`) waits for its
    /// ready line. On any failure nothing is left running: the runner (and with it QEMU, in the
    /// runner's process group) is stopped. `shouldStop` is checked every 50 ms while waiting; when
    /// it fires the VM is stopped and `RunnerLaunchError(code: "ECANCELED")` thrown.
    public static func launch(_ spec: RunnerSpec, noWait: Bool, executable: String = currentExecutable(),
                              shouldStop: () -> Bool = { false }) throws -> RunnerLaunch {
        reapExited()
        var heldLock: Int32?
        if let lockPath = spec.lockPath {
            // The runner gets the very lock this process holds (the same open file description),
            // so from before the row was claimed until the VM's last process ends, one holds it.
            guard let fd = VMLock.descriptor(lockPath) else {
                throw RunnerLaunchError("the VM's lock \(lockPath) is not held by this process; take it first (maqet.runner.lock)", code: "ENOLCK")
            }
            heldLock = fd
        }
        try RuntimeDirectory.makePrivateDirectory(spec.dir)
        for path in [spec.runnerQMP, spec.clientQMP] { try RuntimeDirectory.checkSocketPath(path) }
        try writePrivateFile(spec.specPath, contents: Array(try spec.json.serialized().utf8))
        _ = unlink(spec.runnerLogPath)

        // The ready pipe; both ends close-on-exec and above the standard descriptors.
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw SystemError(errno: errno, "cannot start the runner: pipe") }
        let readEnd = fcntl(fds[0], F_DUPFD_CLOEXEC, 10)
        let writeEnd = fcntl(fds[1], F_DUPFD_CLOEXEC, 10)
        _ = Glibc.close(fds[0])
        _ = Glibc.close(fds[1])
        guard readEnd >= 0, writeEnd >= 0 else {
            let e = errno
            if readEnd >= 0 { _ = Glibc.close(readEnd) }
            if writeEnd >= 0 { _ = Glibc.close(writeEnd) }
            throw SystemError(errno: e, "cannot start the runner: fcntl")
        }
        var readOpen = true
        defer { if readOpen { _ = Glibc.close(readEnd) } }

        var arguments = [executable, "__runner", "--spec", spec.specPath, "--ready-fd", String(readyFD), "--maqet-data-dir", spec.dataDir]
        if heldLock != nil { arguments += ["--lock-fd", String(lockFD)] }
        let runnerPID: pid_t
        do {
            runnerPID = try spawnDetached(arguments, stderrPath: spec.runnerLogPath, readyWriteEnd: writeEnd, lock: heldLock)
        } catch {
            _ = Glibc.close(writeEnd)
            RuntimeDirectory.removeVMDirectory(spec.dir, extraFiles: [spec.runnerQMP, spec.clientQMP])
            throw error
        }
        _ = Glibc.close(writeEnd)
        launched.insert(runnerPID)

        if noWait { return RunnerLaunch(pid: nil, runnerPID: runnerPID, status: "starting") }

        let deadline = monotonicMs() + Int64(max(spec.timeoutMs, 0)) + graceMs
        var line: [UInt8] = []
        var sawEOF = false
        while !sawEOF && !line.contains(UInt8(ascii: "\n")) {
            if shouldStop() {
                stopRunner(runnerPID, spec: spec)
                throw RunnerLaunchError("start of \(spec.vmName) cancelled: the script was stopped", code: "ECANCELED")
            }
            let left = deadline - monotonicMs()
            if left <= 0 {
                stopRunner(runnerPID, spec: spec)
                throw RunnerLaunchError("the runner of \(spec.vmName) did not report within \(spec.timeoutMs + Int(graceMs)) ms", code: "ETIMEDOUT")
            }
            guard LinuxProcess.readable(readEnd, timeoutMs: Int32(min(left, 50))) else { continue }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = buffer.withUnsafeMutableBytes { raw in retryingEINTR { Glibc.read(readEnd, raw.baseAddress, raw.count) } }
            if n > 0 { line.append(contentsOf: buffer[0..<n]) } else if n == 0 || errno != EAGAIN { sawEOF = true }
        }
        _ = Glibc.close(readEnd)
        readOpen = false

        if let newline = line.firstIndex(of: UInt8(ascii: "\n")),
           let report = try? RunnerReport(json: JSONValue.parse(bytes: Array(line[..<newline]))) {
            if report.ok, let pid = report.pid {
                return RunnerLaunch(pid: pid, runnerPID: runnerPID, status: "running")
            }
            // The runner stopped QEMU and is cleaning up; wait for it so nothing is left.
            reapOrKill(runnerPID, withinMs: 5000)
            let message = report.error ?? "unknown error"
            let code = report.code ?? "EQEMU"
            if code == "EQEMU" { throw RunnerLaunchError("QEMU exited during start: \(message)", code: code) }
            throw RunnerLaunchError(message, code: code)
        }
        // EOF without a report: the runner died. Its stderr says why.
        reapOrKill(runnerPID, withinMs: 2000)
        _ = Glibc.kill(-runnerPID, SIGKILL) // QEMU, if it had started, is in the runner's group
        let log = tail(ofFile: spec.runnerLogPath)
        RuntimeDirectory.removeVMDirectory(spec.dir, extraFiles: [spec.runnerQMP, spec.clientQMP])
        throw RunnerLaunchError("the runner of \(spec.vmName) exited before QEMU was ready\(log.isEmpty ? "" : ": \(log)")", code: "ERUNNER")
    }

    /// SIGTERM to the runner (it stops QEMU and cleans up), then SIGKILL to its whole process group.
    static func stopRunner(_ runnerPID: pid_t, spec: RunnerSpec) {
        _ = Glibc.kill(runnerPID, SIGTERM)
        reapOrKill(runnerPID, withinMs: 3000)
        _ = Glibc.kill(-runnerPID, SIGKILL)
        RuntimeDirectory.removeVMDirectory(spec.dir, extraFiles: [spec.runnerQMP, spec.clientQMP])
    }

    /// Waits up to `withinMs` for the child `pid` to exit, then SIGKILLs its process group; reaps it.
    static func reapOrKill(_ pid: pid_t, withinMs: Int64) {
        let deadline = monotonicMs() + withinMs
        var status: Int32 = 0
        while monotonicMs() < deadline {
            let rc = waitpid(pid, &status, WNOHANG)
            if rc == pid || (rc == -1 && errno != EINTR) {
                launched.remove(pid)
                return
            }
            var slice = timespec(tv_sec: 0, tv_nsec: 10_000_000)
            _ = nanosleep(&slice, nil)
        }
        _ = Glibc.kill(-pid, SIGKILL)
        _ = Glibc.kill(pid, SIGKILL)
        _ = retryingEINTR { waitpid(pid, &status, 0) }
        launched.remove(pid)
    }

    /// posix_spawn in a new session: stdin and stdout /dev/null, stderr appended to `stderrPath`,
    /// `readyWriteEnd` as fd 3, the VM's lock (when given) as fd 4, every other descriptor closed.
    static func spawnDetached(_ arguments: [String], stderrPath: String, readyWriteEnd: Int32, lock: Int32? = nil) throws -> pid_t {
        let (child, rc) = ProcessSpawn.spawn(arguments, searchPath: false, newSession: true) { actions in
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            posix_spawn_file_actions_adddup2(&actions, readyWriteEnd, readyFD)
            if let lock { posix_spawn_file_actions_adddup2(&actions, lock, lockFD) }
            Syscalls.addClosefrom(&actions, from: (lock == nil ? readyFD : lockFD) + 1)
        }
        guard rc == 0 else { throw SystemError(errno: rc, "cannot start the runner '\(arguments[0])'") }
        return child
    }

    /// Creates (or replaces) `path` with mode 0600 and writes `contents`.
    static func writePrivateFile(_ path: String, contents bytes: [UInt8]) throws {
        _ = unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw SystemError(errno: errno, "cannot write \(path)") }
        defer { _ = Glibc.close(fd) }
        _ = fchmod(fd, 0o600)
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in retryingEINTR { Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset) } }
            guard n > 0 else { throw SystemError(errno: errno, "cannot write \(path)") }
            offset += n
        }
    }

    /// The last lines of a small text file, trimmed and joined with "; " (empty when unreadable).
    public static func tail(ofFile path: String, maximumBytes: Int = 2000) -> String {
        guard let data = FileManager.default.contents(atPath: path) else { return "" }
        let text = String(decoding: data.suffix(maximumBytes), as: UTF8.self)
        return text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
            .joined(separator: "; ")
    }
}
