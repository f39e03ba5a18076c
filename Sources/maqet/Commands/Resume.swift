import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet resume NAME`: runs scripts/lifecycle/resume.lua.
    struct Resume: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "resume",
            abstract: "Resume a paused VM.",
            discussion: """
                Sends QMP cont to the VM's QEMU and returns once the VM is recorded running (the runner records \
                QEMU's RESUME event). A guest that QEMU paused after a kernel panic (on_panic: pause) is not \
                resumed (QEMU would let the panicked kernel go on while the VM showed running); reset it or \
                stop it. The steps are scripts/lifecycle/resume.lua. Exit status: 0 running; 1 QEMU refused; \
                3 refused, nothing changed (the VM is not paused, or its guest panicked); 5 no such VM.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM to resume.", valueName: "name"))
        var name: String

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func run() throws {
            let result = try global.runLifecycleWorkflow("resume.lua", [("name", .string(name))])
            if result.printStructured(format) { return }
            print("\(name): resumed (status \(result["status"]?.plainText ?? "-"))")
        }
    }
}
