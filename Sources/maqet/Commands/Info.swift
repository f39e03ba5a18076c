import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet info NAME [--format json]`: runs scripts/lifecycle/info.lua.
    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "info",
            abstract: "Show a VM's config and its summary (binary, memory, CPUs, display, disks).",
            discussion: """
                The fields of the published maqet's 'info': vm_id, name, config_path, config (the \
                stored config, as an object; config_data names the same object), and configuration \
                {binary, memory, cpu, display, storage_count, storage_devices [{name, type, size}]}. \
                A binary or display the config leaves out is the one a start uses \
                (qemu-system-x86_64, none); memory and cpu are null then (QEMU's own default). \
                For the VM's status and processes see 'maqet inspect' and 'maqet status'. \
                The steps are scripts/lifecycle/info.lua. Exit status: 0; 5 no such VM.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM.", valueName: "name"))
        var name: String

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func run() throws {
            let result = try global.runLifecycleWorkflow("info.lua", [("name", .string(name))])
            if withConfigData(result).printStructured(format) { return }
            printLines(infoLines(result))
        }
    }
}

/// The published maqet calls the config `config_data`: both names carry the same object.
func withConfigData(_ result: JSONValue) -> JSONValue {
    guard case .object(var fields) = result, let config = result["config"] else { return result }
    if let index = fields.firstIndex(where: { $0.0 == "config" }) {
        fields.insert(("config_data", config), at: index + 1)
    }
    return .object(fields)
}

/// `key: value` lines for `maqet info` (and the top of `maqet inspect`).
func infoLines(_ result: JSONValue) -> [(String, String)] {
    func field(_ key: String) -> String { result[key]?.plainText ?? "-" }
    let summary = result["configuration"]
    func summaryField(_ key: String) -> String { summary?[key]?.plainText ?? "-" }
    var lines: [(String, String)] = [
        ("Name", field("name")),
        ("ID", field("vm_id")),
        ("Config file", field("config_path")),
        ("Binary", summaryField("binary")),
        ("Memory", summaryField("memory")),
        ("CPUs", summaryField("cpu")),
        ("Display", summaryField("display")),
        ("Storage", summaryField("storage_count")),
    ]
    for disk in summary?["storage_devices"]?.arrayItems ?? [] {
        let parts = ["name", "type", "size"].map { disk[$0]?.plainText ?? "-" }
        lines.append(("", parts.joined(separator: "  ")))
    }
    return lines
}

/// Prints aligned `key: value` lines (an empty key continues the line above).
func printLines(_ lines: [(String, String)]) {
    let width = lines.map(\.0.count).max() ?? 0
    for (key, value) in lines {
        print(padded(key.isEmpty ? "" : key + ":", width + 1) + " " + (key.isEmpty ? "  " : "") + value)
    }
}
