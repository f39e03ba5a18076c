import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet start NAME [--timeout S] [--no-wait]`: runs scripts/lifecycle/start.lua.
    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "start",
            abstract: "Start a VM (its per-VM runner keeps it running after maqet exits).",
            discussion: """
                Takes the VM's lock (<runtime dir>/locks/<id>.lock, held by the VM's start, runner and \
                QEMU: while any of them lives no second start can begin, so one VM never gets two \
                QEMUs), creates missing disk images that have a size (qemu-img), builds the QEMU command line \
                (see 'maqet show-cmd NAME') and launches a detached per-VM runner. Returns once QEMU's \
                QMP monitor answers query-status, or at once with --no-wait. QEMU that exits during \
                start fails the command with QEMU's own message. NAME may be the VM's name, its id or \
                a unique id prefix (at least 4 characters). --wait and --wait-for process-started \
                (or 'process', 'started') are accepted for the published maqet's scripts and change \
                nothing: start always waits for QMP unless --no-wait. --format json|yaml prints the \
                result with the VM's id; --quiet prints only the id. The steps are \
                scripts/lifecycle/start.lua (see 'maqet scripts list'). Exit status: 0 started; \
                1 failed, already running, or its lock is held; 5 no such VM; 64 bad options, or an id \
                prefix several VMs share; 124 QMP did not answer within --timeout.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM to start (its name, id, or a unique id prefix).", valueName: "name"))
        var name: String

        @Option(help: ArgumentHelp("Seconds to wait for QMP to answer (default 30).", valueName: "seconds"))
        var timeout: Double?

        @Flag(help: "Return as soon as the runner is launched, without waiting for QMP.")
        var noWait = false

        @Flag(help: "Wait until QMP answers (what start does anyway; accepted for the published maqet's scripts).")
        var wait = false

        @Option(name: .customLong("wait-for"), help: ArgumentHelp(
            "What to wait for: process-started (also 'process', 'started'), what start does anyway.", valueName: "condition"))
        var waitFor: String?

        /// The published maqet's --wait-for words that mean what maqet's start does anyway.
        static let waitForAccepted: Set<String> = ["process-started", "process", "started"]

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func validate() throws {
            try validateTimeout(timeout)
            if wait && noWait { throw ValidationError("--wait and --no-wait contradict each other: give one") }
            if let waitFor, !Self.waitForAccepted.contains(waitFor) {
                let instead: String
                switch waitFor {
                case "ssh-ready", "boot-complete":
                    instead = "to wait for the guest, run 'maqet wait NAME --console REGEX' after the start"
                case "file-exists":
                    instead = "wait for the file yourself after the start"
                default:
                    instead = "use --wait-for process-started (what start does anyway), or 'maqet wait NAME --for STATE|--console REGEX' after the start"
                }
                throw ValidationError("--wait-for '\(waitFor)' is not a condition maqet's start knows; \(instead)")
            }
            if waitFor != nil && noWait { throw ValidationError("--wait-for and --no-wait contradict each other: give one") }
        }

        func run() throws {
            var args: [(key: String, value: JSONValue)] = [("name", .string(name)), ("no_wait", .bool(noWait))]
            if let timeout { args.append(("timeout", .double(timeout))) }
            let result = try global.runLifecycleWorkflow("start.lua", args)
            if result.printStructured(format) { return }
            if global.quiet { print(result["id"]?.plainText ?? ""); return }
            let name = result["name"]?.plainText ?? self.name
            let status = result["status"]?.plainText ?? "-"
            print("\(name): \(status) (pid \(result["pid"]?.plainText ?? "-"), runner \(result["runner_pid"]?.plainText ?? "-"), qmp \(result["qmp_socket_path"]?.plainText ?? "-"))")
        }
    }
}
