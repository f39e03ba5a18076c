import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet apply NAME [CONFIG.yaml ...] [--vm-config FILE ...] [--memory M] [--cpu N]`: changes a
    /// stopped VM's config. The work is the Lua workflow scripts/lifecycle/apply.lua.
    struct Apply: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "apply",
            abstract: "Change a stopped VM's config (creates the VM when it does not exist).",
            discussion: """
                The stored config, then the files (in the order typed, positional or --vm-config), then \
                --memory and --cpu are merged (same rules as 'maqet add') and validated. Before \
                changing an existing VM, maqet takes an automatic backup of the state database \
                (undo with 'maqet db restore BACKUP'); then it prints what changed. Refused while \
                the VM is running: stop it first. Exit codes: 0 applied (or nothing to change); \
                1 the VM is running; 5 a config file cannot be read; 64 invalid config or options.
                """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM to change.", valueName: "name"))
        var name: String

        @Argument(help: ArgumentHelp("YAML config files merged over the stored config, in order.", valueName: "config.yaml"))
        var files: [String] = []

        @Option(name: .customLong("vm-config"), parsing: .upToNextOption,
                help: ArgumentHelp("YAML config files (one or more; repeatable), merged in the order typed.", valueName: "file"))
        var vmConfig: [String] = []

        @Option(name: .long, help: ArgumentHelp("Memory (512M, 2G, or a number of MiB).", valueName: "size"))
        var memory: String?

        @Option(name: .long, help: ArgumentHelp("Number of CPUs.", valueName: "n"))
        var cpu: Int?

        @Option(name: .long, help: "Output format: text or json.")
        var format: ReportFormat = .text

        func run() throws {
            let arguments: JSONValue = .object([
                ("name", .string(name)),
                ("files", .array(Maqet.configFilesInTypedOrder(files, vmConfig).map(JSONValue.string))),
                ("memory", memory.map(JSONValue.string) ?? .null),
                ("cpu", cpu.map { JSONValue.integer(Int64($0)) } ?? .null),
            ])
            let result = try global.runWorkflow("lifecycle/apply.lua", arguments, refusalWritesNothing: true)
            if format == .json {
                print((try? result.serialized(indent: 2)) ?? "{}")
                return
            }
            var changes: [JSONValue] = []
            if case .array(let items)? = result["changes"] { changes = items }
            if case .bool(true)? = result["created"] {
                print("Created VM '\(name)' (it did not exist)")
                return
            }
            guard !changes.isEmpty else {
                print("VM '\(name)' unchanged (the config already says that)")
                return
            }
            print("Changed VM '\(name)':")
            for change in changes {
                let key = change["key"]?.plainText ?? "?"
                print("  \(key): \(change["old"]?.humanValue ?? "(none)") -> \(change["new"]?.humanValue ?? "(none)")")
            }
            if case .string(let backup)? = result["backup"] {
                print("Backup of the previous state: \(backup) (undo with 'maqet db restore \(backup)')")
            }
        }
    }
}
