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
                deleted; --clean-storage is the same flag. --keep-snapshots (with --delete-storage) keeps \
                the images that hold internal snapshots and lists them as kept; without --delete-storage \
                no image is deleted anyway, so it changes nothing. NAME may be the VM's name, its id or \
                a unique id prefix (at least 4 characters). The steps are scripts/lifecycle/rm.lua. \
                Exit status: 0 removed; 3 refused (running, or not confirmed); 5 no such VM; 64 neither \
                NAME nor --all, or an id prefix several VMs share.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM to remove (its name, id, or a unique id prefix).", valueName: "name"))
        var name: String?

        @Flag(help: "Remove every VM.")
        var all = false

        @Flag(help: "Kill running VMs first instead of refusing.")
        var force = false

        @Flag(name: [.short, .long], help: "Do not ask before removing every VM (--all).")
        var yes = false

        @Flag(name: [.customLong("delete-storage"), .customLong("clean-storage")],
              help: "Also delete the disk images maqet created for the VM (--clean-storage is the published maqet's spelling).")
        var deleteStorage = false

        @Flag(help: "With --delete-storage: keep the images that hold internal snapshots.")
        var keepSnapshots = false

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func validate() throws {
            if all == (name != nil) { throw ValidationError("give either a VM name or --all") }
        }

        func run() throws {
            var args: [(key: String, value: JSONValue)] = [
                ("all", .bool(all)), ("force", .bool(force)), ("yes", .bool(yes)),
                ("delete_storage", .bool(deleteStorage)), ("keep_snapshots", .bool(keepSnapshots)), ("interactive", .bool(isatty(0) == 1 && isatty(2) == 1)),
            ]
            if let name { args.append(("name", .string(name))) }
            let result = try global.runLifecycleWorkflow("rm.lua", args)
            if result.printStructured(format) { return }
            let removed = result["removed"]?.arrayItems ?? []
            if removed.isEmpty { print("No VMs to remove."); return }
            for vm in removed { print("removed \(vm.plainText)") }
            for file in result["deleted_files"]?.arrayItems ?? [] { print("deleted \(file.plainText)") }
            for file in result["kept_files"]?.arrayItems ?? [] { print("kept \(file.plainText) (it holds snapshots: --keep-snapshots)") }
        }
    }
}
