import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet inspect NAME [--format json]`: runs scripts/lifecycle/inspect.lua.
    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "inspect",
            abstract: "Show everything about a VM: config, status, pids, sockets and its QEMU process.",
            discussion: """
                What 'maqet info' shows, plus the VM's true status (checked against the real \
                process first, as 'maqet status' does), is_running, pid, runner_pid, runner \
                (running, missing, or python-maqet for a VM left running by the published maqet, as \
                in 'maqet status'), \
                qmp_socket_path, socket_path, created_at, updated_at, last_log and, while QEMU \
                runs, process: {pid, state, cpu_percent, cpu_seconds, rss_bytes, vms_bytes, \
                start_time, uptime_s, cmdline}, read from /proc/PID. cpu_percent is QEMU's CPU \
                time over its whole life ((user + system time) / age; 100 = one core busy all the \
                time), not a momentary sample. start_time is ISO 8601 UTC. \
                The steps are scripts/lifecycle/inspect.lua and scripts/lib/inspect.lua. \
                Exit status: 0; 5 no such VM.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM.", valueName: "name"))
        var name: String

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func run() throws {
            let result = try global.runLifecycleWorkflow("inspect.lua", [("name", .string(name))])
            if withConfigData(result).printStructured(format) { return }
            func field(_ key: String) -> String { result[key]?.plainText ?? "-" }
            var lines = infoLines(result)
            lines.insert(("Status", field("status") + runnerNote(result["runner"])), at: 2)
            lines.append(contentsOf: [
                ("PID", field("pid")),
                ("Runner PID", field("runner_pid")),
                ("QMP socket", field("qmp_socket_path")),
                ("Created", field("created_at")),
                ("Updated", field("updated_at")),
                ("Last log", field("last_log")),
            ])
            if let process = result["process"], process != .null {
                func p(_ key: String) -> String { process[key]?.plainText ?? "-" }
                var rss = "-"
                if case .integer(let bytes)? = process["rss_bytes"] { rss = String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
                lines.append(contentsOf: [
                    ("CPU", p("cpu_percent") + " % over its life (" + p("cpu_seconds") + " s of CPU time)"),
                    ("RSS", rss),
                    ("Started", p("start_time")),
                    ("Command", (process["cmdline"]?.arrayItems ?? []).map(\.plainText).joined(separator: " ")),
                ])
            }
            printLines(lines)
        }
    }
}
