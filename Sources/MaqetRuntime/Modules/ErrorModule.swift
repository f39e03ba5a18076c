import CLuaShim
import MaqetCore

/// `maqet.error(message, status)`: raises an error that the host turns into a one-line message
/// and a documented exit status (workflows use it for "no VM named x" → exit 5).
enum ErrorModule {
    static let typeName = "maqet.error"

    /// Lua status names and the exit status each maps to.
    static let statuses: [String: ExitStatus] = [
        "failure": .failure,
        "refused": .databaseRefused,
        "not_found": .notFound,
        "usage": .usage,
        "timeout": .timeout,
        "interrupted": .interrupted,
    ]

    static let functions: [LuaRegistration] = [
        ("error", raise),
    ]

    static func registerTypes(_ lua: Lua) {
        guard luaL_newmetatable(lua.L, typeName) != 0 else {
            lua.pop()
            return
        }
        lua.push(toString)
        lua.setRawField(-2, "__tostring")
        lua.pop()
    }

    /// Reads a `maqet.error` object at `index`: its message and exit status; nil for other values.
    static func read(_ lua: Lua, at index: Int32) -> MaqetError? {
        guard lua.type(at: index) == LUA_TTABLE, lua_getmetatable(lua.L, index) != 0 else { return nil }
        mq_getmetatable_named(lua.L, typeName)
        let matches = lua_rawequal(lua.L, -1, -2) != 0
        lua.pop(2)
        guard matches else { return nil }
        let message = (try? lua.stringField(index, "message", "maqet.error")) ?? nil
        let status = (try? lua.stringField(index, "status", "maqet.error")) ?? nil
        return MaqetError(message ?? "error", status: statuses[status ?? "failure"] ?? .failure)
    }

    private static let raise: LuaFunction = { L in
        Lua.call(L) { lua in
            let message = try lua.checkString(1, "maqet.error", "message")
            let status = try lua.optString(2, "maqet.error", "status") ?? "failure"
            guard statuses[status] != nil else {
                let names = statuses.keys.sorted().joined(separator: ", ")
                throw LuaUsageError("maqet.error: status must be one of \(names), got '\(status)'")
            }
            throw pushError(lua, message, status: status)
        }
    }

    /// Pushes a `maqet.error` object; throw the result so the trampoline raises it as it is.
    static func pushError(_ lua: Lua, _ message: String, status: String) -> LuaRaiseAsIs {
        lua.newTable(recordCount: 2)
        lua.push(message)
        lua.setRawField(-2, "message")
        lua.push(status)
        lua.setRawField(-2, "status")
        luaL_setmetatable(lua.L, typeName)
        return LuaRaiseAsIs()
    }

    private static let toString: LuaFunction = { L in
        Lua.call(L) { lua in
            lua.push((try? lua.stringField(1, "message", "maqet.error")).flatMap { $0 } ?? "error")
            return 1
        }
    }
}
