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
                Config files are merged in the order they are typed on the command line, positional \
                or after --vm-config ('add a.yaml b.yaml' and 'add --vm-config a.yaml b.yaml' both \
                merge a, then b). Mappings merge deeply, later values win, a later 'key: null' \
                removes the key, 'storage' items merge by name; 'arguments' items are all kept \
                unless a later file names the same id= or an option QEMU takes once (machine, m, \
                smp, cpu, accel, display, ...): then it replaces that item, with a warning. \
                Relative paths (storage file, backing_file, path; binary when it has a '/') resolve \
                against the directory of the file that names them. The name is --name, else 'name:' \
                from the config, else a generated 'vm-XXXXXXXX'. The config is validated now (binary, \
                memory, cpu, storage, paths in arguments); 'binary' must be a QEMU system emulator \
                (qemu-system-*, answering -version) unless the config says 'binary_is_qemu: false', \
                and no storage or argument path may be in a system directory unless \
                'allow_system_paths' lists it. Every refusal is one line and writes nothing. Exit codes: \
                0 added; 1 a VM with that name exists; 5 a config file cannot be read; 64 invalid \
                config (a file over 16 MiB too), name or options. --format json|yaml prints the VM (its \
                id, name and config); --quiet prints only its id, for scripts: id=$(maqet add -q vm.yaml). \
                See docs/configuration.md for every key.
                """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("YAML config files, merged in order.", valueName: "config.yaml"))
        var files: [String] = []

        @Option(name: .customLong("vm-config"), parsing: .upToNextOption,
                help: ArgumentHelp("YAML config files (one or more; repeatable), merged in the order typed.", valueName: "file"))
        var vmConfig: [String] = []

        @Option(name: .long, help: ArgumentHelp("The VM's name (overrides 'name:' in the config).", valueName: "name"))
        var name: String?

        @Flag(name: .long, help: "Create a VM with an empty config ({}).")
        var empty = false

        @Option(name: .long, help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func run() throws {
            let arguments: JSONValue = .object([
                ("files", .array(Maqet.configFilesInTypedOrder(files, vmConfig).map(JSONValue.string))),
                ("name", name.map(JSONValue.string) ?? .null),
                ("empty", .bool(empty)),
            ])
            let result = try global.runWorkflow("lifecycle/add.lua", arguments, refusalWritesNothing: true)
            if result.printStructured(format) { return }
            if global.quiet {
                print(result["id"]?.plainText ?? "")
            } else {
                print("Added VM '\(result["name"]?.plainText ?? "?")'")
            }
        }
    }

    /// `files` (positional) and `vmConfig` (--vm-config) in the order they appear on the command
    /// line, so `add --vm-config a.yaml b.yaml`, `add a.yaml --vm-config b.yaml` and
    /// `add a.yaml b.yaml` all merge a, then b (ArgumentParser hands them over in two lists).
    static func configFilesInTypedOrder(_ files: [String], _ vmConfig: [String],
                                        commandLine: [String] = CommandLine.arguments) -> [String] {
        var used = Set<Int>()
        func position(_ file: String) -> Int {
            for (i, word) in commandLine.enumerated().dropFirst() where !used.contains(i) {
                if word == file || word == "--vm-config=\(file)" {
                    used.insert(i)
                    return i
                }
            }
            return Int.max
        }
        let placed = (files + vmConfig).enumerated().map { (index: position($0.element), order: $0.offset, file: $0.element) }
        return placed.sorted { ($0.index, $0.order) < ($1.index, $1.order) }.map(\.file)
    }
}
