import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

/// Options every command accepts, before or after the subcommand name
/// (`maqet --maqet-data-dir D ls` and `maqet ls --maqet-data-dir D` are the same).
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Data directory holding instances.db (default: $MAQET_DATA_DIR, else $XDG_DATA_HOME/maqet, else ~/.local/share/maqet).",
        valueName: "dir"))
    var maqetDataDir: String?

    @Option(name: .long, help: ArgumentHelp(
        "Read migrations from this folder instead of the copies built into maqet (default: $MAQET_MIGRATIONS_DIR).",
        valueName: "dir"))
    var migrationsDir: String?

    @Option(name: .long, help: ArgumentHelp(
        "Use edited workflow scripts from this folder before $XDG_CONFIG_HOME/maqet/scripts and the built-in ones (default: $MAQET_SCRIPTS_DIR).",
        valueName: "dir"))
    var scriptsDir: String?

    @Option(name: .long, help: ArgumentHelp(
        "Where maqet.conf is looked for first, and the config dir (its scripts/ holds edited workflow scripts; default: $MAQET_CONFIG_DIR, else maqet.conf's directories.config_dir, else $XDG_CONFIG_HOME/maqet).",
        valueName: "dir"))
    var maqetConfigDir: String?

    @Option(name: .long, help: ArgumentHelp(
        "The runtime directory itself, where running VMs keep their sockets (default: $MAQET_RUNTIME_DIR, else maqet.conf's directories.runtime_dir, else $XDG_RUNTIME_DIR/maqet, else /tmp/maqet-UID). Socket paths in it must fit in 107 bytes.",
        valueName: "dir"))
    var maqetRuntimeDir: String?

    @Option(name: .long, help: ArgumentHelp(
        "Also append maqet's log lines (every level), notices and errors to this file (mode 0600; default: maqet.conf's logging.log_file).",
        valueName: "path"))
    var logFile: String?

    @Flag(name: .long, help: "Show the full Lua traceback of an error in a workflow script.")
    var debug = false

    @Flag(name: .shortAndLong, help: "More log output on stderr (-v info, -vv debug).")
    var verbose: Int

    @Flag(name: .shortAndLong, help: "Only errors on stderr; add, start, stop and apply print only the VM's id.")
    var quiet = false

    var verbosity: Int { quiet ? -1 : Settings.baseVerbosity + verbose }

    /// Names of the global options that take a value, for moving them behind the subcommand
    /// (`--format` too: the published maqet took it anywhere; it still goes to the subcommand).
    static let valueOptions: Set<String> = [
        "--maqet-data-dir", "--migrations-dir", "--scripts-dir", "--maqet-config-dir", "--maqet-runtime-dir", "--log-file", "--format",
    ]
    static let flagOptions: Set<String> = ["-v", "-vv", "-vvv", "--verbose", "-q", "--quiet", "--debug"]

    /// The published maqet's global flags that have no meaning here, with what to type instead.
    static let retiredFlags: [String: String] = [
        "--migrate-force": "maqet migrates an older database by itself (after a backup); to do only that, run 'maqet db migrate'",
        "--force-migrate": "maqet migrates an older database by itself (after a backup); to do only that, run 'maqet db migrate'",
        "--no-auto-cleanup": "maqet has no automatic cleanup to turn off (it only records what the real processes say); drop the flag",
    ]

    /// What the command line and maqet.conf settle for the whole process, once.
    enum Settings {
        nonisolated(unsafe) static var settled = false
        /// maqet.conf's logging.verbosity on maqet's scale (0 when none); -v adds to it.
        nonisolated(unsafe) static var baseVerbosity = 0
        nonisolated(unsafe) static var debug = false
    }

    /// Reads maqet.conf and settles the directories, the log file and the verbosity: a flag
    /// beats the variable behind it, which beats the file. Runs once, before the command.
    mutating func validate() throws {
        if Settings.settled { return }
        Settings.settled = true
        Settings.debug = debug
        let environment = ProcessInfo.processInfo.environment
        func nonEmpty(_ s: String?) -> String? { (s?.isEmpty ?? true) ? nil : s }
        let cwd = FileManager.default.currentDirectoryPath
        func absolute(_ path: String) -> String {
            URL(fileURLWithPath: path.hasPrefix("/") ? path : (cwd as NSString).appendingPathComponent(path)).standardizedFileURL.path
        }
        if let logFile = nonEmpty(logFile) { MaqetLog.filePath = absolute(logFile) }
        var conf: MaqetConf?
        if let path = MaqetConf.find(configDirOption: maqetConfigDir, environment: environment) {
            do {
                conf = try MaqetConf.load(path, home: nonEmpty(environment["HOME"]) ?? NSHomeDirectory())
            } catch let error as MaqetError {
                throw failure(error.message, error.status)
            }
        }
        if let conf {
            if MaqetLog.filePath == nil, let file = conf.logFile { MaqetLog.filePath = file }
            if let level = conf.verbosity { Settings.baseVerbosity = level }
            if nonEmpty(maqetDataDir) == nil, nonEmpty(environment["MAQET_DATA_DIR"]) == nil, let dir = conf.dataDir {
                setenv("MAQET_DATA_DIR", dir, 1)
            }
        }
        // The runtime and config directories reach every part of maqet (and the VM's runner,
        // which inherits them) through the variables their one owner reads.
        if let dir = nonEmpty(maqetRuntimeDir) ?? nonEmpty(environment[RuntimeDirectory.overrideVariable]).map(absolute) ?? conf?.runtimeDir {
            setenv(RuntimeDirectory.overrideVariable, absolute(dir), 1)
        }
        if let dir = nonEmpty(maqetConfigDir) ?? nonEmpty(environment["MAQET_CONFIG_DIR"]) ?? conf?.configDir {
            setenv("MAQET_CONFIG_DIR", absolute(dir), 1)
        }
        if let conf, verbosity >= 0 {
            for warning in conf.warnings { notice("warning: " + warning) }
        }
    }
}

/// Moves global options written before the subcommand (`maqet --maqet-data-dir D db status`) to
/// just after the subcommand path, where ArgumentParser expects them. Arguments after the path
/// (a script's own arguments for `maqet run`) are left alone.
func reorderGlobalOptions(_ arguments: [String], root: ParsableCommand.Type) -> [String] {
    var globals: [String] = []
    var rest = arguments[...]
    while let first = rest.first {
        let name = first.split(separator: "=", maxSplits: 1).first.map(String.init) ?? first
        if GlobalOptions.valueOptions.contains(name) {
            globals.append(first)
            rest = rest.dropFirst()
            if !first.contains("="), let value = rest.first {
                globals.append(value)
                rest = rest.dropFirst()
            }
        } else if GlobalOptions.flagOptions.contains(first) {
            globals.append(first)
            rest = rest.dropFirst()
        } else {
            break
        }
    }
    guard !globals.isEmpty else { return arguments }
    var path: [String] = []
    var command: ParsableCommand.Type = root
    while let next = rest.first,
          let sub = command.configuration.subcommands.first(where: { $0._commandName == next || $0.configuration.aliases.contains(next) }) {
        path.append(next)
        command = sub
        rest = rest.dropFirst()
    }
    // No subcommand follows (`maqet --maqet-data-dir D frob`, or only `--help`): the options
    // have nothing to apply to, so the parser reports what is really wrong, not them.
    if path.isEmpty { return Array(rest) }
    return path + globals + Array(rest)
}
