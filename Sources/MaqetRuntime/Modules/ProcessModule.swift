import CLuaShim
import Foundation
import MaqetCore

/// A child started by `maqet.process.spawn`. Closing it (`:close()`, `<close>`, the end of the
/// script) kills a still-running child with SIGKILL and reaps it.
final class ProcessHandle: LuaHandle {
    static let luaTypeName = "maqet.process"
    var process: Subprocess?
    /// Whether stdout or stderr is a pipe whose bytes `:wait()` returns.
    let captures: Bool
    init(_ process: Subprocess, captures: Bool) {
        self.process = process
        self.captures = captures
    }
    var isClosed: Bool { process == nil }
    func close() {
        process?.close()
        process = nil
    }
}

/// `maqet.process`: run programs without a shell.
enum ProcessModule {
    static let functions: [LuaRegistration] = [
        ("run", run),
        ("spawn", spawn),
        // ---- any process by pid (not only children): the runner and lifecycle workflows ----
        ("info", ProcessByPID.info),
        ("wait_pid", ProcessByPID.waitPID),
        ("signal", ProcessByPID.signal),
        // ---- end of the pid functions ----
    ]

    /// Methods of a process handle (plus `close`).
    static let methods: [LuaRegistration] = [
        ("pid", pid),
        ("wait", wait),
        ("kill", kill),
        ("is_running", isRunning),
    ]

    static func registerTypes(_ lua: Lua) {
        lua.registerHandleType(ProcessHandle.self, methods: methods)
    }

    /// True once Ctrl-C or `--timeout` asked the script to stop.
    static func stopRequested() -> Bool { mq_stop_reason() != Int32(MQ_STOP_NONE) }

    /// The usage error that unwinds a script when Ctrl-C or `--timeout` fired during a blocking call.
    static func stopError(_ function: String) -> LuaUsageError {
        let reason = mq_stop_reason() == Int32(MQ_STOP_TIMEOUT) ? "--timeout expired" : "interrupted"
        return LuaUsageError("\(function): script stopped: \(reason)")
    }

    // MARK: Arguments

    /// Reads `argv` (index 1) and `opts` (index 2).
    static func options(_ lua: Lua, _ function: String, forSpawn: Bool) throws -> (Subprocess.Options, timeoutMs: Int64?) {
        let what = "argv must be a non-empty table of strings"
        guard lua.type(at: 1) == LUA_TTABLE else {
            throw LuaUsageError("\(function): \(what), got \(lua.typeName(at: 1))")
        }
        let count = lua.rawLength(1)
        guard count > 0 else { throw LuaUsageError("\(function): \(what), got an empty table") }
        var argv: [String] = []
        for i in 1...count {
            _ = lua.rawIndex(1, Int64(i))
            defer { lua.pop() }
            guard let s = lua.string(at: -1) else {
                throw LuaUsageError("\(function): \(what), item \(i) is a \(lua.typeName(at: -1))")
            }
            guard !s.utf8.contains(0) else { throw LuaUsageError("\(function): argv item \(i) contains a NUL byte") }
            argv.append(s)
        }
        var options = Subprocess.Options(arguments: argv)
        var timeoutMs: Int64?
        if try lua.optTable(2, function, "opts") {
            options.directory = try lua.stringField(2, "cwd", function)
            switch lua.rawField(2, "stdin") {
            case LUA_TNIL: break
            case LUA_TSTRING:
                // Keep the exact bytes (a Swift String would repair invalid UTF-8).
                var length = 0
                if let p = mq_tostring(lua.L, -1, &length) {
                    options.input = Array(UnsafeRawBufferPointer(start: p, count: length))
                }
            default:
                let type = lua.typeName(at: -1)
                lua.pop()
                throw LuaUsageError("\(function): field 'stdin' must be a string, got \(type)")
            }
            lua.pop()
            timeoutMs = try lua.integerField(2, "timeout_ms", function)
            if let t = timeoutMs, t < 0 { throw LuaUsageError("\(function): field 'timeout_ms' must be >= 0") }
            if forSpawn, timeoutMs != nil { throw LuaUsageError("\(function): timeout_ms is an option of maqet.process.run; use proc:wait(timeout_ms)") }
            if lua.rawField(2, "env") != LUA_TNIL {
                defer { lua.pop() }
                guard lua.type(at: -1) == LUA_TTABLE else {
                    throw LuaUsageError("\(function): field 'env' must be a table of name = value strings, got \(lua.typeName(at: -1))")
                }
                var env: [String: String] = [:]
                let table = lua.absolute(-1)
                lua.pushNil()
                while lua_next(lua.L, table) != 0 {
                    defer { lua.pop() }
                    guard let name = lua.string(at: -2), let value = lua.stringOrNumber(at: -1),
                          !name.isEmpty, !name.contains("="), !name.utf8.contains(0), !value.utf8.contains(0)
                    else {
                        throw LuaUsageError("\(function): field 'env' must map names (strings without '=') to string values")
                    }
                    env[name] = value
                }
                options.environment = env
            } else {
                lua.pop()
            }
            if forSpawn {
                options.stdout = try outputMode(lua, "stdout", function)
                options.stderr = try outputMode(lua, "stderr", function)
            }
        } else if forSpawn {
            options.stdout = .inherit
            options.stderr = .inherit
        }
        return (options, timeoutMs)
    }

