import CLuaShim
import MaqetCore

/// `maqet.console`: the mechanism under a VM's serial console (scripts/lib/console.lua builds the
/// `maqet.vm.console(name)` handle on it; the paths come from `qemu.paths(row)`).
enum ConsoleModule {
    static let functions: [LuaRegistration] = [
        ("send", send),
        ("holder", holder),
    ]

    /// `maqet.console.send(socket, text, {lock = path, timeout_ms = 5000})`: types `text` into the
    /// guest through QEMU's console socket while holding the attach lock. `true`, or
    /// `nil, "the console is already attached (pid N)", "EBUSY"`, `nil, message, "ETIMEDOUT"` when
    /// QEMU did not take the input in time, `nil, message, errno name` (ENOENT: no socket).
    private static let send: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "maqet.console.send"
            let socket = try lua.checkString(1, function, "socket")
            guard lua.type(at: 2) == LUA_TSTRING else {
                throw LuaUsageError("\(function): text must be a string, got \(lua.typeName(at: 2))")
            }
            var length = 0
            let pointer = mq_tostring(lua.L, 2, &length)
            let bytes = [UInt8](UnsafeRawBufferPointer(start: pointer, count: length))
            try lua.checkTable(3, function, "opts")
            guard let lock = try lua.stringField(3, "lock", function) else {
                throw LuaUsageError("\(function): opts.lock (the attach lock's path) is required")
            }
            guard !lock.utf8.contains(0) else { throw LuaUsageError("\(function): opts.lock must not contain a NUL byte") }
            let timeoutMs = try lua.integerField(3, "timeout_ms", function) ?? 5000
            guard timeoutMs >= 0, timeoutMs <= Int64(Int32.max) else {
                throw LuaUsageError("\(function): field 'timeout_ms' must be between 0 and \(Int32.max)")
            }
            do {
                try SerialConsole.send(socketPath: socket, lockPath: lock, bytes: bytes, timeoutMs: Int(timeoutMs),
                                       shouldStop: ProcessModule.stopRequested)
                lua.push(true)
                return 1
            } catch let failure as SerialConsole.Failure {
                if case .timeout = failure, ProcessModule.stopRequested() { throw ProcessModule.stopError(function) }
                return lua.fail(failure.description, code: failure.codeName)
            }
        }
    }

    /// `maqet.console.holder(lock)`: the pid attached to the console (0 when it wrote none yet), or nil.
    private static let holder: LuaFunction = { L in
        Lua.call(L) { lua in
            let lock = try lua.checkPath(1, "maqet.console.holder", "lock")
            if let pid = SerialConsole.holder(lock) { lua.push(Int64(pid)) } else { lua.pushNil() }
            return 1
        }
    }
}
