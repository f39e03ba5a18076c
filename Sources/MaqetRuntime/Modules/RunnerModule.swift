import CLuaShim
import Foundation
import MaqetCore

/// `maqet.runner`: starts a VM's detached runner (`maqet __runner`), which launches QEMU, keeps the
/// database row truthful and cleans up when QEMU ends. Mechanism in `RunnerLauncher`/`VMRunner`.
enum RunnerModule {
    static let functions: [LuaRegistration] = [
        ("launch", launch),
        ("lock", lock),
        ("unlock", unlock),
        ("lock_state", lockState),
    ]

    /// Reads the spec table at index 1.
    static func spec(_ lua: Lua, _ function: String) throws -> (RunnerSpec, noWait: Bool) {
        try lua.checkTable(1, function, "spec")
        func required(_ key: String) throws -> String {
            guard let value = try lua.stringField(1, key, function), !value.isEmpty else {
                throw LuaUsageError("\(function): spec.\(key) must be a non-empty string")
            }
            guard !value.utf8.contains(0) else { throw LuaUsageError("\(function): spec.\(key) contains a NUL byte") }
            return value
        }
        let vmName = try required("vm_name")
        let vmID = try required("vm_id")
        let dir = try required("dir")
        let runnerQMP = try required("runner_qmp")
        let clientQMP = try required("client_qmp")
        guard dir.hasPrefix("/"), runnerQMP.hasPrefix("/"), clientQMP.hasPrefix("/") else {
            throw LuaUsageError("\(function): spec.dir, spec.runner_qmp and spec.client_qmp must be absolute paths")
        }
        guard runnerQMP != clientQMP else { throw LuaUsageError("\(function): spec.runner_qmp and spec.client_qmp must differ") }
        _ = lua.rawField(1, "argv")
        defer { lua.pop() }
        guard lua.type(at: -1) == LUA_TTABLE, lua.rawLength(-1) > 0 else {
            throw LuaUsageError("\(function): spec.argv must be a non-empty table of strings (QEMU's argv, binary first)")
        }
        let argv = try lua.stringArray(-1, function, "spec.argv")
        if let bad = argv.firstIndex(where: { $0.utf8.contains(0) }) {
            throw LuaUsageError("\(function): spec.argv item \(bad + 1) contains a NUL byte")
        }
        let timeoutMs = try lua.integerField(1, "timeout_ms", function) ?? 30_000
        guard timeoutMs > 0, timeoutMs <= Int64(Int32.max) else {
            throw LuaUsageError("\(function): spec.timeout_ms must be an integer > 0, got \(timeoutMs)")
        }
        _ = lua.rawField(1, "no_wait")
        let noWait = lua.boolean(at: -1)
        lua.pop()
        // The files the runner writes, named by the workflow (qemu.paths); the logs in the runtime
        // directory default to <dir>/qemu.log and <dir>/runner.log, the data-dir logs to none.
        func optionalPath(_ key: String) throws -> String? {
            guard let value = try lua.stringField(1, key, function) else { return nil }
            guard value.hasPrefix("/"), !value.utf8.contains(0) else {
                throw LuaUsageError("\(function): spec.\(key) must be an absolute path, got '\(value)'")
            }
            return value
        }
        let claimPID = try lua.integerField(1, "claim_pid", function)
        if let claimPID, claimPID <= 0 || claimPID > Int64(Int32.max) {
            throw LuaUsageError("\(function): spec.claim_pid must be a pid (an integer > 0), got \(claimPID)")
        }
        let lockPath = try optionalPath("lock")
        if let lockPath, VMLock.descriptor(lockPath) == nil {
            throw LuaUsageError("\(function): spec.lock \(lockPath) is not held by this process; take it first with maqet.runner.lock")
        }
        return (RunnerSpec(vmName: vmName, vmID: vmID, argv: argv, dir: dir, runnerQMP: runnerQMP, clientQMP: clientQMP,
                           timeoutMs: Int(timeoutMs), dataDir: "",
                           qemuLog: try optionalPath("qemu_log"), runnerLog: try optionalPath("runner_log"),
                           historyLog: try optionalPath("history_log"), eventsLog: try optionalPath("events_log"),
                           lockPath: lockPath, claimPID: claimPID.map { Int($0) }), noWait)
    }

