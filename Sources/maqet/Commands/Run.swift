import ArgumentParser
import CLuaShim
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet run SCRIPT.lua [ARGS...]`: runs a Lua script with the maqet API and the state database.
    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "run",
            abstract: "Run a Lua script with the maqet API (maqet.db, maqet.process, maqet.json, maqet.log, maqet.qmp).",
            discussion: """
                Everything after SCRIPT is passed to the script untouched (also arguments that look \
                like options); put maqet's own options before SCRIPT. The script sees them as `arg` \
                (arg[0] = SCRIPT) and `maqet.args`, and as `...`. `require` finds modules next to the \
                script. Exit status: 0 when the script ends, 1 when it raises an error, n for \
                os.exit(n), 5 when SCRIPT does not exist, 124 after --timeout, 130 after Ctrl-C. \
                --max-memory bounds what the script's Lua state may hold (default: no limit); a \
                script that reaches it stops with "out of memory (limit N MiB; raise \
                --max-memory)" and exit status 1, unless it catches that error with pcall.
                """
        )

        @OptionGroup var global: GlobalOptions

        @Option(name: .long, help: ArgumentHelp("Stop the script after this many seconds (exit 124).", valueName: "seconds"))
        var timeout: Double?

        @Option(name: .long, help: ArgumentHelp("Stop the script with an out-of-memory error when its Lua state would hold more than this many MiB (default: no limit).", valueName: "MiB"))
        var maxMemory: Int?

        /// The largest --max-memory: a MiB count whose bytes fit in an Int with room to spare.
        static let maxMemoryLimitMiB = 1 << 40

        @Argument(help: ArgumentHelp("The Lua script to run ('-' reads it from stdin).", valueName: "script"))
        var script: String

        @Argument(parsing: .captureForPassthrough, help: ArgumentHelp("Arguments for the script.", valueName: "args"))
        var scriptArguments: [String] = []

        func validate() throws {
            if let timeout, !(timeout > 0 && timeout.isFinite) {
                throw ValidationError("--timeout must be a number of seconds greater than 0")
            }
            if let maxMemory, !(1...Self.maxMemoryLimitMiB).contains(maxMemory) {
                throw ValidationError("--max-memory must be a whole number of MiB from 1 to \(Self.maxMemoryLimitMiB), got \(maxMemory)")
            }
        }

        func run() throws {
            var isDirectory: ObjCBool = false
            guard script == "-" || FileManager.default.fileExists(atPath: script, isDirectory: &isDirectory), !isDirectory.boolValue else {
                throw failure("script not found: \(script)", .notFound)
            }
            let status = try execute()
            if status != 0 { throw ExitCode(status) }
        }

        /// Runs the script; returns the exit status. The runtime (and with it every handle the
        /// script left open) is gone when this returns.
        private func execute() throws -> Int32 {
            let runtime = global.makeRuntime(memoryLimit: (maxMemory ?? 0) * 1024 * 1024)
            let configuration = StateConfiguration(dataDirOption: global.maqetDataDir, migrationsDirOption: global.migrationsDir)
            let store: StateStore
            do {
                store = try StateStore.open(configuration, runtime: runtime) { notice in
                    if global.verbosity >= 0 { fputs("maqet: \(notice)\n", stderr) }
                }
            } catch {
                throw maqet.exitCode(for: error)
            }
            defer { store.database.close() }
            runtime.exposeStateDatabase(store.database)
            ScriptEnvironment.install(runtime, script: script, arguments: scriptArguments)
            // The state must live until the script is done: Swift may otherwise release `runtime`
            // (and close the lua_State) right after its last visible use.
            return withExtendedLifetime(runtime) { runScript(runtime) }
        }

        /// Loads and calls the script in `lua`; returns the exit status.
        private func runScript(_ runtime: Runtime) -> Int32 {
            let lua = runtime.lua
            if script == "-" {
                // The script is read from stdin; its chunk name is "=stdin" ("stdin:3: ...").
                if mq_loadfile(lua.L, nil) != LUA_OK {
                    fputs("maqet: \(lua.stringOrNumber(at: -1) ?? "cannot read the script from stdin")\n", stderr)
                    return ExitStatus.failure.rawValue
                }
            } else {
                do {
                    try lua.loadFile(script)
                } catch {
                    fputs("maqet: \(error)\n", stderr)
                    return ExitStatus.failure.rawValue
                }
            }
            for argument in scriptArguments { lua.push(argument) }

            mq_reset_stop()
            mq_install_sigint_handler()
            defer { mq_restore_sigint_handler() }
            mq_install_stop_hook(lua.L, timeout ?? 0)

            do {
                try runtime.call(nargs: Int32(scriptArguments.count), nresults: 0)
                return ExitStatus.ok.rawValue
            } catch let error as MaqetError where mq_stop_reason() == Int32(MQ_STOP_NONE) {
                // maqet.error(message, status): one line, the status's exit code.
                fputs("maqet: \(error.message)\n", stderr)
                return error.status.rawValue
            } catch {
                switch mq_stop_reason() {
                case Int32(MQ_STOP_TIMEOUT):
                    fputs("maqet: script stopped: --timeout of \(Self.format(timeout ?? 0)) s expired\n", stderr)
                    if global.verbosity > 0 { fputs("maqet: \(error)\n", stderr) }
                    return ExitStatus.timeout.rawValue
                case Int32(MQ_STOP_INTERRUPT):
                    fputs("maqet: script stopped: interrupted\n", stderr)
                    if global.verbosity > 0 { fputs("maqet: \(error)\n", stderr) }
                    return ExitStatus.interrupted.rawValue
                default:
                    if runtime.state.memoryLimitReached, let maxMemory, Self.isMemoryError(error) {
                        // One line, whatever the script's pcalls and tracebacks made of it.
                        fputs("maqet: \(script): out of memory (limit \(maxMemory) MiB; raise --max-memory)\n", stderr)
                        if global.verbosity > 0 { fputs("maqet: \(error)\n", stderr) }
                        return ExitStatus.failure.rawValue
                    }
                    fputs("maqet: \(error)\n", stderr)
                    return ExitStatus.failure.rawValue
                }
            }
        }

        /// True for the error Lua raises when an allocation is refused, and for the host's own.
        static func isMemoryError(_ error: Error) -> Bool {
            let text = String(describing: error)
            return text.hasPrefix("not enough memory") || text.contains("out of memory (limit ")
        }

        /// "1" for 1.0, "0.5" for 0.5.
        static func format(_ seconds: Double) -> String {
            seconds == seconds.rounded() && abs(seconds) < 1e15 ? String(Int64(seconds)) : String(seconds)
        }
    }
}

/// What a script sees besides `maqet`: `arg`, `maqet.args`, `package.path`, an `os.exit` that
/// closes the state (to-be-closed variables, handles, child processes) before exiting.
enum ScriptEnvironment {
    static func install(_ runtime: Runtime, script: String, arguments: [String]) {
        let lua = runtime.lua
        let L = lua.L

        // arg: arg[0] = script, arg[1..n] = arguments, arg[-2] = maqet, arg[-1] = "run".
        lua.newTable(arrayCount: Int32(arguments.count), recordCount: 3)
        lua.push(CommandLine.arguments.first ?? "maqet")
        lua.setRawIndex(-2, -2)
        lua.push("run")
        lua.setRawIndex(-2, -1)
        lua.push(script)
        lua.setRawIndex(-2, 0)
        for (i, a) in arguments.enumerated() {
            lua.push(a)
            lua.setRawIndex(-2, Int64(i + 1))
        }
        lua_setglobal(L, "arg")

        lua.newTable(arrayCount: Int32(arguments.count))
        for (i, a) in arguments.enumerated() {
            lua.push(a)
            lua.setRawIndex(-2, Int64(i + 1))
        }
        runtime.setMaqetField("args")

        // package.path: modules next to the script first.
        let directory = scriptDirectory(script)
        lua_getglobal(L, "package")
        _ = lua.rawField(-1, "path")
        let current = lua.string(at: -1) ?? ""
        lua.pop()
        lua.push("\(directory)/?.lua;\(directory)/?/init.lua;\(current)")
        lua.setRawField(-2, "path")
        lua.pop()

        // os.exit(code) closes the state by default, so <close> variables and handles run.
        let wrapper = """
            local exit = os.exit
            os.exit = function(code, close)
              io.stdout:flush()
              if close == nil then close = true end
              return exit(code, close)
            end
            """
        do {
            try lua.load(wrapper, chunkName: "=maqet")
            try lua.protectedCall(nargs: 0, nresults: 0)
        } catch {
            fputs("maqet: internal error installing os.exit: \(error)\n", stderr)
        }
    }
}

/// The directory part of a script path as given: "lib/main.lua" → "lib", "main.lua" and "-" → ".",
/// "/x.lua" → "". (NSString.deletingLastPathComponent traps on "-" in swift-corelibs-foundation.)
func scriptDirectory(_ path: String) -> String {
    guard path != "-", let slash = path.lastIndex(of: "/") else { return "." }
    return String(path[..<slash])
}
