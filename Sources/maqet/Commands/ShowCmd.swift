import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet show-cmd NAME`: runs scripts/lifecycle/show_cmd.lua.
    struct ShowCmd: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "show-cmd",
            abstract: "Print the exact QEMU command line 'maqet start NAME' would run.",
            discussion: """
                One line, shell-quoted, built by scripts/lib/qemu.lua from the VM's stored config \
                (edit a copy of that file to change how VMs are started). --format json prints the \
                argv as an array. Nothing is created or started. Exit status: 0; 5 no such VM.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM.", valueName: "name"))
        var name: String

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func run() throws {
            let result = try global.runLifecycleWorkflow("show_cmd.lua", [("name", .string(name))])
            if result.printStructured(format) { return }
            print(result["command"]?.plainText ?? "")
        }
    }
}
