import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet add [CONFIG.yaml ...] [--vm-config FILE ...] [--name NAME] [--empty]`: defines a VM.
    /// The work is the Lua workflow scripts/lifecycle/add.lua (with scripts/lib/config.lua).
    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Define a VM from YAML config files.",
            discussion: """
                Config files are merged in order: the positional files first, then each --vm-config \
                in the order given. Mappings merge deeply, later values win, a later 'key: null' \
                removes the key, 'storage' items merge by name and 'arguments' items by their key. \
                Relative paths (storage file, backing_file, path; binary when it has a '/') resolve \
                against the directory of the file that names them. The name is --name, else 'name:' \
                from the config, else a generated 'vm-XXXXXXXX'. The config is validated now (binary, \
                memory, cpu, storage); every refusal is one line and writes nothing. Exit codes: \
                0 added; 1 a VM with that name exists; 5 a config file cannot be read; 64 invalid \
                config, name or options. See docs/configuration.md for every key.
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
            let result = try runDefinitionWorkflow(global, "lifecycle/add.lua", arguments)
            if format == .json {
                print((try? result.serialized(indent: 2)) ?? "{}")
            } else {
                print("Added VM '\(WorkflowResult.string(result, "name") ?? "?")'")
            }
        }
    }
}

/// Opens the state, runs a VM-definition workflow (add, apply) with `arguments`, and returns its
/// result; failures become their one-line message and exit code.
func runDefinitionWorkflow(_ global: GlobalOptions, _ workflow: String, _ arguments: JSONValue) throws -> JSONValue {
    let runtime = global.makeRuntime()
    return try withExtendedLifetime(runtime) {
        do {
            let store = try StateStore.open(global.stateConfiguration, runtime: runtime, notice: global.notice)
            defer { store.database.close() }
            runtime.exposeStateDatabase(store.database)
            return try runtime.runWorkflow(workflow, arguments: arguments)
        } catch {
            throw maqet.exitCode(for: error)
        }
    }
}

/// Reading fields of a workflow's JSON result.
enum WorkflowResult {
    static func field(_ value: JSONValue, _ key: String) -> JSONValue? {
        guard case .object(let members) = value else { return nil }
        return members.first { $0.key == key }?.value
    }

    static func string(_ value: JSONValue, _ key: String) -> String? {
        if case .string(let s)? = field(value, key) { return s }
        return nil
    }

    /// A value for a human: strings as they are, others as compact JSON, null as "(none)".
    static func text(_ value: JSONValue?) -> String {
        switch value {
        case nil, .null?: return "(none)"
        case .string(let s)?: return s
        case let other?: return (try? other.serialized()) ?? "?"
        }
    }
}
