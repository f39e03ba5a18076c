import CLuaShim
import Foundation
import MaqetCore

/// Running maqet's Lua workflows. A workflow is a script under `scripts/` (found through the
/// runtime's `ScriptLocator`, so a user's edited copy wins) that returns
/// `{ description = "...", run = function(args) ... return result end }`. The CLI command parses its
/// arguments into `args`, runs the workflow, and prints the result.
extension Runtime {
    /// Calls the function below `nargs` arguments in protected mode with a traceback handler.
    /// A `maqet.error(message, status)` becomes a `MaqetError` with that exit status; any other
    /// Lua error a `LuaScriptError` (message plus traceback).
    public func call(nargs: Int32, nresults: Int32) throws {
        let lua = self.lua
        let rc = mq_pcall(lua.L, nargs, nresults)
        guard rc != LUA_OK else { return }
        defer { lua.pop() }
        if let error = ErrorModule.read(lua, at: -1) { throw error }
        throw LuaScriptError(message: lua.stringOrNumber(at: -1) ?? "(error object is a \(lua.typeName(at: -1)) value)")
    }

    /// Runs workflow `name` ("lifecycle/start.lua") with `arguments` and returns what its `run`
    /// returned, as JSON. Lua errors become `MaqetError`s: a `maqet.error` keeps its status, any
    /// other error is a failure whose message keeps the file and line (and, with -v or --debug,
    /// the traceback).
    public func runWorkflow(_ name: String, arguments: JSONValue = .object([])) throws -> JSONValue {
        let lua = self.lua
        guard let script = scripts.find(name) else {
            throw MaqetError("workflow scripts/\(name) is missing (looked in \(scripts.directories.map(\.path).joined(separator: ", ")) and the built-in scripts)", status: .notFound)
        }
        let base = lua.top
        defer { lua.top = base }
        do {
            try lua.load(try script.text(), chunkName: script.chunkName)
            try call(nargs: 0, nresults: 1)
            guard lua.type(at: -1) == LUA_TTABLE, lua.rawField(-1, "run") == LUA_TFUNCTION else {
                throw MaqetError("\(script.chunkName.dropFirst()) must return a table with a run(args) function")
            }
            try JSONModule.push(lua, arguments)
            try call(nargs: 1, nresults: 1)
            var encoder = JSONModule.Encoder(lua: lua)
            return try encoder.value(at: -1, depth: 0)
        } catch let error as LuaScriptError {
            throw MaqetError(verbosity > 0 || tracebacks ? error.message : Self.withoutTraceback(error.message))
        } catch let error as LuaUsageError {
            throw MaqetError("\(script.chunkName.dropFirst()): result cannot be read: \(error.description)")
        }
    }

    static func withoutTraceback(_ message: String) -> String {
        guard let range = message.range(of: "\nstack traceback:") else { return message }
        return String(message[..<range.lowerBound])
    }
}

/// `require("maqet.lib.NAME")` loads `scripts/lib/NAME.lua` through the runtime's `ScriptLocator`
/// (so edited copies win), with the file as chunk name. Installed as `package.searchers[2]`.
enum LibrarySearcher {
    static let prefix = "maqet.lib."

    static func install(_ lua: Lua) {
        lua_getglobal(lua.L, "package")
        _ = lua.rawField(-1, "searchers")
        let searchers = lua.absolute(-1)
        let count = lua.rawLength(searchers)
        if count >= 2 {
            for i in stride(from: count, through: 2, by: -1) {
                _ = lua.rawIndex(searchers, Int64(i))
                lua.setRawIndex(searchers, Int64(i + 1))
            }
        }
        lua.push(search)
        lua.setRawIndex(searchers, 2)
        lua.pop(2)
    }

    private static let search: LuaFunction = { L in
        Lua.call(L) { lua in
            let module = try lua.checkString(1, "require", "module name")
            guard module.hasPrefix(prefix) else {
                lua.push("\n\tno maqet library '\(module)' (maqet libraries are named maqet.lib.NAME)")
                return 1
            }
            let name = "lib/" + module.dropFirst(prefix.count).replacingOccurrences(of: ".", with: "/") + ".lua"
            let runtime = Runtime.from(lua)
            guard let script = runtime.scripts.find(name) else {
                lua.push("\n\tno file scripts/\(name) (built in or in an override directory)")
                return 1
            }
            let text: String
            do { text = try script.text() } catch {
                lua.push("\n\t\(error)")
                return 1
            }
            do {
                try lua.load(text, chunkName: script.chunkName)
            } catch {
                throw LuaUsageError("error loading module '\(module)': \(error)")
            }
            lua.push(String(script.chunkName.dropFirst()))
            return 2
        }
    }
}

/// Values between Swift and Lua for hosts that call Lua functions themselves (the runner's hooks).
extension Runtime {
    /// Pushes `value` as a Lua value (objects and arrays as tables, null as `maqet.json.null`).
    public func push(json value: JSONValue) throws { try JSONModule.push(lua, value) }

    /// The Lua value at `index` as JSON (as `maqet.json.encode` sees it).
    public func json(at index: Int32) throws -> JSONValue {
        var encoder = JSONModule.Encoder(lua: lua)
        return try encoder.value(at: index, depth: 0)
    }
}

/// The VM statuses are defined in Lua (scripts/lib/status.lua); Swift code that needs them asks.
extension Runtime {
    /// Every VM status (`status.ALL`), e.g. to check `maqet ls --status`.
    public func allStatuses() throws -> [String] {
        try statusList("ALL", "return require('maqet.lib.status').ALL")
    }

    /// The statuses in which a QEMU may exist (`status.active_list()`), e.g. for `maqet ls`'s
    /// decision to reconcile. A broken edited status.lua is a `MaqetError` naming it.
    public func activeStatuses() throws -> [String] {
        try statusList("active_list()", "return require('maqet.lib.status').active_list()")
    }

    private func statusList(_ what: String, _ chunk: String) throws -> [String] {
        let lua = self.lua
        let base = lua.top
        defer { lua.top = base }
        do {
            try lua.load(chunk, chunkName: "=maqet.lib.status")
            try call(nargs: 0, nresults: 1)
            guard lua.type(at: -1) == LUA_TTABLE else {
                throw MaqetError("scripts/lib/status.lua: \(what) must be a list of statuses")
            }
            return try lua.stringArray(-1, "status.\(what)", "its value")
        } catch let error as LuaScriptError {
            throw MaqetError(Self.withoutTraceback(error.message))
        } catch let error as LuaUsageError {
            throw MaqetError("scripts/lib/status.lua: \(error.description)")
        }
    }
}
