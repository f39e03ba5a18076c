import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet add [CONFIG.yaml ...] [--vm-config FILE ...] [--name NAME] [--empty]`: defines a VM.
    /// The work is the Lua workflow scripts/lifecycle/add.lua (with scripts/lib/config.lua).
    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add",
            abstract: "Define a VM from YAML config files.",
            discussion: """
                Config files are merged in order: the positional files first, then each --vm-config \
                in the order given. Mappings merge deeply, later values win, a later 'key: null' \
                removes the key, 'storage' items merge by name and 'arguments' items by their key. \
                Relative paths (storage file, backing_file, path; binary when it has a '/') resolve \
                against the directory of the file that names them. The name is --name, else 'name:' \
                from the config, else a generated 'vm-XXXXXXXX'. The config is validated now (binary, \
                memory, cpu, storage, paths in arguments); 'binary' must be a QEMU system emulator \
                (qemu-system-*, answering -version) unless the config says 'binary_is_qemu: false', \
                and no storage or argument path may be in a system directory unless \
                'allow_system_paths' lists it. Every refusal is one line and writes nothing. Exit codes: \
                0 added; 1 a VM with that name exists; 5 a config file cannot be read; 64 invalid \
                config (a file over 16 MiB too), name or options. See docs/configuration.md for every key.
                """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("YAML config files, merged in order.", valueName: "config.yaml"))
        var files: [String] = []

        @Option(name: .customLong("vm-config"), help: ArgumentHelp("A YAML config file (repeatable; merged after the positional files).", valueName: "file"))
        var vmConfig: [String] = []

        @Option(name: .long, help: ArgumentHelp("The VM's name (overrides 'name:' in the config).", valueName: "name"))
        var name: String?

        @Flag(name: .long, help: "Create a VM with an empty config ({}).")
        var empty = false

        @Option(name: .long, help: "Output format: text or json.")
        var format: ReportFormat = .text

        func run() throws {
            let arguments: JSONValue = .object([
                ("files", .array((files + vmConfig).map(JSONValue.string))),
                ("name", name.map(JSONValue.string) ?? .null),
                ("empty", .bool(empty)),
            ])
            let result = try global.runWorkflow("lifecycle/add.lua", arguments, refusalWritesNothing: true)
            if format == .json {
                print((try? result.serialized(indent: 2)) ?? "{}")
            } else {
                print("Added VM '\(result["name"]?.plainText ?? "?")'")
            }
        }
    }
}
