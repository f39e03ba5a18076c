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
                --memory, --cpu, --binary and --enable-kvm are merged (same rules as 'maqet add') and validated. Before \
                changing an existing VM, maqet takes an automatic backup of the state database \
                (undo with 'maqet db restore BACKUP'); then it prints what changed. Refused while \
                the VM is running: stop it first. NAME may also be the VM's id or a unique id prefix \
                (at least 4 characters). --enable-kvm adds the argument 'accel: kvm' (QEMU falls back \
                to TCG without /dev/kvm; the published maqet stored a key that did nothing). With \
                --quiet only the VM's id is printed. Exit codes: 0 applied (or nothing to change); \
                1 the VM is running; 5 a config file cannot be read; 64 invalid config or options, \
                or an id prefix several VMs share.
                """
        )

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM to change (its name, id, or a unique id prefix).", valueName: "name"))
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

        @Option(name: .long, help: ArgumentHelp("The QEMU program (a name looked up in PATH, or a path; a relative path is relative to this directory).", valueName: "path"))
        var binary: String?

        @Flag(name: .customLong("enable-kvm"), help: "Ask for KVM: adds the argument 'accel: kvm' (QEMU falls back to TCG where /dev/kvm is missing).")
        var enableKVM = false

        @Option(name: .long, help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func run() throws {
            let arguments: JSONValue = .object([
                ("name", .string(name)),
                ("files", .array(Maqet.configFilesInTypedOrder(files, vmConfig).map(JSONValue.string))),
                ("memory", memory.map(JSONValue.string) ?? .null),
                ("cpu", cpu.map { JSONValue.integer(Int64($0)) } ?? .null),
                ("binary", binary.map { JSONValue.string(Self.absoluteIfPath($0)) } ?? .null),
                ("enable_kvm", .bool(enableKVM)),
            ])
            let result = try global.runWorkflow("lifecycle/apply.lua", arguments, refusalWritesNothing: true)
            if result.printStructured(format) { return }
            if global.quiet { print(result["id"]?.plainText ?? name); return }
            let name = result["name"]?.plainText ?? self.name
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

        /// `--binary ./qemu` names a file relative to where the user is; a bare name is looked up in PATH.
        static func absoluteIfPath(_ binary: String) -> String {
            guard binary.contains("/"), !binary.hasPrefix("/") else { return binary }
            return URL(fileURLWithPath: (FileManager.default.currentDirectoryPath as NSString).appendingPathComponent(binary)).standardizedFileURL.path
        }
    }
}
