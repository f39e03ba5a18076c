import CLuaShim
import Foundation
import MaqetCore

/// `maqet.process.info/wait_pid/signal`: any process by pid, not only children of this script
/// (a VM's QEMU and runner belong to no one). Registered in `ProcessModule.functions`; the
/// mechanism is `LinuxProcess` in MaqetCore.
enum ProcessByPID {
    /// Reads a pid argument: an integer > 0 (0 and negatives name process groups; never meant here).
    static func pidArgument(_ lua: Lua, _ index: Int32, _ function: String) throws -> pid_t {
        guard lua.type(at: index) == LUA_TNUMBER, lua.isInteger(at: index), let value = lua.integer(at: index) else {
            let got = lua.type(at: index) == LUA_TNUMBER ? "\(lua.number(at: index)!)" : lua.typeName(at: index)
            throw LuaUsageError("\(function): pid must be an integer > 0, got \(got)")
        }
        guard value > 0, value <= Int64(Int32.max) else {
            throw LuaUsageError("\(function): pid must be an integer > 0, got \(value)")
        }
        return pid_t(value)
    }

    /// `maqet.process.info(pid)` → `{pid=, state=, ppid=, pgid=, sid=, start_time=, cmdline={...}}`,
    /// or `nil, "no process PID", "ESRCH"`.
    static let info: LuaFunction = { L in
        Lua.call(L) { lua in
            let pid = try pidArgument(lua, 1, "maqet.process.info")
            RunnerLauncher.reapExited()
            let snapshot: ProcessSnapshot
            do {
                snapshot = try LinuxProcess.snapshot(pid)
            } catch let error as SystemError {
                return lua.fail(error.message, code: error.codeName)
            }
            lua.newTable(recordCount: 7)
            lua.push(Int64(snapshot.pid))
            lua.setRawField(-2, "pid")
            lua.push(snapshot.state)
            lua.setRawField(-2, "state")
            lua.push(Int64(snapshot.parentPID))
            lua.setRawField(-2, "ppid")
            lua.push(Int64(snapshot.processGroupID))
            lua.setRawField(-2, "pgid")
            lua.push(Int64(snapshot.sessionID))
            lua.setRawField(-2, "sid")
            lua.push(snapshot.startTime)
            lua.setRawField(-2, "start_time")
            lua.newTable(arrayCount: Int32(snapshot.commandLine.count))
            for (i, part) in snapshot.commandLine.enumerated() {
                lua.push(part)
                lua.setRawIndex(-2, Int64(i + 1))
            }
            lua.setRawField(-2, "cmdline")
            return 1
        }
    }

    /// `maqet.process.wait_pid(pid, timeout_ms)` → true once the process has exited (a zombie has;
    /// a pid that does not exist has), false after `timeout_ms`. Raises when the script is stopped.
    static let waitPID: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "maqet.process.wait_pid"
            let pid = try pidArgument(lua, 1, function)
            guard lua.type(at: 2) == LUA_TNUMBER, let timeout = lua.number(at: 2), timeout.isFinite, timeout >= 0 else {
                throw LuaUsageError("\(function): timeout_ms must be a number >= 0, got \(lua.type(at: 2) == LUA_TNUMBER ? "\(lua.number(at: 2)!)" : lua.typeName(at: 2))")
            }
            RunnerLauncher.reapExited()
            let exited: Bool
            do {
                exited = try LinuxProcess.waitForExit(pid, timeoutMs: Int64(min(timeout, 1e15).rounded(.up)), shouldStop: ProcessModule.stopRequested)
            } catch let error as SystemError {
                return lua.fail(error.message, code: error.codeName)
            }
            if !exited && ProcessModule.stopRequested() { throw ProcessModule.stopError(function) }
            RunnerLauncher.reapExited()
            lua.push(exited)
            return 1
        }
    }

    /// `maqet.process.signal(pid, name)` → true, or `nil, message, "ESRCH"/"EPERM"`.
    static let signal: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "maqet.process.signal"
            let pid = try pidArgument(lua, 1, function)
            let name = try lua.checkString(2, function, "signal name")
            guard let number = signalNumber(named: name) else {
                throw LuaUsageError("\(function): unknown signal '\(name)' (use a name like \"TERM\", \"KILL\", \"INT\", \"HUP\", \"USR1\")")
            }
            do {
                try LinuxProcess.send(number, to: pid)
                lua.push(true)
                return 1
            } catch let error as SystemError {
                return lua.fail(error.message, code: error.codeName)
            }
        }
    }
}