    /// The state database scripts see as `maqet.db`, if it is open. (A write transaction on it
    /// would make the runner's UPDATE wait.)
    static func stateDatabase(_ lua: Lua) -> Database? {
        Runtime.from(lua).stateDatabase.flatMap { $0.isOpen ? $0 : nil }
    }

    /// `maqet.runner.launch(spec)` → `{pid=, runner_pid=, status="running"}` (`status="starting"`
    /// and no `pid` with `no_wait`), or `nil, message, code` ("EQEMU", "ETIMEDOUT", "ENOENT", …).
    private static let launch: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "maqet.runner.launch"
            var (spec, noWait) = try spec(lua, function)
            // The data directory of this command: its StateConfiguration, else the folder of maqet.db.
            guard let dataDir = Runtime.from(lua).stateConfiguration?.dataDirectory
                    ?? stateDatabase(lua).map({ ($0.path as NSString).deletingLastPathComponent }) else {
                throw LuaUsageError("\(function): no state database is open in this command")
            }
            spec.dataDir = dataDir
            // The runner's hooks come from the same scripts as this command's workflows.
            spec.scriptsDir = Runtime.from(lua).scripts.directories.first(where: { $0.origin == .scriptsDir })
                .map { URL(fileURLWithPath: $0.path).standardizedFileURL.path }
            if stateDatabase(lua)?.holdsWriteTransaction ?? false {
                throw LuaUsageError("\(function): called inside a database write transaction; the runner records the row itself and would wait for it, so launch outside db:transaction()")
            }
            let result: RunnerLaunch
            do {
                result = try RunnerLauncher.launch(spec, noWait: noWait, shouldStop: ProcessModule.stopRequested)
            } catch let error as RunnerLaunchError {
                if error.code == "ECANCELED" && ProcessModule.stopRequested() { throw ProcessModule.stopError(function) }
                return lua.fail(error.message, code: error.code)
            } catch let error as SystemError {
                return lua.fail(error.message, code: error.codeName)
            }
            lua.newTable(recordCount: 3)
            if let pid = result.pid {
                lua.push(Int64(pid))
                lua.setRawField(-2, "pid")
            }
            lua.push(Int64(result.runnerPID))
            lua.setRawField(-2, "runner_pid")
            lua.push(result.status)
            lua.setRawField(-2, "status")
            return 1
        }
    }

    /// The lock-file argument of the lock functions: an absolute path without NUL.
    static func lockPath(_ lua: Lua, _ function: String) throws -> String {
        let path = try lua.checkString(1, function, "path")
        guard path.hasPrefix("/"), !path.utf8.contains(0), !path.hasSuffix("/") else {
            throw LuaUsageError("\(function): path must be an absolute file path, got '\(path)'")
        }
        return path
    }

    /// `maqet.runner.lock(path)` → true when this process now holds the VM's lock (an exclusive
    /// flock on `path`, created 0600 in a 0700 folder; true again when it already holds it), or
    /// `nil, message, "EBUSY"` when another process (a start, a runner or a QEMU of the VM)
    /// holds it, `nil, message, code` when the file cannot be used. Never blocks.
    private static let lock: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "maqet.runner.lock"
            let path = try lockPath(lua, function)
            do {
                guard try VMLock.acquire(path) else {
                    return lua.fail("\(function) \(path): held by another process (the VM's start, runner or QEMU is alive)", code: "EBUSY")
                }
            } catch let error as SystemError {
                return lua.fail(error.message, code: error.codeName)
            }
            lua.push(true)
            return 1
        }
    }

    /// `maqet.runner.unlock(path)` → whether this process held the lock at `path` (a runner it
    /// was handed to keeps it).
    private static let unlock: LuaFunction = { L in
        Lua.call(L) { lua in
            let path = try lockPath(lua, "maqet.runner.unlock")
            lua.push(VMLock.release(path))
            return 1
        }
    }

    /// `maqet.runner.lock_state(path)` → "free" (no process of the VM lives), "held" (another
    /// process holds it) or "mine" (this process does), or `nil, message, code`.
    private static let lockState: LuaFunction = { L in
        Lua.call(L) { lua in
            let path = try lockPath(lua, "maqet.runner.lock_state")
            do {
                lua.push(try VMLock.state(of: path).rawValue)
            } catch let error as SystemError {
                return lua.fail(error.message, code: error.codeName)
            }
            return 1
        }
    }
}
