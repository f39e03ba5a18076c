import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet doctor [--fix]`: runs scripts/lifecycle/doctor.lua.
    struct Doctor: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "doctor",
            abstract: "Check the database, stale VMs and files, QEMU, KVM, the runtime directory and disk space.",
            discussion: """
                Checks, one line each: database (PRAGMA quick_check), schema (its version), vms \
                (rows whose recorded state was not true, recorded now; orphan QEMUs), \
                runtime_files (stale runtime directories, lock files, the published maqet's \
                leftovers), qemu and qemu_img (on PATH, with their versions), kvm (/dev/kvm can \
                be opened; only reported: VMs run under TCG without it), runtime_dir (ours, mode \
                0700), disk_space (at least 1 GiB available for the data directory). A failed \
                check is an error or a warning (vms, runtime_files, kvm, disk_space are warnings). \
                --fix does what is safe: 'maqet cleanup --force' (end orphan QEMUs, remove stale \
                files). --format json prints {checks: [{name, ok, severity, detail}], errors, \
                warnings, fixed, healthy}. The steps are scripts/lifecycle/doctor.lua. \
                Exit status: 0 no errors (warnings allowed); 1 at least one error.
                """)

        @OptionGroup var global: GlobalOptions

        @Flag(help: "Fix what is safe to fix (the same as 'maqet cleanup --force').")
        var fix = false

        @Option(help: "Output format: text, json or yaml.")
        var format: ReportFormat = .text

        func run() throws {
            let result = try global.runLifecycleWorkflow("doctor.lua", [("fix", .bool(fix))])
            if !result.printStructured(format) {
                let checks = result["checks"]?.arrayItems ?? []
                let width = checks.map { ($0["name"]?.plainText ?? "").count }.max() ?? 0
                for check in checks {
                    let mark: String
                    switch check["severity"]?.plainText {
                    case "ok": mark = "ok  "
                    case "warning": mark = "warn"
                    default: mark = "FAIL"
                    }
                    print("\(mark)  \(padded(check["name"]?.plainText ?? "?", width))  \(check["detail"]?.plainText ?? "")")
                }
                let errors = result["errors"]?.arrayItems.count ?? 0
                let warnings = result["warnings"]?.arrayItems.count ?? 0
                print("\(errors) error\(errors == 1 ? "" : "s"), \(warnings) warning\(warnings == 1 ? "" : "s")" +
                      (fix ? ", fixed \(result["fixed"]?.plainText ?? "0")" : ""))
            }
            if result["healthy"] != .bool(true) { throw ExitCode(ExitStatus.failure.rawValue) }
        }
    }
}
