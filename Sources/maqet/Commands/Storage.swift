import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet storage verify NAME | orphaned | attach NAME PATH`: runs scripts/lifecycle/storage.lua.
    struct Storage: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "storage",
            abstract: "Check a VM's disk images, list images no VM uses, or attach an existing image to a VM.",
            discussion: """
                The steps are scripts/lifecycle/storage.lua; which images maqet created (and \
                'maqet rm --delete-storage' deletes) is scripts/lib/storage.lua's rule: images \
                attached with 'storage attach' are never deleted.
                """,
            subcommands: [Verify.self, Orphaned.self, Attach.self]
        )

        struct Verify: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "verify",
                abstract: "Check each disk of a VM: the file exists, its format is the config's, qemu-img check finds no damage.",
                discussion: """
                    For each storage entry: ok; not_created (it has a size and is created on the \
                    first start); missing; unreadable; wrong_format (the config says qcow2, the \
                    image is raw, or the reverse); damaged (qemu-img check found corruptions or \
                    leaks; not run while the VM runs). Images recorded for the VM that its config \
                    no longer names are listed as not_in_config. Exit status: 0 every disk is ok \
                    or not created yet; 1 a disk has a problem (the report is still printed); \
                    5 no such VM.
                    """)

            @OptionGroup var global: GlobalOptions
            @Argument(help: ArgumentHelp("The VM.", valueName: "name")) var name: String
            @Option(help: "Output format: text, json or yaml.") var format: ReportFormat = .text

            func run() throws {
                let result = try global.runLifecycleWorkflow("storage.lua", [("action", .string("verify")), ("name", .string(name))])
                if !result.printStructured(format) {
                    let disks = result["disks"]?.arrayItems ?? []
                    if disks.isEmpty { print("\(result["name"]?.plainText ?? name): no storage entries") }
                    let rows = disks.map { disk -> [String] in
                        [disk["name"]?.plainText ?? "-", disk["type"]?.plainText ?? "-",
                         disk["state"]?.plainText ?? "-", (disk["file"] ?? disk["path"])?.plainText ?? "-",
                         disk["message"].map { $0 == .null ? "" : $0.plainText } ?? ""]
                    }
                    if !rows.isEmpty {
                        for line in tableLines(header: ["DRIVE", "TYPE", "STATE", "FILE", "NOTE"], rows: rows) {
                            print(line.replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression))
                        }
                    }
                }
                if result["ok"] != .bool(true) { throw ExitCode(ExitStatus.failure.rawValue) }
            }
        }

        struct Orphaned: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "orphaned",
                abstract: "List disk images under the data directory that no VM uses.",
                discussion: """
                    Files named *.qcow2, *.qcow, *.img or *.raw anywhere under the data directory \
                    that no VM's config names and storage_registry does not record, with their size \
                    (and the space they really take). Nothing is deleted. Exit status: 0.
                    """)

            @OptionGroup var global: GlobalOptions
            @Option(help: "Output format: text, json or yaml.") var format: ReportFormat = .text

            func run() throws {
                let result = try global.runLifecycleWorkflow("storage.lua", [("action", .string("orphaned"))])
                if result.printStructured(format) { return }
                let images = result["images"]?.arrayItems ?? []
                if images.isEmpty {
                    print("No orphaned disk images under \(result["data_dir"]?.plainText ?? "the data directory").")
                    return
                }
                for image in images {
                    print("\(image["size_bytes"]?.plainText ?? "?")\t\(image["path"]?.plainText ?? "?")")
                }
                print("\(images.count) image\(images.count == 1 ? "" : "s"), \(result["total_bytes"]?.plainText ?? "?") bytes")
            }
        }

        struct Attach: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "attach",
                abstract: "Add an existing disk image to a stopped VM, so it boots from it; never deleted by rm --delete-storage.",
                discussion: """
                    The image's format (qcow2 or raw) is read with qemu-img; a storage entry \
                    {name: DRIVE, type: FORMAT, file: PATH} is added to the VM's config (DRIVE \
                    defaults to the file's name without its extension) and the image is recorded \
                    in storage_registry as attached. A backup of the state is taken first (maqet \
                    db restore undoes it). The published maqet's third argument, a config file, \
                    created a new VM: here, add the VM first (maqet add CONFIG --name NAME). Exit \
                    status: 0; 1 the VM already uses the image; 3 the VM runs; 5 no such VM; \
                    64 not an image, a drive name already taken.
                    """)

            @OptionGroup var global: GlobalOptions
            @Argument(help: ArgumentHelp("The VM.", valueName: "name")) var name: String
            @Argument(help: ArgumentHelp("The disk image (relative to the current directory).", valueName: "path")) var path: String
            @Argument(help: .hidden) var published: [String] = []
            @Option(help: ArgumentHelp("The drive's name in the config.", valueName: "name")) var drive: String?
            @Option(help: ArgumentHelp("The drive's interface (virtio, ide, ...; default as for other disks).", valueName: "if"))
            var interface: String?
            @Flag(help: "Attach it read-only.") var readonly = false
            @Option(help: "Output format: text, json or yaml.") var format: ReportFormat = .text

            func validate() throws {
                if let config = published.first {
                    throw ValidationError("a third argument ('\(config)') is the published maqet's form, which creates a VM from that config; add it first with 'maqet add \(config) --name \(name)', then 'maqet storage attach \(name) \(path)'")
                }
            }

            func run() throws {
                var args: [(key: String, value: JSONValue)] = [
                    ("action", .string("attach")), ("name", .string(name)), ("path", .string(path)), ("readonly", .bool(readonly)),
                ]
                if let drive { args.append(("drive", .string(drive))) }
                if let interface { args.append(("interface", .string(interface))) }
                let result = try global.runLifecycleWorkflow("storage.lua", args)
                if result.printStructured(format) { return }
                print("\(result["name"]?.plainText ?? name): attached \(result["file"]?.plainText ?? path) as drive \(result["drive"]?.plainText ?? "-") (\(result["format"]?.plainText ?? "-"))")
            }
        }
    }
}
