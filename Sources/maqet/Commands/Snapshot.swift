import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet snapshot create|list|load|delete NAME [SNAP]`: runs scripts/lifecycle/snapshot.lua.
    struct Snapshot: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "snapshot",
            abstract: "Create, list, load or delete snapshots of a VM's qcow2 disks (and of its state while it runs).",
            discussion: """
                A snapshot is stored inside every writable qcow2 disk of the VM (its 'storage' \
                entries; read-only disks and virtfs shares are left out). A stopped VM's disks are \
                changed with qemu-img, all disks or none; a running VM's with QMP snapshot jobs, which \
                save or restore its RAM and devices too. A writable raw disk, or a VM without a \
                qcow2 disk, is refused. Snapshot names: a letter, then letters, digits, '.', '_' or \
                '-' (at most 64). Every snapshot taken is recorded in the state database; 'list' reads \
                the disks and flags what differs. The steps are scripts/lifecycle/snapshot.lua and \
                scripts/lib/snapshot.lua. See docs/snapshots.md. Exit status: 0 done; 1 failed \
                (a name that exists, a qemu-img or QMP error); 3 refused, nothing changed (raw disk, \
                no qcow2 disk, a disk-only snapshot loaded into a running VM, a VM starting or stopping); 5 no such VM or \
                snapshot; 64 a bad snapshot name; 124 a QMP job did not finish within --timeout.

                The published maqet's form, 'maqet snapshot NAME create|load|list DRIVE --name SNAP \
                [--live] [--overwrite]', works on one drive (a storage entry's name): see \
                'maqet snapshot drive --help'. The first word tells the forms apart: create, list, \
                load, delete (or drive) is maqet's form; anything else is a VM of the published form.
                """,
            subcommands: [Create.self, List.self, Load.self, Delete.self, Drive.self],
            defaultSubcommand: Drive.self
        )

        /// Options every snapshot subcommand shares.
        struct Common: ParsableArguments {
            @Option(help: ArgumentHelp("Seconds a running VM's snapshot job may take (default 120).", valueName: "seconds"))
            var timeout: Double?

            @Option(help: "Output format: text, json or yaml.")
            var format: ReportFormat = .text
        }

        struct Create: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "create",
                abstract: "Take a snapshot (SNAP defaults to snap-YYYYMMDD-HHMMSS, UTC).")

            @OptionGroup var global: GlobalOptions
            @Argument(help: ArgumentHelp("The VM.", valueName: "name")) var name: String
            @Argument(help: ArgumentHelp("The snapshot's name.", valueName: "snap")) var snap: String?
            @OptionGroup var common: Common

            func validate() throws { try validateTimeout(common.timeout) }

            func run() throws {
                let result = try runSnapshotWorkflow(global, "create", name, snap, common)
                if result.printStructured(common.format) { return }
                let disks = result["disks"]?.arrayItems.count ?? 0
                let kind = result["live"] == .bool(true) ? "with the VM's state" : "disks only"
                print("\(name): created snapshot \(result["snapshot"]?.plainText ?? "-") (\(kind), \(disks) disk\(disks == 1 ? "" : "s"))")
            }
        }

        struct List: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "list",
                abstract: "List the snapshots on the VM's disks and in maqet's records, flagging what differs.",
                discussion: """
                    STATE is ok (on every disk and recorded), partial (missing from some disks), \
                    missing (recorded, but gone from every disk: deleted outside maqet), or \
                    unrecorded (on the disks, but not taken by maqet). VM STATE is the size of the \
                    saved RAM and devices ('-' for a disk-only snapshot).
                    """)

            @OptionGroup var global: GlobalOptions
            @Argument(help: ArgumentHelp("The VM.", valueName: "name")) var name: String
            @Option(help: "Output format: text, json or yaml.") var format: ReportFormat = .text

            func run() throws {
                let result = try runSnapshotWorkflow(global, "list", name, nil, nil)
                if result.printStructured(format) { return }
                for problem in result["unreadable"]?.arrayItems ?? [] {
                    FileHandle.standardError.write(Data("maqet: cannot read \(problem.plainText)\n".utf8))
                }
                let items = result["snapshots"]?.arrayItems ?? []
                if items.isEmpty { print("No snapshots of \(name)."); return }
                var rows: [[String]] = [["NAME", "CREATED (UTC)", "VM STATE", "DISKS", "STATE"]]
                for item in items {
                    let disks = item["disks"]?.arrayItems ?? []
                    let present = disks.filter { $0["present"] == .bool(true) }.count
                    var size = "-"
                    if case .integer(let bytes)? = item["vm_state_size"], bytes > 0 { size = humanBytes(bytes) }
                    rows.append([item["name"]?.plainText ?? "?", item["created_at"]?.plainText ?? "-", size,
                                 "\(present)/\(disks.count)", item["state"]?.plainText ?? "?"])
                }
                let widths = (0..<rows[0].count).map { column in rows.map { $0[column].count }.max() ?? 0 }
                for row in rows {
                    let cells = row.enumerated().map { index, cell in
                        index == row.count - 1 ? cell : padded(cell, widths[index])
                    }
                    print(cells.joined(separator: "  "))
                }
            }
        }

        struct Load: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "load",
                abstract: "Go back to a snapshot (a running VM continues from its saved state).",
                discussion: """
                    A running VM needs a snapshot taken while it ran (one with VM state). A stopped \
                    VM's disks are rolled back; the next start boots from them (saved RAM is not used).
                    """)

            @OptionGroup var global: GlobalOptions
            @Argument(help: ArgumentHelp("The VM.", valueName: "name")) var name: String
            @Argument(help: ArgumentHelp("The snapshot to load.", valueName: "snap")) var snap: String
            @OptionGroup var common: Common

            func validate() throws { try validateTimeout(common.timeout) }

            func run() throws {
                let result = try runSnapshotWorkflow(global, "load", name, snap, common)
                if result.printStructured(common.format) { return }
                let how = result["live"] == .bool(true) ? "the VM continues from it" : "disks rolled back"
                print("\(name): loaded snapshot \(snap) (\(how))")
            }
        }

        struct Delete: ParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "delete",
                abstract: "Delete a snapshot from the VM's disks and from maqet's records.")

            @OptionGroup var global: GlobalOptions
            @Argument(help: ArgumentHelp("The VM.", valueName: "name")) var name: String
            @Argument(help: ArgumentHelp("The snapshot to delete.", valueName: "snap")) var snap: String
            @OptionGroup var common: Common

            func validate() throws { try validateTimeout(common.timeout) }

            func run() throws {
                let result = try runSnapshotWorkflow(global, "delete", name, snap, common)
                if result.printStructured(common.format) { return }
                let disks = result["disks"]?.arrayItems.count ?? 0
                if disks == 0 {
                    print("\(name): deleted the record of snapshot \(snap) (it was already gone from the disks)")
                } else {
                    print("\(name): deleted snapshot \(snap) (\(disks) disk\(disks == 1 ? "" : "s"))")
                }
            }
        }
    }
}

extension Maqet.Snapshot {
    /// `maqet snapshot NAME create|load|list DRIVE --name SNAP [--live] [--overwrite]`: the
    /// published maqet's form (also reachable as `maqet snapshot drive NAME ...`).
    struct Drive: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "drive",
            abstract: "The published maqet's form: a snapshot of one drive (maqet snapshot NAME create|load|list DRIVE).",
            usage: """
                maqet snapshot NAME create DRIVE [--name SNAP | SNAP] [--overwrite] [--live]
                maqet snapshot NAME load DRIVE (--name SNAP | SNAP) [--live]
                maqet snapshot NAME list DRIVE
                """,
            discussion: """
                DRIVE is the name of one of the VM's storage entries (a qcow2 image). Without --live \
                the VM must be stopped and only that image is changed, with qemu-img snapshot: \
                create takes the snapshot (--overwrite replaces one of the same name on that drive; \
                without it an existing name is an error), load rolls the drive back to it. With \
                --live the VM must run: create and load are 'maqet snapshot create/load' (the VM's \
                state and every writable qcow2 disk, as the published maqet's savevm). list prints \
                the snapshots on the drive, one name per line. SNAP defaults to \
                snap-YYYYMMDD-HHMMSS on create. Every snapshot taken is recorded (for a one-drive \
                snapshot, with that disk), so 'maqet snapshot list NAME' shows it. Exit status as \
                for 'maqet snapshot' (maqet's codes, not the published maqet's): 0; 1 the name \
                exists on the drive, qemu-img or QEMU failed; 3 refused (the VM runs without \
                --live or is stopped with --live, a raw drive); 5 no such VM, drive or snapshot; \
                64 bad usage.
                """)

        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The VM.", valueName: "name")) var name: String
        @Argument(help: ArgumentHelp("create, load or list.", valueName: "action")) var action: String
        @Argument(help: ArgumentHelp("The drive: a storage entry's name.", valueName: "drive")) var drive: String
        @Argument(help: ArgumentHelp("The snapshot's name (or --name).", valueName: "snap")) var positionalSnap: String?
        @Option(name: .customLong("name"), help: ArgumentHelp("The snapshot's name.", valueName: "snap")) var snap: String?
        @Flag(help: "Through QMP on the running VM: its state and all its writable qcow2 disks.") var live = false
        @Flag(help: "create: replace a snapshot of that name on the drive.") var overwrite = false
        @OptionGroup var common: Maqet.Snapshot.Common

        func validate() throws {
            try validateTimeout(common.timeout)
            guard ["create", "load", "list"].contains(action) else {
                throw ValidationError("unknown action '\(action)': the published form is 'maqet snapshot NAME create|load|list DRIVE --name SNAP'; maqet's own is 'maqet snapshot create|list|load|delete NAME [SNAP]'")
            }
            if let snap, let positionalSnap, snap != positionalSnap {
                throw ValidationError("the snapshot is named twice ('\(positionalSnap)' and --name \(snap)); give it once")
            }
            if action == "list", snap ?? positionalSnap != nil {
                throw ValidationError("list takes no snapshot name")
            }
            if overwrite && action != "create" { throw ValidationError("--overwrite is for create") }
        }

        func run() throws {
            var args: [(key: String, value: JSONValue)] = [
                ("action", .string(action)), ("name", .string(name)), ("drive", .string(drive)),
                ("live", .bool(live)), ("overwrite", .bool(overwrite)),
            ]
            if let chosen = snap ?? positionalSnap { args.append(("snapshot", .string(chosen))) }
            if let timeout = common.timeout { args.append(("timeout", .double(timeout))) }
            let result = try global.runLifecycleWorkflow("snapshot.lua", args)
            if result.printStructured(common.format) { return }
            let vm = result["name"]?.plainText ?? name
            switch action {
            case "list":
                for item in result["snapshots"]?.arrayItems ?? [] { print(item.plainText) }
            case "create":
                let how = result["live"] == .bool(true) ? "with the VM's state, all its disks" : "drive \(drive) only"
                let replaced = result["overwritten"] == .bool(true) ? ", replacing the old one" : ""
                print("\(vm): created snapshot \(result["snapshot"]?.plainText ?? "-") (\(how)\(replaced))")
            default:
                let how = result["live"] == .bool(true) ? "the VM continues from it" : "drive \(drive) rolled back"
                print("\(vm): loaded snapshot \(result["snapshot"]?.plainText ?? "-") (\(how))")
            }
        }
    }
}

/// Runs scripts/lifecycle/snapshot.lua with the command's arguments.
private func runSnapshotWorkflow(_ global: GlobalOptions, _ action: String, _ name: String, _ snap: String?,
                                 _ common: Maqet.Snapshot.Common?) throws -> JSONValue {
    var args: [(key: String, value: JSONValue)] = [("action", .string(action)), ("name", .string(name))]
    if let snap { args.append(("snapshot", .string(snap))) }
    if let timeout = common?.timeout { args.append(("timeout", .double(timeout))) }
    return try global.runLifecycleWorkflow("snapshot.lua", args)
}

/// Bytes for a human: "512 B", "1.5 KiB", "200 MiB".
private func humanBytes(_ bytes: Int64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    return String(format: value >= 10 ? "%.0f" : "%.1f", value) + " " + units[unit]
}
