import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet rm NAME|--all [--force] [--yes] [--delete-storage]`: runs scripts/lifecycle/rm.lua.
    struct Rm: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rm",
            abstract: "Remove a VM (or all VMs with --all) from maqet's state.",
            discussion: """
                Refuses a running VM unless --force (which kills it first). --all asks \
                'Remove N VMs? [y/N]' on a terminal unless --yes; without a terminal it needs --yes. \
                An automatic backup of the state is taken first ('maqet db restore' undoes the \
                removal of the rows). The VM's logs in the data directory (history, events, console) are \
                deleted, so a VM added later under the same name starts without them. --delete-storage also deletes the disk images maqet created for the VM \
                (recorded in storage_registry) and lists them; images maqet did not create are never \
                deleted. The steps are scripts/lifecycle/rm.lua. Exit status: 0 removed; 3 refused \
                (running, or not confirmed); 5 no such VM; 64 neither NAME nor --all.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM to remove.", valueName: "name"))
        var name: String?

        @Flag(help: "Remove every VM.")
        var all = false

        @Flag(help: "Kill running VMs first instead of refusing.")
        var force = false

        @Flag(name: [.short, .long], help: "Do not ask before removing every VM (--all).")
        var yes = false

        @Flag(help: "Also delete the disk images maqet created for the VM.")
        var deleteStorage = false

        @Option(help: "Output format: text or json.")
        var format: ReportFormat = .text

        func validate() throws {
            if all == (name != nil) { throw ValidationError("give either a VM name or --all") }
        }

        func run() throws {
            var args: [(key: String, value: JSONValue)] = [
                ("all", .bool(all)), ("force", .bool(force)), ("yes", .bool(yes)),
                ("delete_storage", .bool(deleteStorage)), ("interactive", .bool(isatty(0) == 1 && isatty(2) == 1)),
            ]
            if let name { args.append(("name", .string(name))) }
            let result = try global.runLifecycleWorkflow("rm.lua", args)
            if format == .json { result.printJSON(); return }
            let removed = result["removed"]?.arrayItems ?? []
            if removed.isEmpty { print("No VMs to remove."); return }
            for vm in removed { print("removed \(vm.plainText)") }
            for file in result["deleted_files"]?.arrayItems ?? [] { print("deleted \(file.plainText)") }
        }
    }
}
