import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet reset NAME`: runs scripts/lifecycle/reset.lua.
    struct Reset: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "reset",
            abstract: "Hard-reset a running VM (QMP system_reset), like its reset button.",
            discussion: """
                A hard reset: the guest is restarted at once without being asked to shut down, so what it \
                has not written to disk is lost (for a clean reboot, reboot inside the guest). Works on a \
                running or paused VM; the status stays as it was and the reset is written to the VM's history \
                log. The steps are scripts/lifecycle/reset.lua. Exit status: 0 reset; 1 QEMU refused; \
                3 refused, nothing changed (the VM is not running); 5 no such VM.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM to reset.", valueName: "name"))
        var name: String

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func run() throws {
            let result = try global.runLifecycleWorkflow("reset.lua", [("name", .string(name))])
            if result.printStructured(format) { return }
            print("\(name): hard reset (status \(result["status"]?.plainText ?? "-"))")
        }
    }
}
