import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet status NAME [--format json]`: runs scripts/lifecycle/status.lua.
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status",
            abstract: "Show a VM's true status, processes, sockets, uptime and config summary.",
            discussion: """
                The status is checked against the real QEMU process first (a dead VM is recorded \
                stopped or crashed; see docs/lifecycle.md). 'last log' is the last line of \
                <datadir>/logs/NAME.log, where the runner and maqet write why QEMU exited. \
                --format json (or yaml) prints every field (null when unknown), the VM's stored config \
                as an object under "config" and the summary shown here under "summary". NAME may be \
                the VM's name, its id or a unique id prefix (at least 4 characters). A VM adopted \
                from the published (Python) maqet while it ran says 'running (under the Python \
                maqet's runner)' (runner: python-maqet); 'maqet stop' ends it through that runner. \
                The steps are scripts/lifecycle/status.lua. Exit status: 0; 5 no such VM; 64 an id \
                prefix several VMs share.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM (its name, id, or a unique id prefix).", valueName: "name"))
        var name: String

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        @Flag(help: .hidden)
        var detailed = false

        func validate() throws {
            // The published maqet's deprecated `status --detailed` printed `inspect`.
            if detailed { throw ValidationError("--detailed is the published maqet's; for the details run 'maqet inspect NAME'") }
        }

        func run() throws {
            let result = try global.runLifecycleWorkflow("status.lua", [("name", .string(name))])
            if result.printStructured(format) { return }
            func field(_ key: String) -> String { result[key]?.plainText ?? "-" }
            let config = result["summary"]
            var lines: [(String, String)] = [
                ("Name", field("name")),
                ("Status", field("status") + runnerNote(result["runner"])),
                ("PID", field("pid")),
                ("Runner PID", field("runner_pid")),
                ("QMP socket", field("qmp_socket_path")),
                ("Runner socket", field("runner_socket_path")),
            ]
            if case .integer(let seconds)? = result["uptime_s"] {
                lines.append(("Uptime", humanDuration(seconds)))
            } else {
                lines.append(("Uptime", "-"))
            }
            lines.append(("Binary", config?["binary"]?.plainText ?? "-"))
            lines.append(("Memory", config?["memory"]?.plainText ?? "-"))
            lines.append(("CPUs", config?["cpu"]?.plainText ?? "-"))
            lines.append(("Storage", config?["storage_count"]?.plainText ?? "0"))
            lines.append(("Last log", field("last_log")))
            lines.append(("Log file", field("log_path")))
            let width = lines.map(\.0.count).max() ?? 0
            for (key, value) in lines { print(padded(key + ":", width + 1) + " " + value) }
        }
    }
}

/// What the status line adds about the VM's runner (status.lua's `runner`).
func runnerNote(_ runner: JSONValue?) -> String {
    switch runner {
    case .string("missing")?: return " (runner missing: QEMU runs without its runner)"
    case .string("python-maqet")?: return " (under the Python maqet's runner)"
    default: return ""
    }
}
