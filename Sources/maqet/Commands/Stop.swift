import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet stop NAME|--all [--force] [--timeout S] [--powerdown-interval S]`: runs
    /// scripts/lifecycle/stop.lua.
    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "stop",
            abstract: "Stop a VM, or every running VM with --all.",
            discussion: """
                Graceful stop: ACPI system_powerdown, sent again every --powerdown-interval \
                seconds (default 2; a guest that is still booting misses the first) until QEMU \
                exits or --timeout seconds (default 30) have passed, then the QMP command quit, \
                then SIGTERM, then SIGKILL (5 s each). --force sends SIGKILL at once. A VM that is \
                still starting is waited for (within --timeout), then stopped; if its start \
                fails, nothing is left to stop. Prints which step ended each VM ('stopped by: \
                powerdown|quit|SIGTERM|SIGKILL'). The VM is recorded stopped only after QEMU has \
                exited. Stopping a VM that is not running is not an error. NAME may be the VM's \
                name, its id or a unique id prefix (at least 4 characters). --format json|yaml prints \
                the result with the VM's id; --quiet prints only the id (one per VM with --all). The steps are \
                scripts/lifecycle/stop.lua. Exit status: 0 stopped; 1 a QEMU would not exit, or \
                the VM was still starting when --timeout passed; 5 no such VM; 64 neither NAME \
                nor --all, or an id prefix several VMs share.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM to stop (its name, id, or a unique id prefix).", valueName: "name"))
        var name: String?

        @Flag(help: "Stop every running VM.")
        var all = false

        @Flag(help: "Kill QEMU with SIGKILL at once (no graceful shutdown).")
        var force = false

        @Option(help: ArgumentHelp("Seconds to wait for the guest to power off before escalating (default 30).", valueName: "seconds"))
        var timeout: Double?

        @Option(name: .customLong("powerdown-interval"),
                help: ArgumentHelp("Seconds between repeated ACPI powerdowns (default 2).", valueName: "seconds"))
        var powerdownInterval: Double?

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func validate() throws {
            try validateTimeout(timeout)
            if let powerdownInterval, !(powerdownInterval > 0 && powerdownInterval.isFinite) {
                throw ValidationError("--powerdown-interval must be a number of seconds greater than 0")
            }
            if all == (name != nil) { throw ValidationError("give either a VM name or --all") }
        }

        func run() throws {
            var args: [(key: String, value: JSONValue)] = [("all", .bool(all)), ("force", .bool(force))]
            if let name { args.append(("name", .string(name))) }
            if let timeout { args.append(("timeout", .double(timeout))) }
            if let powerdownInterval { args.append(("powerdown_interval", .double(powerdownInterval))) }
            let result = try global.runLifecycleWorkflow("stop.lua", args)
            if result.printStructured(format) { return }
            let items = all ? (result["vms"]?.arrayItems ?? []) : [result]
            if global.quiet {
                for item in items { print(item["id"]?.plainText ?? "") }
                return
            }
            if all && items.isEmpty { print("No running VMs."); return }
            for item in items {
                let vm = item["name"]?.plainText ?? "?"
                if let step = item["stopped_by"], step != .null {
                    print("\(vm): stopped (stopped by: \(step.plainText))")
                } else if item["start_failed"] == .bool(true) {
                    print("\(vm): not running (its start failed; status \(item["status"]?.plainText ?? "-"))")
                } else if item["was_running"] == .bool(true) {
                    print("\(vm): stopped (QEMU had already exited)")
                } else {
                    print("\(vm): not running (status \(item["status"]?.plainText ?? "-"))")
                }
            }
        }
    }
}
