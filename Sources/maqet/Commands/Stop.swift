import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet stop NAME|--all [--force] [--timeout S]`: runs scripts/lifecycle/stop.lua.
    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "stop",
            abstract: "Stop a VM, or every running VM with --all.",
            discussion: """
                Graceful stop: ACPI system_powerdown, wait up to --timeout seconds (default 30) for \
                QEMU to exit, then the QMP command quit, then SIGTERM, then SIGKILL (5 s each). \
                --force sends SIGKILL at once. Prints which step ended each VM ('stopped by: \
                powerdown|quit|SIGTERM|SIGKILL'). The VM is recorded stopped only after QEMU has \
                exited. Stopping a VM that is not running is not an error. The steps are \
                scripts/lifecycle/stop.lua. Exit status: 0 stopped; 1 a QEMU would not exit; \
                5 no such VM; 64 neither NAME nor --all.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM to stop.", valueName: "name"))
        var name: String?

        @Flag(help: "Stop every running VM.")
        var all = false

        @Flag(help: "Kill QEMU with SIGKILL at once (no graceful shutdown).")
        var force = false

        @Option(help: ArgumentHelp("Seconds to wait for the guest to power off before escalating (default 30).", valueName: "seconds"))
        var timeout: Double?

        @Option(help: "Output format: text or json.")
        var format: ReportFormat = .text

        func validate() throws {
            try validateTimeout(timeout)
            if all == (name != nil) { throw ValidationError("give either a VM name or --all") }
        }

        func run() throws {
            var args: [(key: String, value: JSONValue)] = [("all", .bool(all)), ("force", .bool(force))]
            if let name { args.append(("name", .string(name))) }
            if let timeout { args.append(("timeout", .double(timeout))) }
            let result = try global.runLifecycleWorkflow("stop.lua", args)
            if format == .json { result.printJSON(); return }
            let items = all ? (result["vms"]?.arrayItems ?? []) : [result]
            if all && items.isEmpty { print("No running VMs."); return }
            for item in items {
                let vm = item["name"]?.plainText ?? "?"
                if let step = item["stopped_by"], step != .null {
                    print("\(vm): stopped (stopped by: \(step.plainText))")
                } else if item["was_running"] == .bool(true) {
                    print("\(vm): stopped (QEMU had already exited)")
                } else {
                    print("\(vm): not running (status \(item["status"]?.plainText ?? "-"))")
                }
            }
        }
    }
}
