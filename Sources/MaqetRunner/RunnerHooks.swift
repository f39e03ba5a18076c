import CLuaShim
import Foundation
import MaqetCore
import MaqetRuntime

/// The runner's policy, in Lua: `scripts/lifecycle/runner.lua` (a user's edited copy wins, found
/// the same way as the CLI's workflows) returns `on_ready`, `on_event` and `on_exit`, which the
/// runner calls with one `ctx` table that lives as long as the runner. The state is the same
/// `Runtime` the CLI uses; `maqet.db` opens on first use in a hook and is closed after it.
final class RunnerHooks {
    static let script = "lifecycle/runner.lua"

    let runtime: Runtime
    /// Stack slots of the hooks table and the ctx table (nothing else uses this state's stack).
    private let hooksIndex: Int32
    private let contextIndex: Int32

    /// Builds the Lua state and loads the hooks. Throws (with the file and line) when the script is
    /// missing or does not load; the runner then uses its built-in defaults.
    init(spec: RunnerSpec, context: JSONValue) throws {
        runtime = Runtime(verbosity: 0, scripts: ScriptLocator(scriptsDirOption: spec.scriptsDir))
        let configuration = StateConfiguration(dataDirOption: spec.dataDir, migrationsDirOption: nil)
        runtime.stateConfiguration = configuration
        let databasePath = configuration.databasePath
        runtime.exposeStateDatabase(opening: { try Database(path: databasePath, mode: .readWrite, busyTimeoutMs: 10_000) })
        let lua = runtime.lua
        guard let script = runtime.scripts.find(Self.script) else {
            throw MaqetError("scripts/\(Self.script) is missing")
        }
        try lua.load(try script.text(), chunkName: script.chunkName)
        try runtime.call(nargs: 0, nresults: 1)
        guard lua.type(at: -1) == LUA_TTABLE else {
            lua.pop()
            throw MaqetError("\(script.chunkName.dropFirst()) must return a table of hooks (on_ready, on_event, on_exit)")
        }
        hooksIndex = lua.top
        try runtime.push(json: context)
        contextIndex = lua.top
    }

    /// Sets `ctx[key]`.
    func setContext(_ key: String, _ value: JSONValue) {
        guard (try? runtime.push(json: value)) != nil else { return }
        runtime.lua.setRawField(contextIndex, key)
    }

    /// Calls hook `name` with ctx and `arguments`; returns its first three results as JSON (nil
    /// when the script has no such hook). A Lua error is thrown with its first line (file:line:
    /// message). The database the hook opened is closed before this returns.
    func call(_ name: String, _ arguments: [JSONValue] = []) throws -> [JSONValue]? {
        let lua = runtime.lua
        let base = lua.top
        defer {
            lua.top = base
            runtime.closeLazyDatabase()
        }
        guard lua.rawField(hooksIndex, name) == LUA_TFUNCTION else { return nil }
        lua.pushValue(at: contextIndex)
        for argument in arguments { try runtime.push(json: argument) }
        do {
            try runtime.call(nargs: Int32(1 + arguments.count), nresults: 3)
        } catch let error as LuaScriptError {
            throw MaqetError(String(error.message.split(separator: "\n", maxSplits: 1).first ?? ""))
        }
        var results: [JSONValue] = []
        for index in (lua.top - 2)...lua.top {
            results.append((try? runtime.json(at: index)) ?? .null)
        }
        return results
    }
}

extension JSONValue {
    /// Lua truthiness of a hook's result: nil (null) and false are false.
    var isTruthy: Bool {
        switch self {
        case .null: return false
        case .bool(let b): return b
        default: return true
        }
    }
}
