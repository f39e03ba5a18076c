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
                start fails the command with QEMU's own message. The steps are \
                scripts/lifecycle/start.lua (see 'maqet scripts list'). Exit status: 0 started; \
                1 failed, already running, or its lock is held; 5 no such VM; 124 QMP did not answer within --timeout.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM to start.", valueName: "name"))
        var name: String

        @Option(help: ArgumentHelp("Seconds to wait for QMP to answer (default 30).", valueName: "seconds"))
        var timeout: Double?

        @Flag(help: "Return as soon as the runner is launched, without waiting for QMP.")
        var noWait = false

        @Option(help: "Output format: text or json.")
        var format: ReportFormat = .text

        func validate() throws { try validateTimeout(timeout) }

        func run() throws {
            var args: [(key: String, value: JSONValue)] = [("name", .string(name)), ("no_wait", .bool(noWait))]
            if let timeout { args.append(("timeout", .double(timeout))) }
            let result = try global.runLifecycleWorkflow("start.lua", args)
            if format == .json { result.printJSON(); return }
            let status = result["status"]?.plainText ?? "-"
            print("\(name): \(status) (pid \(result["pid"]?.plainText ?? "-"), runner \(result["runner_pid"]?.plainText ?? "-"), qmp \(result["qmp_socket_path"]?.plainText ?? "-"))")
        }
    }
}
