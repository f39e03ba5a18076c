import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet pause NAME`: runs scripts/lifecycle/pause.lua.
    struct Pause: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "pause",
            abstract: "Pause a running VM: its CPUs stop, QEMU and the guest's memory stay.",
            discussion: """
                Sends QMP stop to the VM's QEMU and returns once the VM is recorded paused (the runner records \
                QEMU's STOP event). 'maqet resume NAME' continues it; 'maqet stop NAME' ends a paused VM with \
                QMP quit at once (a paused guest cannot act on an ACPI powerdown). The steps are \
                scripts/lifecycle/pause.lua. Exit status: 0 paused; 1 QEMU refused; 3 refused, nothing changed \
                (the VM is not running, or already paused); 5 no such VM.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM to pause.", valueName: "name"))
        var name: String

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func run() throws {
            let result = try global.runLifecycleWorkflow("pause.lua", [("name", .string(name))])
            if result.printStructured(format) { return }
            print("\(name): paused (status \(result["status"]?.plainText ?? "-"))")
        }
    }
}
