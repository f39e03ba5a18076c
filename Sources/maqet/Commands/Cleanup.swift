import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet cleanup [--dry-run] [--force]`: runs scripts/lifecycle/cleanup.lua.
    struct Cleanup: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "cleanup",
            abstract: "Reconcile every VM, end orphan QEMUs and remove stale runtime files.",
            discussion: """
                First every VM whose row says it is active is checked against its real process \
                and its true state recorded (as 'maqet ls' does; --dry-run too). Then cleanup \
                finds: orphan QEMUs (their runner is gone, or their VM was removed while QEMU \
                ran), identified by pid, start time and a command line naming the VM's QMP \
                socket, never by a pid alone (a QEMU without a row only when its runner.json \
                names this data directory); runtime directories of no live VM (the VM's lock \
                free); the published (Python) maqet's free start locks and the socket, secret and \
                pid files it left for VMs it no longer runs. maqet's own lock files are never \
                removed (docs/architecture.md). \
                --dry-run lists them and changes nothing else. Otherwise cleanup lists them and \
                asks 'Clean up N things? [y/N]' on a terminal; --force does not ask, and without \
                a terminal --force is needed. Orphans are ended with QMP quit (QEMU flushes its \
                disks), then SIGTERM, then SIGKILL; a VM's row is recorded stopped. --format json \
                prints {dry_run, reconciled, orphans, runtime_dirs, lock_files, python_files, \
                found, cleaned}. The steps are scripts/lifecycle/cleanup.lua and \
                scripts/lib/cleanup.lua. Exit status: 0; 1 an orphan would not end; 3 not \
                confirmed (or no terminal and no --force).
                """)

        @OptionGroup var global: GlobalOptions

        @Flag(help: "List what would be done; end and remove nothing.")
        var dryRun = false

        @Flag(help: "Do not ask before cleaning up.")
        var force = false

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func run() throws {
            let result = try global.runLifecycleWorkflow("cleanup.lua", [
                ("dry_run", .bool(dryRun)), ("force", .bool(force)),
                ("interactive", .bool(isatty(0) == 1 && isatty(2) == 1)),
            ])
            let failed = cleanupFailures(result)
            if !result.printStructured(format) {
                printCleanupReport(result, dryRun: dryRun)
            }
            if !failed.isEmpty {
                throw failure("cleanup: " + failed.joined(separator: "; "), .failure)
            }
        }
    }
}

/// The items cleanup tried and could not do, as "what: why".
func cleanupFailures(_ result: JSONValue) -> [String] {
    var failed: [String] = []
    for orphan in result["orphans"]?.arrayItems ?? [] {
        if let error = orphan["error"], error != .null {
            failed.append("orphan QEMU pid \(orphan["pid"]?.plainText ?? "?"): \(error.plainText)")
        }
    }
    return failed
}

/// The human report of `maqet cleanup` (and the fix part of `maqet doctor --fix`).
func printCleanupReport(_ result: JSONValue, dryRun: Bool) {
    for row in result["reconciled"]?.arrayItems ?? [] {
        let reason = row["reason"].map { $0 == .null ? "" : " (\($0.plainText))" } ?? ""
        print("recorded \(row["name"]?.plainText ?? "?"): \(row["from"]?.plainText ?? "?") -> \(row["to"]?.plainText ?? "?")\(reason)")
    }
    let verb = dryRun ? "would " : ""
    func state(_ item: JSONValue) -> String {
        if dryRun { return "" }
        if item["done"] == .bool(true) { return "" }
        return " (not done: \(item["error"]?.plainText ?? "?"))"
    }
    for orphan in result["orphans"]?.arrayItems ?? [] {
        let owner = orphan["name"].flatMap { $0 == .null ? nil : "VM '\($0.plainText)'" } ?? "removed VM \(orphan["id"]?.plainText ?? "?")"
        let how = dryRun ? "" : (orphan["ended_by"].flatMap { $0 == .null ? nil : " (by \($0.plainText))" } ?? "")
        print("\(verb)end orphan QEMU pid \(orphan["pid"]?.plainText ?? "?") of \(owner)\(how)\(state(orphan))")
    }
    for (key, what) in [("runtime_dirs", "runtime directory"), ("lock_files", "lock file"), ("python_files", "published maqet's file")] {
        for item in result[key]?.arrayItems ?? [] {
            print("\(verb)remove \(what) \(item["path"]?.plainText ?? "?")\(state(item))")
        }
    }
    if case .integer(0)? = result["found"], (result["reconciled"]?.arrayItems ?? []).isEmpty {
        print("Nothing to clean up.")
    } else if !dryRun, let cleaned = result["cleaned"] {
        print("cleaned up \(cleaned.plainText)")
    }
}
