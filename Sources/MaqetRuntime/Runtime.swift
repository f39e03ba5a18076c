import CLuaShim
import Foundation
import MaqetCore

/// Builds the Lua state every maqet command and script runs in, and owns what scripts share:
/// the `maqet` global table and its modules, the log level, the state database.
public final class Runtime {
    public let state: LuaState
    public var lua: Lua { state.lua }

    /// 0 = warnings and errors, 1 = info (-v), 2 = debug (-vv); -1 = errors only (--quiet).
    public var verbosity: Int

    /// A Lua error in a workflow keeps its Lua traceback (`--debug`; -v does too).
    public var tracebacks = false

    /// Where workflows and `maqet.lib.*` libraries come from (edited copies before built-ins).
    public let scripts: ScriptLocator

    /// Where the state database lives, once the command has opened it (`StateStore.open` sets it);
    /// `maqet.backup_state()` and `maqet.runner.launch` (the runner's data directory) need it.
    public var stateConfiguration: StateConfiguration?

    /// `memoryLimit`: the most bytes the Lua state may hold (0: no limit; `maqet run --max-memory`).
    public init(verbosity: Int = 0, scripts: ScriptLocator = ScriptLocator(scriptsDirOption: nil), memoryLimit: Int = 0) {
        self.verbosity = verbosity
        self.scripts = scripts
        state = LuaState(memoryLimit: memoryLimit)
        lua.context = Unmanaged.passUnretained(self).toOpaque()
        installModules()
        Self.refuseBinaryChunks(lua)
        LibrarySearcher.install(lua)
        // maqet.vm (lifecycle): Lua forwarders to scripts/lib/vm.lua.
        VMModule.install(lua)
    }

    /// `load`, `loadfile`, `dofile` and `require` of a Lua file accept text only: Lua does not
    /// verify precompiled chunks, and a crafted one (`load(string.dump(f):gsub(...))`) can crash
    /// the host. A script that asks for mode "b" gets Lua's own `attempt to load a binary chunk
    /// (mode is 't')`. (Runs before LibrarySearcher moves the Lua-file searcher to slot 3.)
    private static func refuseBinaryChunks(_ lua: Lua) {
        let chunk = """
            local load, loadfile = load, loadfile
            _G.load = function(chunk, name, mode, ...) return load(chunk, name, "t", ...) end
            _G.loadfile = function(filename, mode, ...) return loadfile(filename, "t", ...) end
            _G.dofile = function(filename)
              local f, message = loadfile(filename, "t")
              if not f then error(message, 0) end
              return f()
            end
            local package, searchpath = package, package.searchpath
            package.searchers[2] = function(name)
              local path, message = searchpath(name, package.path)
              if not path then return message end
              local f, why = loadfile(path, "t")
              if not f then
                error(string.format("error loading module '%s' from file '%s':\\n\\t%s", name, path, why), 0)
              end
              return f, path
            end
            """
        do {
            try lua.load(chunk, chunkName: "=maqet")
            try lua.protectedCall(nargs: 0, nresults: 0)
        } catch {
            fatalError("maqet: cannot install the text-only loaders: \(error)")
        }
    }

    /// The runtime that owns the state `L` belongs to.
    static func from(_ lua: Lua) -> Runtime {
        Unmanaged<Runtime>.fromOpaque(lua.context!).takeUnretainedValue()
    }

    /// Every Lua module the host provides, by the name it has under `maqet`.
    /// Each module lives in its own file under `Modules/` with one registration table.
    static let modules: [(name: String?, functions: [LuaRegistration])] = [
        (nil, DatabaseModule.functions),
        (nil, TimeModule.functions),
        (nil, ErrorModule.functions),
        ("process", ProcessModule.functions),
        ("json", JSONModule.functions),
        ("log", LogModule.functions),
        ("qmp", QMPModule.functions),
        // VM definitions (config branch): maqet.yaml, maqet.fs, maqet.backup_state.
        ("yaml", YAMLModule.functions),
        ("fs", FileSystemModule.functions),
        (nil, StateModule.functions),
        // ---- the per-VM runner (runner-core) ----
        (nil, RuntimeDirModule.functions),
        ("runner", RunnerModule.functions),
        ("history", HistoryModule.functions),
        // ---- end runner-core ----
        // The serial console (console slice): maqet.console, maqet.regex.
        ("console", ConsoleModule.functions),
        ("regex", RegexModule.functions),
    ]