    /// spawn's `stdout`/`stderr` option: "inherit" (default), "null" or "pipe".
    static func outputMode(_ lua: Lua, _ key: String, _ function: String) throws -> Subprocess.Output {
        switch try lua.stringField(2, key, function) {
        case nil, "inherit": return .inherit
        case "null": return .discard
        case "pipe": return .capture
        case let other?: throw LuaUsageError("\(function): field '\(key)' must be \"inherit\", \"null\" or \"pipe\", got \"\(other)\"")
        }
    }

    /// Pushes `{code=, signal=, signal_name=, stdout=, stderr=}`.
    static func pushResult(_ lua: Lua, _ process: Subprocess, _ exit: ExitInfo, captured: Bool, timedOut: Bool = false) {
        lua.newTable(recordCount: 6)
        if let code = exit.code {
            lua.push(Int64(code))
            lua.setRawField(-2, "code")
        }
        if let signal = exit.signal {
            lua.push(Int64(signal))
            lua.setRawField(-2, "signal")
            lua.push(signalName(signal))
            lua.setRawField(-2, "signal_name")
        }
        if captured {
            process.stdout.withUnsafeBytes { lua.push(bytes: $0) }
            lua.setRawField(-2, "stdout")
            process.stderr.withUnsafeBytes { lua.push(bytes: $0) }
            lua.setRawField(-2, "stderr")
        }
        if timedOut {
            lua.push(true)
            lua.setRawField(-2, "timed_out")
        }
    }

    // MARK: Functions

    /// `maqet.process.run(argv, opts)`: runs to completion, capturing stdout and stderr.
    private static let run: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "maqet.process.run"
            let (options, timeoutMs) = try options(lua, function, forSpawn: false)
            let process: Subprocess
            do {
                process = try Subprocess(options)
            } catch let error as SystemError {
                return lua.fail(error.message, code: error.codeName)
            }
            defer { process.close() }
            if let exit = process.wait(timeoutMs: timeoutMs, shouldStop: stopRequested) {
                pushResult(lua, process, exit, captured: true)
                return 1
            }
            let stopped = stopRequested()
            process.close() // SIGKILL and reap
            if stopped { throw stopError(function) }
            pushResult(lua, process, process.exit ?? ExitInfo(code: nil, signal: SIGKILL), captured: true, timedOut: true)
            return 1
        }
    }

    /// `maqet.process.spawn(argv, opts)`: starts a child and returns its handle.
    private static let spawn: LuaFunction = { L in
        Lua.call(L) { lua in
            let (options, _) = try options(lua, "maqet.process.spawn", forSpawn: true)
            do {
                let captures = options.stdout == .capture || options.stderr == .capture
                lua.pushHandle(ProcessHandle(try Subprocess(options), captures: captures))
                return 1
            } catch let error as SystemError {
                return lua.fail(error.message, code: error.codeName)
            }
        }
    }

    private static let pid: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, ProcessHandle.self, "proc:pid")
            lua.push(Int64(handle.process!.pid))
            return 1
        }
    }

    /// `proc:wait([timeout_ms])`: the result table, or `nil, "timeout", "ETIMEDOUT"`.
    private static let wait: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, ProcessHandle.self, "proc:wait")
            let timeoutMs = try lua.optInteger(2, "proc:wait", "timeout_ms")
            if let t = timeoutMs, t < 0 { throw LuaUsageError("proc:wait: timeout_ms must be >= 0") }
            let process = handle.process!
            if let exit = process.wait(timeoutMs: timeoutMs, shouldStop: stopRequested) {
                pushResult(lua, process, exit, captured: handle.captures)
                return 1
            }
            if stopRequested() { throw stopError("proc:wait") }
            return lua.fail("timeout", code: "ETIMEDOUT")
        }
    }

    /// `proc:kill([signal_name])`: sends a signal (default "TERM"); true, or `nil, message, code`.
    private static let kill: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, ProcessHandle.self, "proc:kill")
            let name = try lua.optString(2, "proc:kill", "signal_name") ?? "TERM"
            guard let signal = signalNumber(named: name) else {
                throw LuaUsageError("proc:kill: unknown signal '\(name)' (use a name like \"TERM\", \"KILL\", \"INT\", \"HUP\", \"USR1\")")
            }
            do {
                try handle.process!.send(signal)
                lua.push(true)
                return 1
            } catch let error as SystemError {
                return lua.fail(error.message, code: error.codeName)
            }
        }
    }

    private static let isRunning: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, ProcessHandle.self, "proc:is_running")
            lua.push(handle.process!.isRunning)
            return 1
        }
    }
}
