import ArgumentParser
import Foundation

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

    @Flag(name: .shortAndLong, help: "More log output on stderr (-v info, -vv debug).")
    var verbose: Int

    @Flag(name: .shortAndLong, help: "Only errors on stderr.")
    var quiet = false

    var verbosity: Int { quiet ? -1 : verbose }

    /// Names of the global options that take a value, for moving them behind the subcommand.
    static let valueOptions: Set<String> = ["--maqet-data-dir", "--migrations-dir", "--scripts-dir"]
    static let flagOptions: Set<String> = ["-v", "-vv", "-vvv", "--verbose", "-q", "--quiet"]
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