    private func installModules() {
        let lua = self.lua
        DatabaseModule.registerTypes(lua)
        ProcessModule.registerTypes(lua)
        JSONModule.registerTypes(lua)
        ErrorModule.registerTypes(lua)
        QMPModule.registerTypes(lua)
        RegexModule.registerTypes(lua)
        lua.newTable()
        for module in Self.modules {
            if let name = module.name {
                lua.newModule(module.functions)
                lua.setRawField(-2, name)
            } else {
                for entry in module.functions {
                    lua.push(entry.function)
                    lua.setRawField(-2, entry.name)
                }
            }
        }
        _ = lua.rawField(-1, "json")
        JSONModule.installFields(lua, moduleAt: -1)
        lua.pop()
        lua.push(MaqetVersion.string)
        lua.setRawField(-2, "version")
        lua.pushValue(at: -1)
        maqetTableReference = luaL_ref(lua.L, mq_registryindex())
        lua_setglobal(lua.L, "maqet")
    }

    /// The `maqet` table the host built, held in the registry: a script that sets `maqet = nil`
    /// or `maqet = 42` changes its own global, not what the host reads and writes.
    private var maqetTableReference: Int32 = LUA_NOREF

    /// Pushes the host's `maqet` table (whatever the global `maqet` is now).
    public func pushMaqetTable() {
        _ = lua_rawgeti(lua.L, mq_registryindex(), lua_Integer(maqetTableReference))
    }

    /// Sets `maqet.<field>` to the value on top of the stack (popped).
    public func setMaqetField(_ field: String) {
        let lua = self.lua
        pushMaqetTable()
        lua_rotate(lua.L, -2, 1)
        lua.setRawField(-2, field)
        lua.pop()
    }

    /// The state database this command opened and lends to scripts as `maqet.db`. The host reads
    /// it from here, never back from the Lua table a script can change.
    public private(set) var stateDatabase: Database?

    /// What `close` on `maqet.db` says: the host owns the connection.
    static let lentDatabaseMessage = "maqet.db is owned by maqet, which closes it when the command ends; a script may not close it (open its own with maqet.db_open)"

    /// Exposes `database` to scripts as `maqet.db`, lent: a script's `close` on it raises.
    public func exposeStateDatabase(_ database: Database) {
        stateDatabase = database
        lua.pushHandle(DatabaseHandle(database, lentBy: Self.lentDatabaseMessage))
        setMaqetField("db")
    }

    /// The database `exposeStateDatabase(opening:)` opened on first use, until `closeLazyDatabase`.
    private var lazyDatabase: Database?
    private var lazyOpener: (() throws -> Database)?

    /// Makes `maqet.db` open the database with `open` the first time a script reads it (the
    /// runner: hooks that do not write never open it). `closeLazyDatabase()` closes it again.
    public func exposeStateDatabase(opening open: @escaping () throws -> Database) {
        lazyOpener = open
        let lua = self.lua
        pushMaqetTable()
        lua.newTable()
        lua.push(Self.openLazily)
        lua.setRawField(-2, "__index")
        lua_setmetatable(lua.L, -2)
        lua.pop()
    }

    /// Closes the database `maqet.db` opened on demand (if it was) and forgets it, so the next
    /// read opens it again. The handle a script kept refuses use once closed.
    public func closeLazyDatabase() {
        guard let database = lazyDatabase else { return }
        database.close()
        lazyDatabase = nil
        stateDatabase = nil
        lua.pushNil()
        setMaqetField("db")
    }

    /// `__index` of the `maqet` table when the database is opened on demand.
    private static let openLazily: LuaFunction = { L in
        Lua.call(L) { lua in
            guard lua.string(at: 2) == "db" else { return 0 }
            let runtime = Runtime.from(lua)
            guard let open = runtime.lazyOpener else { return 0 }
            let database: Database
            if let open = runtime.lazyDatabase, open.isOpen {
                database = open // the script reached this __index itself: no second connection
            } else {
                do {
                    database = try open()
                } catch {
                    throw LuaUsageError("maqet.db: cannot open the state database: \(error)")
                }
            }
            runtime.lazyDatabase = database
            runtime.stateDatabase = database
            lua.pushHandle(DatabaseHandle(database, lentBy: lentDatabaseMessage))
            lua.pushValue(at: -1)
            runtime.setMaqetField("db")
            return 1
        }
    }
}

public enum MaqetVersion {
    public static let string = "0.1.0"
}
